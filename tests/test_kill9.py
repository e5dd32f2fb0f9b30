"""kill -9 at random moments of `vlm3 eval` and `vlm3 score`: no answer lost or duplicated, no file
half-written, no report that claims a completeness it lacks.

Usage:
    .venv/bin/python -m pytest tests/test_kill9.py -q -p no:asyncio

A bounded loop (seeded, so a failure replays): each round starts the real CLI against a loopback
endpoint that answers slowly, kills it with SIGKILL after a random delay, and checks the folder.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.loopback_openai import LoopbackOpenAI, Reply
from tests.conftest import DEMO_RECIPE, ROOT, run_cli

ROUNDS = 6
SEED = 11


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", *args], cwd=ROOT, env={**os.environ, "VLM3_API_KEY": "k"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def answered_keys(path: Path) -> list[tuple]:
    """Successful records' keys; every line but a torn last one must be whole JSON."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    keys = []
    for number, line in enumerate(lines):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            assert number == len(lines) - 1, f"line {number + 1} of {path} is torn but not the last"
            continue
        if record["error"] is None:
            keys.append((record["id"], record["endpoint"], record["model"], record["prompt_hash"]))
    return keys


def check_outputs(eval_dir: Path) -> None:
    """Whatever a kill left: JSON files parse, the report is whole, and a summary says if it is incomplete."""
    summary_path = eval_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        assert summary["complete"] == (summary["counts"]["errors"] == 0)
        assert summary["counts"]["answered"] + summary["counts"]["errors"] == summary["counts"]["samples"]
    report = eval_dir / "report.html"
    if report.exists():
        assert report.read_text().rstrip().endswith("</html>")
    for name in ("meta.json",):
        if (eval_dir / name).exists():
            json.loads((eval_dir / name).read_text())


def test_kill9_during_eval_and_score_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    rounds: list[int] = []  # answers saved after each killed eval
    eval_dir = tmp_path / "eval"
    eval_args = ("eval", str(DEMO_RECIPE), "--endpoint", "ENDPOINT", "--only", "probes", "--out", str(eval_dir),
                 "--model", "m", "--concurrency", "2", "--no-judge")
    with LoopbackOpenAI(default=Reply(delay=0.3)) as server:
        args = [server.base_url if a == "ENDPOINT" else a for a in eval_args]
        for _ in range(ROUNDS):
            proc = start(*args)
            # Start-up (imports) takes seconds on a busy box: count from the first generation request.
            before = server.request_count
            deadline = time.monotonic() + 60
            while server.request_count == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))  # 12 answers at 0.3 s, two at a time: ~1.8 s of generating in all
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            keys = answered_keys(eval_dir / "predictions.jsonl")
            assert len(keys) == len(set(keys)), "an answer was asked and saved twice"
            rounds.append(len(keys))
            check_outputs(eval_dir)
        for _ in range(ROUNDS):
            proc = start("score", str(eval_dir), "--no-judge")
            time.sleep(rng.uniform(0.5, 4.0))  # start-up ~2 s, then scoring and writing the report
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            check_outputs(eval_dir)
        done = run_cli(*args, env={"VLM3_API_KEY": "k"})
    assert done.returncode == 0, done.stdout + done.stderr
    print("answers saved after each killed eval:", rounds)
    assert 0 < rounds[-1] and any(0 < n < 12 for n in rounds), rounds  # kills landed while answers were arriving
    samples = sum(1 for line in (eval_dir / "samples.jsonl").read_text().splitlines() if line.strip())
    keys = answered_keys(eval_dir / "predictions.jsonl")
    assert len(keys) == len(set(keys)) == samples  # none lost, none twice
    assert server.request_count >= samples
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["complete"] is True and summary["counts"]["answered"] == samples
    check_outputs(eval_dir)
