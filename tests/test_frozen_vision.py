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
    assert result["same_gradient_names"] and fixed["lora_tensors"] == 28  # 7 projections x 2 layers x (A, B)
    assert result["max_gradient"] > 0, "LoRA gradients are zero: the comparison proves nothing"
    # The same step: bit for bit in every run here but one, where the tower's forward with autograd recording
    # (today) rounded differently from the same forward under no_grad: a bf16 kernel may be chosen by grad mode.
    # So equal within bf16's rounding (8 significant bits: 2^-8 of the value), which a tower whose gradient
    # reached the LoRA weights, or a different step, would exceed by far.
    assert abs(today["loss"] - fixed["loss"]) <= 2**-8 * abs(today["loss"]), result
    assert result["max_gradient_diff"] <= 2**-8 * result["max_gradient"] * 4, result
