"""Run directories: `runs/<recipe name>/<UTC time>/`, one per experiment run, with `latest` pointing at the newest.

Usage:
    run = RunDir.create(recipe)            # runs/tiny-cpu-demo/20261125T170000Z/
    run = RunDir.open("runs/tiny-cpu-demo/latest")

Layout of a run (each stage reads and writes files here, so each can be re-run alone):
    recipe.yaml          the resolved recipe it ran with
    data/                converted train.jsonl / val.jsonl and data_report.json
    axolotl.yaml         the rendered Axolotl config
    logs/                train.log, merge.log, serve.log
    output/              Axolotl's adapter and checkpoints; output/merged is the merged model
    status.json          which stages finished; a stage is done only when it says so
    merge_check.json     the merged model's checks (verify-merge); only a merge that passed them is served
    eval/<model label>/  predictions.jsonl, scores.jsonl, summary.json, report.html
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from vlm3.core.jsonio import write_json, write_text_atomic
from vlm3.recipe.schema import Recipe, RecipeError, YamlTooBig, load_yaml_bounded, parse_recipe, read_recipe_text

RUNS_ROOT = Path("runs")
MAX_SAME_SECOND = 1000  # runs of one recipe started within one second (suffixes -2, -3, ...)


class RunError(Exception):
    """A run directory that cannot be used as asked; str() says what to do."""


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, recipe: Recipe, root: Path = RUNS_ROOT, name: str | None = None) -> "RunDir":
        base = root / recipe.name
        base.mkdir(parents=True, exist_ok=True)
        stamp = name or utc_stamp()
        for suffix in range(1, MAX_SAME_SECOND + 1):
            path = base / (stamp if suffix == 1 else f"{stamp}-{suffix}")
            try:
                path.mkdir()  # the claim itself: mkdir is atomic, so two runs in the same second get two folders
            except FileExistsError:
                continue
            break
        else:
            raise RunError(f"{base} already has {MAX_SAME_SECOND} runs named {stamp}*; wait a second and try again")
        run = cls(path)
        write_text_atomic(run.recipe_file, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        run.write_status(state="created", stages={})
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if not (path / "recipe.yaml").is_file():
            raise RunError(f"{path} is not a run directory (no recipe.yaml); pass runs/<recipe>/<time> or runs/<recipe>/latest")
        return cls(path.resolve() if path.is_symlink() else path)

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def config_file(self) -> Path:
        return self.path / "axolotl.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def output_dir(self) -> Path:
        return self.path / "output"

    @property
    def merged_dir(self) -> Path:
        return self.output_dir / "merged"

    @property
    def merge_check_file(self) -> Path:
        return self.path / "merge_check.json"

    def checkpoint_dir(self, step: int) -> Path:
        return self.output_dir / f"checkpoint-{step}"

    def checkpoints(self) -> list[int]:
        """Steps of the saved checkpoints (output/checkpoint-N folders), oldest first."""
        found = (re.fullmatch(r"checkpoint-(\d+)", p.name) for p in self.output_dir.glob("checkpoint-*") if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def merge_target(self, checkpoint: int | None = None) -> tuple[str, Path, Path]:
        """(status.json stage, merged folder, check file) of the run's weights, or of one saved checkpoint's."""
        if checkpoint is None:
            return "merge", self.merged_dir, self.merge_check_file
        folder = self.checkpoint_dir(checkpoint)
        return f"merge-checkpoint-{checkpoint}", folder / "merged", folder / "merge_check.json"

    def missing_checkpoint(self, checkpoint: int) -> str | None:
        """None when output/checkpoint-N exists; else a sentence naming the saved ones."""
        if self.checkpoint_dir(checkpoint).is_dir():
            return None
        saved = ", ".join(str(step) for step in self.checkpoints()) or "none"
        return f"{self.path} has no output/checkpoint-{checkpoint} (saved checkpoints: {saved})"

    def checked_merged_dir(self, checkpoint: int | None = None) -> Path:
        """The merged folder of the run (or of one checkpoint), only when its merge finished and passed its checks;
        else RunError saying which and what to run."""
        again = f"vlm3 merge {self.path}" + ("" if checkpoint is None else f" --checkpoint {checkpoint}")
        if checkpoint is not None and (missing := self.missing_checkpoint(checkpoint)):
            raise RunError(missing)
        stage, merged, check_file = self.merge_target(checkpoint)
        if not merged.exists():
            raise RunError(f"{self.path} has no merged model{'' if checkpoint is None else f' of checkpoint-{checkpoint}'}; "
                           f"run `{again}` first")
        problem = merge_problem(self.status().get("stages", {}).get(stage, {}).get("state"), check_file)
        if problem:
            raise RunError(f"{self.path}: {problem}, so {merged.relative_to(self.path)} is not served or evaluated as the "
                           f"fine-tuned model. Run `{again}` to merge again and check it (or pass --base for the base model).")
        return merged

    @property
    def eval_root(self) -> Path:
        return self.path / "eval"

    def eval_dir(self, label: str) -> Path:
        return self.eval_root / label

    def recipe(self) -> Recipe:
        try:
            raw = load_yaml_bounded(read_recipe_text(self.recipe_file))  # a hand-edited copy is still bounded
            return parse_recipe(raw, self.recipe_file)
        except RecipeError as exc:
            raise RunError(str(exc)) from None
        except (YamlTooBig, yaml.YAMLError, RecursionError, OSError, UnicodeDecodeError) as exc:
            raise RunError(f"{self.recipe_file} cannot be read as a recipe ({exc})") from None

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    def status(self) -> dict[str, Any]:
        if not self.status_file.exists():
            return {"state": "unknown", "stages": {}}
        return json.loads(self.status_file.read_text(encoding="utf-8"))

    def write_status(self, **fields: Any) -> None:
        write_json(self.status_file, {**self.status(), **fields} if self.status_file.exists() else fields)

    def mark_stage(self, stage: str, state: str, **details: Any) -> None:
        """Record a stage's outcome ("running", "done", "failed") with a UTC time."""
        status = self.status()
        stages = status.get("stages", {})
        stages[stage] = {"state": state, "at": utc_stamp(), **details}
        self.write_status(stages=stages, state=f"{stage}:{state}")

    def stage_done(self, stage: str) -> bool:
        return self.status().get("stages", {}).get(stage, {}).get("state") == "done"

    def point_latest(self) -> None:
        """runs/<recipe>/latest -> this run (a relative symlink, replaced atomically)."""
        link = self.path.parent / "latest"
        tmp = self.path.parent / f".latest-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique: two processes never share it
        tmp.symlink_to(self.path.name)
        os.replace(tmp, link)


def merge_problem(merge_state: str | None, check_file: Path) -> str | None:
    """Why a merge cannot be trusted (interrupted, never checked, failed), or None when it passed its checks.

    The stage's state comes first: a merge killed after an earlier one passed leaves that old
    merge_check.json beside weights it no longer describes."""
    if merge_state == "running":
        return "the merge was interrupted (status.json still says merge: running), its checks unfinished"
    if not check_file.exists():
        if merge_state == "failed":
            return f"the last merge failed (status.json says merge: failed; see {check_file.parent / 'logs' / 'merge.log'})"
        return "the merged model was never checked (no merge_check.json)"
    try:
        check = json.loads(check_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"the merged model's check cannot be read ({check_file.name}: {exc})"
    if not isinstance(check, dict) or check.get("ok") is not True:
        problems = check.get("problems") if isinstance(check, dict) else None
        reasons = "; ".join(str(p) for p in problems[:3]) if isinstance(problems, list) and problems else "no reason recorded"
        return f"the merged model failed its checks ({check_file.name}: {reasons})"
    if merge_state == "failed":
        return "the last merge failed after an earlier one passed (status.json says merge: failed)"
    return None


def run_model(run_dir: Path) -> tuple[str | None, str | None]:
    """The base model and family label RUN/recipe.yaml names ((None, None) when it cannot be read here): what an
    evaluation from before identities were recorded was of (harness.compare.describe_eval_dir's read_run)."""
    from vlm3.recipe.schema import load_recipe

    try:
        recipe = load_recipe(Path(run_dir) / "recipe.yaml")
        return recipe.model.base, recipe.family.label
    except Exception:  # noqa: BLE001 - a run whose recipe or model config cannot be read here is named without it
        return None, None
