"""Bulk generation (harness.generate) with the real `openai` client against a scripted loopback server.

Usage:
    .venv/bin/python -m pytest tests/test_generate.py -q -p no:asyncio

Scripted failures carry `retry-after-ms` so the client's own retries run in milliseconds; the one
dropped connection per test costs the client's first backoff (about 0.5 s).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bench.loopback_openai import LoopbackOpenAI, Reply
from harness.evaluation import generate_into
from harness.generate import GenerationSettings, GenerationStats, generate, latest_answers, prompt_hash
from data_adapters.samples import EvalSample

SECRET = "sk-test-DO-NOT-WRITE-4f9c2e"
MODEL = "tiny-vlm"


def write_jpeg(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (16, 12), color).save(path, format="JPEG")
    return path


def make_samples(tmp_path: Path, count: int) -> list[EvalSample]:
    samples = []
    for i in range(count):
        image = write_jpeg(tmp_path / f"page_{i:02d}.jpg", (10 * i, 100, 200 - 10 * i))
        samples.append(
            EvalSample(id=f"val:{i:02d}", kind="val", image=str(image), image_ref=image.name,
                       question=f"question {i:02d}", expected=f"expected {i:02d}")
        )
    return samples


def settings_for(server: LoopbackOpenAI, **overrides) -> GenerationSettings:
    return replace(GenerationSettings(base_url=server.base_url, api_key=SECRET, model=MODEL, timeout_s=2, max_retries=3), **overrides)


def run(samples: list[EvalSample], settings: GenerationSettings, out: Path) -> GenerationStats:
    return asyncio.run(generate(samples, settings, out))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def successful_keys(out: Path) -> list[tuple]:
    return [(r["id"], r["endpoint"], r["model"], r["weights"], r["prompt_hash"]) for r in records(out) if r["error"] is None]


def test_request_is_the_image_then_the_question_at_temperature_zero(tmp_path):
    samples = make_samples(tmp_path, 1)
    out = tmp_path / "predictions.jsonl"
    with LoopbackOpenAI() as server:
        stats = run(samples, settings_for(server, max_tokens=77), out)
    assert (stats.answered, stats.failed) == (1, 0)
    [body] = server.requests
    assert body["model"] == MODEL
    assert body["temperature"] == 0
    assert body["max_tokens"] == 77
    [message] = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert image_part["type"] == "image_url" and text_part == {"type": "text", "text": "question 00"}
    prefix = "data:image/jpeg;base64,"
    url = image_part["image_url"]["url"]
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix):]) == Path(samples[0].image).read_bytes()
    [record] = records(out)
    assert record["answer"] == "answer to: question 00" and record["error"] is None
    assert record["finish_reason"] == "stop" and record["usage"]["total_tokens"] > 0
    assert (record["id"], record["endpoint"], record["model"], record["prompt_hash"]) == (
        "val:00", server.base_url, MODEL, prompt_hash(samples[0], settings_for(server, max_tokens=77)))
    assert record["served_model"] == MODEL  # what the server says answered (the loopback echoes the request)


def test_system_prompt_goes_before_the_user_message(tmp_path):
    with LoopbackOpenAI() as server:
        run(make_samples(tmp_path, 1), settings_for(server, system_prompt="You read service manuals."), tmp_path / "p.jsonl")
    roles = [m["role"] for m in server.requests[0]["messages"]]
    assert roles == ["system", "user"]
    assert server.requests[0]["messages"][0]["content"] == "You read service manuals."


def test_a_rows_own_system_turn_is_sent_as_in_training(tmp_path):
    sample = replace(make_samples(tmp_path, 1)[0], system="Answer from the BMW manual only.")
    with LoopbackOpenAI() as server:
        run([sample], settings_for(server, system_prompt="recipe default"), tmp_path / "p.jsonl")
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Answer from the BMW manual only."}
    plain = make_samples(tmp_path, 1)[0]
    settings = GenerationSettings(base_url="http://x", api_key="k", model="m")
    assert prompt_hash(sample, settings) != prompt_hash(plain, settings)


def test_concurrency_is_bounded(tmp_path):
    samples = make_samples(tmp_path, 9)
    with LoopbackOpenAI(default=Reply(delay=0.15)) as server:
        stats = run(samples, settings_for(server, concurrency=3), tmp_path / "p.jsonl")
    assert stats.answered == 9
    assert 1 < server.max_in_flight <= 3


@pytest.mark.parametrize(
    "failures",
    [
        [Reply.error(429)],
        [Reply.error(500), Reply.error(503)],
        [Reply(drop=True)],
        [Reply(drop=True), Reply.error(429), Reply.error(503)],
    ],
    ids=["429", "500-then-503", "dropped-connection", "dropped-429-503"],
)
def test_retries_recover(tmp_path, failures):
    samples = make_samples(tmp_path, 1)
    out = tmp_path / "p.jsonl"
    with LoopbackOpenAI(script=failures) as server:
        stats = run(samples, settings_for(server), out)
    assert (stats.answered, stats.failed, stats.errors) == (1, 0, [])
    assert server.request_count == len(failures) + 1
    assert server.questions == ["question 00"] * (len(failures) + 1)
    [record] = records(out)
    assert record["error"] is None and record["answer"] == "answer to: question 00"


def test_answer_slower_than_the_timeout_is_asked_again(tmp_path):
    samples = make_samples(tmp_path, 1)
    out = tmp_path / "p.jsonl"
    with LoopbackOpenAI(script=[Reply(delay=0.8)]) as server:
        stats = run(samples, settings_for(server, timeout_s=0.2), out)
    assert (stats.answered, stats.failed) == (1, 0)
    assert server.questions == ["question 00"] * 2
    assert records(out)[0]["answer"] == "answer to: question 00"


def test_failure_beyond_max_retries_is_recorded_then_asked_again(tmp_path):
    samples = make_samples(tmp_path, 3)
    out = tmp_path / "p.jsonl"
    settings_kw = {"concurrency": 2, "endpoint_id": "https://one-endpoint.example/v1"}  # the same endpoint, restarted
    # max_retries=3: four attempts, all refused, for the one question.
    with LoopbackOpenAI(script=[Reply.error(503, match="question 01")] * 4) as server:
        first = run(samples, settings_for(server, **settings_kw), out)
    assert (first.answered, first.failed) == (2, 1)
    assert server.questions.count("question 01") == 4
    [failed] = [r for r in records(out) if r["error"] is not None]
    assert failed["id"] == "val:01" and failed["answer"] is None and "503" in failed["error"]
    assert first.errors and first.errors[0].startswith("val:01: ")

    with LoopbackOpenAI() as server:
        second = run(samples, settings_for(server, **settings_kw), out)
    assert server.questions == ["question 01"]
    assert (second.skipped, second.requested, second.answered, second.failed, second.foreign) == (2, 1, 1, 0, 0)
    answers = latest_answers(out)
    assert sorted(key[0] for key in answers) == ["val:00", "val:01", "val:02"]
    assert len(records(out)) == 4  # the error record stays as history; the new answer supersedes it


def test_error_record_names_the_root_cause(tmp_path):
    out = tmp_path / "p.jsonl"
    with LoopbackOpenAI(script=[Reply(drop=True)] * 2) as server:
        stats = run(make_samples(tmp_path, 1), settings_for(server, max_retries=1), out)
    assert stats.failed == 1 and server.request_count == 2
    [record] = records(out)
    assert "disconnected" in record["error"].lower(), record["error"]


def test_resume_asks_only_for_the_missing(tmp_path):
    samples = make_samples(tmp_path, 7)
    out = tmp_path / "p.jsonl"
    first_subset = [samples[0], samples[3], samples[6]]
    with LoopbackOpenAI() as server:
        run(first_subset, settings_for(server, concurrency=4), out)
        assert server.request_count == 3
        stats = run(samples, settings_for(server, concurrency=4), out)
        assert server.request_count == 3 + 4
        assert sorted(server.questions[3:]) == ["question 01", "question 02", "question 04", "question 05"]
        assert (stats.total, stats.skipped, stats.requested, stats.answered) == (7, 3, 4, 4)

        again = run(samples, settings_for(server, concurrency=4), out)
        assert server.request_count == 7  # everything saved: nothing asked
        assert (again.skipped, again.requested) == (7, 0)
    keys = successful_keys(out)
    assert len(keys) == len(set(keys)) == 7


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    samples = make_samples(tmp_path, 3)
    out = tmp_path / "p.jsonl"
    with LoopbackOpenAI() as server:
        run(samples, settings_for(server), out)
        lines = out.read_text(encoding="utf-8").splitlines()
        torn_id = json.loads(lines[-1])["id"]
        # An interrupted write: the last record only half written, without its newline.
        out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
        stats = run(samples, settings_for(server), out)
    assert (stats.skipped, stats.answered) == (2, 1)
    assert server.questions[3:] == [f"question {torn_id[-2:]}"]
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert len(records(out)) == 3  # every line is a whole record again
    keys = successful_keys(out)
    assert len(keys) == len(set(keys)) == 3


def test_whole_last_record_without_newline_is_kept(tmp_path):
    samples = make_samples(tmp_path, 2)
    out = tmp_path / "p.jsonl"
    with LoopbackOpenAI() as server:
        run(samples, settings_for(server), out)
        out.write_text(out.read_text(encoding="utf-8").rstrip("\n"), encoding="utf-8")
        stats = run(samples, settings_for(server), out)
    assert server.request_count == 2 and stats.skipped == 2
    assert out.read_text(encoding="utf-8").endswith("\n") and len(records(out)) == 2


def test_changing_max_tokens_or_image_bytes_asks_again(tmp_path):
    samples = make_samples(tmp_path, 3)
    out = tmp_path / "p.jsonl"
    with LoopbackOpenAI() as server:
        run(samples, settings_for(server, max_tokens=64), out)
        run(samples, settings_for(server, max_tokens=64), out)
        assert server.request_count == 3

        run(samples, settings_for(server, max_tokens=65), out)
        assert server.request_count == 6
        assert {body["max_tokens"] for body in server.requests[3:]} == {65}

        before = prompt_hash(samples[2], settings_for(server, max_tokens=65))
        write_jpeg(Path(samples[2].image), (255, 0, 0))  # same path, new page image
        assert prompt_hash(samples[2], settings_for(server, max_tokens=65)) != before
        run(samples, settings_for(server, max_tokens=65), out)
        assert server.questions[6:] == ["question 02"]
    keys = successful_keys(out)
    assert len(keys) == len(set(keys)) == 7


def test_generate_into_keeps_the_api_key_out_of_every_file(tmp_path):
    samples = make_samples(tmp_path, 2)
    eval_dir = tmp_path / "eval" / "finetuned"
    with LoopbackOpenAI() as server:
        settings = settings_for(server, max_tokens=32)
        stats = generate_into(eval_dir, samples, settings, label="finetuned", endpoint=server.base_url)
    assert stats.answered == 2
    meta = json.loads((eval_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["model"] == MODEL and meta["endpoint"] == server.base_url and meta["label"] == "finetuned"
    assert "api_key" not in meta["settings"] and meta["settings"]["max_tokens"] == 32
    written = sorted(p.name for p in eval_dir.rglob("*") if p.is_file())
    assert written == [".vlm3.lock", "meta.json", "predictions.jsonl", "samples.jsonl"]
    for path in eval_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8"), path.name
    hashes = [json.loads(line)["prompt_hash"] for line in (eval_dir / "samples.jsonl").read_text().splitlines()]
    assert hashes == [prompt_hash(s, settings) for s in samples]


def test_cli_eval_against_an_endpoint_scores_and_fails_loudly_when_answers_are_missing(tmp_path, sample_dir):
    """`vlm3 eval RECIPE --endpoint URL`: the key comes from VLM3_API_KEY and is never written;
    when the endpoint keeps failing, the command exits 1 and says how to resume."""
    from tests.conftest import DEMO_RECIPE, run_cli

    secret = "sk-test-never-written-0123456789"
    with LoopbackOpenAI() as server:
        ok = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--only", "probes", "--out", str(tmp_path / "ok"),
                     "--model", "m", env={"VLM3_API_KEY": secret})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "ok" / "summary.json").exists() and (tmp_path / "ok" / "report.html").exists()
    for path in (tmp_path / "ok").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    with LoopbackOpenAI(default=Reply.error(500)) as server:
        bad = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--only", "probes", "--out", str(tmp_path / "bad"),
                      "--concurrency", "4", env={"VLM3_API_KEY": secret})
    assert bad.returncode == 1
    assert "run the same command again" in bad.stdout and "Traceback" not in bad.stderr
