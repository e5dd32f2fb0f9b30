"""The CLI verbs of the iteration loop: which pages to regenerate, how the training went (registered by vlm3.cli.main).

Usage:
    vlm3 weak runs/tiny-cpu-demo/latest/eval/finetuned [--top 5]
    vlm3 train-report runs/tiny-cpu-demo/latest
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def console():
    from vlm3.core.console import console as shared

    return shared


def cmd_weak(args: argparse.Namespace) -> int:
    from harness.evaluation import EvalError, load_jsonl
    from harness.weak import format_weak, write_weak_pages

    eval_dir = Path(args.eval_dir)
    scores = eval_dir / "scores.jsonl"
    if not scores.is_file():
        raise EvalError(f"{eval_dir} has no scores.jsonl; run `vlm3 score {eval_dir}` first")
    try:
        records = load_jsonl(scores)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalError(f"{scores} is not valid JSONL ({exc}); run `vlm3 score {eval_dir}` again to rewrite it") from None
    report, out = write_weak_pages(eval_dir, records)
    console().print(format_weak(report, str(out), top=args.top), markup=False)
    if report.pages:
        console().print(f"next: regenerate Q&A for the training pages of section {report.sections[0].name!r}, "
                        f"then `vlm3 train RECIPE --merge` and `vlm3 compare {eval_dir} NEW_EVAL_DIR`", markup=False)
    return 0


def cmd_train_report(args: argparse.Namespace) -> int:
    from vlm3.recipe.runs import RunError
    from vlm3.train.report import TrainReportError, describe, write_train_report

    run = Path(args.run)
    if not run.is_dir():
        raise RunError(f"{run} is not a run directory; pass one such as runs/tiny-cpu-demo/latest")
    try:
        report, html = write_train_report(run)
    except TrainReportError as exc:
        raise RunError(str(exc)) from None
    console().print(describe(report), markup=False)
    for warning in report["warnings"]:
        console().print(f"warning: {warning}", markup=False)
    console().print(f"wrote {html} and {run / 'train_report.json'}")
    if not report.get("finished", True):
        console().print(f"next: train again: vlm3 train {run / 'recipe.yaml'}   (a new run; this one stopped before its last step)")
    elif report["better_checkpoint"]:
        console().print(f"next: evaluate {run / report['better_checkpoint']} too, or train again with fewer epochs")
    else:
        console().print(f"next: vlm3 eval {run}" if (run / "output" / "merged").exists() else f"next: vlm3 merge {run}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("weak", help="rank sections and pages by failures; write weak_pages.jsonl for regenerating Q&A")
    p.add_argument("eval_dir")
    p.add_argument("--top", type=int, default=5, help="sections and pages to print (the file has all)")
    p.set_defaults(func=cmd_weak)

    p = sub.add_parser("train-report", help="a run's loss curves, best eval loss and its step, the checkpoint kept")
    p.add_argument("run")
    p.set_defaults(func=cmd_train_report)
