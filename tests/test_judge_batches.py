"""Message Batches survive an interruption: the batch id is saved before any wait, Ctrl-C stops the
wait at once and says how to resume, a restart collects the same batch, and only --cancel-batches cancels.

Usage:
    .venv/bin/python -m pytest tests/test_judge_batches.py -q -p no:asyncio
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.loopback_anthropic import LoopbackJudge, write_eval_dir

pytest.importorskip("deepeval", reason="the judge extra is not installed: pip install -e '.[judge]'")

SECRET = "sk-ant-test-batches-0123456789"
JUDGE = {"metrics": ["rubric"], "model": "claude-sonnet-5-5", "use_batch_api": True}


def samples() -> list[dict]:
    return [{"id": f"val:{i}", "kind": "val", "question": f"torque {i}?", "expected": "45 Nm", "image": None,
             "image_ref": None, "category": "torque", "content_type": "specification", "source": "val_page"} for i in range(3)]


def start_score(eval_dir, server) -> subprocess.Popen:
    env = {"ANTHROPIC_API_KEY": SECRET, "VLM3_JUDGE_BASE_URL": server.url}
    import os

    return subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", "score", str(eval_dir)], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def interrupt_while_waiting(eval_dir, server) -> tuple[int, str, float]:
    proc = start_score(eval_dir, server)
    # Submitted and polled once: the client now sleeps batch_poll_s (30 s) before the next poll.
    wait_for(lambda: any(e["method"] == "GET" for e in server.log))
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out + err, time.monotonic() - started


def test_an_interrupted_batch_is_collected_on_restart_and_never_paid_twice(tmp_path):
    eval_dir = tmp_path / "eval"
    write_eval_dir(eval_dir, samples(), {s["id"]: "Tighten to 45 Nm." for s in samples()}, JUDGE)
    with LoopbackJudge(batch_polls=2) as server:
        code, text, stopped_s = interrupt_while_waiting(eval_dir, server)
        assert code == 130 and stopped_s < 10, text
        assert "Traceback" not in text and f"vlm3 score {eval_dir}" in text and "--cancel-batches" in text
        assert not (eval_dir / "summary.json").exists()  # nothing claims a judged result
        assert server.count("/v1/messages/batches") == 1 and server.cancelled == []

        again = run_cli("score", str(eval_dir), env={"ANTHROPIC_API_KEY": SECRET, "VLM3_JUDGE_BASE_URL": server.url}, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert server.count("/v1/messages/batches") == 1  # the same batch, polled and collected
        assert server.count("/v1/messages") == 0
    judge = json.loads((eval_dir / "summary.json").read_text())["judge"]
    assert judge["metrics"]["rubric"]["unscored"] == 0 and judge["batches"] == 0  # nothing new was submitted
    scores = [json.loads(line) for line in (eval_dir / "scores.jsonl").read_text().splitlines()]
    assert all(r["judge"]["metrics"]["rubric"]["score"] is not None for r in scores)


def test_cancel_only_when_asked(tmp_path):
    eval_dir = tmp_path / "eval"
    write_eval_dir(eval_dir, samples(), {s["id"]: "Tighten to 45 Nm." for s in samples()}, JUDGE)
    env = {"ANTHROPIC_API_KEY": SECRET, "VLM3_JUDGE_BASE_URL": "unused"}
    with LoopbackJudge(batch_polls=1000) as server:
        env["VLM3_JUDGE_BASE_URL"] = server.url
        code, text, _ = interrupt_while_waiting(eval_dir, server)
        assert code == 130 and server.cancelled == []
        [batch_id] = list(server._batches)
        cancel = run_cli("score", str(eval_dir), "--cancel-batches", env=env, timeout=60)
        assert cancel.returncode == 0 and batch_id in cancel.stdout, cancel.stdout + cancel.stderr
        assert server.cancelled == [batch_id]
        assert "none was saved" in run_cli("score", str(eval_dir), "--cancel-batches", env=env, timeout=60).stdout
