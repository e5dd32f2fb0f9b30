"""The training report of a run: loss curves, the best eval loss and its step, the checkpoint kept, and overfitting.

Usage:
    vlm3 train-report runs/tiny-cpu-demo/latest      # writes RUN/train_report.html and RUN/train_report.json
    from vlm3.train.report import read_history, summarize_history
    report = summarize_history(read_history(run_path))

The source is the Hugging Face Trainer's own record, `trainer_state.json` of the newest
checkpoint under RUN/output/ (its `log_history` has every logged loss and eval loss with its
step); without a checkpoint, RUN/train_metrics.json (losses as the log printed them, steps
unknown). With validation data and train.keep_best (the default), RUN/output/ holds the best
checkpoint's weights (the Trainer loads it at the end; trainer_state.json names it) and the
report says so; otherwise they are the last step's, and when the eval loss rose after its
minimum the report names the saved checkpoint nearest to the best step. A run that did not finish (status.json says train is
running or failed, or fewer steps than planned) is reported as interrupted, and names the
newest checkpoint instead of final weights it does not have.

The report is titled by what tells runs apart: the recipe, the run (its folder's name), the base model's
family and the data version (data_report.json's hash of the converted data, or the same hash of
RUN/data/*.jsonl for a run prepared before it was recorded); its JSON opens with them. Numbers are
rounded for people (4 significant digits); the curves (loss and eval loss, learning rate, grad norm)
keep the Trainer's own values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SIGNIFICANT_DIGITS = 4  # a loss of 0.02760 or 6.617 reads clearly; the curves keep every digit
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
    learning_rate: list[tuple[int, float]] = field(default_factory=list)  # (step, learning rate) beside each loss
    grad_norm: list[tuple[int, float]] = field(default_factory=list)  # (step, gradient norm before clipping)
    best_step: int | None = None  # trainer_state.json's best_model_checkpoint (train.keep_best), as a step
    best_metric: float | None = None  # its eval loss
    loaded_best: bool = False  # the config loads the best checkpoint at the end (load_best_model_at_end): output/ holds it


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def history_from_state(state: dict) -> TrainHistory:
    """Pure: the curves of a trainer_state.json."""
    history = TrainHistory(steps=state.get("global_step"), max_steps=state.get("max_steps"))
    best = CHECKPOINT.match(Path(str(state.get("best_model_checkpoint") or "")).name)
    if best:
        history.best_step, history.best_metric = int(best.group(1)), _number(state.get("best_metric"))
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        if (loss := _number(entry.get("loss"))) is not None:
            history.train.append((entry["step"], loss))
            if (rate := _number(entry.get("learning_rate"))) is not None:
                history.learning_rate.append((entry["step"], rate))
            if (norm := _number(entry.get("grad_norm"))) is not None:
                history.grad_norm.append((entry["step"], norm))
        if (eval_loss := _number(entry.get("eval_loss"))) is not None:
            history.eval.append((entry["step"], eval_loss))
    return history


def read_history(run_path: Path) -> TrainHistory:
    history = read_curves(run_path)
    history.train_state = train_state(Path(run_path))
    history.weights_saved = any((Path(run_path) / "output" / name).is_file() for name in FINAL_WEIGHTS)
    history.loaded_best = loads_best(Path(run_path))
    return history


def loads_best(run_path: Path) -> bool:
    """The run's Axolotl config loads the best checkpoint at the end of training (train.keep_best with validation data)."""
    try:
        config = yaml.safe_load((run_path / "axolotl.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and bool(config.get("load_best_model_at_end")) and bool(config.get("test_datasets"))


def merged_weights(run_path: Path, checkpoint: int | None = None) -> str:
    """Which weights a merge takes, and why: a checkpoint asked for, else what output/ holds (best or last)."""
    try:
        history = read_history(Path(run_path))
    except (TrainReportError, OSError, ValueError):
        history = None
    if checkpoint is not None:
        loss = next((value for step, value in (history.eval if history and history.steps_known else []) if step == checkpoint), None)
        return f"output/checkpoint-{checkpoint} (asked for with --checkpoint{'' if loss is None else f'; eval loss {loss:.4g} at that step'})"
    if history is None:
        return "output/ (no trainer_state.json or train_metrics.json says which step)"
    return kept_weights(history)


def kept_weights(history: TrainHistory) -> str:
    """What output/ holds after a finished run, and why: the best checkpoint's weights, or the last step's."""
    if history.loaded_best and history.best_step is not None:
        loss = "" if history.best_metric is None else f", eval loss {history.best_metric:.4g}"
        return (f"output/ (the best checkpoint by eval loss, checkpoint-{history.best_step}{loss}, loaded at the end of "
                "training: train.keep_best)")
    return f"output/ (the weights after the last step{'' if history.steps is None else f', {history.steps}'})"


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
        history.learning_rate = [(i, v) for i, v in enumerate(metrics.get("learning_rates") or [], 1) if _number(v) is not None]
        history.grad_norm = [(i, v) for i, v in enumerate(metrics.get("grad_norms") or [], 1) if _number(v) is not None]
        return history
    raise TrainReportError(f"{run_path} has no output/checkpoint-*/trainer_state.json and no train_metrics.json; run `vlm3 train` first")


def summarize_history(history: TrainHistory) -> dict[str, Any]:
    """Best eval loss and its step, the checkpoint kept, and a warning when eval loss rose after its minimum."""
    report: dict[str, Any] = {
        "source": history.source, "steps": history.steps, "max_steps": history.max_steps, "steps_known": history.steps_known,
        "train_points": len(history.train), "eval_points": len(history.eval),
        "first_loss": rounded(history.train[0][1]) if history.train else None,
        "final_loss": rounded(history.train[-1][1]) if history.train else None,
        "best_eval_loss": None, "best_eval_step": None, "final_eval_loss": None,
        "kept": kept_weights(history), "best_checkpoint": None if history.best_step is None else f"output/checkpoint-{history.best_step}",
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
        report.update(best_eval_loss=rounded(best), best_eval_step=best_step, final_eval_loss=rounded(final))
        if final > best * (1 + RISE_TOLERANCE) and final_step > best_step and not (history.loaded_best and history.best_step):
            where = f"step {best_step}" if history.steps_known else f"eval number {best_step}"
            if history.checkpoints and history.steps_known:
                nearest = min(history.checkpoints, key=lambda s: (abs(s - best_step), s))
                report["better_checkpoint"] = f"output/checkpoint-{nearest}"
                exact = "" if nearest == best_step else f" (the saved checkpoint nearest to step {best_step}; train.save_steps equal to train.eval_steps keeps one at every evaluation)"
                advice = (f"the better checkpoint is output/checkpoint-{nearest}{exact}: evaluate it with "
                          f"`vlm3 eval RUN --checkpoint {nearest}`")
            else:
                advice = ("no checkpoint near it was saved: set train.save_steps equal to train.eval_steps (train.keep_best then "
                          "keeps and merges the best) and train again")
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


def rounded(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """A number as people read it: 6.877980804443359 -> 6.878, 0.012226901203393935 -> 0.01223."""
    return None if value is None else float(f"{value:.{digits}g}")


def run_identity(run_path: Path) -> dict[str, Any]:
    """What tells this run from another: its name (the run folder, `latest` resolved), recipe, base model, its family,
    and the data version. A part that cannot be read (no recipe.yaml, a base model not on this machine) is None."""
    run_path = Path(run_path)
    identity: dict[str, Any] = {"run": run_path.resolve().name, "recipe": None, "base_model": None, "family": None,
                                "data_version": data_version_of(run_path)}
    try:
        from vlm3.recipe.runs import RunDir

        recipe = RunDir(run_path).recipe()
    except Exception:  # noqa: BLE001 - a report of an odd folder still names what it can
        return identity
    identity.update(recipe=recipe.name, base_model=recipe.model.base)
    from vlm3.recipe.families import family_of

    # The recipe's base as written (a Hub id, or a folder relative to where it ran), else the absolute path the
    # rendered Axolotl config holds.
    for base in (recipe.model.base, rendered_base_model(run_path)):
        try:
            identity["family"] = family_of(base).label if base else None
        except Exception:  # noqa: BLE001 - FamilyError, or a Hub model whose config is not on this machine
            continue
        break
    return identity


def rendered_base_model(run_path: Path) -> str | None:
    try:
        import yaml

        config = yaml.safe_load((Path(run_path) / "axolotl.yaml").read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - unreadable, or not YAML (yaml.YAMLError)
        return None
    base = config.get("base_model") if isinstance(config, dict) else None
    return base if isinstance(base, str) else None


def data_version_of(run_path: Path) -> str | None:
    """data_report.json's data_version (recorded at prepare time); else the same hash of RUN/data/*.jsonl as they are."""
    data = Path(run_path) / "data"
    try:
        recorded = json.loads((data / "data_report.json").read_text(encoding="utf-8")).get("data_version")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded:
        return recorded
    files = [data / "train.jsonl", data / "val.jsonl"]
    if not files[0].is_file():
        return None
    from data_adapters.convert import data_version

    return data_version(files)


def report_title(identity: dict[str, Any]) -> str:
    """'tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data 3fa2c1d90b'."""
    parts = [identity.get("recipe"), f"run {identity['run']}",
             identity.get("family"), f"data {identity['data_version']}" if identity.get("data_version") else None]
    return " · ".join(p for p in parts if p)


def curve_charts(history: TrainHistory) -> list[dict[str, Any]]:
    """Loss and eval loss, learning rate, grad norm: one chart each (their scales differ by orders of magnitude)."""
    from vlm3.core.charts import curves

    return [curves("loss by step", [("train loss", history.train), ("eval loss", history.eval)], history.steps_known,
                   empty="no loss was logged"),
            curves("learning rate by step", [("learning rate", history.learning_rate)], history.steps_known, height=220,
                   empty="no learning rate was logged"),
            curves("grad norm by step", [("grad norm", history.grad_norm)], history.steps_known, height=220,
                   empty="no grad norm was logged")]


def svg_training_curves(history: TrainHistory) -> list[str]:
    """The three charts of curve_charts as inline SVG, drawn by _charts.html.j2's curves macro."""
    from vlm3.core.templates import environment

    draw = environment().get_template("_charts.html.j2").module.curves
    return [str(draw(chart)) for chart in curve_charts(history)]


def svg_loss_curves(history: TrainHistory) -> str:
    """Train and eval loss against step."""
    return svg_training_curves(history)[0]


def render_train_report(history: TrainHistory, report: dict, out_path: Path, title: str) -> Path:
    from vlm3.core.jsonio import write_text_atomic
    from vlm3.core.templates import render

    write_text_atomic(out_path, render("training.html.j2", **training_page(history, report, title)))  # never half a page
    return out_path


def training_page(history: TrainHistory, report: dict, title: str) -> dict[str, Any]:
    """The plain values training.html.j2 draws: the report's facts (numbers to 4 significant digits), warnings, curves."""
    identity = report.get("identity") or {}

    def num(value: Any) -> Any:
        return f"{value:.4g}" if isinstance(value, float) else value

    loss = (f"{num(report['first_loss'])} → {num(report['final_loss'])}" if report["first_loss"] is not None else None)
    items = [("recipe", identity.get("recipe")), ("run", identity.get("run")), ("base model", identity.get("base_model")),
             ("family", identity.get("family")), ("data version", identity.get("data_version")),
             ("source", report["source"]), ("training steps", report["steps"]), ("loss", loss),
             ("best eval loss", None if report["best_eval_loss"] is None else f"{num(report['best_eval_loss'])} at step {report['best_eval_step']}"),
             ("final eval loss", num(report["final_eval_loss"])), ("kept", report["kept"]),
             ("checkpoints", ", ".join(report["checkpoints"]) or "none"), ("better checkpoint", report["better_checkpoint"] or "—")]
    return {"title": title, "facts": [(k, "—" if v is None else v) for k, v in items], "warnings": report["warnings"],
            "charts": curve_charts(history)}


def write_train_report(run_path: Path) -> tuple[dict, Path]:
    """RUN/train_report.json and RUN/train_report.html; returns the report and the HTML path."""
    from vlm3.core.jsonio import write_json

    run_path = Path(run_path)
    history = read_history(run_path)
    identity = run_identity(run_path)
    title = report_title(identity)
    report = {"title": title, "identity": identity, **summarize_history(history)}
    report["train"] = history.train
    report["eval"] = history.eval
    report["learning_rate"] = history.learning_rate
    report["grad_norm"] = history.grad_norm
    write_json(run_path / "train_report.json", report)
    html = render_train_report(history, report, run_path / "train_report.html", f"vlm3 training report: {title}")
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
