"""The training verbs: `vlm3 prepare`, `vlm3 train`, `vlm3 merge` (and the path `vlm3 demo` shares).

Usage:
    vlm3 prepare recipes/tiny_cpu_demo.yaml        # check and convert the data, render the Axolotl config
    vlm3 train recipes/tiny_cpu_demo.yaml --merge  # the same, then train with Axolotl and merge with checks
    vlm3 merge runs/tiny-cpu-demo/latest           # merge (again) and check the merged model

The work is done by vlm3.train.steps (the functions the Modal app calls too); this module shows progress
and prints what was written and the next command. Training shows one line that updates (step, loss,
eval loss, learning rate, tokens/s, ETA) on a terminal, and a plain progress line every
PLAIN_PROGRESS_LINES-th of the run (and at each eval loss) when the output is a file or a pipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlm3.core.console import UserError, console
from vlm3.recipe.schema import load_recipe
from vlm3.recipe.runs import RunDir

PLAIN_PROGRESS_LINES = 20  # progress lines per run when the output is not a terminal (a log, CI, a test)
SHOWN_WARNING_GROUPS = 10  # causes printed in full; the rest are counted and named in data_report.json


def cmd_prepare(args: argparse.Namespace) -> int:
    from vlm3.train.steps import prepare_run

    recipe = load_recipe(args.recipe, overrides=overrides(args))
    run = prepare_run(recipe, root=Path(args.runs_root))
    status = run.status()["stages"]["prepare"]
    console.print(f"converted {status['train_rows']} train / {status['val_rows']} val rows -> {run.data_dir}")
    console.print(f"rendered Axolotl config -> {run.config_file}")
    return 0


def overrides(args: argparse.Namespace) -> dict:
    values = {}
    if getattr(args, "max_samples", None):
        values["data.max_samples"] = args.max_samples
    if getattr(args, "epochs", None):
        values["train.epochs"] = args.epochs
    return values


def cmd_train(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, overrides=overrides(args))
    run, _ = train_recipe(recipe, Path(args.runs_root), merge=args.merge)
    latest = run.path.parent / "latest"
    console.print(f"next: {'vlm3 serve' if args.merge else 'vlm3 merge'} {latest}")
    return 0


def train_recipe(recipe, runs_root: Path, merge: bool):
    """The local training path of `train` and `demo`: check and convert, validate, train, merge, point latest."""
    from vlm3.train.steps import check_rendered_config, prepare_run
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    run = prepare_run(recipe, root=runs_root)
    console.print(f"run: {run.path}")
    check_rendered_config(run, env)
    report = json.loads((run.data_dir / "data_report.json").read_text(encoding="utf-8"))
    print_data_warnings(report, run.data_dir / "data_report.json")
    dropped = f", {report['dropped']} over-long row(s) dropped" if report["dropped"] else ""
    console.print(f"data checked and converted ({len(report['warnings'])} warning(s){dropped}); Axolotl accepts the rendered config")
    console.print(f"training log: {run.logs_dir / 'train.log'}", markup=False)
    result = train_with_progress(run, env)
    report_training(run, result)
    if merge:
        merge_and_report(run, env)
    run.point_latest()
    return run, result


def print_data_warnings(report: dict, report_file: Path) -> None:
    """The data warnings grouped by cause (count and first places); causes past SHOWN_WARNING_GROUPS are counted."""
    from data_adapters.checks import ProblemGroup

    groups = [ProblemGroup(g["severity"], g["code"], g["cause"], g["count"], tuple(g["places"]), g.get("example"))
              for g in report.get("warning_groups") or []]
    if not groups and report.get("warnings"):  # a data_report.json written before warnings were grouped
        groups = [ProblemGroup("warning", "", w, 1, ("",)) for w in report["warnings"]]
    for group in groups[:SHOWN_WARNING_GROUPS]:
        console.print(f"  warning: {group}", markup=False)
    if len(groups) > SHOWN_WARNING_GROUPS:
        rest = groups[SHOWN_WARNING_GROUPS:]
        console.print(f"  ... {len(rest)} more cause(s) ({sum(g.count for g in rest)} warning(s)) in {report_file}", markup=False)


def train_with_progress(run: RunDir, env):
    from vlm3.train.steps import train_run
    from vlm3.train.trainer_env import TrainingLog

    watcher = TrainingLog()
    devices = max(run.recipe().compute.gpu_count, 1)
    if not console.is_terminal:
        return train_run(run, env, on_output=plain_progress(watcher, devices))
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.fields[status]}"), console=console, transient=True) as bar:
        task = bar.add_task("train", total=None, status="starting")

        def show(chunk: str) -> None:
            watcher.feed(chunk)
            bar.update(task, completed=watcher.step, total=watcher.total_steps or None, status=watcher.status_line(devices))

        return train_run(run, env, on_output=show)


def plain_progress(watcher, devices: int = 1, lines: int = PLAIN_PROGRESS_LINES):
    """An on_output that prints watcher.status_line() about `lines` times a run (each time a loss arrives at least
    total/lines steps after the last line printed) and at every eval loss: for output that is not a terminal.
    The same lines as the Modal train function's (vlm3.train.trainer_env.status_printer)."""
    from vlm3.train.trainer_env import status_printer

    return status_printer(watcher, lambda line: console.print(line, markup=False), devices, lines)


def report_training(run: RunDir, result) -> None:
    """The trainer's own step count and curves (trainer_state.json), the training report, and its warnings."""
    from vlm3.train.report import TrainReportError, describe, write_train_report

    try:
        report, html = write_train_report(run.path)
    except TrainReportError:
        console.print(f"trained {describe_training(result.log)}; adapter in {result.adapter_dir}")
        return
    console.print(f"trained {describe(report)}; adapter in {result.adapter_dir}")
    for warning in report["warnings"]:
        console.print(f"  warning: {warning}", markup=False)
    console.print(f"training report (loss curves): {html}")


def describe_training(log) -> str:
    """'465 steps: loss 6.6 -> 0.03', saying so when too few losses were logged to show a trend."""
    metrics = log.to_dict()
    if not log.losses:
        return f"{log.total_steps} steps: no training loss was logged (fewer steps than train.logging_steps: lower it to see the loss)"
    text = f"{log.total_steps} steps: loss {metrics['first_loss']:.4g} -> {metrics['final_loss']:.4g}"
    if len(log.losses) < 2:
        text += " (one loss logged: lower train.logging_steps to see the trend)"
    if len(log.eval_losses) >= 2:
        text += f"; eval loss {log.eval_losses[0]:.4g} -> {log.eval_losses[-1]:.4g}"
    return text


def merge_and_report(run: RunDir, env, checkpoint: int | None = None) -> None:
    from vlm3.core.jsonio import folder_lock
    from vlm3.train.steps import merge_run

    with folder_lock(run.path, "merging"):  # two merges of one run would write output/merged at once
        result = merge_run(run, env, checkpoint)
    diff = result.get("max_abs_diff")
    base = "the dequantized NF4 base" if result.get("reference") else "base"  # QLoRA: the weights training saw
    check = (
        f"; {result['lora_targets']} LoRA targets and {result['modules_to_save']} saved modules hold W + scale*B@A in "
        f"{result['dtype']} (W: {base}; worst {result['max_ulp_error']:g} ulp); merged logits equal {base} + adapter "
        f"(max |diff| {diff:.1e}, tolerance {result['logit_tolerance']:.1e})"
        if diff is not None else ""
    )
    console.print(f"merged {result['weights']} -> {run.merge_target(checkpoint)[1]}{check}")


def cmd_merge(args: argparse.Namespace) -> int:
    from vlm3.train.trainer_env import TrainerEnv

    run = RunDir.open(args.run)
    if not run.stage_done("train"):
        raise UserError(f"{run.path} has no finished training (status.json); run `vlm3 train` first")
    if args.checkpoint is not None and (missing := run.missing_checkpoint(args.checkpoint)):
        raise UserError(missing)
    merge_and_report(run, TrainerEnv.locate(), args.checkpoint)
    which = "" if args.checkpoint is None else f" --checkpoint {args.checkpoint}"
    console.print(f"next: vlm3 eval {args.run}{which}   (or vlm3 serve {args.run}{which})")
    return 0


def register(sub) -> None:
    for name, func, text in (
        ("prepare", cmd_prepare, "check and convert the data, render the Axolotl config"),
        ("train", cmd_train, "prepare, then train with Axolotl in the trainer environment"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("recipe")
        p.add_argument("--runs-root", default="runs")
        p.add_argument("--max-samples", type=int, help="train on the first N rows only (a train-dev run)")
        p.add_argument("--epochs", type=int)
        if name == "train":
            p.add_argument("--merge", action="store_true", help="merge and check the model after training")
        p.set_defaults(func=func)

    p = sub.add_parser("merge", help="merge a run's adapter (or one saved checkpoint's) and check the merged model")
    p.add_argument("run")
    p.add_argument("--checkpoint", type=int, metavar="N",
                   help="merge output/checkpoint-N into output/checkpoint-N/merged, with its own check (default: the run's weights)")
    p.set_defaults(func=cmd_merge)
