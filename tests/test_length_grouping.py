"""Length-grouped batches through the real Axolotl: the converter's `length` column, the sampler, the padding count."""

from __future__ import annotations

import json

import pytest
import yaml

from vlm3.plan.estimate import Rows, Training, epoch_work, shape_of

pytestmark = pytest.mark.trainer


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_converted_row_carries_its_token_length(trained_run):
    for split in ("train", "val"):
        rows = rows_of(trained_run / "data" / f"{split}.jsonl")
        assert rows and all(isinstance(r["length"], int) and r["length"] > 16 for r in rows), split  # 16 visual tokens + text


def test_the_run_records_less_padding_than_random_batches(trained_run):
    """The demo trained with group_by_length (rendered by default) and the plugin counted every training batch;
    random micro-batches of the same rows would pad clearly more (simulated over the run's own lengths)."""
    recipe = yaml.safe_load((trained_run / "recipe.yaml").read_text())
    config = yaml.safe_load((trained_run / "axolotl.yaml").read_text())
    assert config["group_by_length"] is True and "vlm3.train.axolotl_plugin.Vlm3Plugin" in config["plugins"]
    padding = json.loads((trained_run / "output" / "padding.json").read_text())
    lengths = tuple(r["length"] for r in rows_of(trained_run / "data" / "train.jsonl"))
    micro = recipe["train"]["micro_batch_size"]
    steps = json.loads((trained_run / "train_metrics.json").read_text())["steps"]  # Axolotl's ceil(rows x epochs / batch)
    assert padding["batches"] == steps * recipe["train"]["gradient_accumulation_steps"]  # every training micro-batch
    rows = Rows(lengths, tuple([16] * len(lengths)))
    scattered = [epoch_work(shape_of("Qwen/Qwen2-VL-7B-Instruct"), rows, micro, False, micro, Training(), seed=s).padding for s in range(20)]
    random_padding = sum(scattered) / len(scattered)
    assert padding["padding_fraction"] < 0.75 * random_padding, (padding, random_padding)
