"""bench/bench_gpu_train.py: a CPU smoke run of its plain engine, and a short 7B run where a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT, TINY_MODEL
from tests.test_tiers import cuda_in_trainer_env


def bench(tmp_path, *args: str, timeout: float = 900) -> dict:
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    out = tmp_path / "bench.json"
    proc = subprocess.run([str(env.python), "-m", "bench.bench_gpu_train", *args, "--out", str(out)], cwd=ROOT,
                          env=env.environ(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.trainer
def test_plain_engine_runs_on_the_tiny_model(tmp_path):
    result = bench(tmp_path, "--model", str(TINY_MODEL), "--device", "cpu", "--steps", "1", "--warmup", "1",
                   "--gradient-accumulation-steps", "2", "--workers", "0")
    assert result["timed_steps"] == 1 and result["samples_per_s"] > 0 and result["tokens_per_s"] > 0
    assert result["plan_flops"] > 0 and result["mfu"] is None  # no card, no MFU
    assert 0 <= result["padding"] < 0.5 and result["data_wait_s"] >= 0
    assert result["final_loss"] == result["final_loss"]  # finite: not NaN


@pytest.mark.gpu
@pytest.mark.skipif(not os.environ.get("VLM3_GPU_TESTS"), reason="needs a CUDA GPU: set VLM3_GPU_TESTS=1 on a machine with one")
@pytest.mark.parametrize("flags", [[], ["--gradient-checkpointing", "--today"]], ids=["recipe", "today"])
def test_short_7b_benchmark_on_a_gpu(tmp_path, flags):
    """Four decoder layers of the 7B at full width, 1 MP pages, a few steps: the numbers are sane."""
    if not cuda_in_trainer_env():
        pytest.skip("the trainer environment's torch sees no CUDA device")
    result = bench(tmp_path, "--model", "7b", "--layers", "4", "--steps", "3", "--warmup", "1", *flags)
    assert result["device"] != "cpu" and result["peak_memory_gib"] > 1
    assert 0 < result["mfu"] < 1, result
    assert result["final_loss"] == result["final_loss"]
