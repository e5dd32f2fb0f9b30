"""Tests that need what this machine lacks, each skipped with its reason: a CUDA GPU, a real Anthropic key.

    VLM3_GPU_TESTS=1 pytest -m gpu tests/test_tiers.py                         # on a machine with CUDA
    VLM3_API_TESTS=1 VLM3_TEST_ANTHROPIC_API_KEY=sk-... pytest -m api tests/test_tiers.py   # spends a few cents

The Anthropic key has its own variable so that a developer's ANTHROPIC_API_KEY never turns
`make test` into paid calls (tests/conftest.py removes it).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.conftest import DEMO_RECIPE, run_cli


def cuda_in_trainer_env() -> bool:
    from vlm3.train.trainer_env import TrainerEnv, TrainerEnvMissing

    try:
        env = TrainerEnv.locate()
    except TrainerEnvMissing:
        return False
    probe = subprocess.run([str(env.python), "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
    return probe.stdout.strip().endswith("True")


def variant_of_demo(tmp_path, **sections) -> str:
    raw = yaml.safe_load(DEMO_RECIPE.read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.gpu
@pytest.mark.skipif(not os.environ.get("VLM3_GPU_TESTS"), reason="needs a CUDA GPU: set VLM3_GPU_TESTS=1 on a machine with one")
def test_tiny_recipe_trains_in_bf16_on_a_gpu(tmp_path, sample_dir):
    """The GPU path of the render (bf16, gradient checkpointing, fused optimizer) through the real Axolotl."""
    if not cuda_in_trainer_env():
        pytest.skip("the trainer environment's torch sees no CUDA device")
    recipe = variant_of_demo(tmp_path, compute={"gpu": "L4"}, train={"epochs": 2, "flash_attention": False})
    proc = run_cli("train", recipe, "--merge", "--runs-root", str(tmp_path / "runs"), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "runs" / "tiny-cpu-demo" / "latest"
    assert yaml.safe_load((run / "axolotl.yaml").read_text())["bf16"] is True
    assert json.loads((run / "merge_check.json").read_text())["ok"]


@pytest.mark.api
@pytest.mark.skipif(not (os.environ.get("VLM3_API_TESTS") and os.environ.get("VLM3_TEST_ANTHROPIC_API_KEY")),
                    reason="needs a real Anthropic key: set VLM3_API_TESTS=1 and VLM3_TEST_ANTHROPIC_API_KEY (spends a few cents)")
def test_real_claude_judges_an_evaluation(tmp_path, sample_dir):
    """The recipe's DeepEval metrics with the real Claude on the demo probes (answers from a loopback server)."""
    from bench.loopback_openai import LoopbackOpenAI

    key = os.environ["VLM3_TEST_ANTHROPIC_API_KEY"]
    with LoopbackOpenAI() as server:
        proc = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--only", "probes",
                       "--out", str(tmp_path / "eval"), "--judge", env={"ANTHROPIC_API_KEY": key}, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr  # 1 only if too many samples stayed unscored
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    judge = summary["judge"]
    assert judge["calls"] > 0 and judge["cost_usd"] > 0
    assert all(m["scored"] > 0 for m in judge["metrics"].values())
    for path in (tmp_path / "eval").rglob("*"):
        if path.is_file():
            assert key not in path.read_bytes().decode(errors="replace")
