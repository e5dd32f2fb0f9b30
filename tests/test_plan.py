"""`vlm3 plan` from first principles, checked against FlopCounterMode and saved-tensor counts of real steps."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tests.conftest import ROOT, TINY_MODEL, train_measure
from vlm3.recipe.families import FamilyError
from vlm3.plan.estimate import (
    DatasetTokens,
    Rows,
    Training,
    attention_pairs,
    batch_flops,
    epoch_work,
    floor_flops,
    format_plan,
    image_flops,
    layer_activation_bytes,
    memory_bytes,
    micro_batches,
    plan_run,
    shape_from_config,
    shape_of,
    vision_flops,
    window_pairs,
)
from vlm3.recipe.schema import load_recipe, parse_recipe

QWEN7B = shape_of("Qwen/Qwen2-VL-7B-Instruct")
QWEN25 = shape_of("Qwen/Qwen2.5-VL-7B-Instruct")
QWEN3 = shape_of("Qwen/Qwen3-VL-8B-Instruct")
FAMILY_RECIPES = ["e30m3_lora.yaml", "e30m3_qwen25vl_lora.yaml", "e30m3_qwen3vl_lora.yaml"]
FLOP_TOLERANCE = 0.10
ACTIVATION_TOLERANCE = 0.15


def pages(n: int, seed: int = 0, visual: int = 1240) -> Rows:
    """n one-page rows at ~1 MP (1,240 visual tokens) with 60-360 text tokens."""
    rng = random.Random(seed)
    texts = [rng.randint(60, 360) for _ in range(n)]
    return Rows(tuple(visual + t for t in texts), tuple([visual] * n))


def dataset(n: int = 5000, val: int = 500) -> DatasetTokens:
    train = pages(n)
    return DatasetTokens(n, sum(train.lengths) - sum(train.visual), sum(train.visual), max(train.lengths), train, pages(val, seed=1))


def test_7b_shape_matches_the_published_parameter_counts():
    assert QWEN7B.lm_params == pytest.approx(7.07e9, rel=1e-3)  # N: decoder projections + lm_head
    assert QWEN7B.vision_params == 675_759_104  # every parameter, biases and norms included
    assert QWEN7B.layers * 7 * 2 == 392  # 196 LoRA modules x (A, B)
    assert 28 * sum(64 * (i + o) for i, o in QWEN7B.projections.values()) == 161_480_704  # r 64 trainable parameters


# Counted on the full-size trees transformers 5.16 builds from the published configs (meta device;
# test_parameter_counts_match_the_meta_device_tree recounts them): every parameter, the LM-only LoRA at r 64.
PUBLISHED = [
    # base, total, vision, LoRA r 64 trainable, bf16 KV bytes per token
    ("Qwen/Qwen2-VL-7B-Instruct", 8_291_375_616, 675_759_104, 161_480_704, 2 * 28 * 4 * 128 * 2),
    ("Qwen/Qwen2-VL-2B-Instruct", 2_208_985_600, 665_271_296, 73_859_072, 2 * 28 * 2 * 128 * 2),  # lm_head tied
    ("Qwen/Qwen2.5-VL-7B-Instruct", 8_292_166_656, 676_550_144, 161_480_704, 2 * 28 * 4 * 128 * 2),
    ("Qwen/Qwen3-VL-8B-Instruct", 8_767_123_696, 576_388_336, 174_587_904, 2 * 36 * 8 * 128 * 2),
]


@pytest.mark.parametrize("base,total,vision,lora,kv", PUBLISHED, ids=[p[0].split("/")[1] for p in PUBLISHED])
def test_each_published_shape_counts_its_parameters(base, total, vision, lora, kv):
    shape = shape_of(base)
    assert (shape.total_params, shape.vision_params) == (total, vision)
    assert shape.lora_trainable(64, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]) == lora
    assert shape.kv_bytes_per_token == kv


def test_family_fields_reach_the_shape():
    assert (QWEN25.vision_gated_mlp, QWEN25.window_patches, QWEN25.full_attention_blocks) == (True, 64, (7, 15, 23, 31))
    assert QWEN25.merger_out == 3584 and not QWEN25.vision_layer_norm
    assert (QWEN3.head_dim, QWEN3.qk_norm, QWEN3.qkv_bias, QWEN3.deepstack_mergers) == (128, True, False, 3)
    assert (QWEN3.patch_inputs, QWEN3.position_embeddings, QWEN3.vision_intermediate) == (3 * 2 * 16 * 16, 2304, 4304)
    assert QWEN7B.window_patches == 0 and QWEN7B.merger_out == 3584
    assert QWEN3.lora_trainable(8, ["q_proj"]) == 36 * 8 * (4096 + 4096)
    with pytest.raises(ValueError, match="not decoder projections"):
        QWEN3.lora_trainable(8, ["qkv"])


def test_a_model_vlm3_cannot_read_is_refused_not_assumed():
    with pytest.raises(FamilyError, match="not a Hub model vlm3 knows"):
        shape_of("Qwen/Qwen9-VL-1T")
    with pytest.raises(FamilyError, match="model_type 'llava' is not a family"):
        shape_from_config({"model_type": "llava", "text_config": {}})


def test_a_local_folder_is_priced_from_its_config(tmp_path):
    import json

    from vlm3.recipe.families import KNOWN_CONFIGS

    (tmp_path / "config.json").write_text(json.dumps(KNOWN_CONFIGS["Qwen/Qwen3-VL-8B-Instruct"]))
    assert shape_of(str(tmp_path)) == QWEN3


def test_hand_worked_windows():
    """A 5x6-token image (10x12 patches) in Qwen2.5-VL's 4x4-token windows: rows of 4 and 1 tokens,
    columns of 4 and 2, so windows of 16, 8, 4 and 2 tokens, 4 patches each."""
    assert window_pairs(QWEN25, (5, 6)) == sum((4 * n) ** 2 for n in (16, 8, 4, 2))
    assert window_pairs(QWEN25, (8, 8)) == 4 * 64**2  # whole windows only
    # Without the grid: every patch sees a full window (an upper bound), full blocks see the page.
    p = 4 * 30
    assert attention_pairs(QWEN25, 30) == 4 * p * p + 28 * p * 64
    assert attention_pairs(QWEN25, 30, (5, 6)) == 4 * p * p + 28 * window_pairs(QWEN25, (5, 6))


def test_window_attention_makes_a_page_cheaper_to_see():
    """A 1 MP page (1,240 tokens): Qwen2-VL's 32 full-attention blocks cost more attention than their matmuls;
    Qwen2.5-VL attends over the page in 4 blocks only."""
    p, d = 4 * 1240, 1280
    full = 32 * 4.0 * p * p * d
    assert image_flops(QWEN7B, 1240)[1] - 32 * 2.0 * p * QWEN7B.vision_block_matmul_params == full
    qwen25 = image_flops(QWEN25, 1240, (40, 31))[1] - 32 * 2.0 * p * QWEN25.vision_block_matmul_params
    assert qwen25 < 0.2 * full
    merger = image_flops(QWEN3, 1240)[2]
    assert merger == 4 * 2.0 * 1240 * (4608 * 4608 + 4608 * 4096)  # the merger and 3 deepstack mergers


@pytest.mark.parametrize("name", FAMILY_RECIPES)
def test_each_family_recipe_fits_and_stays_near_the_floor(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    plan = plan_run(recipe, dataset(), gpus=["H100"])
    # Attention and LoRA are what the 4N floor leaves out: ~1.08x for the 28-layer 7Bs, ~1.10x for Qwen3-VL-8B's
    # 36 layers of 4096-wide attention over the same ~1,450-token rows.
    assert plan.gpus[0].fits and plan.floor_ratio < 1.11
    assert not plan.warnings
    assert plan.memory.weights == shape_of(recipe.model.base).total_params * 2


def test_hand_worked_micro_batch():
    """Two rows of 100 and 60 tokens (40 visual each) on a toy shape, LoRA r 2 on q_proj only."""
    shape = dataclasses.replace(QWEN7B, hidden=8, layers=1, intermediate=16, heads=2, kv_heads=1, vocab=10,
                                vision_dim=4, vision_depth=1, vision_intermediate=8, vision_out=0, patch_inputs=6)
    t = Training(lora_r=2, lora_targets=("q_proj",), gradient_checkpointing=True)
    f = batch_flops(shape, [100, 60], [40, 40], t)
    positions = 2 * 100  # padded to the longer row
    layer = 8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16  # q, k, v (kv width 4), o, gate/up/down
    linear, lora, attention, head = 2 * positions * layer, 2 * positions * 2 * (8 + 8), 4 * 2 * 100**2 * 8, 2 * positions * 8 * 10
    assert f.lm_forward == linear + lora + attention + head
    assert f.lm_backward == linear + 2 * lora + 2 * attention + head
    assert f.lm_recompute == linear + lora + attention
    patches = 160
    vision = 2 * patches * 6 * 4 + 2 * patches * (4 * 16 + 2 * 4 * 8) + 4 * patches**2 * 4 + 2 * 40 * (16 * 16 + 16 * 8)
    assert f.vision_forward == 2 * vision and f.vision_backward == 0 and f.vision_recompute == 0


def test_today_path_backpropagates_the_tower_and_the_fix_does_not():
    fixed = batch_flops(QWEN7B, [1400] * 4, [1240] * 4, Training(gradient_checkpointing=True))
    today = batch_flops(QWEN7B, [1400] * 4, [1240] * 4, Training(gradient_checkpointing=True, vision_forward_only=False))
    assert fixed.vision_backward == fixed.vision_recompute == 0
    assert today.vision_backward > today.vision_forward * 0.9 and today.vision_recompute > 0
    assert today.total / fixed.total > 1.25


def test_length_grouping_pads_less_than_random_batches():
    rows = pages(5000)
    grouped = epoch_work(QWEN7B, rows, 4, True, 16, Training())
    scattered = epoch_work(QWEN7B, rows, 4, False, 16, Training())
    assert 0.03 < scattered.padding < 0.12  # the 6-8% at micro-batch 4
    assert grouped.padding < 0.01
    assert grouped.flops.total < scattered.flops.total
    batches = micro_batches(list(rows.lengths), 4, True, 16)
    assert sorted(i for b in batches for i in b) == list(range(5000))  # every row once per epoch


def test_reference_run_is_near_the_floor():
    """The goal: executed FLOPs <= 1.1x the floor's convention for the chosen checkpointing setting."""
    rows = pages(5000)
    for checkpointing in (True, False):
        t = Training(gradient_checkpointing=checkpointing)
        work = epoch_work(QWEN7B, rows, 4, True, 16, t)
        ratio = work.flops.total / floor_flops(QWEN7B, list(rows.lengths), list(rows.visual), checkpointing)
        assert ratio <= 1.1, (checkpointing, ratio)
    today = epoch_work(QWEN7B, rows, 4, False, 16, Training(gradient_checkpointing=True, vision_forward_only=False))
    assert today.flops.total / floor_flops(QWEN7B, list(rows.lengths), list(rows.visual), True) > 1.3


def test_memory_with_and_without_checkpointing():
    """The issue's figures: ~308 KB per token per layer and ~10 bytes per vocabulary entry per token;
    without checkpointing micro-batch 4 of 1 MP pages cannot fit an 80 GB card, with it ~30 GB."""
    recipe = parse_recipe({"name": "m", "train": {"micro_batch_size": 4}})
    per_layer = layer_activation_bytes(QWEN7B, Training(lora_dropout=0.0))
    assert 300_000 < per_layer < 330_000
    on = memory_bytes(QWEN7B, recipe, Training.of(recipe), 1600, 1240, 1)
    off = memory_bytes(QWEN7B, recipe, Training.of(recipe, gradient_checkpointing=False), 1600, 1240, 1)
    assert on.logits == 4 * 1600 * 152064 * 10
    assert 20e9 < on.total < 40e9 and off.total > 80e9
    liger = parse_recipe({"name": "m", "train": {"liger": True}})
    assert memory_bytes(QWEN7B, liger, Training.of(liger), 1600, 1240, 1).logits == 0


def test_plan_honours_max_steps_and_prices_fixed_costs():
    data = dataset(1000, 100)
    full = plan_run(parse_recipe({"name": "p"}), data, gpus=["H100"])
    capped = plan_run(parse_recipe({"name": "p", "train": {"max_steps": 10}}), data, gpus=["H100"])
    assert full.steps == 3 * 63 and capped.steps == 10
    assert capped.breakdown.total == pytest.approx(full.breakdown.total * 10 / (3 * 63))
    est = capped.gpus[0]
    assert est.usd_per_hour == 3.95 and est.fixed_usd > 0.3
    assert est.usd[1] == pytest.approx(est.hours[1] * 3.95 + est.fixed_usd)


def test_train_dev_price_is_believable():
    """docs/costs.md's train-dev figure (~$0.70) was the old plan's $0.03 plus nothing: fixed costs dominate."""
    plan = plan_run(load_recipe(ROOT / "recipes" / "e30m3_train_dev.yaml"), dataset(5000, 500), gpus=["H100"])
    low, high = plan.gpus[0].usd
    assert 0.4 < low <= high < 1.5, (low, high)
    text = format_plan(plan)
    for needed in ("$/hour", "$3.95", "MFU 25%-45%", "assumed", "fixed costs", "padding", "gradient checkpointing is off"):
        assert needed in text, needed


def test_plan_says_whether_checkpointing_can_be_off():
    data = dataset(200, 20)
    mb4 = plan_run(parse_recipe({"name": "p", "train": {"micro_batch_size": 4}}), data, gpus=["H100"])
    assert any("checkpointing off" in n and "does not fit" in n for n in mb4.notes)
    mb1 = plan_run(parse_recipe({"name": "p", "train": {"micro_batch_size": 1}}), data, gpus=["H100"])
    assert any("checkpointing off" in n and " fits" in n for n in mb1.notes)


def test_shipped_lora_recipe_is_the_fastest_setting_that_fits():
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    plan = plan_run(recipe, dataset(), gpus=["H100"])
    assert plan.gpus[0].fits
    assert not recipe.train.gradient_checkpointing  # 4N instead of 6N per token
    assert plan.floor_ratio <= 1.1
    on = plan_run(recipe.model_copy(update={"train": recipe.train.model_copy(update={"gradient_checkpointing": True})}), dataset(),
                  gpus=["H100"])
    assert plan.flops < 0.85 * on.flops


# Trainer-environment checks: the plan's arithmetic against FlopCounterMode and saved-tensor hooks.


measure = train_measure  # tests/conftest.py


def planned(result: dict, checkpointing: bool, forward_only: bool) -> float:
    shape = shape_from_config(result["config"])
    lengths = [h * w + 2 + t for (h, w), t in zip(result["grids"], result["texts"])]
    visual = [h * w for h, w in result["grids"]]
    return batch_flops(shape, lengths, visual, Training(lora_r=result["lora_r"], gradient_checkpointing=checkpointing,
                                                        vision_forward_only=forward_only)).total


TINY_CASES = [
    (["--checkpointing"], True, True),
    ([], False, True),
    (["--checkpointing", "--today"], True, False),
]


@pytest.mark.trainer
@pytest.mark.parametrize("flags,checkpointing,forward_only", TINY_CASES, ids=["checkpointing", "no-checkpointing", "today"])
def test_plan_flops_match_flop_counter_on_the_tiny_model(flags, checkpointing, forward_only):
    result = measure("flops", "--model", str(TINY_MODEL), "--image", "4x4", "--text", "32", "--image", "3x5", "--text", "20", *flags)
    assert result["padded_length"] == 50  # the second row is padded: padding is part of what is counted
    plan = planned(result, checkpointing, forward_only)
    assert plan == pytest.approx(result["flops"], rel=FLOP_TOLERANCE)


@pytest.mark.trainer
@pytest.mark.real  # make test-real: the 7B's widths on a CPU (~25 s)
def test_plan_flops_match_flop_counter_on_7b_widths():
    """Two decoder layers and two vision blocks of Qwen2-VL-7B's widths, real vocabulary, bf16, LoRA r 64."""
    result = measure("flops", "--model", "7b-widths", "--layers", "2", "--vision-depth", "2",
                     "--image", "4x6", "--text", "40", "--image", "5x5", "--text", "20", "--checkpointing")
    assert result["config"]["text_config"]["hidden_size"] == 3584 and result["config"]["vision_config"]["embed_dim"] == 1280
    assert planned(result, True, True) == pytest.approx(result["flops"], rel=FLOP_TOLERANCE)


@pytest.mark.trainer
@pytest.mark.real  # make test-real: the 7B's saved tensors on a CPU (~13 s each)
@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_activation_bytes_match_a_saved_tensor_count(dropout):
    """One full-width decoder layer with LoRA r 64 on its 7 projections (bf16; CPU keeps dropout's mask in fp32)."""
    result = measure("activations", "--tokens", "128", "--lora-dropout", str(dropout))
    plan = layer_activation_bytes(QWEN7B, Training(lora_dropout=dropout), dropout_mask_bytes=4)
    assert plan == pytest.approx(result["bytes_per_token"], rel=ACTIVATION_TOLERANCE)


# Each family at its published widths, fewer layers: 2 decoder layers, 2 vision blocks (Qwen2.5-VL's second
# block attends over the whole image, its first in windows; Qwen3-VL's first feeds a deepstack merger).
FAMILY_STEPS = [
    ("qwen2.5-vl-7b", ["--full-attention-blocks", "1"]),
    ("qwen3-vl-8b", ["--deepstack-blocks", "0"]),
]


@pytest.mark.trainer
@pytest.mark.families  # make test-families: the new families' measurements (Qwen2-VL's run in make test)
@pytest.mark.parametrize("model,blocks", FAMILY_STEPS, ids=[m for m, _ in FAMILY_STEPS])
def test_plan_flops_match_flop_counter_for_each_family(model, blocks):
    result = measure("flops", "--model", model, "--layers", "2", "--vision-depth", "2", *blocks,
                     "--image", "4x6", "--text", "40", "--image", "5x5", "--text", "20", "--checkpointing")
    shape = shape_from_config(result["config"])
    assert (shape.layers, shape.vision_depth) == (2, 2)
    assert shape.full_attention_blocks == ((1,) if shape.window_patches else ())
    assert shape.deepstack_mergers == (1 if model.startswith("qwen3") else 0)
    assert planned(result, True, True) == pytest.approx(result["flops"], rel=FLOP_TOLERANCE)
    vision = sum(sum(image_flops(shape, h * w, (h, w))) for h, w in result["grids"])
    assert vision == pytest.approx(result["vision_flops"], rel=1e-6)  # the frozen tower: forward only, counted exactly


FAMILIES_TIER = pytest.mark.families  # make test-families runs the new families' measurements; make test Qwen2-VL's
VISION_FORWARDS = [
    pytest.param("7b-widths", ["--vision-depth", "2"], id="7b-widths"),
    pytest.param("qwen2.5-vl-7b", ["--vision-depth", "4", "--full-attention-blocks", "1"], id="qwen2.5-vl-7b",  # 3 windowed, 1 full
                 marks=FAMILIES_TIER),
    pytest.param("qwen3-vl-8b", ["--vision-depth", "2", "--deepstack-blocks", "0"], id="qwen3-vl-8b", marks=FAMILIES_TIER),
]


@pytest.mark.trainer
@pytest.mark.parametrize("model,flags", VISION_FORWARDS)
def test_vision_forward_flops_match_flop_counter_for_each_family(model, flags):
    """Two pages of 140 and 63 tokens: big enough that full attention is ~7% of a block's FLOPs, and with
    edge windows cut short (10x14 and 7x9 tokens are not multiples of Qwen2.5-VL's 4-token windows)."""
    result = measure("vision-flops", "--model", model, *flags, "--image", "10x14", "--image", "7x9")
    shape = shape_from_config(result["config"])
    assert result["merged_tokens"] == 140 + 63
    planned_flops = sum(sum(image_flops(shape, h * w, (h, w))) for h, w in result["grids"])
    assert planned_flops == pytest.approx(result["flops"], rel=1e-6)
    if shape.window_patches:  # priced from token counts alone, windows are taken as whole: a bound within 1%
        assert result["flops"] < sum(sum(image_flops(shape, h * w)) for h, w in result["grids"]) < 1.01 * result["flops"]


@pytest.mark.trainer
@pytest.mark.parametrize("model,base", [("7b", "Qwen/Qwen2-VL-7B-Instruct"),
                                        pytest.param("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-2B-Instruct", marks=FAMILIES_TIER),
                                        pytest.param("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", marks=FAMILIES_TIER),
                                        pytest.param("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", marks=FAMILIES_TIER)])
def test_parameter_counts_match_the_meta_device_tree(model, base):
    """The full-size tree transformers builds from the published config, and PEFT's trainable count for the LM-only LoRA."""
    result = measure("params", "--model", model, "--lora-r", "64")
    shape = shape_of(base)
    assert result["total"] == shape.total_params and result["vision"] == shape.vision_params
    assert result["lora_trainable"] == shape.lora_trainable(64, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert result["lora_modules"] == 7 * shape.layers


@pytest.mark.trainer
@pytest.mark.families
@pytest.mark.parametrize("model,base", [("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct"), ("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct")])
def test_activation_bytes_match_a_saved_tensor_count_for_each_family(model, base):
    """One full-width decoder layer of the family (Qwen3-VL's q/k norms keep fp32 copies of q and k)."""
    result = measure("activations", "--model", model, "--tokens", "128", "--lora-dropout", "0.0")
    plan = layer_activation_bytes(shape_of(base), Training(lora_dropout=0.0))
    assert plan == pytest.approx(result["bytes_per_token"], rel=0.01)


def test_a_two_page_row_runs_the_vision_tower_once_per_page():
    """The tower attends within one page: two 1,240-token pages cost two pages' attention, not one 2,480-token page's."""
    shape = shape_of("Qwen/Qwen2-VL-7B-Instruct")
    training = Training(vision_forward_only=True)
    two_pages = Rows((2600,), (2480,), ((1240, 1240),))
    as_one = Rows((2600,), (2480,))
    split = epoch_work(shape, two_pages, 1, False, 1, training).flops
    merged = epoch_work(shape, as_one, 1, False, 1, training).flops
    pages = vision_flops(shape, [1240, 1240], training)
    assert split.vision_forward == pages.vision_forward == 2 * vision_flops(shape, [1240], training).vision_forward
    assert merged.vision_forward > split.vision_forward  # attention grows with the square of one image's tokens
    assert split.lm_forward == merged.lm_forward  # the language model sees the row's tokens either way
    assert two_pages.head(0) == Rows((), (), ())
