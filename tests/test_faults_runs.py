"""Faults found by outside attacks on runs, evaluation, serving, recipes and the training report.

Usage:
    .venv/bin/python -m pytest tests/test_faults_runs.py -q -m "not trainer"

Each test works in the regime the fault happens in: real run folders, the real CLI in a
subprocess, a loopback OpenAI server, real processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from bench.loopback_openai import LoopbackOpenAI
from vlm3.core.jsonio import write_json
from tests.conftest import DEMO_RECIPE, ROOT, run_cli
from vlm3.recipe.schema import RecipeError, load_recipe
from vlm3.recipe.runs import RunDir


# 1: a merge that did not pass its checks is never served as the fine-tuned model


def merged_run(tmp_path: Path, merge: str | None, check: dict | None) -> RunDir:
    """A trained run with output/merged in place; the merge stage's state and merge_check.json as given."""
    run = RunDir.create(load_recipe(DEMO_RECIPE), root=tmp_path / "runs")
    run.merged_dir.mkdir(parents=True)
    (run.merged_dir / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    run.mark_stage("train", "done")
    if merge:
        run.mark_stage("merge", merge)
    if check is not None:
        write_json(run.path / "merge_check.json", check)
    return run


UNCHECKED_MERGES = {
    # A kill during verify-merge: the stage still says running and no check was written.
    "interrupted": ("running", None, "was interrupted"),
    "never-checked": (None, None, "never checked"),
    "failed": ("failed", {"ok": False, "problems": ["model.layers.0.q_proj: merged weight differs from W + scale*B@A"]},
               "model.layers.0.q_proj: merged weight differs"),
}


@pytest.mark.parametrize("case", UNCHECKED_MERGES.values(), ids=UNCHECKED_MERGES.keys())
@pytest.mark.parametrize("verb", ["eval", "serve", "ask"])
def test_a_merge_that_did_not_pass_its_checks_is_refused(tmp_path, verb, case):
    merge, check, reason = case
    run = merged_run(tmp_path, merge, check)
    page = tmp_path / "page.png"
    Image.new("RGB", (64, 64), "white").save(page)
    args = {"eval": ["eval", str(run.path), "--only", "probes", "--no-judge"], "serve": ["serve", str(run.path), "--port", "0"],
            "ask": ["ask", str(run.path), str(page), "What is shown?"]}[verb]
    proc = run_cli(*args, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert reason in message and f"vlm3 merge {run.path}" in message, message
    assert "serving" not in proc.stdout + proc.stderr
    assert not run.eval_root.exists()  # refused before anything was written


def test_a_merge_that_passed_its_checks_resolves_to_the_merged_folder(tmp_path):
    from vlm3.serve.local import model_dir_for

    run = merged_run(tmp_path, "done", {"ok": True, "problems": []})
    assert model_dir_for(run, run.recipe(), base=False) == run.merged_dir


def test_a_new_merge_killed_over_an_old_passing_check_is_refused(tmp_path):
    """merge_check.json from an earlier merge says ok, but the merge after it never finished."""
    from vlm3.serve.local import model_dir_for
    from vlm3.recipe.runs import RunError

    run = merged_run(tmp_path, "running", {"ok": True, "problems": []})
    with pytest.raises(RunError, match="interrupted"):
        model_dir_for(run, run.recipe(), base=False)


# 2: credentials in an endpoint URL are used for the request, never written


def test_credentials_in_the_endpoint_url_reach_no_file_and_no_folder_name(tmp_path):
    run = RunDir.create(load_recipe(DEMO_RECIPE), root=tmp_path / "runs")
    with LoopbackOpenAI() as server:
        url = server.base_url.replace("http://", "http://someone:pass-secret-1@") + "?api-key=SECRET-KEY-2&api-version=2024"
        proc = run_cli("eval", str(run.path), "--endpoint", url, "--only", "probes", "--model", "m", "--no-judge", timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    written = [p for p in run.eval_root.rglob("*")]
    assert any(p.name == "predictions.jsonl" for p in written) and any(p.name == "report.html" for p in written)
    for path in written:
        assert "secret" not in str(path.relative_to(tmp_path)).lower(), path
        if path.is_file() and path.suffix not in (".png", ".jpg"):
            text = path.read_text(errors="replace")
            assert "secret" not in text.lower() and "someone" not in text, path
    meta = json.loads(next(p for p in written if p.name == "meta.json").read_text())
    assert meta["endpoint"] == server.base_url + "?api-version=2024"  # what is not a credential is kept
    assert "secret" not in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize("given, shown", [
    ("https://user:pw@host.example/v1", "https://host.example/v1"),
    ("https://host.example:8443/v1?api-key=k&token=t&Secret=s&x-api-key=k&password=p&api-version=1", "https://host.example:8443/v1?api-version=1"),
    ("https://host.example/v1/", "https://host.example/v1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
])
def test_recorded_endpoint_drops_userinfo_and_key_parameters(given, shown):
    from vlm3.cli.evaluate import recorded_endpoint

    assert recorded_endpoint(given) == shown


# 3: a recipe is a regular file read up to its limit


def test_a_recipe_that_is_dev_zero_is_refused_at_once():
    started = time.monotonic()
    with pytest.raises(RecipeError, match="not a regular file"):
        load_recipe("/dev/zero")
    assert time.monotonic() - started < 1


def test_a_recipe_that_is_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    code = f"from vlm3.recipe.schema import load_recipe\nload_recipe({str(fifo)!r})\n"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert time.monotonic() - started < 5  # the interpreter's start included; the refusal itself is immediate
    assert "not a regular file" in proc.stderr


def test_cli_names_a_fifo_recipe_and_exits_2(tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    proc = run_cli("validate", str(fifo), timeout=20)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_recipe_whose_size_says_nothing_is_cut_at_the_limit(monkeypatch):
    """/proc files are regular files of size 0 however long they read: the limit holds while reading, not only from stat."""
    import vlm3.recipe.schema as recipe_module

    monkeypatch.setattr(recipe_module, "MAX_RECIPE_BYTES", 100)
    with pytest.raises(RecipeError, match="over the 100-byte limit"):
        load_recipe("/proc/self/maps")


# 4: the server dies with vlm3, a request in flight or not


SLOW_SERVER = """
import http.server, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: print("draining", flush=True))  # graceful: waits for requests in flight
class Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(80)
        self.send_response(200); self.end_headers()
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Slow)
print("up", flush=True)
server.serve_forever()
"""

PARENT = """
import sys
from pathlib import Path
from vlm3.serve.local import start_server
process = start_server([sys.executable, "-c", {code!r}, "{port}"], Path({log!r}), dict(__import__("os").environ), grace_s=2)
print(process.pid, flush=True)
import time; time.sleep(120)
"""


def test_a_server_holding_a_request_is_killed_soon_after_vlm3_is(tmp_path):
    from vlm3.serve.local import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(code=SLOW_SERVER, port=port, log=str(log))],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    threading.Thread(target=ask_and_forget, args=(f"http://127.0.0.1:{port}/",), daemon=True).start()
    time.sleep(0.5)  # the request is in flight
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 15:
        if not alive(server_pid):
            break
        time.sleep(0.1)
    else:
        os.kill(server_pid, signal.SIGKILL)
        pytest.fail("the server outlived vlm3 by 15 s with a request in flight")
    assert "draining" in log.read_text()  # it was asked to stop first, then killed after its grace


def ask_and_forget(url: str) -> None:
    try:
        urllib.request.urlopen(url, timeout=90)
    except OSError:  # the killed server drops the connection: that is the point
        pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie waiting for init to reap it is dead
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_stopping_normally_leaves_the_watchdog_nothing_to_do(tmp_path):
    from vlm3.serve.local import start_server, stop

    process = start_server([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "serve.log", dict(os.environ), grace_s=2)
    started = time.monotonic()
    stop(process)
    assert process.poll() is not None and time.monotonic() - started < 5


# 5: the training report of a killed run says so


def killed_run(tmp_path: Path) -> Path:
    run = RunDir.create(load_recipe(DEMO_RECIPE), root=tmp_path / "runs")
    run.mark_stage("train", "running")
    state = {"global_step": 100, "max_steps": 300,
             "log_history": [{"step": 10, "loss": 6.0}, {"step": 100, "loss": 3.0}, {"step": 100, "eval_loss": 3.5}]}
    folder = run.output_dir / "checkpoint-100"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return run.path


def test_train_report_of_a_killed_run_says_it_was_interrupted(tmp_path):
    run = killed_run(tmp_path)
    proc = run_cli("train-report", str(run))
    assert "Traceback" not in proc.stderr, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "interrupted" in out and "100 of 300" in out, out
    report = json.loads((run / "train_report.json").read_text())
    assert report["finished"] is False and "weights after the last step" not in report["kept"]
    assert "output/checkpoint-100" in report["kept"]
    assert "interrupted" in (run / "train_report.html").read_text()


def test_train_report_without_status_reads_unfinished_steps_as_interrupted(tmp_path):
    from vlm3.train.report import read_history, summarize_history

    run = killed_run(tmp_path)
    (run / "status.json").unlink()
    report = summarize_history(read_history(run))
    assert report["finished"] is False and any("interrupted" in w for w in report["warnings"])


def test_train_report_of_a_finished_run_names_its_weights(tmp_path):
    from vlm3.train.report import read_history, summarize_history

    run = killed_run(tmp_path)
    RunDir(run).mark_stage("train", "done")
    (run / "output" / "adapter_model.safetensors").write_bytes(b"")
    report = summarize_history(read_history(run))
    assert report["finished"] is True and report["kept"].startswith("output/ (the weights after the last step")
