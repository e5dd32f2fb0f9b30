"""The smoke test's own failures are results, never exceptions, and leave no server behind (real processes).

Its passing path runs against vLLM in `make test-vllm` (tests/test_vllm_cpu.py)."""

from __future__ import annotations

import os
import socket
import sys
import time

from vlm3.cloud import smoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_exits_before_it_is_ready_is_a_failed_result(tmp_path):
    log = tmp_path / "logs" / "smoke_vllm.log"
    argv = [sys.executable, "-c", "import sys; print('no such model'); sys.exit(3)"]
    result = smoke.run_smoke(argv, os.environ, f"http://127.0.0.1:{free_port()}", log, "k", "m", [], "q", startup_timeout_s=30)
    assert result["ok"] is False
    assert "exited with 3 before it was ready" in result["error"] and str(log) in result["error"]
    assert "no such model" in log.read_text()  # the server's own words are kept for the user


def test_a_server_that_never_answers_health_times_out_and_its_whole_group_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke, "HEALTH_POLL_S", 0.1)
    monkeypatch.setattr(smoke, "STOP_TIMEOUT_S", 2.0)
    pid_file = tmp_path / "child.pid"
    # A server that never listens, with a child of its own that ignores SIGTERM (as an engine process might).
    code = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(600)")
    started = time.monotonic()
    result = smoke.run_smoke([sys.executable, "-c", code], os.environ, f"http://127.0.0.1:{free_port()}", tmp_path / "s.log",
                             "k", "m", [], "q", startup_timeout_s=1.5)
    assert result["ok"] is False and "did not answer /health within" in result["error"]
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the server's child {child} outlived the smoke test")
