"""`vlm3 compare` names each side by run, model and family (two runs, two families, side by side on Modal).

Usage:
    .venv/bin/python -m pytest -q tests/test_compare_sides.py
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vlm3.recipe.runs import run_model
from harness.compare import Side, compare_scores, describe_eval_dir, format_comparison, render_compare_html
from tests.conftest import ROOT


def eval_dir(root: Path, run: str, recipe: str, label: str, model: str, meta_extra: dict | None = None) -> Path:
    """RUN/eval/<endpoint folder>/<label>, as `vlm3 eval RUN --endpoint URL` writes it."""
    run_dir = root / "runs" / run
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(yaml.safe_load((ROOT / "recipes" / recipe).read_text())))
    folder = run_dir / "eval" / "ws--app-endpoint-serve.modal.run-v1-1234abcd" / label
    folder.mkdir(parents=True)
    meta = {"label": label, "model": model, "endpoint": "https://ws--app.modal.run/v1", **(meta_extra or {})}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_each_side_is_named_by_its_run_model_and_family(tmp_path):
    a = describe_eval_dir(eval_dir(tmp_path, "e30m3-lora/20261125T170000Z", "e30m3_lora.yaml", "endpoint", "e30m3"), run_model)
    b = describe_eval_dir(eval_dir(tmp_path, "e30m3-qwen3vl-lora/20261202T090000Z", "e30m3_qwen3vl_lora.yaml", "endpoint", "e30m3-q3"),
                          run_model)
    assert (a.run, a.model, a.family, a.base_model) == ("e30m3-lora/20261125T170000Z", "e30m3", "Qwen2-VL", "Qwen/Qwen2-VL-7B-Instruct")
    assert (b.run, b.family, b.base_model) == ("e30m3-qwen3vl-lora/20261202T090000Z", "Qwen3-VL", "Qwen/Qwen3-VL-8B-Instruct")
    scores = [{"id": "s1", "passed": True, "checks": {"token_f1": 0.5}}]
    c = compare_scores(scores, scores, "endpoint (A)", "endpoint (B)", side_a=a, side_b=b)
    text = format_comparison(c)
    assert "A = endpoint: run e30m3-lora/20261125T170000Z, model e30m3, family Qwen2-VL" in text
    assert "B = endpoint: run e30m3-qwen3vl-lora/20261202T090000Z, model e30m3-q3, family Qwen3-VL" in text
    assert "different families: Qwen2-VL (A) vs Qwen3-VL (B)" in text
    html = render_compare_html(c, tmp_path / "c.html").read_text()
    assert "e30m3-qwen3vl-lora/20261202T090000Z" in html and "Qwen3-VL" in html
    assert c.to_dict()["side_b"]["family"] == "Qwen3-VL", "and in the comparison's JSON"


def test_what_eval_recorded_wins_and_an_unknown_side_says_so(tmp_path):
    recorded = eval_dir(tmp_path, "x/1", "e30m3_lora.yaml", "finetuned", "m",
                        {"run": "other/2", "family": "Qwen2.5-VL", "base_model": "Qwen/Qwen2.5-VL-7B-Instruct"})
    assert describe_eval_dir(recorded) == Side("finetuned", "other/2", "m", "Qwen2.5-VL", "Qwen/Qwen2.5-VL-7B-Instruct",
                                               "https://ws--app.modal.run/v1")
    loose = tmp_path / "evals" / "somewhere"
    loose.mkdir(parents=True)
    (loose / "meta.json").write_text(json.dumps({"label": "endpoint", "model": "e30m3"}))
    side = describe_eval_dir(loose)
    assert (side.run, side.family) == (None, None)
    assert side.describe() == "endpoint: run -, model e30m3, family -"


def test_a_comparison_without_sides_prints_as_before():
    scores = [{"id": "s1", "passed": True, "checks": {"token_f1": 0.5}}]
    text = format_comparison(compare_scores(scores, scores, "base", "finetuned"))
    assert text.startswith("A = base, B = finetuned:") and "run " not in text.splitlines()[2]
