"""The tiny recipe through the real Axolotl: training lowers the loss, the merge is complete and exact."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.trainer


def test_run_directory_holds_everything(trained_run):
    for name in ("recipe.yaml", "axolotl.yaml", "data/train.jsonl", "data/val.jsonl", "data/data_report.json",
                 "logs/train.log", "logs/merge.log", "output/adapter_model.safetensors", "train_metrics.json", "status.json"):
        assert (trained_run / name).exists(), name
    status = json.loads((trained_run / "status.json").read_text())
    assert all(status["stages"][s]["state"] == "done" for s in ("prepare", "validate", "train", "merge"))
    assert trained_run.is_symlink() and trained_run.resolve().parent == trained_run.parent


def test_loss_falls(trained_run):
    metrics = json.loads((trained_run / "train_metrics.json").read_text())
    assert len(metrics["losses"]) >= 10
    assert metrics["first_loss"] > 4.0
    assert metrics["final_loss"] < 0.5 * metrics["first_loss"], metrics["losses"]


def test_only_assistant_tokens_are_trained(trained_run):
    """Axolotl logs trainable (unmasked) and total tokens: the system prompt, the 16 visual tokens
    and the question are masked, so well under half of each batch is trained on."""
    log = (trained_run / "logs" / "train.log").read_text(errors="replace")
    trainable = [int(v) for v in re.findall(r"'tokens/trainable': '?(\d+)", log)]
    total = [int(v) for v in re.findall(r"'tokens/total': '?(\d+)", log)]
    assert trainable and len(trainable) == len(total)
    share = sum(trainable) / sum(total)
    assert 0.05 < share < 0.5, share
    assert "Traceback" not in log


def test_merged_model_is_complete_and_equals_base_plus_adapter(trained_run):
    check = json.loads((trained_run / "merge_check.json").read_text())
    assert check["ok"], check
    assert check["architectures"] == ["Qwen2VLForConditionalGeneration"]
    assert check["pixel_limits"] == {"min_pixels": 3136, "max_pixels": 12544}
    assert check["max_abs_diff"] < 1e-4
    assert check["adapter_effect"] > 1e-2, "the adapter must change the logits, or the comparison proves nothing"
    merged = trained_run / "output" / "merged"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "processor_config.json"):
        assert (merged / name).exists(), name


def test_merge_again_is_repeatable(trained_run):
    proc = run_cli("merge", str(trained_run), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "(W: base; worst" in proc.stdout and "merged logits equal base + adapter" in proc.stdout


def test_merge_refuses_a_run_that_did_not_train(tmp_path, trained_run):
    (tmp_path / "recipe.yaml").write_text((trained_run / "recipe.yaml").read_text())
    proc = run_cli("merge", str(tmp_path))
    assert proc.returncode == 1 and "no finished training" in proc.stderr and "Traceback" not in proc.stderr


def test_merged_weights_are_checked_one_by_one(trained_run):
    """Every LoRA target within one ulp of W + scale*B@A, both modules_to_save copied, the rest the base's."""
    check = json.loads((trained_run / "merge_check.json").read_text())
    assert check["dtype"] == "float32"
    assert check["lora_targets"] == 14 and check["modules_to_save"] == 2 and check["untouched_weights"] > 0
    assert check["max_ulp_error"] <= 1.0
    assert check["top1_agree"] == check["top1_checked"] > 0


def test_merge_check_fails_axolotls_memory_efficient_merge(trained_run, tmp_path):
    """Axolotl 0.19's memory_efficient merge drops the trained embed_tokens (and exits 0): the check says so."""
    import shutil

    from vlm3.train.trainer_env import TrainerEnv

    run = tmp_path / "run"
    shutil.copytree(trained_run.resolve(), run, symlinks=True, ignore=shutil.ignore_patterns("merged", "checkpoint-*", "eval"))
    config = (run / "axolotl.yaml").read_text()
    assert "merge_method: legacy" in config
    (run / "axolotl.yaml").write_text(config.replace("merge_method: legacy", "merge_method: memory_efficient"))
    env = TrainerEnv.locate()
    code = env.run_logged([env.axolotl, "merge-lora", "axolotl.yaml", "--lora-model-dir", "output"], run / "merge.log", cwd=run)
    assert code == 0, (run / "merge.log").read_text()[-2000:]
    result = env.run_json(["verify-merge", str(run)])
    assert not result["ok"]
    assert any("embed_tokens.weight equals the base's" in p for p in result["problems"]), result["problems"]
