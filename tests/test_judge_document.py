"""The judge is told what the pages are from by the recipe (eval.document), never that they are the sample car's.

Real DeepEval metrics and the real anthropic SDK against the loopback Messages server."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.evaluation import score_eval_dir
from harness.judge_client import JudgeSettings
from harness.judge_metrics import metric_settings
from data_adapters.samples import load_val_samples
from tests.loopback_anthropic import LoopbackJudge, write_eval_dir

pytest.importorskip("deepeval", reason="the judge extra is not installed: pip install -e '.[judge]'")
pytestmark = pytest.mark.timeout(60)

DOCUMENT = "the Kaminari KX750 service manual"
SAMPLE_WORDS = ("BMW", "E30", "M3 ")


def judge_requests(tmp_path, sample_dir, document: str | None) -> list[str]:
    images = tmp_path / "images_root"
    shutil.copytree(sample_dir / "training_data", images)
    samples = [s.to_dict() for s in load_val_samples(images / "vlm_val.jsonl", images)[0][:1]]
    eval_dir = tmp_path / "eval"
    write_eval_dir(eval_dir, samples, {s["id"]: s["expected"] for s in samples},
                   {"metrics": ["correctness", "rubric", "faithfulness"], "model": "claude-sonnet-5-5"})
    if document:
        meta = json.loads((eval_dir / "meta.json").read_text())
        (eval_dir / "meta.json").write_text(json.dumps({**meta, "document": document}))  # as `vlm3 eval` records eval.document
    with LoopbackJudge() as server:
        settings = JudgeSettings(provider="anthropic", model="claude-sonnet-5-5", api_key="sk-ant-test", base_url=server.url,
                                 max_retries=1, backoff_s=0.001, max_backoff_s=0.01)
        summary = score_eval_dir(eval_dir, judge_settings=settings)
        assert summary["judge"]["skipped_reason"] is None
        texts = ["".join(block.get("text", "") for block in r["messages"][0]["content"] if isinstance(block, dict))
                 for r in server.requests("/v1/messages")]
    assert texts
    # What the sample itself says (the sample manual's page text names its car) is the data, not the prompt.
    own = [samples[0][k] for k in ("page_text", "question", "expected") if samples[0].get(k)]
    for part in own:
        texts = [t.replace(part, "") for t in texts]
    return texts


def test_the_recipes_document_is_named_in_the_rubric_and_correctness_prompts(tmp_path, sample_dir):
    texts = judge_requests(tmp_path, sample_dir, DOCUMENT)
    assert any(f"The document: {DOCUMENT}." in t for t in texts)  # the rubric
    # GEval sends its fixed evaluation steps, not the criteria; the criteria still name the document and key the cache.
    assert f"correct information from {DOCUMENT}" in metric_settings("correctness", DOCUMENT)["criteria"]
    assert metric_settings("rubric", DOCUMENT) != metric_settings("rubric")  # another document is another cache entry
    assert not [t for t in texts if any(word in t for word in SAMPLE_WORDS)], "a prompt names the sample manual"


def test_without_a_document_the_prompts_are_neutral(tmp_path, sample_dir):
    texts = judge_requests(tmp_path, sample_dir, None)
    assert any("The document: the manual." in t for t in texts)
    assert not [t for t in texts if any(word in t for word in SAMPLE_WORDS) or "the car" in t]
