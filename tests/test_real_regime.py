"""The regime the 7B recipes run in, on a CPU: bf16, the 7B's structure, LoRA r 64 / alpha 128, the recipe's checkpointing.

    make test-real          # the `real` tier: a few minutes on 2 cores (BENCHMARKS.md has the time)
                            # `make test` runs only the render comparison below (no training)

A tiny Qwen2-VL built with the 7B's structure (vlm3.demo.tiny_model --shape 7b: 7 query heads per key/value
head, mRoPE split 2:3:3 as the 7B's 16:24:24, the 2x2 vision merger, untied embeddings, bf16 weights)
is trained a few steps by the real Axolotl from the config that e30m3_lora.yaml renders, merged by
Axolotl's legacy merge in bf16 and checked by `vlm3.train.trainer_side verify-merge`.

What differs from the 7B run, and why (test_7b_recipes_render_like_the_tier pins the list):
- the model path (the tiny model, not the Hub's 7B);
- the device keys: tf32 (CUDA only), dataloader_num_workers (0 on a CPU: the test process is the
  only core), the optimizer (torch's fused AdamW is the CUDA choice; plain AdamW on a CPU);
- Liger's kernels (`train.liger`: the plugin and its `liger_*` keys) are Triton, GPU only: the CPU
  config leaves them out, so the tier runs the unfused loss the same config runs without Liger;
- the attention implementation would differ for a recipe with `train.flash_attention: true`
  (flash-attention needs CUDA; the CPU runs SDPA); the 7B recipes run SDPA, as this tier does;
- the data: the synthetic sample manual, 16 training and 4 validation rows (the config is the same).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SAMPLE, run_cli
from vlm3.recipe.schema import load_recipe
from vlm3.train.render import render_axolotl_config

TINY_7B = ROOT / ".cache" / "tiny-qwen2-vl-7b-shape"
SEVEN_B = "Qwen/Qwen2-VL-7B-Instruct"
SOURCE_RECIPE = ROOT / "recipes" / "e30m3_lora.yaml"
TRAIN_ROWS, VAL_ROWS = 16, 4  # 16 rows x 3 epochs / 16 per optimizer step = 3 steps

# Keys allowed to differ between a 7B recipe's config and this tier's, by reason.
MODEL_KEYS = {"base_model"}
DEVICE_KEYS = {"tf32", "dataloader_num_workers", "optimizer"}
ATTENTION_KEYS: set[str] = set()  # the 7B recipes use SDPA (attn_implementation: sdpa), which a CPU runs too
LIGER_KEYS = {"liger_fused_linear_cross_entropy", "liger_rms_norm", "liger_layer_norm", "liger_glu_activation", "liger_rope"}


def without_gpu_kernels(config: dict) -> dict:
    """The config less Liger (GPU-only kernels): its plugin entry and its keys."""
    from vlm3.train.render import LIGER_PLUGIN

    return {**{k: v for k, v in config.items() if k not in LIGER_KEYS},
            "plugins": [p for p in config.get("plugins", []) if p != LIGER_PLUGIN]}


def real_regime_recipe(source: Path, base: Path, out: Path) -> Path:
    """The source recipe with the tiny model, the sample manual and a CPU: nothing else changed."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["name"] = "real-regime"
    raw["model"]["base"] = str(base)
    raw["data"] = {
        **raw["data"],
        "train": str(SAMPLE / "training_data" / "vlm_train.jsonl"),
        "val": str(SAMPLE / "training_data" / "vlm_val.jsonl"),
        "images_root": str(SAMPLE / "training_data"),
        "probes": str(SAMPLE / "probes.jsonl"),
        "max_samples": TRAIN_ROWS,
        "max_val_samples": VAL_ROWS,
    }
    raw["compute"] = {"gpu": "cpu"}
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def seven_b_lora_recipes() -> list[Path]:
    """Every recipe that trains the 7B with a bf16 LoRA (the regime this tier reproduces)."""
    found = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        recipe = load_recipe(path)
        if recipe.model.base == SEVEN_B and recipe.train.method == "lora" and recipe.train.precision == "bf16":
            found.append(path)
    return found


@pytest.mark.trainer  # builds the tier's tiny model (vlm3 tiny-model --shape 7b, seconds)
@pytest.mark.parametrize("source", seven_b_lora_recipes(), ids=lambda p: p.name)
def test_7b_recipes_render_like_the_tier(source, tmp_path, sample_dir, tiny_7b):
    """Key by key: a 7B recipe's config and the tier's differ only in model path, device and attention."""
    recipe = load_recipe(source)  # the tier's model is built first: its family is read from its config.json
    seven_b = render_axolotl_config(recipe, base_model=SEVEN_B)
    tier = render_axolotl_config(load_recipe(real_regime_recipe(source, TINY_7B, tmp_path / "r.yaml")), base_model=str(TINY_7B))
    if recipe.train.liger:
        assert LIGER_KEYS <= seven_b.keys() and not LIGER_KEYS & tier.keys()
    seven_b, tier = without_gpu_kernels(seven_b), without_gpu_kernels(tier)
    differing = {key for key in seven_b.keys() | tier.keys() if seven_b.get(key) != tier.get(key)}
    assert differing == MODEL_KEYS | DEVICE_KEYS | ATTENTION_KEYS, {k: (seven_b.get(k), tier.get(k)) for k in differing}
    # The regime itself, as the 7B gets it:
    for config in (seven_b, tier):
        # Checkpointing as the recipe chose it (vlm3 plan: off where the activations fit the card).
        assert config["bf16"] is True and config["gradient_checkpointing"] is recipe.train.gradient_checkpointing
        assert config["adapter"] == "lora" and config["merge_method"] == "legacy"
        assert "vlm3.train.axolotl_plugin.Vlm3Plugin" in config["plugins"]
    assert seven_b["attn_implementation"] == tier["attn_implementation"] == "sdpa"


def safetensors_dtypes(path: Path) -> set[str]:
    """The dtypes in a safetensors file's header (8-byte little-endian length, then JSON)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}


@pytest.fixture(scope="module")
def tiny_7b(sample_dir) -> Path:
    proc = run_cli("tiny-model", "--out", str(TINY_7B), "--shape", "7b")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return TINY_7B


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_7b) -> Path:
    """e30m3_lora.yaml's config trained by Axolotl on a CPU for 3 steps, merged and checked."""
    root = tmp_path_factory.mktemp("real")
    recipe = real_regime_recipe(SOURCE_RECIPE, tiny_7b, root / "recipe.yaml")
    proc = run_cli("train", str(recipe), "--merge", "--runs-root", str(root / "runs"), timeout=1500)
    run = root / "runs" / "real-regime" / "latest"
    assert run.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return run


@pytest.mark.trainer
@pytest.mark.real
def test_tiny_7b_shape_keeps_the_7b_structure(tiny_7b):
    config = json.loads((tiny_7b / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    assert text["num_attention_heads"] // text["num_key_value_heads"] == 28 // 4
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    sections = text["rope_parameters"]["mrope_section"]
    assert sum(sections) == head_dim // 2 and [s * 8 for s in sections] == [16, 24, 24]
    assert config["tie_word_embeddings"] is False and vision["hidden_size"] == text["hidden_size"]
    assert (vision["patch_size"], vision["temporal_patch_size"], vision["spatial_merge_size"], vision["mlp_ratio"]) == (14, 2, 2, 4)
    assert safetensors_dtypes(tiny_7b / "model.safetensors") == {"BF16"}


@pytest.mark.trainer
@pytest.mark.real
def test_bf16_lora_trains_merges_and_passes_the_check(real_run):
    status = json.loads((real_run / "status.json").read_text())
    assert all(status["stages"][s]["state"] == "done" for s in ("prepare", "validate", "train", "merge")), status
    config = yaml.safe_load((real_run / "axolotl.yaml").read_text())
    checkpointing = load_recipe(SOURCE_RECIPE).train.gradient_checkpointing  # as e30m3_lora.yaml chose it
    assert (config["bf16"], config["gradient_checkpointing"], config["lora_r"], config["lora_alpha"]) == (True, checkpointing, 64, 128)
    log = (real_run / "logs" / "train.log").read_text(errors="replace")
    assert "Converting modules to torch.bfloat16" in log  # Axolotl loaded the model in bf16 on the CPU
    assert "Plugin loaded successfully: vlm3.train.axolotl_plugin.Vlm3Plugin" in log
    assert json.loads((real_run / "train_metrics.json").read_text())["steps"] == 3

    check = json.loads((real_run / "merge_check.json").read_text())
    assert check["ok"], check["problems"]
    assert check["dtype"] == "bfloat16"
    assert check["lora_targets"] == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert check["max_ulp_error"] <= 1.0
    assert check["top1_checked"] > 0.8 * check["positions"] and check["top1_agree"] == check["top1_checked"]
    # bf16 rounding is visible (the old float32 tolerance of 1e-4 failed every bf16 merge) and the adapter matters.
    assert 1e-4 < check["max_abs_diff"] <= check["logit_tolerance"] < check["adapter_effect"]
    assert safetensors_dtypes(real_run / "output" / "merged" / "model.safetensors") == {"BF16"}


@pytest.mark.trainer
@pytest.mark.real
def test_merge_check_fails_a_merge_that_dropped_a_lora_target(real_run, tmp_path):
    """The merged v_proj of layer 1 replaced by the base's: the check names that module."""
    from vlm3.train.trainer_env import TrainerEnv

    copy = tmp_path / "run"
    shutil.copytree(real_run.resolve(), copy, symlinks=True)
    merged = copy / "output" / "merged" / "model.safetensors"
    script = (
        "import sys; from safetensors.torch import load_file, save_file\n"
        "merged, base = load_file(sys.argv[1]), load_file(sys.argv[2])\n"
        "key = [k for k in merged if k.endswith('layers.1.self_attn.v_proj.weight')][0]\n"
        "merged[key] = base[key]; save_file(merged, sys.argv[1], metadata={'format': 'pt'})\n"
    )
    env = TrainerEnv.locate()
    subprocess.run([str(env.python), "-c", script, str(merged), str(TINY_7B / "model.safetensors")], check=True, env=env.environ())
    result = env.run_json(["verify-merge", str(copy)])
    assert not result["ok"]
    assert any("layers.1.self_attn.v_proj.weight equals the base weight" in p for p in result["problems"]), result["problems"]
