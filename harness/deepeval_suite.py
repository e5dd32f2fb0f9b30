"""DeepEval test module over saved predictions: the judge's metrics as pytest tests, one test per sample.

Usage:
    vlm3 deepeval RUN/eval/finetuned -- -k procedure        # sets everything below, runs in the eval dir
    VLM3_EVAL_DIR=RUN/eval/finetuned DEEPEVAL_CACHE_FOLDER=RUN/eval/finetuned/.deepeval \\
        deepeval test run harness/deepeval_suite.py -k procedure [-c] [-n 4] [-i]

DeepEval's own flags keep their meaning (`-c` its result cache, `-n` worker processes, `-i` ignore
errors, `-k`/`-m` pytest selection). It has no --max-samples or --output; these come from vlm3:
    VLM3_EVAL_DIR        the evaluation directory (meta.json, samples.jsonl, predictions.jsonl)  required
    VLM3_MAX_SAMPLES     the first N answered samples only
    VLM3_JUDGE_METRICS   comma-separated metric names (default: meta.json's eval.judge.metrics)
    VLM3_JUDGE_BASE_URL  send the judge's calls here (a proxy; a loopback server in tests)
    ANTHROPIC_API_KEY    the judge's key: without it every test is skipped with one line
Test ids read `<category>-<kind>-<sample id>`, so `-k procedure`, `-k probe` or `-k "torque and val"`
select samples. The metrics, the judge cache (EVAL_DIR/judge_cache.sqlite) and the context given to
the judge are the ones `vlm3 score` uses: a suite run after a score run makes no judge calls.
A judge reply that cannot be used fails the test with the raw reply in the message (or, with -i,
is reported as an error): never a default score.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from harness.judge_metrics import configure_deepeval

_EVAL_DIR = os.environ.get("VLM3_EVAL_DIR")
configure_deepeval(Path(_EVAL_DIR) / ".deepeval" if _EVAL_DIR else None)  # before DeepEval is imported

import pytest  # noqa: E402

from harness.judge import CACHE_FILE, judge_settings_for, judge_status  # noqa: E402
from harness.judge_client import JudgeCache, JudgeClient, page_image  # noqa: E402
from harness.judge_metrics import JudgeCase, make_metric, to_test_case  # noqa: E402


def _load() -> tuple[Path, object, list[tuple[str, JudgeCase]], str | None]:
    if not _EVAL_DIR:
        pytest.skip("set VLM3_EVAL_DIR to an evaluation directory (or run `vlm3 deepeval EVAL_DIR`)", allow_module_level=True)
    from harness.evaluation import judge_spec_of, read_eval_dir

    eval_dir = Path(_EVAL_DIR)
    meta, samples, records = read_eval_dir(eval_dir)
    spec = judge_spec_of(meta)
    if spec is not None and os.environ.get("VLM3_JUDGE_METRICS"):
        spec = dataclasses.replace(spec, metrics=tuple(m.strip() for m in os.environ["VLM3_JUDGE_METRICS"].split(",") if m.strip()))
    by_id = {s["id"]: s for s in samples}
    cases = [JudgeCase.from_sample(by_id[r["id"]], r["answer"]) for r in records if r["answer"] is not None]
    limit = int(os.environ.get("VLM3_MAX_SAMPLES") or 0)
    cases = cases[:limit] if limit else cases
    ids = [re.sub(r"[^A-Za-z0-9_.:-]+", "_", f"{c.category or 'unknown'}-{c.kind or 'sample'}-{c.id}") for c in cases]
    return eval_dir, spec, list(zip(ids, cases)), meta.get("document")


EVAL_DIR, SPEC, CASES, DOCUMENT = _load()
API_KEY, SKIP_REASON = judge_status(SPEC)


@pytest.fixture(scope="module")
def judge_client():
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    settings = judge_settings_for(SPEC, API_KEY)
    client = JudgeClient(settings.replace(document=DOCUMENT) if DOCUMENT else settings, JudgeCache(EVAL_DIR / CACHE_FILE))
    yield client
    usage = client.usage
    cost = "cost not counted" if usage.cost_usd is None else f"${usage.cost_usd:.4f}"
    print(f"\njudge {client.settings.model}: {usage.calls} calls ({usage.failed_calls} failed, {usage.retries} retries), "
          f"{usage.cache_hits} from the cache, {usage.input_tokens:,} input + {usage.output_tokens:,} output tokens, {cost}")
    client.close()
    client.cache.close()


@pytest.mark.parametrize("case", [case for _, case in CASES], ids=[test_id for test_id, _ in CASES])
def test_judge(case: JudgeCase, judge_client: JudgeClient) -> None:
    from deepeval import assert_test

    # Every page of the sample, in order (none for a text-only sample), as `vlm3 score` sends them.
    pages = [page_image(path) for path in case.images if Path(path).is_file()] if judge_client.sees_images else []
    assert_test(to_test_case(case, pages), [make_metric(name, SPEC.threshold, judge_client) for name in SPEC.metrics])
