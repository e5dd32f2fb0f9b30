"""Any saved checkpoint can be merged, checked, served and evaluated; the best one by eval loss is kept and merged.

On the demo run (the real Axolotl training of tests/conftest.py): eval and save every 100 steps, save_total_limit 3.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli
from vlm3.runs import RunDir, RunError

pytestmark = pytest.mark.trainer


def trainer_state(run) -> dict:
    newest = max(RunDir(run).checkpoints())
    return json.loads((run / "output" / f"checkpoint-{newest}" / "trainer_state.json").read_text())


def tensors(path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_the_best_checkpoint_by_eval_loss_is_kept_and_is_what_the_run_merged(trained_run):
    state = trainer_state(trained_run)
    evals = [(e["eval_loss"], e["step"]) for e in state["log_history"] if "eval_loss" in e]
    best_loss, best_step = min(evals)
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    best = trained_run / "output" / f"checkpoint-{best_step}"
    assert best.is_dir()  # kept out of save_total_limit's rotation
    final, kept = tensors(trained_run / "output" / "adapter_model.safetensors"), tensors(best / "adapter_model.safetensors")
    assert final.keys() == kept.keys() and all((final[k] == kept[k]).all() for k in final)  # output/ holds the best
    check = json.loads((trained_run / "merge_check.json").read_text())
    assert f"the best checkpoint by eval loss, checkpoint-{best_step}" in check["weights"]
    report = json.loads((trained_run / "train_report.json").read_text())
    assert f"checkpoint-{best_step}" in report["kept"] and report["best_checkpoint"] == f"output/checkpoint-{best_step}"
    if best_step != state["global_step"]:
        assert not any("the kept weights are the last step's" in w for w in report["warnings"])


def test_a_saved_checkpoint_merges_with_its_own_check_and_a_killed_one_is_refused(trained_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(trained_run, run_path, symlinks=True)
    run = RunDir(run_path)
    best = int(trainer_state(run_path)["best_model_checkpoint"].rsplit("-", 1)[1])
    other = max(step for step in run.checkpoints() if step != best)
    proc = run_cli("merge", str(run_path), "--checkpoint", str(other))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"merged output/checkpoint-{other} (asked for with --checkpoint" in proc.stdout
    assert f"vlm3 eval {run_path} --checkpoint {other}" in proc.stdout
    check = json.loads((run_path / "output" / f"checkpoint-{other}" / "merge_check.json").read_text())
    assert check["ok"] and check["lora_targets"] > 0
    merged = run.checked_merged_dir(other)
    assert merged == run_path / "output" / f"checkpoint-{other}" / "merged"
    ours, runs = tensors(merged / "model.safetensors"), tensors(run_path / "output" / "merged" / "model.safetensors")
    assert any(not (ours[k] == runs[k]).all() for k in ours)  # another adapter, other weights
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
