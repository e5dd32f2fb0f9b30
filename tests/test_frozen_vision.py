"""A frozen vision tower runs its forward pass only: counted on a real LoRA training step of the tiny Qwen2-VL."""

from __future__ import annotations


import pytest

from tests.conftest import TINY_MODEL, train_measure

pytestmark = pytest.mark.trainer


measure = train_measure  # tests/conftest.py


@pytest.mark.parametrize("flags", [[], ["--no-checkpointing"]], ids=["checkpointing", "no-checkpointing"])
def test_frozen_vision_tower_is_not_backpropagated(flags):
    """Today (Axolotl's and PEFT's input-embedding hooks) the tower is re-run by checkpointing and
    backpropagated; with the plugin's fix it runs once, gets no backward, and the step is unchanged."""
    result = measure("vision-calls", "--model", str(TINY_MODEL), "--dtype", "bfloat16", *flags)
    today, fixed = result["today"], result["fixed"]
    assert today["vision_backwards"] == 1, "the hook that made the tower trainable is gone: re-check transformers"
    assert today["vision_block_forwards"] == (2 if not flags else 1)
    assert fixed["vision_block_forwards"] == 1
    assert fixed["vision_backwards"] == 0
    assert result["loss_equal"], result
    assert result["same_gradient_names"] and fixed["lora_tensors"] == 28  # 7 projections x 2 layers x (A, B)
    assert result["max_gradient"] > 0, "LoRA gradients are zero: the comparison proves nothing"
    assert result["max_gradient_diff"] == 0.0, result
