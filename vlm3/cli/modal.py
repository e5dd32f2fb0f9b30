"""`vlm3 modal train RECIPE`: the verb; the checks and the launch are vlm3.cloud.launch's."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlm3.cloud.launch import train_on_modal


def cmd_modal_train(args: argparse.Namespace) -> int:
    return train_on_modal(args.recipe, args.max_samples or 0, args.detach, Path(args.runs_root))


def register(sub) -> None:
    """`vlm3 modal train`, registered by vlm3.cli.main."""
    modal_cmd = sub.add_parser("modal", help="run a recipe on Modal, checked here before anything is built")
    verbs = modal_cmd.add_subparsers(dest="modal_command", required=True, metavar="VERB")
    train = verbs.add_parser("train", help="check, then upload, train, merge and smoke-test on Modal")
    train.add_argument("recipe")
    train.add_argument("--max-samples", type=int, help="train on the first N rows only (a train-dev run)")
    train.add_argument("--detach", action="store_true", help="keep running on Modal when this machine disconnects")
    train.add_argument("--runs-root", default="runs")
    train.set_defaults(func=cmd_modal_train)
