"""Faults found by attacks on the CLI with real files and loopback servers: links in an evaluation
folder, lone surrogates from a server or a pipeline file, Message Batches the provider lost, judge
scores out of range, and probe lines past docs/data.md's bounds.

Usage:
    .venv/bin/python -m pytest tests/test_faults_data.py -q -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench.loopback_openai import LoopbackOpenAI, Reply
from vlm3.core.jsonio import LOCK_NAME, LinkedFile, folder_lock, write_json, write_text_atomic
from harness.evaluation import generate_into, score_eval_dir
from harness.generate import repair_torn_tail
from tests.conftest import run_cli
from tests.test_faults import MODEL, probe_samples, right_answer, settings_for

TARGET_BYTES = b'{"keep": "me"}\n{"torn'  # a last line without its newline: the torn-tail repair would cut it


def linked_to_target(tmp_path: Path, link: Path) -> Path:
    """A file outside the folder with known bytes, and `link` pointing at it."""
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(TARGET_BYTES)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


# 1. Never write through a link in an evaluation or run folder


@pytest.mark.parametrize("write", [
    lambda path: write_text_atomic(path, "new"),
    lambda path: write_json(path, {"new": 1}),
    lambda path: repair_torn_tail(path),
], ids=["write_text_atomic", "write_json", "repair_torn_tail"])
def test_a_write_to_a_linked_file_is_refused_and_the_target_is_untouched(tmp_path, write):
    link = tmp_path / "eval" / "predictions.jsonl"
    target = linked_to_target(tmp_path, link)
    with pytest.raises(LinkedFile, match="is a symbolic link; vlm3 never writes through links"):
        write(link)
    assert target.read_bytes() == TARGET_BYTES and link.is_symlink()


def test_a_linked_lock_file_is_refused_and_the_target_is_untouched(tmp_path):
    eval_dir = tmp_path / "eval"
    target = linked_to_target(tmp_path, eval_dir / LOCK_NAME)
    with pytest.raises(LinkedFile, match=f"{LOCK_NAME} is a symbolic link"):
        with folder_lock(eval_dir, "scoring"):
            pass
    assert target.read_bytes() == TARGET_BYTES


def test_generate_refuses_a_linked_predictions_file(tmp_path):
    eval_dir = tmp_path / "eval"
    target = linked_to_target(tmp_path, eval_dir / "predictions.jsonl")
    with LoopbackOpenAI(answer=right_answer) as server:
        with pytest.raises(LinkedFile, match="predictions.jsonl is a symbolic link"):
            generate_into(eval_dir, probe_samples(tmp_path, 2), settings_for(server), label="x", endpoint=server.base_url)
        assert server.request_count == 0  # refused before anything is asked
    assert target.read_bytes() == TARGET_BYTES


def test_cli_score_with_a_linked_lock_exits_with_a_sentence_and_leaves_the_target(tmp_path):
    eval_dir = tmp_path / "eval"
    with LoopbackOpenAI(answer=right_answer) as server:
        generate_into(eval_dir, probe_samples(tmp_path, 1), settings_for(server), label="x", endpoint=server.base_url)
    (eval_dir / LOCK_NAME).unlink()
    target = linked_to_target(tmp_path, eval_dir / LOCK_NAME)
    proc = run_cli("score", str(eval_dir), "--no-judge", timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "is a symbolic link" in proc.stderr and "--out folder" in proc.stderr
    assert target.read_bytes() == TARGET_BYTES


# 2. A lone surrogate from a server is cleaned text or an error record, never a crash


def test_lone_surrogates_from_the_server_never_stop_generation(tmp_path):
    samples = probe_samples(tmp_path, 4)
    eval_dir = tmp_path / "eval"
    script = [
        Reply(content="Tighten to 45 Nm \ud800.", match="torque 00"),  # json.dumps sends it as the escape \ud800
        Reply(served_model="tiny-\udc00", match="torque 01"),
        Reply(status=400, raw='{"error": {"message": "bad \\ud800 request", "type": "invalid_request_error"}}', match="torque 02"),
    ]
    with LoopbackOpenAI(script, answer=right_answer) as server:
        stats = generate_into(eval_dir, samples, settings_for(server), label="x", endpoint=server.base_url)
    assert (stats.answered, stats.failed) == (3, 1), stats.errors
    records = {r["id"]: r for r in map(json.loads, (eval_dir / "predictions.jsonl").read_bytes().decode("utf-8").splitlines())}
    assert records["probe:00"]["answer"] == "Tighten to 45 Nm \ufffd."
    assert records["probe:01"]["served_model"] == "tiny-\ufffd"
    assert records["probe:02"]["answer"] is None and "bad \ufffd request" in records["probe:02"]["error"]
    assert records["probe:03"]["answer"] == "Tighten to 45 Nm."
    summary = score_eval_dir(eval_dir, judge=False)  # the saved records score and render too
    assert summary["counts"]["failed"] == 1


def test_a_saved_record_with_a_lone_surrogate_is_read_as_cleaned_text(tmp_path):
    from harness.generate import read_predictions

    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "model": "m", "prompt_hash": "h", "answer": "x\\ud800", "error": null}\n')
    [record] = read_predictions(path)
    assert record["answer"] == "x\ufffd"


PIPELINE_ROW = {"image": "images/p.jpg", "conversations": [{"role": "user", "content": "What is the torque?"},
                                                         {"role": "assistant", "content": "40 Nm."}]}


def write_pipeline(root: Path, *rows: str) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (850, 1100), "white").save(root / "images" / "p.jpg")
    path = root / "vlm_train.jsonl"
    path.write_text("".join(row + "\n" for row in rows))
    return path


def test_a_lone_surrogate_in_a_pipeline_row_is_a_named_problem(tmp_path):
    from data_adapters.pipeline import read_pipeline

    good = json.dumps(PIPELINE_ROW)
    bad = good.replace("40 Nm.", "40 Nm \\ud800")
    path = write_pipeline(tmp_path, good, bad)
    rows, problems = read_pipeline(path)
    assert len(rows) == 1 and [(p.line, p.code) for p in problems] == [(2, "surrogate")], problems
    assert str(problems[0]) == (f"{path}:2: text holds a lone surrogate (\\ud800), which is not valid Unicode; "
                                "fix the exporter")


def test_check_and_prepare_stop_on_a_lone_surrogate_before_creating_anything(tmp_path):
    good = json.dumps(PIPELINE_ROW)
    root = tmp_path / "td"
    train = write_pipeline(root, good, good.replace("What", "\\udfff What"))
    val = root / "vlm_val.jsonl"
    val.write_text(good + "\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ncompute: {{gpu: cpu}}\ndata: {{train: {train}, val: {val}, images_root: {root}}}\n")
    checked = run_cli("check", str(recipe_file), "--out", str(tmp_path / "pf"), timeout=120)
    assert checked.returncode != 0 and "Traceback" not in checked.stdout + checked.stderr
    assert "vlm_train.jsonl:2" in checked.stdout + checked.stderr and "lone surrogate (\\udfff)" in checked.stdout + checked.stderr
    runs = tmp_path / "runs"
    prepared = run_cli("prepare", str(recipe_file), "--runs-root", str(runs), timeout=120)
    assert prepared.returncode != 0 and "Traceback" not in prepared.stderr, prepared.stderr
    assert "lone surrogate" in prepared.stderr and not runs.exists()


# 3. Message Batches the provider lost, and judge scores out of range


def lost_batch_server(batch_polls: int = 2):
    """The loopback Anthropic server, answering 404 for a batch it does not have, cancel included
    (the loopback's own cancel route knows only its batches)."""
    from tests.loopback_anthropic import LoopbackJudge

    class LosingJudge(LoopbackJudge):
        def _handler_class(self):
            base = super()._handler_class()
            server = self

            class Handler(base):
                def do_POST(self) -> None:
                    if self.path.endswith("/cancel") and self.path.split("/")[-2] not in server._batches:
                        self._read()
                        self._send(404, json.dumps({"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}}))
                        return
                    super().do_POST()

            return Handler

    return LosingJudge(batch_polls=batch_polls)


BATCH_JUDGE = {"metrics": ["rubric"], "model": "claude-sonnet-5-5", "use_batch_api": True}
JUDGE_KEY = "sk-ant-test-faults-data-0123456789"


def judged_eval_dir(tmp_path: Path, judge: dict) -> Path:
    from tests.loopback_anthropic import write_eval_dir

    samples = [{"id": f"val:{i}", "kind": "val", "question": f"torque {i}?", "expected": "45 Nm", "image": None,
                "image_ref": None, "category": "torque", "content_type": "specification", "source": "val_page"} for i in range(2)]
    eval_dir = tmp_path / "eval"
    write_eval_dir(eval_dir, samples, {s["id"]: "Tighten to 45 Nm." for s in samples}, judge)
    return eval_dir


def lose_a_submitted_batch(eval_dir: Path, server) -> str:
    """An interrupted `vlm3 score` leaves its batch saved; then the provider loses it (expired, deleted)."""
    from tests.test_judge_batches import interrupt_while_waiting

    code, text, _ = interrupt_while_waiting(eval_dir, server)
    assert code == 130, text
    [batch_id] = list(server._batches)
    server._batches.clear()
    server.batch_polls = 1  # new batches end at the first poll: no 30 s wait between polls
    return batch_id


def test_a_batch_the_provider_lost_is_forgotten_and_its_requests_submitted_again(tmp_path):
    pytest.importorskip("deepeval", reason="the judge extra is not installed")
    from harness.judge import CACHE_FILE
    from harness.judge_client import JudgeCache

    eval_dir = judged_eval_dir(tmp_path, BATCH_JUDGE)
    with lost_batch_server() as server:
        lost = lose_a_submitted_batch(eval_dir, server)
        proc = run_cli("score", str(eval_dir), env={"ANTHROPIC_API_KEY": JUDGE_KEY, "VLM3_JUDGE_BASE_URL": server.url}, timeout=180)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Traceback" not in text, text
        assert f"batch {lost}: the provider no longer has it" in text
        assert server.count("/v1/messages/batches") == 2  # the lost batch's requests, submitted again
    cache = JudgeCache(eval_dir / CACHE_FILE)
    assert cache.pending_batches() == []
    cache.close()
    judge = json.loads((eval_dir / "summary.json").read_text())["judge"]
    assert judge["metrics"]["rubric"]["unscored"] == 0


def test_cancel_skips_a_batch_the_provider_lost(tmp_path):
    pytest.importorskip("deepeval", reason="the judge extra is not installed")
    eval_dir = judged_eval_dir(tmp_path, BATCH_JUDGE)
    with lost_batch_server() as server:
        lost = lose_a_submitted_batch(eval_dir, server)
        env = {"ANTHROPIC_API_KEY": JUDGE_KEY, "VLM3_JUDGE_BASE_URL": server.url}
        proc = run_cli("score", str(eval_dir), "--cancel-batches", env=env, timeout=120)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Traceback" not in text, text
        assert f"batch {lost}: the provider no longer has it" in text
        assert "none was saved" in run_cli("score", str(eval_dir), "--cancel-batches", env=env, timeout=120).stdout


def out_of_range_scores(schema: dict | None, prompt: str) -> str:
    """A judge that answers 99 on GEval's 0-10 scale; every other reply as the loopback gives it."""
    from tests.loopback_anthropic import SENTENCE, schema_answer

    if schema and "score" in (schema.get("properties") or {}):
        return json.dumps({"reason": "r", "score": 99})
    return json.dumps(schema_answer(schema, prompt)) if schema else SENTENCE


def test_an_out_of_range_judge_score_is_not_cached_and_is_asked_again(tmp_path):
    pytest.importorskip("deepeval", reason="the judge extra is not installed")
    from tests.loopback_anthropic import LoopbackJudge

    eval_dir = judged_eval_dir(tmp_path, {"metrics": ["correctness"], "model": "claude-sonnet-5-5", "use_batch_api": False})
    with LoopbackJudge(responder=out_of_range_scores) as broken:
        first = run_cli("score", str(eval_dir), env={"ANTHROPIC_API_KEY": JUDGE_KEY, "VLM3_JUDGE_BASE_URL": broken.url}, timeout=180)
    judge = json.loads((eval_dir / "summary.json").read_text())["judge"]
    assert judge["metrics"]["correctness"]["unscored"] == 2, first.stdout + first.stderr
    with LoopbackJudge() as healthy:
        again = run_cli("score", str(eval_dir), env={"ANTHROPIC_API_KEY": JUDGE_KEY, "VLM3_JUDGE_BASE_URL": healthy.url}, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert healthy.count("/v1/messages") >= 2  # the bad replies were not cached: asked again
    judge = json.loads((eval_dir / "summary.json").read_text())["judge"]
    assert judge["metrics"]["correctness"]["unscored"] == 0 and judge["metrics"]["correctness"]["mean"] == 0.8


# 4. Probe lines bounded as docs/data.md promises: at most 4 MiB and 32 levels of nesting


def probe_line(**extra) -> str:
    return json.dumps({"id": "a", "category": "torque_spec", "question": "Q?", "expected_answer": "40 Nm", **extra})


@pytest.mark.parametrize("line, code", [
    ('{"id": "deep", "question": "Q?", "expected_answer": "x", "metadata": ' + '{"k": ' * 100_000 + '"x"' + "}" * 100_000 + "}", "too_deep"),
    ('{"id": "deep", "question": "Q?", "expected_answer": "x", "metadata": ' + '{"k": ' * 500 + '"x"' + "}" * 500 + "}", "too_deep"),
    (probe_line(id="long", note="x" * (10 * 1024 * 1024)), "line_too_long"),
    (probe_line(id="sur", question="Q \\ud800?").replace("\\\\ud800", "\\ud800"), "surrogate"),
], ids=["100k-deep", "500-deep", "10MB", "lone-surrogate"])
def test_probe_lines_past_the_bounds_are_named_problems(tmp_path, line, code):
    from data_adapters.samples import load_probes

    probes = tmp_path / "probes.jsonl"
    probes.write_text(probe_line() + "\n" + line + "\n" + probe_line(id="b") + "\n")
    samples, problems = load_probes(probes, tmp_path)
    assert [s.id for s in samples] == ["probe:a", "probe:b"]
    assert [(p.line, p.code) for p in problems] == [(2, code)], problems


def test_check_names_a_deep_probe_line_without_a_traceback(tmp_path):
    good = json.dumps(PIPELINE_ROW)
    root = tmp_path / "td"
    train = write_pipeline(root, good)
    val = root / "vlm_val.jsonl"
    val.write_text(good + "\n")
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"id": "deep", "metadata": ' + '{"k": ' * 100_000 + '"x"' + "}" * 100_000 + "}\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ncompute: {{gpu: cpu}}\ndata: {{train: {train}, val: {val}, images_root: {root}, probes: {probes}}}\n")
    proc = run_cli("check", str(recipe_file), "--out", str(tmp_path / "pf"), timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "probes.jsonl:1" in proc.stdout and "nested more than 32 levels" in proc.stdout
