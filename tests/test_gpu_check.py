"""bench/gpu_check.py, the prepared GPU check (issue 22, item 5): its CPU dry run end to end, its limits without torch.

The GPU run itself (one H100, no network, under 9 minutes) is `bash bench/gpu_check.sh`; BENCHMARKS.md
("Training speed on a GPU") quotes its JSON. Here the same stages run at toy size on the CPU, with Axolotl
hidden as the device image lacks it, and the JSON is checked field by field.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402  (bench/ is not a package path the tests import from otherwise)

RESULT_FIELDS = {"device", "layers", "vision_depth", "parameters", "trainable_parameters", "grid", "micro_batch_size",
                 "gradient_accumulation_steps", "timed_steps", "seconds", "build_seconds", "step_seconds", "samples_per_s",
                 "tokens_per_s", "padding", "plan_flops", "achieved_tflops", "peak_tflops", "mfu", "peak_memory_gib",
                 "vision_forward_calls", "vision_forward_s", "vision_time_share", "vision_plan_flops_share", "data_wait_s",
                 "data_wait_fraction", "final_loss", "loss_finite", "axolotl_stand_in", "versions"}


def check(tmp_path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").exists()
    return proc, report


@pytest.mark.trainer
@pytest.mark.real  # the GPU check's dry run at toy size; `make test-real`, beside the 7B regime it measures
def test_cpu_smoke_runs_every_stage_and_writes_the_quoted_fields(tmp_path):
    from vlm3.train.trainer_env import TrainerEnv

    started = time.perf_counter()
    proc, report = check(tmp_path, "--cpu-smoke", "--python", str(TrainerEnv.locate().python))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.perf_counter() - started < 180  # ~25 s alone; the shared box can be loaded
    assert report["mode"] == "cpu-smoke" and report["ok"] is True and report["hidden_packages"] == ["axolotl"]
    stages = report["stages"]
    assert list(stages) == ["wheels", "probe", "train_recipe", "train_today", "train_liger", "vllm_smoke"]
    assert stages["probe"]["status"] == "ok" and stages["probe"]["result"]["imports"]["vlm3.plan.estimate"] == "ok"
    assert stages["probe"]["result"]["matmul_bf16_tflops"] > 0
    for name, fix in (("train_recipe", True), ("train_today", False)):
        stage = stages[name]
        assert stage["status"] == "ok" and stage["timeout_s"] <= stage["cap_s"], stage
        result = stage["result"]
        assert RESULT_FIELDS <= set(result), RESULT_FIELDS - set(result)
        assert result["vision_fix"] is fix and result["gradient_checkpointing"] is not fix
        assert result["device"] == "cpu" and result["mfu"] is None and result["peak_memory_gib"] is None
        assert result["tokens_per_s"] > 0 and result["plan_flops"] > 0 and result["loss_finite"]
        assert 0 < result["vision_time_share"] < 1 and 0 < result["vision_plan_flops_share"] < 1
        assert result["vision_forward_calls"] == result["timed_steps"] * result["gradient_accumulation_steps"]
        assert len(result["step_seconds"]) == result["timed_steps"]
        assert result["axolotl_stand_in"] is True  # the plugin imported as on the device image, without Axolotl
    # The tower hooked (today) is a larger share of the planned work than forward-only (the fix).
    assert stages["train_today"]["result"]["vision_plan_flops_share"] > stages["train_recipe"]["result"]["vision_plan_flops_share"]
    assert stages["train_liger"]["status"] == "skipped" and "CPU" in stages["train_liger"]["reason"]
    assert stages["vllm_smoke"]["status"] == "skipped" and "64 MiB" in stages["vllm_smoke"]["reason"]
    summary = report["summary"]
    assert summary["recipe"]["tokens_per_s"] == stages["train_recipe"]["result"]["tokens_per_s"]
    assert summary["recipe_vs_today_tokens_per_s"] > 0 and summary["liger"] is None
    assert summary["vllm_smoke"].startswith("skipped: ")


def test_a_spent_budget_skips_every_stage_and_still_writes_the_json(tmp_path):
    proc, report = check(tmp_path, "--budget-s", "1", "--python", sys.executable, timeout=60)
    assert proc.returncode == 1 and report["ok"] is False
    for name in ("probe", "train_recipe", "train_today", "train_liger", "vllm_smoke"):
        assert report["stages"][name]["status"] == "skipped", report["stages"][name]
    assert "out of budget" in report["stages"]["train_recipe"]["reason"]


def test_a_hung_stage_is_killed_with_its_process_group(tmp_path):
    log = gpu_check.Log(tmp_path / "log")
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    started = time.perf_counter()
    code, seconds = gpu_check.run_child([sys.executable, "-c", child], 1.5, log, env=None)
    assert code is None and seconds < 10 and time.perf_counter() - started < 10


def test_the_gpu_plan_fits_nine_minutes():
    """The stages' caps may add up to more than the budget (each starts only with its least time left), but the
    budget and gpu_check.sh's outer timeout stay under 9 minutes."""
    plan = gpu_check.stage_plan(cpu_smoke=False)
    assert {s["name"] for s in plan} == {"probe", "train_recipe", "train_today", "train_liger", "vllm_smoke"}
    assert gpu_check.BUDGET_S <= 520
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    assert "timeout -k 10 525 " in script and 525 + 10 < 9 * 60
    recipe = next(s for s in plan if s["name"] == "train_recipe")["flags"]
    assert recipe[recipe.index("--model") + 1] == "7b" and "--gradient-checkpointing" not in recipe
