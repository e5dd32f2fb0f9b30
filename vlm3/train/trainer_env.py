"""The trainer environment: a separate virtualenv with torch, transformers and Axolotl.

Usage:
    env = TrainerEnv.locate()                  # .venv-train next to the project, or $VLM3_TRAINER_PYTHON
    env.run_logged([env.axolotl, "train", "axolotl.yaml", "--launcher", "python"], log, cwd=run.path)

The light CLI never imports torch or Axolotl; it runs them here as subprocesses, writes
their whole output to a log file and shows progress (steps, loss) on the terminal.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = PROJECT_ROOT / ".venv-train"

METRICS_LINE = re.compile(r"\{'(?:loss|eval_loss|train_runtime)'.*?\}")
# The Trainer's bars carry no description (" 75%|#####  | 350/465 [00:15<00:05, 23.7it/s]"); loading bars do
# ("Loading weights: ..."). Groups: done, total, elapsed, remaining ("?" before the first step).
STEP_PROGRESS = re.compile(r"(?:^|[\r\n])\s*\d+%\|[^|\r\n]*\| (\d+)/(\d+) \[([\d:]+)<([\d:?]+)[,\]]")
TOKENS_PER_SECOND = "tokens/train_per_sec_per_gpu"  # Axolotl 0.19's throughput key, per device
MAX_PENDING = 65536  # characters of an unfinished line held for the next chunk of output


class TrainerEnvMissing(Exception):
    pass


@dataclass
class TrainingLog:
    """What the trainer printed that the user cares about: losses, the step counter and the live numbers.

    Fed Axolotl's output as it arrives (HF Trainer metrics dicts, whose values Axolotl 0.19 prints as
    strings, `{'loss': '6.617', 'grad_norm': '1.737', 'learning_rate': '0.002077', ...}`, and tqdm bars
    `22%|##  | 100/465 [00:05<00:20, 17.54it/s]`); `status_line()` is the one-line view of the run so far.
    """

    losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    loss_epochs: list[float | None] = field(default_factory=list)  # the epoch each loss was logged at
    eval_epochs: list[float | None] = field(default_factory=list)
    learning_rates: list[float | None] = field(default_factory=list)  # beside each loss
    grad_norms: list[float | None] = field(default_factory=list)
    step: int = 0
    total_steps: int = 0
    tokens_per_second: float | None = None  # the newest logged throughput, per device
    elapsed_seconds: int | None = None  # the training bar's own clock
    remaining_seconds: int | None = None  # the training bar's estimate; None before its first step
    summary: dict = field(default_factory=dict)
    _pending: str = field(default="", repr=False)

    def feed(self, text: str) -> bool:
        """Read one chunk of output; True when a new loss arrived."""
        # The pipe hands over whatever bytes are ready: the text after the last line break may be cut mid-dict or
        # mid-bar, so it is read again with the next chunk (metrics dicts only once whole: Axolotl ends each with a newline).
        text = self._pending + text
        cut = max(text.rfind("\n"), text.rfind("\r")) + 1
        self._pending = text[cut:] if len(text) - cut < MAX_PENDING else ""
        new_loss = False
        for match in METRICS_LINE.finditer(text[:cut]):
            try:
                metrics = ast.literal_eval(match.group(0))
            except (ValueError, SyntaxError):
                continue
            epoch = _number(metrics.get("epoch"))
            if "loss" in metrics:
                self.losses.append(float(metrics["loss"]))
                self.loss_epochs.append(epoch)
                self.learning_rates.append(_number(metrics.get("learning_rate")))
                self.grad_norms.append(_number(metrics.get("grad_norm")))
                if (speed := _number(metrics.get(TOKENS_PER_SECOND))) is not None:
                    self.tokens_per_second = speed
                new_loss = True
            if "eval_loss" in metrics:
                self.eval_losses.append(float(metrics["eval_loss"]))
                self.eval_epochs.append(epoch)
            if "train_runtime" in metrics:
                self.summary = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        for match in STEP_PROGRESS.finditer(text):
            done, total = int(match.group(1)), int(match.group(2))
            if total >= self.total_steps:  # eval progress bars are shorter than the training bar
                self.step, self.total_steps = done, total
                self.elapsed_seconds, self.remaining_seconds = _clock(match.group(3)), _clock(match.group(4))
        return new_loss

    def status_line(self, devices: int = 1) -> str:
        """One line for the console: 'step 120/465 (26%) · loss 0.795 · eval loss 3.808 · lr 0.002611 · 1,232 tok/s · ETA 0:19'."""
        parts = [f"step {self.step}/{self.total_steps} ({self.step / self.total_steps:.0%})" if self.total_steps else "starting"]
        if self.losses:
            parts.append(f"loss {self.losses[-1]:.4g}")
        if self.eval_losses:
            parts.append(f"eval loss {self.eval_losses[-1]:.4g}")
        if self.learning_rates and self.learning_rates[-1] is not None:
            parts.append(f"lr {self.learning_rates[-1]:.4g}")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:,.0f} tok/s" + (" per GPU" if devices > 1 else ""))
        if self.remaining_seconds is not None and self.step < self.total_steps:
            parts.append(f"ETA {format_seconds(self.remaining_seconds)}")
        elif self.step and self.elapsed_seconds is not None:
            parts.append(f"{format_seconds(self.elapsed_seconds)} elapsed")
        return " · ".join(parts)

    def to_dict(self) -> dict:
        return {
            "losses": self.losses,
            "eval_losses": self.eval_losses,
            "loss_epochs": self.loss_epochs,
            "eval_epochs": self.eval_epochs,
            "learning_rates": self.learning_rates,
            "grad_norms": self.grad_norms,
            "first_loss": self.losses[0] if self.losses else None,
            "final_loss": self.losses[-1] if self.losses else None,
            "steps": self.total_steps,
            **({"trainer": self.summary} if self.summary else {}),
        }


STATUS_LINES = 20  # status lines per run where the output is a log, not a terminal (a file, CI, the Modal logs)
STATUS_PREFIX = "training: "  # each status line starts so, in a log among the trainer's own lines


def status_printer(watcher: TrainingLog, emit: Callable[[str], None], devices: int = 1,
                   lines: int = STATUS_LINES) -> Callable[[str], None]:
    """An on_output for train_run that feeds `watcher` and emits "training: <watcher.status_line()>" about `lines` times a
    run (each time a loss arrives at least total/lines steps after the last line emitted) and at every eval loss.
    `vlm3 train` without a terminal prints them; the Modal train function prints them into the Modal logs."""
    emitted = {"step": None, "evals": 0}

    def show(chunk: str) -> None:
        new_loss = watcher.feed(chunk)
        every = max(1, -(-watcher.total_steps // lines))
        new_eval = len(watcher.eval_losses) > emitted["evals"]
        due = new_loss and (emitted["step"] is None or watcher.step - emitted["step"] >= every)
        if due or new_eval:
            emit(f"{STATUS_PREFIX}{watcher.status_line(devices)}")
            emitted["step"], emitted["evals"] = watcher.step, len(watcher.eval_losses)

    return show


def latest_status(log_text: str) -> str | None:
    """The newest status line in a log that status_printer wrote into (the Modal logs, `modal app logs`), without
    its prefix; None when training has not logged a loss yet."""
    found = [line[line.index(STATUS_PREFIX) + len(STATUS_PREFIX):].strip()
             for line in log_text.splitlines() if STATUS_PREFIX in line]
    return found[-1] if found else None


def format_seconds(seconds: int) -> str:
    """'0:19', '12:05', '1:02:07' (tqdm's own clock style)."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _clock(text: str) -> int | None:
    """tqdm's '01:53' or '1:02:07' in seconds; None for '?'."""
    if not re.fullmatch(r"\d+(?::\d+)*", text):
        return None
    seconds = 0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def _number(value) -> float | None:
    return float(value) if _is_number(value) else None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a subprocess log for an error message (progress-bar redraws split, telemetry noise dropped)."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip() and "posthog" not in line][-lines:]
    return "\n".join(f"  | {line[:240]}" for line in kept)


def resumed_history(before: dict, after: dict) -> dict:
    """train_metrics.json after a resume: the losses logged before the checkpoint it resumed from, then this
    attempt's (a resume's own log starts at that checkpoint, so without this the earlier history is lost).

    Entries are kept by epoch: those of `before` logged earlier than this attempt's first. A file written
    before epochs were recorded, or an attempt that logged none, keeps only this attempt's.
    """
    merged = dict(after)
    for values, epochs in (("losses", "loss_epochs"), ("eval_losses", "eval_epochs")):
        first = next((e for e in after.get(epochs) or [] if e is not None), None)
        old_values, old_epochs = before.get(values) or [], before.get(epochs) or []
        if first is None or len(old_values) != len(old_epochs):
            continue
        keep = [i for i, e in enumerate(old_epochs) if e is not None and e < first]
        merged[values] = [old_values[i] for i in keep] + list(after.get(values) or [])
        merged[epochs] = [old_epochs[i] for i in keep] + list(after.get(epochs) or [])
    if merged.get("losses"):
        merged["first_loss"], merged["final_loss"] = merged["losses"][0], merged["losses"][-1]
    return merged


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class TrainerEnv:
    python: Path

    @classmethod
    def locate(cls) -> "TrainerEnv":
        configured = os.environ.get("VLM3_TRAINER_PYTHON")
        python = Path(configured) if configured else DEFAULT_VENV / "bin" / "python"
        if not python.exists():
            raise TrainerEnvMissing(
                f"the trainer environment is not installed ({python} not found).\n"
                "  Run `make trainer-env` (torch + Axolotl, ~7 GB), or set VLM3_TRAINER_PYTHON to a python that has Axolotl."
            )
        return cls(python)

    @classmethod
    def current(cls) -> "TrainerEnv":
        """This interpreter (inside a Modal trainer container, Axolotl is installed beside it)."""
        return cls(Path(sys.executable))

    @property
    def axolotl(self) -> str:
        beside = self.python.parent / "axolotl"
        return str(beside) if beside.exists() else "axolotl"

    @property
    def transformers_cli(self) -> str:
        beside = self.python.parent / "transformers"
        return str(beside) if beside.exists() else "transformers"

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")  # no telemetry; training boxes may have no network
        env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(extra or {})
        return env

    def run_json(self, args: list[str], cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> dict:
        """Run `python -m vlm3.train.trainer_side ...` and return the JSON object it prints last."""
        proc = subprocess.run(
            [str(self.python), "-m", "vlm3.train.trainer_side", *args],
            cwd=cwd, env=self.environ(extra_env), capture_output=True, text=True,
        )
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"trainer_side {args[0]} failed (exit {proc.returncode}):\n{tail}")

    def run_logged(
        self,
        argv: list[str],
        log_file: Path,
        cwd: Path,
        on_output: Callable[[str], None] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> int:
        """Run a command, copying all its output to log_file and passing each chunk to on_output."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=self.environ(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
                    log.write(chunk)
                    log.flush()
                    if on_output:
                        on_output(chunk.decode("utf-8", errors="replace"))
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait(timeout=30)
                raise
            return proc.wait()
