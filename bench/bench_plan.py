"""`vlm3 plan` for the shipped recipes on a synthetic manual: 5,000 one-page rows at ~1 MP, 500 validation rows.

Usage:
    .venv/bin/python -m bench.bench_plan [recipes/e30m3_lora.yaml ...] [--rows 5000] [--val-rows 500]

Each row is a 1700x2200 page (1,240 visual tokens at the recipe's 1280*28*28 cap; fewer at a lower
cap) plus 60-360 text tokens drawn with a fixed seed: the shape of the E30 M3 data without the data.
Prints the plan of each recipe, then how it compares with today's path (checkpointing on, micro-batch 4,
random batches, the vision tower backpropagated), which README and BENCHMARKS.md quote.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from data_adapters.tokens import visual_tokens
from vlm3.plan import DatasetTokens, Rows, Training, epoch_work, floor_flops, format_plan, model_shape, plan_run
from vlm3.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["e30m3_lora.yaml", "e30m3_train_dev.yaml", "e30m3_qlora.yaml", "e30m3_full.yaml"]


def synthetic_rows(n: int, recipe, seed: int) -> Rows:
    rng = random.Random(seed)
    v = visual_tokens(1700, 2200, recipe.images.min_pixels, recipe.images.max_pixels)
    return Rows(tuple(v + rng.randint(60, 360) for _ in range(n)), tuple([v] * n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=[str(ROOT / "recipes" / r) for r in RECIPES])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--val-rows", type=int, default=500)
    args = parser.parse_args(argv)
    for path in args.recipes:
        recipe = load_recipe(path)
        train, val = synthetic_rows(args.rows, recipe, 0), synthetic_rows(args.val_rows, recipe, 1)
        data = DatasetTokens(args.rows, sum(train.lengths) - sum(train.visual), sum(train.visual), max(train.lengths), train, val)
        print(format_plan(plan_run(recipe, data)))
        shape = model_shape(recipe)
        checkpointing = recipe.train.gradient_checkpointing
        today = epoch_work(shape, train, 4, False, 16, Training.of(recipe, gradient_checkpointing=True, vision_forward_only=False))
        now = epoch_work(shape, train, recipe.train.micro_batch_size, True,
                         recipe.train.micro_batch_size * recipe.train.gradient_accumulation_steps, Training.of(recipe))
        floor = floor_flops(shape, list(train.lengths), list(train.visual), checkpointing)
        print(f"  per epoch: {now.flops.total:.3g} FLOPs ({now.flops.total / floor:.2f}x the floor for checkpointing "
              f"{'on' if checkpointing else 'off'}, padding {now.padding:.1%}); before this plan's fixes "
              f"(checkpointing on, micro-batch 4, random batches, hooked tower): {today.flops.total:.3g} "
              f"({today.flops.total / now.flops.total:.2f}x, padding {today.padding:.1%})\n")
    print("next: vlm3 plan RECIPE on your own data (after vlm3 check RECIPE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
