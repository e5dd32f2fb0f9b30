"""The training report of a run: loss curves, the best eval loss and its step, the checkpoint kept, and overfitting.

Usage:
    vlm3 train-report runs/tiny-cpu-demo/latest      # writes RUN/train_report.html and RUN/train_report.json
    from vlm3.train_report import read_history, summarize_history
    report = summarize_history(read_history(run_path))

The source is the Hugging Face Trainer's own record, `trainer_state.json` of the newest
checkpoint under RUN/output/ (its `log_history` has every logged loss and eval loss with its
step); without a checkpoint, RUN/train_metrics.json (losses as the log printed them, steps
unknown). The weights in RUN/output/ are those of the last step (the recipe does not load the
best model at the end), so when the eval loss rose after its minimum the report names the
saved checkpoint nearest to the best step. A run that did not finish (status.json says train is
running or failed, or fewer steps than planned) is reported as interrupted, and names the
newest checkpoint instead of final weights it does not have.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RISE_TOLERANCE = 0.01  # relative: a final eval loss within 1% of the best is noise, not overfitting
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
FINAL_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")  # in RUN/output/ once training ends


class TrainReportError(Exception):
    """A run without anything to report on; the message says what to run."""


@dataclass
class TrainHistory:
    train: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    eval: list[tuple[int, float]] = field(default_factory=list)  # (step, eval_loss)
    steps: int | None = None  # training steps run (global_step)
    max_steps: int | None = None
    checkpoints: list[int] = field(default_factory=list)  # steps with a saved checkpoint-N folder
    source: str = ""
    steps_known: bool = True  # False when read from train_metrics.json: the x axis is the log order
    train_state: str | None = None  # status.json's train stage: "done", "running" (killed, or still going), "failed"
    weights_saved: bool = True  # RUN/output/ holds the final adapter or model


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def history_from_state(state: dict) -> TrainHistory:
    """Pure: the curves of a trainer_state.json."""
    history = TrainHistory(steps=state.get("global_step"), max_steps=state.get("max_steps"))
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        if (loss := _number(entry.get("loss"))) is not None:
            history.train.append((entry["step"], loss))
        if (eval_loss := _number(entry.get("eval_loss"))) is not None:
            history.eval.append((entry["step"], eval_loss))
    return history


def read_history(run_path: Path) -> TrainHistory:
    history = read_curves(run_path)
    history.train_state = train_state(Path(run_path))
    history.weights_saved = any((Path(run_path) / "output" / name).is_file() for name in FINAL_WEIGHTS)
    return history


def train_state(run_path: Path) -> str | None:
    """The train stage's state in RUN/status.json; None when the file or the stage is missing or unreadable."""
    try:
        status = json.loads((run_path / "status.json").read_text(encoding="utf-8"))
        state = status["stages"]["train"]["state"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, str) else None


def read_curves(run_path: Path) -> TrainHistory:
    output = Path(run_path) / "output"
    checkpoints = sorted(int(m.group(1)) for p in output.glob("checkpoint-*") if (m := CHECKPOINT.match(p.name)) and p.is_dir())
    for step in reversed(checkpoints):
        state_file = output / f"checkpoint-{step}" / "trainer_state.json"
        if state_file.is_file():
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            history = history_from_state(state)
            history.checkpoints, history.source = checkpoints, str(state_file)
            return history
    metrics_file = Path(run_path) / "train_metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        history = TrainHistory(train=list(enumerate(metrics.get("losses") or [], 1)), eval=list(enumerate(metrics.get("eval_losses") or [], 1)),
                               steps=metrics.get("steps"), checkpoints=checkpoints, source=str(metrics_file), steps_known=False)
        return history
    raise TrainReportError(f"{run_path} has no output/checkpoint-*/trainer_state.json and no train_metrics.json; run `vlm3 train` first")


def summarize_history(history: TrainHistory) -> dict[str, Any]:
    """Best eval loss and its step, the checkpoint kept, and a warning when eval loss rose after its minimum."""
    report: dict[str, Any] = {
        "source": history.source, "steps": history.steps, "max_steps": history.max_steps, "steps_known": history.steps_known,
        "train_points": len(history.train), "eval_points": len(history.eval),
        "first_loss": history.train[0][1] if history.train else None, "final_loss": history.train[-1][1] if history.train else None,
        "best_eval_loss": None, "best_eval_step": None, "final_eval_loss": None,
        "kept": f"output/ (the weights after the last step{'' if history.steps is None else f', {history.steps}'})",
        "checkpoints": [f"output/checkpoint-{s}" for s in history.checkpoints],
        "better_checkpoint": None, "warnings": [],
    }
    report["finished"] = finished(history)
    if not report["finished"]:
        report["kept"], warning = describe_unfinished(history)
        report["warnings"].append(warning)
    if not history.train:
        report["warnings"].append("no training loss was logged: the run had fewer steps than train.logging_steps; lower it to see a curve")
    if history.eval:
        best_step, best = min(history.eval, key=lambda point: (point[1], point[0]))
        final_step, final = history.eval[-1]
        report.update(best_eval_loss=best, best_eval_step=best_step, final_eval_loss=final)
        if final > best * (1 + RISE_TOLERANCE) and final_step > best_step:
            where = f"step {best_step}" if history.steps_known else f"eval number {best_step}"
            if history.checkpoints and history.steps_known:
                nearest = min(history.checkpoints, key=lambda s: (abs(s - best_step), s))
                report["better_checkpoint"] = f"output/checkpoint-{nearest}"
                exact = "" if nearest == best_step else f" (the saved checkpoint nearest to step {best_step}; train.save_steps equal to train.eval_steps keeps one at every evaluation)"
                advice = f"the better checkpoint is output/checkpoint-{nearest}{exact}"
            else:
                advice = "no checkpoint near it was saved: set train.save_steps equal to train.eval_steps and train again"
            report["warnings"].append(
                f"eval loss rose after its minimum: best {best:.4g} at {where}, final {final:.4g}; the kept weights are the last step's, "
                f"{advice}")
    else:
        report["warnings"].append("no eval loss was logged: the run has no validation set or ran fewer steps than train.eval_steps")
    return report


def finished(history: TrainHistory) -> bool:
    """status.json decides; without it, a run short of its planned steps did not finish."""
    if history.train_state is not None:
        return history.train_state == "done"
    short = history.steps is not None and history.max_steps is not None and history.steps < history.max_steps
    return not short


def describe_unfinished(history: TrainHistory) -> tuple[str, str]:
    """(what output/ holds instead of final weights, the warning that says the run did not finish)."""
    at = "" if history.steps is None else f" at step {history.steps}" + ("" if history.max_steps is None else f" of {history.max_steps}")
    newest = f"output/checkpoint-{history.checkpoints[-1]}" if history.checkpoints else None
    kept = (f"no final weights: training stopped{at}; the newest checkpoint is {newest}" if newest
            else f"no weights: training stopped{at} before any checkpoint was saved")
    why = {"running": "status.json still says train: running; it was killed, or is still running",
           "failed": "status.json says train: failed; see logs/train.log"}.get(history.train_state or "", "fewer steps than planned")
    saved = "" if history.weights_saved else " and output/ holds no final weights"
    ended = "failed" if history.train_state == "failed" else "was interrupted"
    return kept, (f"training {ended}{at} ({why}){saved}: these curves end there, and `vlm3 merge` has nothing "
                  "final to merge; train again with `vlm3 train RECIPE`")


def svg_loss_curves(history: TrainHistory, width: int = 640, height: int = 300) -> str:
    """Train and eval loss against step, with axes, ticks and a legend that stay clear of each other."""
    from harness.html import svg, svg_text, tag

    left, right, top, bottom = 56, 16, 40, 42  # px; the title sits above `top`, the x label below the ticks
    plot_w, plot_h = width - left - right, height - top - bottom
    points = history.train + history.eval
    parts = [svg_text(left, 16, "loss by step" if history.steps_known else "loss in log order (steps unknown)")]
    if not points:
        parts.append(svg_text(width / 2, height / 2, "no loss was logged", anchor="middle"))
        return svg(width, height, "loss curves", parts)
    x_max = max(max(s for s, _ in points), 1)
    y_low, y_high = min(v for _, v in points), max(v for _, v in points)
    if y_high - y_low < 1e-9:
        y_low, y_high = y_low - 0.5, y_high + 0.5

    def xy(step: float, value: float) -> tuple[float, float]:
        return left + plot_w * step / x_max, top + plot_h * (1 - (value - y_low) / (y_high - y_low))

    for name, series, color in (("train loss", history.train, "#4a78c2"), ("eval loss", history.eval, "#c0392b")):
        if not series:
            continue
        coords = [xy(s, v) for s, v in series]
        parts.append(tag("polyline", points=" ".join(f"{x:.1f},{y:.1f}" for x, y in coords), fill="none", stroke=color, stroke_width=2))
        for (x, y), (s, v) in zip(coords, series):
            parts.append(tag("circle", tag("title", f"{name} at step {s}: {v:.4g}"), cx=f"{x:.1f}", cy=f"{y:.1f}", r=3, fill=color))
    # Legend on the title line, right-aligned: never over the curves or the axis labels.
    parts.append(svg_text(width - right, 16, "— train", anchor="end", fill="#4a78c2"))
    parts.append(svg_text(width - right - 70, 16, "— eval", anchor="end", fill="#c0392b"))
    axis_y = top + plot_h
    parts.append(tag("line", x1=left, y1=f"{axis_y:.1f}", x2=left + plot_w, y2=f"{axis_y:.1f}", stroke="#1d2330"))
    parts.append(tag("line", x1=left, y1=top, x2=left, y2=f"{axis_y:.1f}", stroke="#1d2330"))
    for fraction in (0.0, 0.5, 1.0):
        parts.append(svg_text(left + plot_w * fraction, axis_y + 14, f"{round(x_max * fraction)}", anchor="middle"))
        value = y_low + (y_high - y_low) * fraction
        parts.append(svg_text(left - 6, top + plot_h * (1 - fraction) + 4, f"{value:.3g}", anchor="end"))
    parts.append(svg_text(left + plot_w / 2, height - 6, "step" if history.steps_known else "logged value number", anchor="middle"))
    return svg(width, height, "train and eval loss curves", parts)


def render_train_report(history: TrainHistory, report: dict, out_path: Path, title: str) -> Path:
    from harness.html import definition_list, document, tag

    items = [("source", report["source"]), ("training steps", report["steps"]), ("loss", f"{report['first_loss']} → {report['final_loss']}"),
             ("best eval loss", "—" if report["best_eval_loss"] is None else f"{report['best_eval_loss']:.4g} at step {report['best_eval_step']}"),
             ("final eval loss", report["final_eval_loss"]), ("kept", report["kept"]),
             ("checkpoints", ", ".join(report["checkpoints"]) or "none"), ("better checkpoint", report["better_checkpoint"] or "—")]
    body = [tag("h1", title), definition_list((k, "—" if v is None else v) for k, v in items)]
    if report["warnings"]:
        body.append(tag("section", tag("h2", "Warnings"), tag("ul", [tag("li", w) for w in report["warnings"]]), class_="notes", id="warnings"))
    body.append(tag("section", tag("h2", "Loss curves"), svg_loss_curves(history), id="curves"))
    out_path.write_text(document(title, body), encoding="utf-8")
    return out_path


def write_train_report(run_path: Path) -> tuple[dict, Path]:
    """RUN/train_report.json and RUN/train_report.html; returns the report and the HTML path."""
    from data_adapters.jsonio import write_json

    run_path = Path(run_path)
    history = read_history(run_path)
    report = summarize_history(history)
    report["train"] = history.train
    report["eval"] = history.eval
    write_json(run_path / "train_report.json", report)
    html = render_train_report(history, report, run_path / "train_report.html", f"vlm3 training report: {run_path.name}")
    return report, html


def describe(report: dict) -> str:
    """One line for the terminal: steps, loss, best eval loss."""
    text = f"{report['steps']} training steps"
    if not report.get("finished", True):
        text = f"INTERRUPTED: {report['kept']}; {text}"
    if report["train_points"]:
        text += f": loss {report['first_loss']:.4g} -> {report['final_loss']:.4g}"
    if report["best_eval_loss"] is not None:
        text += f"; best eval loss {report['best_eval_loss']:.4g} at step {report['best_eval_step']}"
    return text

