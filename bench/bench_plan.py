"""`vlm3 plan` for the shipped recipes on a synthetic manual: 5,000 one-page rows at ~1 MP, 500 validation rows.

Usage:
    .venv/bin/python -m bench.bench_plan [recipes/e30m3_lora.yaml ...] [--rows 5000] [--val-rows 500]

Each row is a 1700x2200 page (1,240 visual tokens at the recipe's 1280 tokens' cap, by its family's token
rule: 1280*28*28 pixels for Qwen2-VL and Qwen2.5-VL, 1280*32*32 for Qwen3-VL; fewer at a lower cap) plus
60-360 text tokens drawn with a fixed seed: the shape of the sample manual's data without the data.
Prints the plan of each recipe, its model's shape (parameters, KV cache, LoRA size, one page through the
vision tower), then how it compares with today's path (checkpointing on, micro-batch 4, random batches,
the vision tower backpropagated), which docs/costs.md and BENCHMARKS.md quote.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from data_adapters.tokens import visual_tokens
from vlm3.plan.estimate import DatasetTokens, Rows, Training, epoch_work, floor_flops, format_plan, image_flops, model_shape, plan_run
from vlm3.recipe.schema import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["e30m3_lora.yaml", "e30m3_qwen25vl_lora.yaml", "e30m3_qwen3vl_lora.yaml", "e30m3_train_dev.yaml", "e30m3_qlora.yaml",
           "e30m3_full.yaml"]
PAGE = (1700, 2200)  # width, height in pixels


def synthetic_rows(n: int, recipe, seed: int) -> Rows:
    rng = random.Random(seed)
    v = visual_tokens(*PAGE, recipe.images.min_pixels, recipe.images.max_pixels, factor=recipe.family.factor)
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
        page = sum(image_flops(shape, train.visual[0]))
        print(f"  model {recipe.model.base} ({recipe.family.label}): {shape.total_params:,} parameters "
              f"(vision {shape.vision_params:,}); LoRA r {recipe.train.lora.r}: "
              f"{shape.lora_trainable(recipe.train.lora.r, recipe.train.lora.target_modules):,} trainable; "
              f"KV cache {shape.kv_bytes_per_token:,} bytes per token (bf16); one page ({train.visual[0]:,} visual tokens) "
              f"through the vision tower {page:.3g} FLOPs")
        checkpointing = recipe.train.gradient_checkpointing
        today = epoch_work(shape, train, 4, False, 16, Training.of(recipe, gradient_checkpointing=True, vision_forward_only=False))
        now = epoch_work(shape, train, recipe.train.micro_batch_size, True,
                         recipe.train.micro_batch_size * recipe.train.gradient_accumulation_steps, Training.of(recipe))
        training = Training.of(recipe)
        floor = floor_flops(shape, list(train.lengths), list(train.visual), checkpointing, full=training.method == "full",
                            vision_trained=training.vision_trained)
        print(f"  per epoch: {now.flops.total:.3g} FLOPs ({now.flops.total / floor:.2f}x the floor for checkpointing "
              f"{'on' if checkpointing else 'off'}, padding {now.padding:.1%}); before this plan's fixes "
              f"(checkpointing on, micro-batch 4, random batches, hooked tower): {today.flops.total:.3g} "
              f"({today.flops.total / now.flops.total:.2f}x, padding {today.padding:.1%})\n")
    print("next: vlm3 plan RECIPE on your own data (after vlm3 check RECIPE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
