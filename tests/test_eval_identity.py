"""Every evaluation is titled by what tells it apart (run, recipe, family, data version, the weights served), and
`vlm3 compare` titles each side by it: two fine-tuned runs never both read "finetuned (A) vs finetuned (B)".

Usage:
    .venv/bin/python -m pytest -q tests/test_eval_identity.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.compare import Side, side_labels
from harness.evaluation import generate_into, score_eval_dir
from harness.generate import GenerationSettings
from harness.identity import distinguishing_parts, identity_title
from tests.conftest import DEMO_RECIPE, ROOT
from tests.loopback_anthropic import write_eval_dir

SAMPLES = [{"id": f"s{i}", "kind": "val", "category": "torque", "question": f"Torque of bolt {i}?", "expected": "40 Nm.",
            "image": None} for i in range(3)]


def run_folder(root: Path, recipe: str, time: str, data_version: str) -> Path:
    """runs/<recipe>/<time>/ as `vlm3 train` leaves it, as far as its identity goes: the recipe and data_report.json."""
    run = root / "runs" / recipe / time
    (run / "data").mkdir(parents=True)
    (run / "recipe.yaml").write_text(DEMO_RECIPE.read_text())
    (run / "data" / "data_report.json").write_text(json.dumps({"data_version": data_version}))
    return run


@pytest.mark.parametrize("identity, title", [
    ({"recipe": "tiny-cpu-demo", "run": "20261205T190850Z", "family": "Qwen2-VL", "data_version": "8e15ab3dfe",
      "served": "checkpoint-100"}, "tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data 8e15ab3dfe · checkpoint-100"),
    ({"recipe": "e30m3-lora", "run": None, "family": "Qwen2-VL", "data_version": None, "served": "endpoint",
      "endpoint": "https://ws--app.modal.run/v1", "model": "e30m3"},
     "e30m3-lora · Qwen2-VL · endpoint https://ws--app.modal.run/v1 (e30m3)"),
    (None, ""),
])
def test_an_identity_reads_as_one_title(identity, title):
    assert identity_title(identity) == title


def test_eval_records_the_runs_identity_and_the_weights_served(tmp_path, monkeypatch):
    from vlm3.cli.evaluate import evaluation_identity
    from vlm3.recipe.schema import load_recipe

    monkeypatch.chdir(ROOT)  # the demo recipe's model.base is relative to the project
    run = run_folder(tmp_path, "tiny-cpu-demo", "20261205T190850Z", "8e15ab3dfe")
    from vlm3.recipe.runs import RunDir

    identity = evaluation_identity(load_recipe(DEMO_RECIPE), RunDir(run), "checkpoint-100")
    assert identity_title(identity) == "tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data 8e15ab3dfe · checkpoint-100"
    assert identity["base_model"] == load_recipe(DEMO_RECIPE).model.base
    external = evaluation_identity(load_recipe(DEMO_RECIPE), None, "endpoint", "https://x.example/v1", "tiny")
    assert (external["run"], external["data_version"], external["endpoint"], external["model"]) == (None, None, "https://x.example/v1", "tiny")

    # generate_into keeps it in meta.json, with its title (no sample to ask: no request is made).
    eval_dir = tmp_path / "eval"
    settings = GenerationSettings(base_url="http://127.0.0.1:9/v1", api_key="EMPTY", model="tiny")
    generate_into(eval_dir, [], settings, label="checkpoint-100", endpoint="local:x", identity=identity)
    meta = json.loads((eval_dir / "meta.json").read_text())
    assert meta["identity"]["served"] == "checkpoint-100" and meta["identity"]["title"].endswith("data 8e15ab3dfe · checkpoint-100")


def scored_eval(root: Path, recipe: str, time: str, data_version: str, family: str) -> Path:
    """RUN/eval/finetuned scored without a judge, its meta.json holding the identity `vlm3 eval` records."""
    eval_dir = run_folder(root, recipe, time, data_version) / "eval" / "finetuned"
    write_eval_dir(eval_dir, SAMPLES, {"s0": "40 Nm.", "s1": "40 Nm.", "s2": "12 Nm."}, None)
    meta = json.loads((eval_dir / "meta.json").read_text())
    identity = {"run": time, "recipe": recipe, "base_model": f"Qwen/{family}-7B-Instruct", "family": family,
                "data_version": data_version, "served": "finetuned"}
    (eval_dir / "meta.json").write_text(json.dumps({**meta, "identity": identity}))
    score_eval_dir(eval_dir, judge=False)
    return eval_dir


def test_the_summary_and_report_are_titled_by_the_identity(tmp_path):
    eval_dir = scored_eval(tmp_path, "e30m3-lora", "20261125T170000Z", "8e15ab3dfe", "Qwen2-VL")
    summary = json.loads((eval_dir / "summary.json").read_text())
    title = "e30m3-lora · run 20261125T170000Z · Qwen2-VL · data 8e15ab3dfe · finetuned"
    assert summary["title"] == title and summary["identity"]["data_version"] == "8e15ab3dfe"
    html = (eval_dir / "report.html").read_text()
    assert f"<title>{title}</title>" in html and "weights served" in html and "Qwen/Qwen2-VL-7B-Instruct" in html


def test_compare_titles_two_finetuned_runs_by_what_differs(tmp_path):
    from vlm3.cli.evaluate import compare_dirs

    a = scored_eval(tmp_path, "e30m3-lora", "20261125T170000Z", "8e15ab3dfe", "Qwen2-VL")
    b = scored_eval(tmp_path, "e30m3-qwen3vl-lora", "20261202T090000Z", "0123456789", "Qwen3-VL")
    comparison, out = compare_dirs(a, b)
    assert "(A)" not in comparison.label_a and "(B)" not in comparison.label_b
    assert comparison.label_a == "finetuned · e30m3-lora · run 20261125T170000Z · Qwen2-VL · data 8e15ab3dfe"
    assert comparison.label_b == "finetuned · e30m3-qwen3vl-lora · run 20261202T090000Z · Qwen3-VL · data 0123456789"
    title = ("vlm3 comparison: e30m3-lora · run 20261125T170000Z · Qwen2-VL · data 8e15ab3dfe · finetuned vs "
             "e30m3-qwen3vl-lora · run 20261202T090000Z · Qwen3-VL · data 0123456789 · finetuned")
    assert comparison.title == title
    assert f"<title>{title}</title>" in out.read_text()
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["title"] == title and saved["side_b"]["title"].startswith("e30m3-qwen3vl-lora · run 20261202T090000Z")
    assert saved["side_a"]["data_version"] == "8e15ab3dfe" and saved["side_b"]["served"] == "finetuned"


def test_the_same_label_on_two_iterations_of_one_recipe_is_told_apart_by_run_and_data():
    a = Side("finetuned", run="20261205T190850Z", family="Qwen2-VL", recipe="tiny-cpu-demo", data_version="8e15ab3dfe", served="finetuned")
    b = Side("finetuned", run="20261206T080000Z", family="Qwen2-VL", recipe="tiny-cpu-demo", data_version="77aa00bb11", served="finetuned")
    assert side_labels("finetuned", "finetuned", a, b) == ("finetuned · run 20261205T190850Z · data 8e15ab3dfe",
                                                           "finetuned · run 20261206T080000Z · data 77aa00bb11")
    assert side_labels("base", "finetuned", a, b) == ("base", "finetuned"), "labels that differ are kept"
    assert side_labels("finetuned", "finetuned", a, a) == ("finetuned (A)", "finetuned (B)"), "nothing differs: A and B"
    assert distinguishing_parts(a.identity(), b.identity()) == ("run 20261205T190850Z · data 8e15ab3dfe",
                                                                "run 20261206T080000Z · data 77aa00bb11")
