"""The training report: curves from the Trainer's own trainer_state.json, best eval loss, the checkpoint kept, overfitting.

Usage:
    .venv/bin/python -m pytest tests/test_train_report.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from vlm3.train.report import history_from_state, read_history, summarize_history, svg_loss_curves


def state(train, evals, global_step=300):
    """A trainer_state.json as transformers writes it: log_history entries with step and loss or eval_loss."""
    log = [{"epoch": s / 100, "loss": v, "step": s, "learning_rate": 1e-4} for s, v in train]
    log += [{"epoch": s / 100, "eval_loss": v, "eval_runtime": 1.0, "step": s} for s, v in evals]
    log.sort(key=lambda e: e["step"])
    return {"global_step": global_step, "max_steps": global_step, "log_history": log, "best_model_checkpoint": None}


def write_run(root: Path, trainer_state: dict, checkpoints=(100, 200, 300)) -> Path:
    for step in checkpoints:
        folder = root / "output" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({**trainer_state, "global_step": step}))
    # The newest checkpoint holds the whole history.
    (root / "output" / f"checkpoint-{max(checkpoints)}" / "trainer_state.json").write_text(json.dumps(trainer_state))
    return root


RISING = state(train=[(10, 6.0), (100, 3.0), (200, 1.0), (300, 0.2)], evals=[(0, 7.0), (100, 3.5), (200, 2.5), (300, 3.1)])


def test_eval_loss_rising_after_its_minimum_names_the_better_checkpoint(tmp_path):
    report = summarize_history(read_history(write_run(tmp_path, RISING)))
    assert (report["best_eval_loss"], report["best_eval_step"], report["final_eval_loss"]) == (2.5, 200, 3.1)
    assert report["steps"] == 300 and report["better_checkpoint"] == "output/checkpoint-200"
    assert "output/ (the weights after the last step, 300)" == report["kept"]
    [warning] = report["warnings"]
    assert "eval loss rose after its minimum: best 2.5 at step 200, final 3.1" in warning and "output/checkpoint-200" in warning


def test_a_falling_eval_loss_gives_no_warning_and_a_missing_checkpoint_is_said(tmp_path):
    falling = state(train=[(10, 6.0), (300, 0.2)], evals=[(100, 3.0), (300, 2.0)])
    assert summarize_history(history_from_state(falling))["warnings"] == []
    # Best at step 150, checkpoints at 100 and 300: the nearest is named, with how to save the best one.
    between = state(train=[(10, 6.0)], evals=[(150, 2.0), (300, 3.0)])
    report = summarize_history(read_history(write_run(tmp_path, between, checkpoints=(100, 300))))
    assert report["better_checkpoint"] == "output/checkpoint-100" and "nearest to step 150" in report["warnings"][0]


def test_no_loss_logged_is_said_plainly():
    report = summarize_history(history_from_state(state(train=[], evals=[(4, 5.0)], global_step=4)))
    assert report["warnings"] == ["no training loss was logged: the run had fewer steps than train.logging_steps; lower it to see a curve"]
    assert "no loss was logged" in svg_loss_curves(history_from_state(state(train=[], evals=[])))


def test_plot_title_legend_and_ticks_do_not_overlap_the_curves():
    svg = svg_loss_curves(history_from_state(RISING))
    assert svg.count("<polyline") == 2 and "step 200: 2.5" in svg
    # Title and legend sit on the line at y=16, above the plot area that starts at y=40.
    ys = [float(v) for v in __import__("re").findall(r'<circle[^>]* cy="([\d.]+)"', svg)]
    assert min(ys) >= 40


def test_cli_writes_the_report_and_refuses_an_empty_folder(tmp_path):
    run = write_run(tmp_path / "run", RISING)
    proc = run_cli("train-report", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "300 training steps" in proc.stdout and "warning: eval loss rose" in proc.stdout
    assert (run / "train_report.html").exists() and json.loads((run / "train_report.json").read_text())["best_eval_step"] == 200
    empty = run_cli("train-report", str(tmp_path))
    assert empty.returncode == 1 and "run `vlm3 train` first" in empty.stderr and "Traceback" not in empty.stderr


@pytest.mark.trainer
def test_the_trained_demo_run_has_a_report_from_the_trainers_own_state(trained_run):
    report = json.loads((trained_run / "train_report.json").read_text())
    assert report["source"].endswith("trainer_state.json") and report["steps_known"]
    assert report["train_points"] >= 10 and report["best_eval_step"] is not None
    assert report["steps"] == json.loads((trained_run / "status.json").read_text())["stages"]["train"]["steps"]
    assert (trained_run / "train_report.html").exists()


def test_train_line_says_plainly_when_no_loss_was_logged():
    from vlm3.cli.train import describe_training
    from vlm3.train.trainer_env import TrainingLog

    log = TrainingLog()
    log.feed(" 50%|#####     | 2/4 [00:01<00:01]\r100%|##########| 4/4 [00:02<00:00]\n{'eval_loss': 5.1}\n")
    assert describe_training(log) == "4 steps: no training loss was logged (fewer steps than train.logging_steps: lower it to see the loss)"


def identified_run(root: Path, answer: str = "40 Nm.") -> Path:
    """A run folder as `vlm3 train` leaves it: the recipe, converted data with its recorded version, the Trainer's state."""
    from tests.conftest import DEMO_RECIPE

    run = write_run(root, state(train=[(10, 6.877980804443359), (300, 0.012226901203393935)], evals=[(100, 3.5), (300, 2.25)]))
    (run / "recipe.yaml").write_text(DEMO_RECIPE.read_text())
    (run / "data").mkdir()
    (run / "data" / "train.jsonl").write_text(json.dumps({"messages": [{"role": "assistant", "content": answer}]}) + "\n")
    (run / "data" / "val.jsonl").write_text("")
    return run


def test_the_report_is_titled_by_recipe_run_family_and_data_version_and_its_json_opens_with_them(tmp_path, monkeypatch):
    from vlm3.train.report import write_train_report

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the demo recipe's model.base is relative to the project
    report, html = write_train_report(identified_run(tmp_path / "20261205T190850Z"))
    identity = report["identity"]
    assert (identity["recipe"], identity["run"], identity["family"]) == ("tiny-cpu-demo", "20261205T190850Z", "Qwen2-VL")
    assert len(identity["data_version"]) == 10
    assert report["title"] == f"tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data {identity['data_version']}"
    saved = json.loads((tmp_path / "20261205T190850Z" / "train_report.json").read_text())
    assert list(saved)[:2] == ["title", "identity"] and saved["identity"] == identity
    assert f"<h1>vlm3 training report: {report['title']}</h1>" in html.read_text()
    # Another run on other data has another version; the version recorded at prepare time wins over the files.
    other, _ = write_train_report(identified_run(tmp_path / "other", answer="45 Nm."))
    assert other["identity"]["data_version"] != identity["data_version"]
    (tmp_path / "other" / "data" / "data_report.json").write_text(json.dumps({"data_version": "0123456789"}))
    assert write_train_report(tmp_path / "other")[0]["identity"]["data_version"] == "0123456789"


def test_numbers_are_rounded_for_people(tmp_path):
    from vlm3.train.report import write_train_report

    report, html = write_train_report(identified_run(tmp_path / "run"))
    assert (report["first_loss"], report["final_loss"], report["best_eval_loss"]) == (6.878, 0.01223, 2.25)
    text = html.read_text()
    assert "6.878 → 0.01223" in text and "6.877980804443359" not in text.split("<svg")[0]


def test_the_training_report_is_written_whole_and_never_through_a_link(tmp_path):
    import pytest

    from vlm3.core.jsonio import LinkedFile
    from vlm3.train.report import write_train_report

    run = identified_run(tmp_path / "run")
    elsewhere = tmp_path / "notes.html"
    elsewhere.write_text("mine")
    (run / "train_report.html").symlink_to(elsewhere)
    with pytest.raises(LinkedFile):
        write_train_report(run)
    assert elsewhere.read_text() == "mine" and (run / "train_report.html").is_symlink()
    (run / "train_report.html").unlink()
    _, html = write_train_report(run)
    assert html.read_text().rstrip().endswith("</html>") and not list(run.glob(".train_report.html.*.tmp"))


def test_learning_rate_and_grad_norm_have_curves_and_each_legend_mark_has_its_lines_colour():
    import re

    from vlm3.train.report import svg_training_curves

    with_norms = dict(RISING, log_history=[{**e, "grad_norm": 1.5} if "loss" in e else e for e in RISING["log_history"]])
    loss, rate, norm = svg_training_curves(history_from_state(with_norms))
    for chart, names in ((loss, ["train loss", "eval loss"]), (rate, ["learning rate"]), (norm, ["grad norm"])):
        lines = re.findall(r'<polyline [^>]*stroke="(#[0-9a-f]{6})"', chart)
        assert len(lines) == len(names), chart
        for name, colour in zip(names, lines):
            # The stylesheet's `svg text { fill }` beats a fill attribute: the legend text carries its colour in style,
            # beside a swatch drawn in the line's colour.
            assert re.search(rf'<text [^>]*style="fill: {colour}">{name}</text>', chart), (name, chart)
            assert f'stroke="{colour}" stroke-width="3"' in chart
        assert len(set(lines)) == len(lines)
    assert "no grad norm was logged" in svg_training_curves(history_from_state(RISING))[2]
