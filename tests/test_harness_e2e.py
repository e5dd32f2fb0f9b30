"""The harness against real local servers (`transformers serve` with the tiny model), and `vlm3 demo`'s claim."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.trainer


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_demo_finetuned_beats_base_on_memorised_probes(demo):
    assert demo.returncode == 0, demo.stdout[-3000:]
    summary = read_json(demo.run / "summary.json")
    memorised = summary["demo"]["memorised_probe_pass_rate"]
    # The untrained random model cannot state a spec; the trained one reproduces its training pages.
    assert memorised["base"] <= 0.2
    assert memorised["finetuned"] - memorised["base"] >= 0.5
    assert summary["demo"]["finetuned_beats_base"] is True
    assert summary["counts"]["errors"] == 0 and summary["counts"]["samples"] == 41  # 20 rows (3 with a second turn) + 12 probes + 6 general
    for key in ("by_category", "by_content_type", "probes", "thresholds"):
        assert summary[key]
    report = (demo.run / "report.html").read_text()
    assert "memorisation" in report
    assert (demo.run / "compare.html").exists()
    assert "fail -> pass" in demo.stdout
    # Base and fine-tuned were both asked vlm3's general probes; the comparison says whether they were kept.
    assert summary["demo"]["compare"]["general"]["n"] == 6 and "general ability" in demo.stdout


def test_predictions_are_keyed_and_carry_no_secret(trained_run):
    records = [json.loads(line) for line in (trained_run / "eval" / "finetuned" / "predictions.jsonl").read_text().splitlines()]
    assert len({(r["id"], r["model"], r["prompt_hash"]) for r in records}) == len(records) == 41
    assert all(r["model"] == "tiny-cpu-demo" for r in records)  # the recipe's served name, under either engine
    meta = read_json(trained_run / "eval" / "finetuned" / "meta.json")
    assert "api_key" not in json.dumps(meta)


def test_rescore_without_regenerating(trained_run):
    eval_dir = trained_run / "eval" / "finetuned"
    before = read_json(eval_dir / "summary.json")["metrics"]
    predictions = (eval_dir / "predictions.jsonl").read_bytes()
    proc = run_cli("score", str(eval_dir))
    assert proc.returncode == 0, proc.stderr
    assert read_json(eval_dir / "summary.json")["metrics"] == before
    assert (eval_dir / "predictions.jsonl").read_bytes() == predictions


def test_interrupted_generation_asks_only_for_the_missing(trained_run):
    """Keep the probe answers of a finished run, drop the rest: a new run asks exactly for the 29 missing (20 rows, 3 second turns, 6 general probes)."""
    done = trained_run / "eval" / "finetuned" / "predictions.jsonl"
    resume = trained_run / "eval" / "resume"
    resume.mkdir(exist_ok=True)
    kept = [line for line in done.read_text().splitlines() if json.loads(line)["id"].startswith("probe:")]
    (resume / "predictions.jsonl").write_text("\n".join(kept) + "\n" + kept[0][: len(kept[0]) // 2])  # and a torn line
    proc = run_cli("generate", str(trained_run), "--label", "resume", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "29 answered, 12 already saved, 0 failed" in proc.stdout
    log = (trained_run / "logs" / "serve-resume.log").read_text()
    assert log.count("POST /v1/chat/completions") == 29 + 1  # the 29 missing + the readiness ping
    score = run_cli("score", str(resume))
    assert score.returncode == 0
    assert read_json(resume / "summary.json")["metrics"] == read_json(trained_run / "eval" / "finetuned" / "summary.json")["metrics"]


def test_compare_cli(trained_run):
    proc = run_cli("compare", str(trained_run / "eval" / "base"), str(trained_run / "eval" / "finetuned"), "--out", str(trained_run / "cmp.html"))
    assert proc.returncode == 0, proc.stderr
    assert "probe_pass_rate" in proc.stdout and "95% CI" in proc.stdout
    assert (trained_run / "cmp.html").exists()


def test_serve_busy_port_is_a_clear_error(trained_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli("serve", str(trained_run), "--port", str(busy.getsockname()[1]))
    assert proc.returncode == 1
    assert "is busy" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_model_that_cannot_load_is_a_clear_error(tmp_path, trained_run):
    broken = tmp_path / "run"
    (broken / "output" / "merged").mkdir(parents=True)
    (broken / "recipe.yaml").write_text((trained_run / "recipe.yaml").read_text())
    (broken / "output" / "merged" / "config.json").write_text('{"model_type": "qwen2_vl", "architectures": ["Nope"]}')
    # A merge that says it passed its checks, so serve gets as far as loading (an unchecked one is refused first:
    # tests/test_faults_runs.py).
    (broken / "status.json").write_text('{"stages": {"merge": {"state": "done"}}}')
    (broken / "merge_check.json").write_text('{"ok": true, "problems": []}')
    proc = run_cli("serve", str(broken), "--port", "0", timeout=300)
    assert proc.returncode == 1
    assert "Error:" in proc.stderr and "log" in proc.stderr and "Traceback" not in proc.stderr.split("Error:")[0]


def read_until_serving(proc: subprocess.Popen, timeout_s: float = 180) -> list[str]:
    """`vlm3 serve`'s output lines up to its "Ctrl-C" line (it is serving) or its exit."""
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ctrl-C" in line or proc.poll() is not None:
            break
    return lines


def test_serve_answers_and_stops_on_ctrl_c(trained_run):
    from openai import OpenAI

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", "serve", str(trained_run), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = read_until_serving(proc)
        model = next(ln.split("model:", 1)[1].strip() for ln in lines if "model:" in ln)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=4, temperature=0)
        assert reply.choices[0].message is not None
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    with socket.socket() as again, pytest.raises(ConnectionRefusedError):
        again.connect(("127.0.0.1", port))  # the server is gone with the CLI


def test_serve_with_a_key_guards_every_route_and_dies_with_a_killed_cli(trained_run):
    """`vlm3 serve --api-key`: 401 everywhere but /health without the key; kill -9 of the CLI takes the server with it."""
    import httpx

    key = "sk-serve-guard-0123456789"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", "serve", str(trained_run), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "VLM3_API_KEY": key})
    try:
        lines = read_until_serving(proc)
        assert any("key:      required" in ln for ln in lines), "".join(lines)
        model = next(ln.split("model:", 1)[1].strip() for ln in lines if "model:" in ln)
        root = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{root}/health").status_code == 200
        for path in ("/v1/models", "/docs", "/openapi.json"):
            assert httpx.get(root + path).status_code == 401, path
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(f"{root}/v1/chat/completions", json=body).status_code == 401
        assert httpx.post(f"{root}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert key not in "".join(lines)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as again:
            if again.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.2)
    else:
        pytest.fail("the server outlived the killed `vlm3 serve`")
