"""Rendering recipes to Axolotl configs, pinned by golden files (`make golden` regenerates them)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from data_adapters.pipeline import read_pipeline, to_axolotl_row
from tests.conftest import ROOT, TINY_MODEL
from vlm3.recipe.schema import load_recipe, parse_recipe
from vlm3.recipe.families import FAMILIES
from vlm3.train.render import render_axolotl_config

lora_target_regex = FAMILIES["qwen2_vl"].lora_regex  # the tiny model's family

GOLDEN = ROOT / "tests" / "golden"
UPDATE = bool(os.environ.get("VLM3_UPDATE_GOLDEN"))
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run `make golden` and review the diff"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed: run `make golden` and review the diff"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_rendered_config_matches_golden(path: Path):
    config = render_axolotl_config(load_recipe(path), base_model="BASE_MODEL")
    check_golden(f"axolotl_{path.stem}.yaml", yaml.safe_dump(config, sort_keys=False))


def test_converted_rows_match_golden(sample_dir):
    rows, problems = read_pipeline(sample_dir / "training_data" / "vlm_train.jsonl")
    assert not problems
    multi = next(r for r in rows if len(r.turns) > 2)
    picked = rows[:3] + [multi]
    text = "".join(json.dumps(to_axolotl_row(r, "IMAGES"), ensure_ascii=False) + "\n" for r in picked)
    check_golden("converted_rows.jsonl", text)


LANGUAGE = "model.language_model.layers.{}.{}"
MODULES = [
    ("model.language_model.layers.0.self_attn.q_proj", True),
    ("model.language_model.layers.27.mlp.down_proj", True),
    ("model.language_model.layers.3.self_attn.o_proj", True),
    ("model.visual.blocks.0.attn.qkv", False),
    ("model.visual.merger.mlp.0", False),
    ("lm_head", False),
    ("model.language_model.embed_tokens", False),
]


@pytest.mark.parametrize("name,hit", MODULES)
def test_lora_targets_the_language_model_only(name, hit):
    regex = lora_target_regex(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert bool(re.fullmatch(regex, name)) == hit


def test_lora_target_subset_and_vision_option():
    regex = lora_target_regex(["q_proj", "v_proj"])
    assert re.fullmatch(regex, "model.language_model.layers.1.self_attn.v_proj")
    assert not re.fullmatch(regex, "model.language_model.layers.1.self_attn.k_proj")
    assert not re.fullmatch(regex, "model.language_model.layers.1.mlp.up_proj")
    both = lora_target_regex(["q_proj"], include_vision_tower=True)
    assert re.fullmatch(both, "model.visual.blocks.3.attn.qkv")
    with pytest.raises(ValueError, match="unknown module"):
        lora_target_regex(["qkv_proj"])


CASES = [
    ({"compute": {"gpu": "cpu"}}, {"bf16": False, "fp16": False, "gradient_checkpointing": True, "optimizer": "adamw_torch",
                                   "attn_implementation": "sdpa", "dataloader_num_workers": 0}),
    ({"compute": {"gpu": "cpu"}, "train": {"precision": "bf16", "flash_attention": True}},
     {"bf16": True, "attn_implementation": "sdpa", "plugins": ["vlm3.train.axolotl_plugin.Vlm3Plugin"]}),
    ({}, {"bf16": True, "gradient_checkpointing": True, "attn_implementation": "sdpa", "adapter": "lora", "merge_method": "legacy",
          "dataloader_num_workers": 4, "plugins": ["vlm3.train.axolotl_plugin.Vlm3Plugin"]}),
    ({"train": {"flash_attention": True}}, {"attn_implementation": "flash_attention_2", "flash_attention": None}),
    # The vision tower and the output head stay out of 4-bit: the served (merged) tower is the one training saw.
    ({"train": {"method": "qlora"}}, {"adapter": "qlora", "load_in_4bit": True,
                                      "bnb_config_kwargs": {"llm_int8_skip_modules": ["model.visual", "lm_head"]}}),
    ({"train": {"method": "lora"}}, {"load_in_4bit": None, "bnb_config_kwargs": None}),
    # The best checkpoint by eval loss is kept and loaded at the end (output/ holds it): merged, served.
    ({}, {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False}),
    ({"train": {"keep_best": False}}, {"load_best_model_at_end": None, "metric_for_best_model": None}),
    ({"train": {"method": "full"}}, {"adapter": None, "lora_r": None}),
    ({"images": {"max_pixels": 602112}}, {"processor_kwargs": {"min_pixels": 3136, "max_pixels": 602112}}),
    ({"axolotl": {"sequence_len": 8192, "special": 1}}, {"sequence_len": 8192, "special": 1}),
    ({"train": {"method": "full", "deepspeed": "zero3"}, "compute": {"gpu": "H100:4"}}, {"adapter": None}),
    ({}, {"group_by_length": True, "plugins": ["vlm3.train.axolotl_plugin.Vlm3Plugin"], "liger_fused_linear_cross_entropy": None}),
    ({"train": {"liger": True}}, {"plugins": ["vlm3.train.axolotl_plugin.Vlm3Plugin", "axolotl.integrations.liger.LigerPlugin"],
                                  "liger_fused_linear_cross_entropy": True, "liger_rope": True}),
    ({"train": {"liger": True}, "compute": {"gpu": "cpu"}}, {"plugins": ["vlm3.train.axolotl_plugin.Vlm3Plugin"], "liger_rms_norm": None}),
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_render_rules(raw, expected):
    config = render_axolotl_config(parse_recipe({"name": "t", **raw}), base_model="B")
    for key, value in expected.items():
        assert config.get(key) == value, key
    for key in ("lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel"):
        if config.get("adapter"):
            assert config[key] is False  # Axolotl 0.19 cannot find Qwen2-VL's attention class for them


def test_deepspeed_renders_zero3_inline():
    config = render_axolotl_config(parse_recipe({"name": "t", "train": {"method": "full", "deepspeed": "zero3"}, "compute": {"gpu": "H100:4"}}), "B")
    assert config["deepspeed"]["zero_optimization"]["stage"] == 3
    assert config["deepspeed"]["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.trainer
def test_lora_regex_matches_the_real_module_names():
    """Against the tiny model's real module tree: every LM projection, nothing in the vision tower."""
    import subprocess

    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    code = (
        "import json,sys; from transformers import AutoModelForImageTextToText as M;"
        f"m=M.from_pretrained({str(TINY_MODEL)!r}); print(json.dumps([n for n,_ in m.named_modules()]))"
    )
    names = json.loads(subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, env=env.environ(), check=True).stdout.splitlines()[-1])
    regex = lora_target_regex(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    hits = [n for n in names if re.fullmatch(regex, n)]
    assert len(hits) == 2 * 7  # 2 layers x 7 projections
    assert not any("visual" in n for n in hits)


@pytest.mark.trainer
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_axolotl_schema_accepts_every_rendered_recipe(tmp_path, path):
    from vlm3.train.trainer_env import TrainerEnv

    recipe = load_recipe(path)
    config_file = tmp_path / "axolotl.yaml"
    config_file.write_text(yaml.safe_dump(render_axolotl_config(recipe, base_model=str(TINY_MODEL))))
    result = TrainerEnv.locate().run_json(["validate-config", str(config_file), "--gpu", recipe.compute.gpu_type, "--gpu-count", str(max(recipe.compute.gpu_count, 1))])
    assert result == {"ok": True, "errors": []}


@pytest.mark.trainer
def test_axolotl_schema_errors_are_reported(tmp_path):
    from vlm3.train.trainer_env import TrainerEnv

    config = render_axolotl_config(parse_recipe({"name": "t", "compute": {"gpu": "cpu"}, "axolotl": {"micro_batch_size": "four"}}), str(TINY_MODEL))
    config_file = tmp_path / "axolotl.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = TrainerEnv.locate().run_json(["validate-config", str(config_file)])
    assert not result["ok"]
    assert any(e["field"] == "micro_batch_size" for e in result["errors"])


@pytest.mark.parametrize("key,overridden,field", [
    ("micro_batch_size", set(), "train.micro_batch_size"),
    ("lora_r", set(), "train.lora.r"),
    ("micro_batch_size", {"micro_batch_size"}, "axolotl.micro_batch_size"),
    ("datasets.0.path", set(), "data.train"),
    ("some_new_key", set(), "axolotl.some_new_key"),
])
def test_axolotl_errors_map_back_to_recipe_fields(key, overridden, field):
    from vlm3.train.render import recipe_field

    assert recipe_field(key, overridden) == field
