"""vlm3: fine-tune, serve and evaluate Qwen2-VL on your own documents.

Usage:
    vlm3 validate recipes/e30m3_lora.yaml          # check recipes, nothing else
    vlm3 train recipes/tiny_cpu_demo.yaml --merge  # data check, convert, render, train, merge
    vlm3 merge runs/tiny-cpu-demo/latest
    vlm3 --help                                    # every verb

Each verb takes a recipe or a run directory and ends by printing what it wrote and the
next command. User mistakes exit non-zero with a readable message and no traceback.
"""

from __future__ import annotations

import errno

import argparse
import sys
from pathlib import Path

from data_adapters.pipeline import DataError
from vlm3.core.console import EXIT_DATA, EXIT_RECIPE, UserError, console, err_console
from vlm3.recipe.families import FamilyError
from vlm3.recipe.schema import RecipeError, load_recipe
from vlm3.recipe.runs import RunError

def cmd_validate(args: argparse.Namespace) -> int:
    """Every check that needs no network, every problem at once: reading, the schema, the cross-field rules, and
    Axolotl's schema over the rendered config (in the trainer environment, when there is one)."""
    from vlm3.cli.preflight import axolotl_schema_problems
    from vlm3.recipe.schema import validate_recipe_file

    checked = [(path, *validate_recipe_file(path)) for path in args.recipes]
    axolotl, note = ({}, None) if args.no_axolotl else axolotl_schema_problems([(p, r) for p, _, r in checked if r is not None])
    failures = 0
    for path, problems, recipe in checked:
        problems += [p for p in axolotl.get(path, []) if p not in problems]
        if problems:
            err_console.print(str(RecipeError(path, problems)), markup=False)
            failures += 1
            continue
        try:
            family = recipe.family.label
        except FamilyError as exc:  # only a local folder not built yet gets here; the rest failed validation
            family = f"family read once it exists: {exc}"
        console.print(f"{path}: ok ({recipe.name}: {recipe.train.method} on {recipe.model.base} [{family}], GPU {recipe.compute.gpu})", markup=False)
    if note:
        err_console.print(note, markup=False)
    return EXIT_RECIPE if failures else 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from vlm3.demo.sample_manual import generate_sample_manual

    counts = generate_sample_manual(Path(args.out), seed=args.seed)
    console.print(
        f"wrote {counts['train_rows']} train and {counts['val_rows']} val rows over {counts['pages']} pages, "
        f"{counts['probes']} probes -> {args.out}"
    )
    console.print("next: vlm3 train recipes/tiny_cpu_demo.yaml --merge")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    import subprocess

    from vlm3.train.trainer_env import TrainerEnv

    from vlm3.demo.tiny_model import FOLDERS

    env = TrainerEnv.locate()
    out = args.out or FOLDERS[args.family]
    argv = [str(env.python), "-m", "vlm3.demo.tiny_model", out, "--family", args.family, "--shape", args.shape,
            *(["--force"] if args.force else [])]
    return subprocess.call(argv, env=env.environ())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm3", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")

    p = sub.add_parser("validate", help="check recipes: schema, cross-field rules, Axolotl's schema (no network)")
    p.add_argument("recipes", nargs="+")
    p.add_argument("--no-axolotl", action="store_true", help="skip Axolotl's schema (the trainer environment; seconds)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("sample-data", help="generate the synthetic sample manual (the demo's data)")
    p.add_argument("--out", default="sample_data")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("tiny-model", help="build a tiny random Qwen-VL model for CPU runs (trainer environment)")
    p.add_argument("--family", choices=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"), default="qwen2_vl",
                   help="Qwen2-VL, Qwen2.5-VL or Qwen3-VL (config.json model_type)")
    p.add_argument("--out", help="folder (default: .cache/tiny-qwen2-vl, .cache/tiny-qwen2.5-vl or .cache/tiny-qwen3-vl)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--shape", choices=("toy", "7b"), default="toy", help="7b: bf16 with the 7B's structure (make test-real)")
    p.set_defaults(func=cmd_tiny_model)

    # One module per stage's verbs, in the order a user meets them.
    from vlm3.cli.ask import register as register_ask
    from vlm3.cli.evaluate import register as register_eval
    from vlm3.cli.iterate import register as register_iterate
    from vlm3.cli.modal import register as register_modal
    from vlm3.cli.preflight import register as register_preflight
    from vlm3.cli.train import register as register_train

    register_train(sub)
    register_preflight(sub)
    register_eval(sub)
    register_ask(sub)
    register_iterate(sub)
    register_modal(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RecipeError as exc:
        err_console.print(str(exc), markup=False)
        return EXIT_RECIPE
    except DataError as exc:
        err_console.print(f"Error: {exc}\nNothing was run; your files were not changed.", markup=False)
        return EXIT_DATA
    except KeyboardInterrupt as exc:
        err_console.print(f"interrupted: {exc}" if str(exc) else "interrupted", markup=False)  # how to resume, where there is a way
        return 130
    except Exception as exc:  # user-facing errors of the steps; anything else is a bug and tracebacks
        from vlm3.core.jsonio import FolderBusy
        from harness.evaluation import EvalError
        from vlm3.serve.local import ServeError
        from vlm3.train.steps import StepError
        from vlm3.train.trainer_env import TrainerEnvMissing

        if isinstance(exc, (StepError, RunError, TrainerEnvMissing, UserError, ServeError, EvalError, FolderBusy, FamilyError)):
            err_console.print(f"Error: {exc}", markup=False)
            return 1
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Every file is written whole and renamed into place, and answers are appended line by line:
            # what was written before the disk filled is kept, and the same command carries on from it.
            err_console.print(f"Error: the disk is full ({exc.filename or 'writing'}): free some space and run the same "
                              f"command again; what was written before is kept and it carries on from there.", markup=False)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
