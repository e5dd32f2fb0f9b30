"""The LLM judge end to end: the real anthropic/openai SDKs and the real DeepEval metrics against a loopback
server that speaks Anthropic's Messages and Message Batches APIs with scripted replies."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from harness.evaluation import score_eval_dir
from harness.judge import JudgeError, deepeval_command, estimate_judge_cost, format_estimate, format_judge_line
from harness.judge_client import JudgeReplyError, JudgeSettings, cost_usd, parse_reply
from harness.judge_metrics import RUBRIC_INSTRUCTIONS, RubricVerdict
from data_adapters.samples import load_probes, load_val_samples
from tests.loopback_anthropic import LoopbackJudge, drop, reply, slow, status, write_eval_dir
from vlm3.recipe.schema import JudgeSpec

pytest.importorskip("deepeval", reason="the judge extra is not installed: pip install -e '.[judge]'")
pytestmark = pytest.mark.timeout(60)

JUDGE_MODEL = "claude-sonnet-5-5"
SECRET = "sk-ant-test-DO-NOT-WRITE-0123456789"
ALL_METRICS = ["answer_relevancy", "faithfulness", "correctness", "hallucination", "rubric"]
CALLS_PER_SAMPLE = {"answer_relevancy": 3, "faithfulness": 4, "correctness": 1, "hallucination": 2, "rubric": 1}
RUBRIC_MARK = RUBRIC_INSTRUCTIONS.splitlines()[0]


@pytest.fixture
def server():
    with LoopbackJudge() as loopback:
        yield loopback


@pytest.fixture
def samples(sample_dir, tmp_path) -> list[dict]:
    """Two validation rows (with page text), a spec probe and a keyword probe; images copied so a test may change one."""
    images = tmp_path / "images_root"
    shutil.copytree(sample_dir / "training_data", images)
    vals, _ = load_val_samples(images / "vlm_val.jsonl", images)
    probes, _ = load_probes(sample_dir / "probes.jsonl", images)
    keyword_probe = next(p for p in probes if p.expected_keywords)
    chosen = [vals[0], vals[8], probes[0], keyword_probe]
    return [s.to_dict() for s in chosen]


def answers_for(samples: list[dict]) -> dict[str, str]:
    return {s["id"]: s["expected"] or "Remove the cover, measure with a feeler gauge at the cam lobe and change the shim." for s in samples}


def settings(server: LoopbackJudge, **changes) -> JudgeSettings:
    base = JudgeSettings(provider="anthropic", model=JUDGE_MODEL, api_key=SECRET, base_url=server.url, concurrency=4,
                         timeout_s=2.0, max_retries=3, backoff_s=0.001, max_backoff_s=0.01, batch_poll_s=0.01)
    return base.replace(**changes)


def make_dir(tmp_path: Path, samples: list[dict], metrics: list[str], name: str = "eval", **judge) -> Path:
    eval_dir = tmp_path / name
    write_eval_dir(eval_dir, samples, answers_for(samples), {"metrics": metrics, "model": JUDGE_MODEL, **judge})
    return eval_dir


def read(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def test_scores_flow_into_summary_and_report(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples, ALL_METRICS)
    summary = score_eval_dir(eval_dir, judge_settings=settings(server))

    judge = read(eval_dir / "summary.json")["judge"]
    assert judge == summary["judge"] and judge["skipped_reason"] is None
    n = len(samples)
    for name in ALL_METRICS:
        assert judge["metrics"][name]["scored"] == n and judge["metrics"][name]["unscored"] == 0
        assert judge["metrics"][name]["threshold"] == 0.7
    # The loopback's default replies: every verdict "yes", GEval score 8/10, rubric 9 and 8 -> min 0.8.
    assert {name: judge["metrics"][name]["mean"] for name in ALL_METRICS} == {
        "answer_relevancy": 1.0, "faithfulness": 1.0, "correctness": 0.8, "hallucination": 1.0, "rubric": 0.8}
    # Every DeepEval call went to the judge or came from the cache (identical reason prompts repeat within a run).
    assert judge["calls"] + judge["cache_hits"] == n * sum(CALLS_PER_SAMPLE.values())
    assert judge["calls"] == server.count("/v1/messages") and judge["retries"] == 0
    assert judge["input_tokens"] > 0 and judge["cost_usd"] == pytest.approx(
        cost_usd(JUDGE_MODEL, judge["input_tokens"], judge["output_tokens"]), abs=1e-6)
    assert judge["estimate"]["calls"] == n * sum(CALLS_PER_SAMPLE.values())
    # Probes pass on the judge when every metric passes them; against the 85% probe threshold.
    assert judge["probes"] == {"n": 2, "scored": 2, "unscored": 0, "pass_rate": 1.0, "threshold": 0.85, "passed": True}

    records = read(eval_dir / "scores.jsonl")
    rubric = records[0]["judge"]["metrics"]["rubric"]
    assert rubric["score"] == 0.8 and rubric["passed"] is True and rubric["unscored"] is False
    assert rubric["details"] == {"correctness": 0.9, "spec_faithfulness": 0.8, "unsupported": []}
    assert records[0]["judge"]["passed"] is True
    report = (eval_dir / "report.html").read_text()
    assert '<section id="judge">' in report and f"{judge['calls']} judge calls" in report
    assert "rubric: mean 0.800, scored 4, unscored 0" in report
    assert format_judge_line(judge).startswith(f"judge {JUDGE_MODEL}: answer_relevancy 1.00 (pass 100%, unscored 0);")


def test_unchanged_rerun_makes_zero_judge_calls(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples, ALL_METRICS)
    first = score_eval_dir(eval_dir, judge_settings=settings(server))
    http_calls = len(server.log)

    second = score_eval_dir(eval_dir, judge_settings=settings(server))
    assert len(server.log) == http_calls
    assert second["judge"]["calls"] == 0 and second["judge"]["cost_usd"] == 0
    assert second["judge"]["cache_hits"] == len(samples) * sum(CALLS_PER_SAMPLE.values())
    assert second["judge"]["metrics"] == first["judge"]["metrics"]

    # A threshold is not part of the cache key: a stricter one re-scores from the cache.
    strict = score_eval_dir(eval_dir, judge_spec={"metrics": ALL_METRICS, "threshold": 0.9}, judge_settings=settings(server))
    assert len(server.log) == http_calls
    assert strict["judge"]["metrics"]["correctness"]["pass_rate"] == 0.0


def test_cache_key_holds_the_page_image(tmp_path, server, samples):
    one = [samples[0]]
    eval_dir = make_dir(tmp_path, one, ["faithfulness", "rubric"])
    score_eval_dir(eval_dir, judge_settings=settings(server))
    before = server.count("/v1/messages")
    with Image.open(one[0]["image"]) as image:
        image.rotate(180).save(one[0]["image"])  # same path, same size, other pixels
    again = score_eval_dir(eval_dir, judge_settings=settings(server))
    # Only the calls that carry the page see a new key (faithfulness' truths, the rubric); the rest repeat.
    assert server.count("/v1/messages") - before == 2
    assert again["judge"]["calls"] == 2


def test_requests_carry_schema_budget_and_the_page_only_where_needed(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples[:1], ALL_METRICS)
    score_eval_dir(eval_dir, judge_settings=settings(server))
    requests = server.requests("/v1/messages")
    for request in requests:
        assert request["model"] == JUDGE_MODEL
        assert request["max_tokens"] == 16_000
        assert "temperature" not in request
        assert request["output_config"]["format"]["type"] == "json_schema"

    def images(request) -> int:
        return sum(block["type"] == "image" for block in request["messages"][0]["content"])

    def text(request) -> str:
        return "".join(block.get("text", "") for block in request["messages"][0]["content"])

    with_image = [text(r) for r in requests if images(r)]
    assert all(images(r) <= 1 for r in requests)
    assert sum(RUBRIC_MARK in t for t in with_image) == 1
    assert sum("truths" in t for t in with_image) == 1  # Faithfulness reads the page when it extracts truths
    assert sum("contexts" in t for t in with_image) == 1  # Hallucination compares the answer with each context
    assert len(with_image) == 3  # nothing else: relevancy and correctness are judged on text
    rubric = next(r for r in requests if RUBRIC_MARK in text(r))
    assert rubric["messages"][0]["content"][0]["type"] == "image"  # the page before the text about it
    assert samples[0]["page_text"].splitlines()[2] in text(rubric)


def test_malformed_replies_end_unscored_with_the_raw_text(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples, ["answer_relevancy", "rubric"])
    answers = answers_for(samples)
    cut = '{"correctness": 9, "spec_faithfulness": 8, "unsupp'
    server.script(lambda p: RUBRIC_MARK in p and answers[samples[0]["id"]] in p, reply(cut, stop_reason="max_tokens"))
    server.script(lambda p: RUBRIC_MARK in p and answers[samples[1]["id"]] in p, reply("I would rather not grade this."))
    server.script(lambda p: RUBRIC_MARK in p and answers[samples[2]["id"]] in p,
                  reply('{"correctness": 11, "spec_faithfulness": 8, "unsupported": [], "reason": "x"}'))
    server.script(lambda p: "statements" in p and answers[samples[3]["id"]] in p, reply('{"statements": "one, two"}'))

    with pytest.raises(JudgeError, match=r"rubric: 3 of 4 unscored \(75%\)"):
        score_eval_dir(eval_dir, judge_settings=settings(server))

    summary, records = read(eval_dir / "summary.json"), read(eval_dir / "scores.jsonl")  # written before the error
    assert summary["judge"]["metrics"]["rubric"] == {"mean": 0.8, "pass_rate": 1.0, "scored": 1, "unscored": 3, "threshold": 0.7}
    assert summary["judge"]["metrics"]["answer_relevancy"]["unscored"] == 1
    assert summary["judge"]["unscored"] == 4
    rubric = [r["judge"]["metrics"]["rubric"] for r in records]
    assert rubric[0] | {"error": None} == {"score": None, "passed": None, "reason": None, "unscored": True, "raw": cut, "error": None}
    assert "max_tokens" in rubric[0]["error"]
    assert rubric[1]["raw"] == "I would rather not grade this." and "not valid JSON" in rubric[1]["error"]
    assert "correctness" in rubric[2]["error"] and rubric[2]["score"] is None
    relevancy = records[3]["judge"]["metrics"]["answer_relevancy"]
    assert relevancy["unscored"] and relevancy["raw"] == '{"statements": "one, two"}'
    assert records[0]["judge"]["passed"] is None
    report = (eval_dir / "report.html").read_text()
    assert "scored 1, unscored 3" in report  # the header's judge line; raw replies are in scores.jsonl

    # Unscored replies are not cached: the next run asks only for them, and the judge now answers.
    before = server.count("/v1/messages")
    summary = score_eval_dir(eval_dir, judge_settings=settings(server))
    assert summary["judge"]["unscored"] == 0
    assert server.count("/v1/messages") - before == summary["judge"]["calls"] == 3 + 3  # 3 rubric calls, relevancy's 3-call chain


def test_retries_recover_from_transient_errors(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples[:1], ["rubric"])
    server.script(RUBRIC_MARK, status(429), status(529), status(500), drop(), slow(1.0, then=None))
    summary = score_eval_dir(eval_dir, judge_settings=settings(server, max_retries=5, timeout_s=0.3))
    judge = summary["judge"]
    assert judge["metrics"]["rubric"] == {"mean": 0.8, "pass_rate": 1.0, "scored": 1, "unscored": 0, "threshold": 0.7}
    assert (judge["calls"], judge["retries"], judge["attempts"], judge["failed_calls"]) == (1, 5, 6, 0)
    assert server.count("/v1/messages") == 6


def test_an_empty_answer_fails_every_metric_without_a_call(tmp_path, server, samples):
    eval_dir = tmp_path / "empty"
    write_eval_dir(eval_dir, samples[:1], {samples[0]["id"]: "  "}, {"metrics": ["answer_relevancy", "rubric"], "model": JUDGE_MODEL})
    summary = score_eval_dir(eval_dir, judge_settings=settings(server))
    assert server.log == []
    assert summary["judge"]["metrics"]["answer_relevancy"] == {"mean": 0.0, "pass_rate": 0.0, "scored": 1, "unscored": 0, "threshold": 0.7}


def test_concurrency_is_bounded_and_the_estimate_comes_first(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples, ["rubric", "correctness"], concurrency=2)
    for s in samples:
        server.script(lambda p, s=s: answers_for(samples)[s["id"]] in p, slow(0.05, then=None), slow(0.05, then=None))
    seen = []
    score_eval_dir(eval_dir, judge_settings=settings(server, concurrency=2),
                   on_judge_estimate=lambda e: seen.append(("estimate", server.count("/v1/messages"))),
                   on_judge_progress=lambda done, total: seen.append((done, total)))
    assert server.max_in_flight == 2
    assert seen[0] == ("estimate", 0) and seen[-1] == (8, 8)


def test_a_call_that_keeps_failing_is_unscored_with_the_error_body(tmp_path, server, samples):
    eval_dir = make_dir(tmp_path, samples[:2], ["rubric"], max_unscored_fraction=1.0)
    answers = answers_for(samples)
    server.script(lambda p: answers[samples[0]["id"]] in p, *[status(529)] * 4)
    server.script(lambda p: answers[samples[1]["id"]] in p, status(400))
    summary = score_eval_dir(eval_dir, judge_settings=settings(server, max_retries=3))
    records = read(eval_dir / "scores.jsonl")
    overloaded, bad = (r["judge"]["metrics"]["rubric"] for r in records)
    assert overloaded["unscored"] and "overloaded_error" in overloaded["raw"] and "after 4 attempts" in overloaded["error"]
    assert bad["unscored"] and "invalid_request_error" in bad["raw"] and "not retryable" in bad["error"]
    assert (summary["judge"]["failed_calls"], summary["judge"]["attempts"]) == (2, 5)


def graded(schema: dict | None, prompt: str) -> str:
    """Replies that differ by sample, so equal scores from two paths mean something."""
    digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    return json.dumps({"correctness": digest % 11, "spec_faithfulness": (digest // 11) % 11, "unsupported": [],
                       "reason": f"graded {digest % 997}"})


def test_batch_and_direct_paths_give_the_same_scores(tmp_path, samples):
    answers = answers_for(samples)
    results = {}
    for batch in (False, True):
        with LoopbackJudge(responder=graded, batch_polls=3) as server:
            server.script(lambda p: answers[samples[1]["id"]] in p, reply("not JSON"))
            eval_dir = make_dir(tmp_path, samples, ["rubric"], name=f"batch-{batch}", use_batch_api=batch, max_unscored_fraction=0.5)
            summary = score_eval_dir(eval_dir, judge_settings=settings(server))
            results[batch] = (summary["judge"], [r["judge"]["metrics"]["rubric"] for r in read(eval_dir / "scores.jsonl")])
            if batch:
                assert server.count("/v1/messages") == 0 and server.count("/v1/messages/batches") == 1
                assert server.count(next(e["path"] for e in server.log if e["method"] == "GET"), method="GET") >= 3
            else:
                assert server.count("/v1/messages/batches") == 0
    (direct, direct_records), (batch, batch_records) = results[False], results[True]
    assert batch_records == direct_records
    assert direct_records[1]["unscored"] and direct_records[1]["raw"] == "not JSON"
    assert batch["metrics"] == direct["metrics"]
    assert (batch["batches"], batch["batch_requests"], batch["calls"]) == (1, len(samples), len(samples))
    assert batch["input_tokens"] == direct["input_tokens"] and batch["output_tokens"] == direct["output_tokens"]
    assert batch["cost_usd"] == pytest.approx(direct["cost_usd"] / 2, abs=1e-6)


def test_without_a_key_the_judge_is_skipped_with_one_line(tmp_path, samples, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    eval_dir = make_dir(tmp_path, samples, ALL_METRICS)
    summary = score_eval_dir(eval_dir)
    assert summary["judge"]["skipped_reason"] == "judge skipped: no ANTHROPIC_API_KEY"
    assert "judge skipped: no ANTHROPIC_API_KEY" in summary["notes"]
    assert format_judge_line(summary["judge"]) == "judge skipped: no ANTHROPIC_API_KEY"
    assert summary["metrics"]["n"] == len(samples) and summary["counts"]["deterministic"] > 0
    assert all(r["judge"] is None for r in read(eval_dir / "scores.jsonl"))
    assert not (eval_dir / "judge_cache.sqlite").exists()
    assert "judge skipped: no ANTHROPIC_API_KEY" in (eval_dir / "report.html").read_text()

    assert score_eval_dir(eval_dir, judge=False)["judge"]["skipped_reason"] == "judge skipped: --no-judge"
    with pytest.raises(JudgeError, match="asked for .*no ANTHROPIC_API_KEY"):
        score_eval_dir(eval_dir, judge=True)
    assert read(eval_dir / "summary.json")["metrics"]["n"] == len(samples)  # still written


def test_vlm3_score_cli_judges_and_fails_loudly_over_the_unscored_limit(tmp_path, server, samples):
    from tests.conftest import run_cli

    eval_dir = make_dir(tmp_path, samples[:2], ["rubric"])
    env = {"ANTHROPIC_API_KEY": SECRET, "VLM3_JUDGE_BASE_URL": server.url}
    server.script(RUBRIC_MARK, reply("no grade"))
    proc = run_cli("score", str(eval_dir), env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Error: the judge left too many samples unscored:\n  rubric: 1 of 2 unscored (50%)" in proc.stderr
    assert read(eval_dir / "summary.json")["judge"]["metrics"]["rubric"]["unscored"] == 1
    ok = run_cli("score", str(eval_dir), env=env, timeout=120)  # the judge answers now: only that sample is asked
    assert ok.returncode == 0, ok.stderr
    assert read(eval_dir / "summary.json")["judge"]["calls"] == 1
    assert SECRET not in proc.stdout + proc.stderr + ok.stdout + ok.stderr


def test_a_recipe_without_a_judge_skips_it(tmp_path, server, samples, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    eval_dir = tmp_path / "nojudge"
    write_eval_dir(eval_dir, samples, answers_for(samples), judge=None)
    summary = score_eval_dir(eval_dir, judge_settings=settings(server))
    assert summary["judge"]["skipped_reason"] == "judge skipped: no judge in the recipe (eval.judge)"
    assert server.log == []


def test_judge_records_with_a_client_factory(tmp_path, server, samples):
    import anthropic

    from harness.judge import judge_records
    from harness.score import score_sample

    made = []

    def factory(judge_settings: JudgeSettings):
        made.append(judge_settings.model)
        return anthropic.Anthropic(api_key="sk-factory", base_url=server.url, max_retries=0, timeout=2.0)

    records = [score_sample(s, {"answer": answers_for(samples)[s["id"]]}) for s in samples[:2]]
    spec = JudgeSpec(model=JUDGE_MODEL, metrics=["rubric"])
    outcome = judge_records(records, samples[:2], spec, tmp_path, settings=settings(server, base_url=None), client_factory=factory)
    assert made == [JUDGE_MODEL] and outcome.summary["metrics"]["rubric"]["scored"] == 2
    assert [r["judge"]["metrics"]["rubric"]["score"] for r in records] == [0.8, 0.8]


def test_with_a_key_the_default_path_runs_and_never_writes_the_key(tmp_path, server, samples, monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("VLM3_JUDGE_BASE_URL", server.url)
    eval_dir = make_dir(tmp_path, samples[:2], ["correctness", "rubric"])
    summary = score_eval_dir(eval_dir)
    assert summary["judge"]["metrics"]["rubric"]["scored"] == 2 and summary["judge"]["calls"] > 0
    for path in eval_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert SECRET not in repr(settings(server))


def test_an_openai_compatible_judge(tmp_path, server, samples, monkeypatch):
    """provider openai with a base_url: runs without ANTHROPIC_API_KEY (a self-hosted judge, e.g. vLLM)."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("VLM3_JUDGE_BASE_URL", raising=False)
    eval_dir = make_dir(tmp_path, samples[:2], ["correctness", "rubric"], provider="openai", model="qwen-judge-72b",
                        base_url=f"{server.url}/v1")
    summary = score_eval_dir(eval_dir)
    judge = summary["judge"]
    assert judge["metrics"]["rubric"]["mean"] == 0.8 and judge["metrics"]["correctness"]["mean"] == 0.8
    assert judge["cost_usd"] is None and "no list price" in judge["cost_note"]
    requests = server.requests("/v1/chat/completions")
    assert len(requests) == judge["calls"] == 4 and server.count("/v1/messages") == 0
    assert all(r["response_format"]["type"] == "json_schema" and r["temperature"] == 0.0 for r in requests)
    assert not any(part["type"] == "image_url" for r in requests for part in r["messages"][0]["content"])


def test_estimate_before_a_run_matches_what_the_run_used(tmp_path, server, samples):
    spec = JudgeSpec(metrics=ALL_METRICS)
    answers = answers_for(samples)
    estimate = estimate_judge_cost(spec, samples, answers=answers).to_dict()
    eval_dir = make_dir(tmp_path, samples, ALL_METRICS)
    judge = score_eval_dir(eval_dir, judge_settings=settings(server))["judge"]
    used_input = judge["input_tokens"] * (judge["calls"] + judge["cache_hits"]) / judge["calls"]
    assert estimate["calls"] == judge["calls"] + judge["cache_hits"]
    assert 0.67 < estimate["input_tokens"] / used_input < 1.5
    assert estimate["cost_usd"] > 0 and "~$" in format_estimate(estimate)
    assert estimate_judge_cost(JudgeSpec(metrics=["rubric"], use_batch_api=True), samples, answers=answers).batch is True
    # A recipe before any data is read: a count and typical sizes (what `vlm3 plan` prints).
    typical = estimate_judge_cost(JudgeSpec(metrics=["rubric"]), 1000)
    assert typical.calls == 1000 and str(typical).startswith("judge estimate (claude-sonnet-5-5, rubric): 1000 samples")


@pytest.mark.parametrize(
    "text, stop_reason, verdict",
    [
        ('{"correctness": 9, "spec_faithfulness": 7, "unsupported": [], "reason": "ok"}', "end_turn", (9, 7)),
        ('```json\n{"correctness": 3, "spec_faithfulness": 4, "unsupported": ["x"], "reason": "r"}\n```', "end_turn", (3, 4)),
        ('Here is my grade: {"correctness": 5, "spec_faithfulness": 5, "unsupported": [], "reason": "r"} Thanks.', "end_turn", (5, 5)),
        ('{"correctness": 9, "spec_faithfulness": 7, "unsupported": [], "reason": "ok"}', "max_tokens", "max_tokens"),
        ('{"correctness": 9, "spec_faith', "end_turn", "not valid JSON"),
        ('{"correctness": "nine", "spec_faithfulness": 7, "unsupported": [], "reason": "ok"}', "end_turn", "correctness"),
        ('{"correctness": 10, "spec_faithfulness": -1, "unsupported": [], "reason": "ok"}', "end_turn", "spec_faithfulness"),
        ("I can't help with that.", "refusal", "refused"),
        ("", "end_turn", "empty"),
        ("The answer looks right to me.", "end_turn", "not valid JSON"),
    ],
)
def test_parse_reply(text, stop_reason, verdict):
    if isinstance(verdict, tuple):
        parsed = parse_reply(text, RubricVerdict, stop_reason)
        assert (parsed.correctness, parsed.spec_faithfulness) == verdict
    else:
        with pytest.raises(JudgeReplyError, match=verdict) as caught:
            parse_reply(text, RubricVerdict, stop_reason)
        assert caught.value.raw == text


@pytest.mark.parametrize(
    "model, batch, dollars",
    [
        ("claude-sonnet-4-5", False, 3.00 + 15.00),
        ("claude-sonnet-4-5-20250929", False, 3.00 + 15.00),
        ("claude-sonnet-5-5", False, 2.00 + 10.00),
        ("claude-sonnet-5-5", True, (2.00 + 10.00) / 2),
        ("claude-haiku-4-5", False, 1.00 + 5.00),
        ("qwen-judge-72b", False, None),
    ],
)
def test_list_prices_per_million_tokens(model, batch, dollars):
    assert cost_usd(model, 1_000_000, 1_000_000, batch=batch) == dollars


def test_deepeval_test_run_over_saved_predictions(tmp_path, server, samples):
    """`deepeval test run` with DeepEval's real CLI and pytest plugin: -k selects samples, vlm3 gives the sample
    limit and the folder, DeepEval's files stay inside the evaluation directory, the judge cache is shared."""
    eval_dir = make_dir(tmp_path, samples, ["correctness", "rubric"])
    score_eval_dir(eval_dir, judge_settings=settings(server))  # fills the cache the suite reads
    calls_after_score = server.count("/v1/messages")
    argv, env = deepeval_command(eval_dir, ["-k", "torque_sequence or procedure", "--color=no"])
    env = {**os.environ, **env, "ANTHROPIC_API_KEY": SECRET, "VLM3_JUDGE_BASE_URL": server.url}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(argv, cwd=eval_dir, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    selected = [s for s in samples if s["category"] in ("torque_sequence", "procedure")]
    assert 0 < len(selected) < len(samples)
    assert f"Passed: {len(selected)} | Failed: 0" in proc.stdout
    assert f"judge {JUDGE_MODEL}: 0 calls" in proc.stdout  # everything came from `vlm3 score`'s cache
    assert server.count("/v1/messages") == calls_after_score
    assert (eval_dir / ".deepeval" / ".latest_test_run.json").exists()
    assert not (tmp_path / ".deepeval").exists()  # DeepEval wrote only inside the evaluation directory
    assert SECRET not in proc.stdout + proc.stderr

    # A reply the judge cannot use fails its test with the raw text; VLM3_MAX_SAMPLES limits the run.
    other = make_dir(tmp_path, samples, ["rubric"], name="fresh")
    server.script(RUBRIC_MARK, reply("no grade today"))
    argv, env = deepeval_command(other, ["--color=no"], max_samples=1)
    env = {**os.environ, **env, "ANTHROPIC_API_KEY": SECRET, "VLM3_JUDGE_BASE_URL": server.url}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(argv, cwd=other, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "raw reply: 'no grade today'" in proc.stdout and "1 failed" in proc.stdout
