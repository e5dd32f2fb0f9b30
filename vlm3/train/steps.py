"""The pipeline's steps, shared by the local CLI and the Modal functions (one code path).

Usage:
    run = prepare_run(recipe)                 # check data, create the run, convert, render
    check_rendered_config(run, env)           # Axolotl's own schema over the rendered config
    train_run(run, env)                       # axolotl train
    merge_run(run, env)                       # axolotl merge-lora + checks of the merged folder

Each step reads and writes files in the run directory and records itself in status.json,
so a step can be re-run alone (after a crash, or in another container).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from data_adapters.convert import prepare_dataset
from vlm3.core.jsonio import write_json, write_text_atomic
from vlm3.recipe.schema import Recipe
from vlm3.train.render import render_axolotl_config
from vlm3.recipe.runs import RUNS_ROOT, RunDir
from vlm3.train.trainer_env import TrainerEnv, TrainingLog, log_tail, resumed_history


class StepError(Exception):
    """A step that failed for a reason the user can act on; str() says what and where."""


def resolve_base_model(recipe: Recipe) -> str:
    """A local folder becomes an absolute path (the trainer runs in the run directory); a Hub id stays."""
    local = Path(recipe.model.base)
    if local.is_dir():
        return str(local.resolve())
    if recipe.model.base.startswith((".", "/")):
        raise StepError(f"model.base {recipe.model.base!r} is not a folder; for the tiny model run `make tiny-model`")
    return recipe.model.base


def prepare_run(
    recipe: Recipe,
    root: Path = RUNS_ROOT,
    image_dir: str | None = None,
    base_model: str | None = None,
) -> RunDir:
    """Check the data (before any directory is made), then create the run and write data + config."""
    from data_adapters.convert import load_data

    base = base_model or resolve_base_model(recipe)
    from data_adapters.samples import check_probes

    data = load_data(recipe)  # raises nothing; errors are collected
    errors = [p for p in data.problems + check_probes(recipe) if p.severity == "error"]
    if errors:
        from data_adapters.pipeline import DataError

        raise DataError(errors)
    # Rendered before the run exists: a recipe the renderer refuses leaves no half-made run behind.
    config = render_axolotl_config(recipe, base_model=base, has_val=bool(data.val))
    run = RunDir.create(recipe, root=root)
    report = prepare_dataset(recipe, run.data_dir, image_dir=image_dir, data=data)
    write_json(run.data_dir / "data_report.json", {**report.to_dict(), "max_images_per_probe": probe_pages(recipe)})
    write_text_atomic(run.config_file, yaml.safe_dump(config, sort_keys=False))
    run.mark_stage("prepare", "done", train_rows=report.train_rows, val_rows=report.val_rows, dropped=report.dropped)
    return run


def probe_pages(recipe: Recipe) -> int:
    """The most pages one probe shows: the served model must take that many per prompt too (vlm3.serve.vllm.images_per_prompt)."""
    if not recipe.data.probes:
        return 0
    from data_adapters.samples import load_probes

    samples, _ = load_probes(Path(recipe.data.probes), Path(recipe.data.images_root))
    return max((len(sample.images) for sample in samples), default=0)


def check_rendered_config(run: RunDir, env: TrainerEnv) -> None:
    recipe = run.recipe()
    result = env.run_json(
        ["validate-config", str(run.config_file), "--gpu", recipe.compute.gpu_type, "--gpu-count", str(max(recipe.compute.gpu_count, 1))]
    )
    if not result["ok"]:
        from vlm3.train.render import recipe_field

        overridden = set(recipe.axolotl)
        lines = [
            f"  {recipe_field(e['field'], overridden)}: {e['message']}" + (f" (Axolotl key {e['field']})" if e["field"] else "")
            if e["field"] else f"  {e['message']}"
            for e in result["errors"]
        ]
        run.mark_stage("validate", "failed", errors=result["errors"])
        raise StepError(
            f"Axolotl rejects the config rendered from {run.recipe_file} ({run.config_file}):\n"
            + "\n".join(lines)
            + "\n  Fix the recipe (or its raw `axolotl:` block) and run again."
        )
    run.mark_stage("validate", "done")


def launcher_args(recipe: Recipe) -> list[str]:
    """One process on one card or a CPU; one process per card (accelerate) for multi-GPU runs."""
    if recipe.compute.gpu_count > 1:
        return ["--launcher", "accelerate", "--", "--num_processes", str(recipe.compute.gpu_count)]
    return ["--launcher", "python"]


@dataclass
class TrainResult:
    log: TrainingLog
    adapter_dir: Path


def _read_metrics(path: Path) -> dict:
    """The previous attempt's train_metrics.json, or {} when it cannot be read (then only this attempt's is kept)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def train_run(run: RunDir, env: TrainerEnv, on_output: Callable[[str], None] | None = None) -> TrainResult:
    """Axolotl trains in the run directory; a re-run resumes from the last checkpoint."""
    log = TrainingLog()

    def feed(chunk: str) -> None:
        log.feed(chunk)
        if on_output:
            on_output(chunk)

    run.mark_stage("train", "running")
    metrics_file = run.path / "train_metrics.json"
    resuming = any(run.output_dir.glob("checkpoint-*")) and metrics_file.is_file()
    before = _read_metrics(metrics_file) if resuming else {}
    argv = [env.axolotl, "train", run.config_file.name, *launcher_args(run.recipe())]
    code = env.run_logged(argv, run.logs_dir / "train.log", cwd=run.path, on_output=feed)
    write_json(metrics_file, resumed_history(before, log.to_dict()) if before else log.to_dict())
    saved = (run.output_dir / "adapter_model.safetensors").exists() or (run.output_dir / "model.safetensors").exists()
    if code != 0 or not saved:
        run.mark_stage("train", "failed", exit_code=code)
        raise StepError(f"training failed (exit {code}); the whole log is {run.logs_dir / 'train.log'}\n{log_tail(run.logs_dir / 'train.log')}")
    run.mark_stage("train", "done", first_loss=log.to_dict()["first_loss"], final_loss=log.to_dict()["final_loss"], steps=log.total_steps)
    return TrainResult(log, run.output_dir)


def merge_run(run: RunDir, env: TrainerEnv, checkpoint: int | None = None) -> dict:
    """Merge the adapter into the base weights, then prove the merged folder is complete and correct.

    `checkpoint`: merge output/checkpoint-N instead of the run's weights, into output/checkpoint-N/merged,
    with its own check (output/checkpoint-N/merge_check.json) and status stage (merge-checkpoint-N)."""
    from vlm3.train.report import merged_weights

    config = yaml.safe_load(run.config_file.read_text(encoding="utf-8"))
    stage, merged, check_file = run.merge_target(checkpoint)
    weights = "output" if checkpoint is None else f"output/checkpoint-{checkpoint}"
    if checkpoint is not None:
        if missing := run.missing_checkpoint(checkpoint):
            raise StepError(missing)
        if not config.get("adapter"):
            raise StepError(f"{weights} of a full fine-tune is a whole model, not an adapter: there is nothing to merge "
                            "(--checkpoint merges a LoRA or QLoRA checkpoint)")
    if config.get("adapter"):
        run.mark_stage(stage, "running")
        argv = [env.axolotl, "merge-lora", run.config_file.name, "--lora-model-dir", weights, "--output-dir", weights]
        if config.get("load_in_4bit"):
            # QLoRA trained its update on NF4 weights: merge into those, dequantized, not into the original base.
            dequantized = env.run_json(["dequantize-base", str(run.path)], cwd=run.path)
            if not dequantized["ok"]:
                run.mark_stage(stage, "failed", problems=dequantized["problems"])
                raise StepError("the QLoRA base could not be dequantized:\n" + "\n".join(f"  {p}" for p in dequantized["problems"]))
            argv += ["--base-model", dequantized["nf4_base"]]
        code = env.run_logged(argv, run.logs_dir / "merge.log", cwd=run.path)
        if code != 0:
            run.mark_stage(stage, "failed", exit_code=code)
            raise StepError(f"axolotl merge-lora failed (exit {code}); see {run.logs_dir / 'merge.log'}\n{log_tail(run.logs_dir / 'merge.log')}")
    else:
        # A full fine-tune has nothing to merge: its output folder is the model.
        if not merged.exists():
            merged.symlink_to(".", target_is_directory=True)
    result = env.run_json(["verify-merge", str(run.path), *([] if checkpoint is None else ["--checkpoint", str(checkpoint)])])
    result["weights"] = merged_weights(run.path, checkpoint)  # which weights were merged, and why those
    write_json(check_file, result)
    if not result["ok"]:
        run.mark_stage(stage, "failed", problems=result["problems"])
        raise StepError("the merged model failed its checks:\n" + "\n".join(f"  {p}" for p in result["problems"]))
    run.mark_stage(stage, "done", dtype=result.get("dtype"), max_abs_diff=result.get("max_abs_diff"),
                   max_ulp_error=result.get("max_ulp_error"), weights=result["weights"])
    return result
