"""QLoRA serves what it trained: the vision tower and output head stay out of 4-bit, and the adapter is merged
into the dequantized NF4 base, not the original one.

The run is real: Axolotl trains a QLoRA adapter on the tiny Qwen2-VL on this CPU (bitsandbytes' CPU backend),
`vlm3.train.steps.merge_run` dequantizes and merges, and bench/bench_qlora_merge.py measures the served model against
bitsandbytes' own 4-bit forward (what training computed).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, TINY_MODEL
from vlm3.train.trainer_side import NF4_RECORD, nf4_base_dir, nf4_base_problems

# Independent of vlm3: bitsandbytes' own NF4 round trip with the settings Axolotl 0.19 passes transformers
# (blocksize 64, double quantization), against what output/nf4_base holds; the rest of the base untouched.
NF4_SCRIPT = r"""
import json, sys, torch
import bitsandbytes.functional as F
from transformers import AutoModelForImageTextToText
def weights(path):  # module names, whatever layout the checkpoint was saved in
    return AutoModelForImageTextToText.from_pretrained(path, dtype="auto").state_dict()
base, nf4 = weights(sys.argv[1]), weights(sys.argv[2])
quantized = set(json.load(open(sys.argv[2] + "/vlm3_dequantized.json"))["quantized_modules"])
out = {"rounded": 0, "rounded_equal": 0, "changed": 0, "kept": 0, "kept_equal": 0, "missing": sorted(set(base) ^ set(nf4))}
for key, weight in base.items():
    if key.endswith(".weight") and key.removesuffix(".weight") in quantized:
        packed, state = F.quantize_4bit(weight.contiguous(), blocksize=64, quant_type="nf4", compress_statistics=True)
        out["rounded"] += 1
        out["rounded_equal"] += torch.equal(F.dequantize_4bit(packed, state).to(weight.dtype), nf4[key])
        out["changed"] += not torch.equal(weight, nf4[key])
    else:
        out["kept"] += 1
        out["kept_equal"] += torch.equal(weight, nf4[key])
print(json.dumps(out))
"""


def trainer_python(*args: str) -> dict:
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    proc = subprocess.run([str(env.python), *args], cwd=ROOT, env=env.environ(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    from bench.bench_qlora_merge import build_run

    run, check = build_run(tmp_path_factory.mktemp("qlora"), TINY_MODEL, epochs=3)
    return run, check


@pytest.fixture(scope="module")
def measured(qlora_run) -> dict:
    run, _ = qlora_run
    return trainer_python("-m", "bench.bench_qlora_merge", "--measure", str(run.path), "--examples", "6")


@pytest.mark.trainer
@pytest.mark.real  # the QLoRA recipe's regime; `make test-real`
def test_the_merge_check_compares_against_the_dequantized_nf4_base(qlora_run):
    run, check = qlora_run
    assert check["ok"], check["problems"]
    assert check["reference"] == "dequantized NF4 base + adapter"
    assert check["lora_targets"] == 14 and check["max_ulp_error"] <= 1.0
    assert run.stage_done("merge")


@pytest.mark.trainer
@pytest.mark.real  # the QLoRA recipe's regime; `make test-real`
def test_the_served_model_computes_what_training_computed(measured):
    served, plain = measured["merged_vs_trained"], measured["plain_merge_vs_trained"]
    # fp32 end to end: the merged folder matches bitsandbytes' 4-bit forward + adapter to float32 round-off ...
    assert served["top1_agree"] == served["positions"] > 100
    assert served["relative"] < 1e-5
    # ... where folding the adapter into the original base moves the logits by NF4's rounding of the base.
    assert plain["relative"] > 1000 * served["relative"]
    assert measured["nf4_rounding_over_update"] > 0.01


@pytest.mark.trainer
@pytest.mark.real  # the QLoRA recipe's regime; `make test-real`
def test_only_the_language_models_projections_were_quantized_and_nf4_base_holds_their_round_trip(qlora_run):
    run, _ = qlora_run
    record = json.loads((nf4_base_dir(run.path) / NF4_RECORD).read_text())
    layers = json.loads((TINY_MODEL / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert len(record["quantized_modules"]) == 7 * layers
    assert all(m.startswith("model.language_model.layers.") for m in record["quantized_modules"])
    assert record["quantization"]["llm_int8_skip_modules"] == ["model.visual", "lm_head"]  # Axolotl passed them on
    weights = trainer_python("-c", NF4_SCRIPT, str(TINY_MODEL), str(nf4_base_dir(run.path)))
    assert weights["missing"] == []
    assert weights["rounded"] == 7 * layers == weights["rounded_equal"] == weights["changed"]
    assert weights["kept"] > 0 and weights["kept_equal"] == weights["kept"]  # vision tower, embeddings, head, norms, biases
    merged = json.loads((run.merged_dir / "config.json").read_text())
    assert "quantization_config" not in merged  # a plain checkpoint: vLLM loads it as bf16/fp32 weights


def test_a_qlora_merge_without_its_recorded_nf4_base_is_refused(tmp_path):
    config = {"base_model": "/models/qwen", "load_in_4bit": True}
    assert "is missing or unreadable" in nf4_base_problems(tmp_path, config)[0]
    folder = nf4_base_dir(tmp_path)
    folder.mkdir(parents=True)
    record = {"base_model": "/models/other", "quantized_modules": ["model.visual.blocks.0.attn.qkv", "lm_head"]}
    (folder / NF4_RECORD).write_text(json.dumps(record))
    problems = nf4_base_problems(tmp_path, config)
    assert any("dequantized from /models/other" in p for p in problems)
    assert any("2 module(s) of the vision tower or output head were quantized" in p for p in problems)
    (folder / NF4_RECORD).write_text(json.dumps({"base_model": "/models/qwen", "quantized_modules": []}))
    assert any("lists no quantized module" in p for p in nf4_base_problems(tmp_path, config))
    record = {"base_model": "/models/qwen", "quantized_modules": ["model.language_model.layers.0.mlp.up_proj"]}
    (folder / NF4_RECORD).write_text(json.dumps(record))
    assert nf4_base_problems(tmp_path, config) == []
