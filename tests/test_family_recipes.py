"""One recipe key picks the family: model.base's config decides, and what the family cannot do is refused at validate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data_adapters.tokens import visual_tokens
from vlm3.recipe.families import FAMILIES, KNOWN_CONFIGS, FamilyError, family_of
from vlm3.recipe.schema import RecipeError, load_recipe, parse_recipe
from vlm3.train.render import render_axolotl_config
from vlm3.serve.vllm import vllm_argv

ROOT = Path(__file__).resolve().parent.parent
QWEN25 = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN3 = "Qwen/Qwen3-VL-8B-Instruct"
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def recipe(base: str, **sections):
    return parse_recipe({"name": "t", "model": {"base": base}, **sections})


def model_folder(tmp_path: Path, config: dict | str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


@pytest.mark.parametrize("base, family", [("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl"), (QWEN25, "qwen2_5_vl"), (QWEN3, "qwen3_vl")])
def test_a_known_hub_id_reads_its_published_config(base, family):
    assert family_of(base).name == family == KNOWN_CONFIGS[base]["model_type"]
    assert KNOWN_CONFIGS[base]["architectures"] == [FAMILIES[family].architecture]


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_a_local_folder_is_read_from_its_config_json_not_its_name(tmp_path, model_type):
    folder = model_folder(tmp_path, {"model_type": model_type})  # the folder is called "model": the name says nothing
    assert family_of(str(folder)) is FAMILIES[model_type]


@pytest.mark.parametrize("config, says", [
    ({"model_type": "llava"}, "model_type 'llava' is not a family vlm3 trains"),
    ("{not json", "is not readable JSON"),
    ("[1, 2]", "is not a JSON object"),
])
def test_an_unreadable_or_foreign_config_is_refused_by_name(tmp_path, config, says):
    folder = model_folder(tmp_path, config)
    with pytest.raises(RecipeError) as info:
        recipe(str(folder))
    assert says in str(info.value) and str(folder) in str(info.value)


def test_an_unknown_hub_id_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing downloaded
    with pytest.raises(RecipeError) as info:
        recipe("Qwen/Qwen9-VL-1B")
    assert "not a Hub model vlm3 knows" in str(info.value) and "hf download" in str(info.value)


def test_a_downloaded_hub_config_is_read_from_the_hf_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--Acme--Manual-VL" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert family_of("Acme/Manual-VL").name == "qwen2_5_vl"


def test_a_local_model_not_built_yet_validates_and_fails_where_it_is_used(tmp_path):
    missing = tmp_path / "not-built"
    r = recipe(str(missing))  # validate: the family is read once the folder exists
    with pytest.raises(FamilyError) as info:
        r.family
    assert info.value.missing_folder and "make tiny-model" in str(info.value)
    proc = subprocess.run([sys.executable, "-m", "vlm3.cli.main", "validate", str(ROOT / "recipes" / "tiny_cpu_demo.yaml")],
                          cwd=tmp_path, capture_output=True, text=True)  # from a folder without .cache/: not built there
    assert proc.returncode == 0 and "family read once it exists" in proc.stdout, proc.stdout + proc.stderr


def test_each_family_renders_its_own_template_and_turn_markers():
    qwen2, qwen25, qwen3 = (render_axolotl_config(recipe(b), b) for b in ("Qwen/Qwen2-VL-7B-Instruct", QWEN25, QWEN3))
    assert qwen2["chat_template"] == qwen25["chat_template"] == "qwen2_vl" and "role_boundaries" not in qwen25
    # Qwen3-VL: the checkpoint's own template (what vLLM serves), with the ChatML turn markers so Axolotl trains
    # the assistant turns only (its fallback strategy has none built in).
    assert qwen3["chat_template"] == "tokenizer_default"
    assert {b["role"]: (b["start"], b["end"]) for b in qwen3["role_boundaries"]} == {
        role: (f"<|im_start|>{role}\n", "<|im_end|>") for role in ("system", "user", "assistant")}
    for config in (qwen2, qwen25, qwen3):
        assert config["lora_qkv_kernel"] is config["lora_o_kernel"] is config["lora_mlp_kernel"] is False


# Module names as each family's transformers 5.16 tree spells them (the meta-device tests count them all).
VISION_NAMES = {
    "qwen2_vl": ["model.visual.blocks.0.attn.qkv", "model.visual.blocks.3.mlp.fc1", "model.visual.blocks.3.mlp.fc2"],
    "qwen2_5_vl": ["model.visual.blocks.0.attn.proj", "model.visual.blocks.7.mlp.gate_proj", "model.visual.blocks.7.mlp.down_proj"],
    "qwen3_vl": ["model.visual.blocks.0.attn.qkv", "model.visual.blocks.2.mlp.linear_fc1", "model.visual.blocks.2.mlp.linear_fc2"],
}
LM_NAMES = ["model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.27.mlp.down_proj"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_lora_patterns_keep_to_the_language_model_unless_the_tower_is_asked_for(name):
    family = FAMILIES[name]
    lm_only, with_tower = family.lora_regex(ALL), family.lora_regex(ALL, include_vision_tower=True)
    assert all(re.fullmatch(lm_only, n) for n in LM_NAMES)
    assert not any(re.fullmatch(lm_only, n) for n in VISION_NAMES[name])  # Qwen2.5-VL's tower has gate/up/down_proj too
    assert all(re.fullmatch(with_tower, n) for n in VISION_NAMES[name] + LM_NAMES)
    other_mlps = [n for other, names in VISION_NAMES.items() if other != name for n in names if ".mlp." in n]
    assert not any(re.fullmatch(with_tower, n) for n in other_mlps)  # each family's own vision MLP names


def test_the_family_recipes_differ_from_the_qwen2_recipe_only_where_the_family_does():
    base, qwen25, qwen3 = (load_recipe(ROOT / "recipes" / f) for f in ("e30m3_lora.yaml", "e30m3_qwen25vl_lora.yaml", "e30m3_qwen3vl_lora.yaml"))
    assert (qwen25.family.name, qwen3.family.name) == ("qwen2_5_vl", "qwen3_vl")
    for other in (qwen25, qwen3):
        assert other.train == base.train and other.data == base.data and other.compute == base.compute
        assert other.served_name != base.served_name  # two endpoints side by side for `vlm3 compare`
    assert qwen25.images == base.images
    # Qwen3-VL's cap is chosen for the same visual tokens per page as the Qwen2-VL recipes (32-px tokens, not 28).
    page = (1700, 2200)
    assert visual_tokens(*page, qwen3.images.min_pixels, qwen3.images.max_pixels, qwen3.family.factor) == \
        visual_tokens(*page, base.images.min_pixels, base.images.max_pixels, base.family.factor) == 1240
    assert visual_tokens(*page, base.images.min_pixels, base.images.max_pixels, qwen3.family.factor) < 1000  # the cap unchanged
    flags = vllm_argv(qwen3, "/m")
    assert json.loads(flags[flags.index("--mm-processor-kwargs") + 1]) == {"min_pixels": 65536, "max_pixels": 1310720}


@pytest.mark.parametrize("base, sections, says", [
    (QWEN3, {"images": {"min_pixels": 1000}}, "images.min_pixels 1000 is below one Qwen3-VL visual token (32x32 = 1024 pixels)"),
    (QWEN25, {"axolotl": {"lora_qkv_kernel": True}}, "axolotl.lora_qkv_kernel: Axolotl 0.19's fused LoRA kernels cannot find Qwen2.5-VL's"),
    ("Qwen/Qwen2-VL-7B-Instruct", {"axolotl": {"lora_mlp_kernel": True}}, "cannot find Qwen2-VL's attention class"),
    (QWEN25, {"axolotl": {"lora_target_linear": True}}, "Qwen2.5-VL's vision tower included"),
    (QWEN3, {"axolotl": {"role_boundaries": []}}, "without them it trains on the questions too"),
    (QWEN25, {"axolotl": {"chat_template": "tokenizer_default"}}, "Qwen2.5-VL trains with 'qwen2_vl'"),
    (QWEN3, {"axolotl": {"plugins": ["axolotl.integrations.liger.LigerPlugin"]}}, "cannot read Qwen3-VL's role_boundaries"),
])
def test_what_the_pinned_versions_cannot_do_is_refused_at_validate(base, sections, says):
    with pytest.raises(RecipeError) as info:
        recipe(base, **sections)
    assert says in str(info.value)


def test_qwen3_vl_may_use_the_kernels_axolotl_has_for_it():
    assert recipe(QWEN3, axolotl={"lora_qkv_kernel": True}).family.name == "qwen3_vl"


def test_every_problem_is_its_own_line():
    with pytest.raises(RecipeError) as info:
        recipe(QWEN25, axolotl={"lora_qkv_kernel": True, "lora_o_kernel": True})
    lines = str(info.value).splitlines()
    assert sum(line.strip().startswith("axolotl.lora_") for line in lines) == 2, lines
