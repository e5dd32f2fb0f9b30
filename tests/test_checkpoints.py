"""Any saved checkpoint can be merged, checked, served and evaluated; the best one by eval loss is kept and merged.

On the demo run (the real Axolotl training of tests/conftest.py: eval and save every 100 steps, save_total_limit 3,
the last step's weights kept) and on a short run of the demo recipe with the default keep_best.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEMO_RECIPE, ROOT, run_cli
from vlm3.recipe.runs import RunDir, RunError

pytestmark = pytest.mark.trainer


def trainer_state(run) -> dict:
    newest = max(RunDir(run).checkpoints())
    return json.loads((run / "output" / f"checkpoint-{newest}" / "trainer_state.json").read_text())


SAME_TENSORS = r"""
import sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
print("same" if a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a) else "different")
"""


def same_tensors(a, b) -> bool:
    """Whether two safetensors files hold the same tensors (read in the trainer environment, which has safetensors)."""
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    proc = subprocess.run([str(env.python), "-c", SAME_TENSORS, str(a), str(b)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip() == "same"


@pytest.fixture(scope="module")
def best_run(tmp_path_factory, sample_dir) -> Path:
    """The demo recipe with the default keep_best: 10 epochs, evaluated and saved every 8 steps, one checkpoint kept."""
    root = tmp_path_factory.mktemp("best")
    raw = yaml.safe_load(DEMO_RECIPE.read_text())
    raw["model"]["base"] = str(ROOT / raw["model"]["base"])
    raw["data"] = {k: str(ROOT / v) for k, v in raw["data"].items()}
    raw["train"].update(epochs=10, eval_steps=8, save_steps=8, save_total_limit=1, logging_steps=4)
    raw["train"].pop("keep_best")
    (root / "best.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("train", str(root / "best.yaml"), "--runs-root", str(root / "runs"), "--merge", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "runs" / "tiny-cpu-demo" / "latest"


def test_the_best_checkpoint_by_eval_loss_is_kept_and_is_what_the_run_merged(best_run):
    state = trainer_state(best_run)
    evals = [(e["eval_loss"], e["step"]) for e in state["log_history"] if "eval_loss" in e]
    best_loss, best_step = min(evals)
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    best = best_run / "output" / f"checkpoint-{best_step}"
    assert best.is_dir()  # kept though save_total_limit is 1
    assert same_tensors(best_run / "output" / "adapter_model.safetensors", best / "adapter_model.safetensors")
    check = json.loads((best_run / "merge_check.json").read_text())
    assert f"the best checkpoint by eval loss, checkpoint-{best_step}" in check["weights"]
    report = json.loads((best_run / "train_report.json").read_text())
    assert f"checkpoint-{best_step}" in report["kept"] and report["best_checkpoint"] == f"output/checkpoint-{best_step}"
    assert not any("the kept weights are the last step's" in w for w in report["warnings"])


def test_a_saved_checkpoint_merges_with_its_own_check_and_a_killed_one_is_refused(trained_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(trained_run, run_path, symlinks=True)
    run = RunDir(run_path)
    other = min(run.checkpoints())  # the demo keeps the last step's weights (keep_best: false): an earlier step differs
    proc = run_cli("merge", str(run_path), "--checkpoint", str(other))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"merged output/checkpoint-{other} (asked for with --checkpoint" in proc.stdout
    assert f"vlm3 eval {run_path} --checkpoint {other}" in proc.stdout
    check = json.loads((run_path / "output" / f"checkpoint-{other}" / "merge_check.json").read_text())
    assert check["ok"] and check["lora_targets"] > 0
    merged = run.checked_merged_dir(other)
    assert merged == run_path / "output" / f"checkpoint-{other}" / "merged"
    assert not same_tensors(merged / "model.safetensors", run_path / "output" / "merged" / "model.safetensors")  # other weights
    assert json.loads((run_path / "merge_check.json").read_text())["ok"]  # the run's own merge is untouched
    run.mark_stage(f"merge-checkpoint-{other}", "running")  # as a kill during the merge leaves it
    with pytest.raises(RunError, match=f"interrupted.*vlm3 merge {run_path} --checkpoint {other}"):
        run.checked_merged_dir(other)
    assert run.checked_merged_dir() == run_path / "output" / "merged"


def test_a_checkpoint_that_was_not_saved_is_named_with_the_saved_ones(trained_run):
    proc = run_cli("merge", str(trained_run), "--checkpoint", "7")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    saved = ", ".join(str(s) for s in RunDir(trained_run).checkpoints())
    assert f"has no output/checkpoint-7 (saved checkpoints: {saved})" in proc.stdout + proc.stderr


def test_eval_of_a_checkpoint_serves_its_checked_merge_into_its_own_folder(trained_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(trained_run, run_path, symlinks=True)
    step = min(RunDir(run_path).checkpoints())
    refused = run_cli("eval", str(run_path), "--checkpoint", str(step), "--only", "probes", "--no-judge")
    assert refused.returncode != 0 and f"run `vlm3 merge {run_path} --checkpoint {step}` first" in refused.stdout + refused.stderr
    assert not (run_path / "eval" / f"checkpoint-{step}").exists()
    assert run_cli("merge", str(run_path), "--checkpoint", str(step)).returncode == 0
    proc = run_cli("eval", str(run_path), "--checkpoint", str(step), "--only", "probes", "--no-judge")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    eval_dir = run_path / "eval" / f"checkpoint-{step}"
    meta = json.loads((eval_dir / "meta.json").read_text())
    assert meta["server"]["model_dir"].endswith(f"output/checkpoint-{step}/merged")
    assert (eval_dir / "summary.json").exists()
