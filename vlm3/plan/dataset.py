"""The recipe's data as the plan counts it: every row read and checked (data_adapters), and its text and visual
tokens per split at the recipe's image caps. `vlm3 check` adds the probes' problems; `vlm3 plan` and the Modal
launcher price a run from these counts."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from data_adapters.checks import DatasetScan, scan_dataset
from data_adapters.pipeline import read_pipeline
from data_adapters.tokens import load_tokenizer, visual_tokens
from vlm3.plan.estimate import DatasetTokens, Rows
from vlm3.recipe.schema import Recipe


class DataScan(NamedTuple):
    scan: DatasetScan
    train: list  # the rows read from each file
    val: list
    tokenizer: object | None  # the model's own tokenizer when it is on this machine, else None (characters / 4)


def scan_data(recipe: Recipe, decode_images: bool = False) -> DataScan:
    """The scan of the recipe's train and val files (reading problems first), and what it was counted with."""
    train, train_problems = read_pipeline(recipe.data.train, recipe.data.metadata)
    val, val_problems = read_pipeline(recipe.data.val, recipe.data.metadata)
    tokenizer = load_tokenizer(recipe.model.base)
    scan = scan_dataset(train, val, Path(recipe.data.images_root), recipe, decode_images=decode_images, tokenizer=tokenizer)
    scan.problems[:0] = train_problems + val_problems
    return DataScan(scan, train, val, tokenizer)


def dataset_tokens(scan: DatasetScan, recipe: Recipe, max_pixels: int | None = None):
    cap = max_pixels or recipe.images.max_pixels

    def split_rows(split: str) -> tuple[list, Rows]:
        rows = [r for r in scan.rows if r.split == split]
        pages = [tuple(visual_tokens(w, h, recipe.images.min_pixels, cap, recipe.family.factor) for w, h in r.sizes) for r in rows]
        visual = [sum(p) for p in pages]
        return rows, Rows(tuple(r.text_tokens + v for r, v in zip(rows, visual)), tuple(visual), tuple(pages))

    rows, train = split_rows("train")
    _, val = split_rows("val")
    return DatasetTokens(samples=len(rows), text_tokens=sum(r.text_tokens for r in rows), visual_tokens=sum(train.visual),
                         max_row_tokens=max(train.lengths, default=0), train=train, val=val)
