"""The smoke test a served model must pass: the Modal app runs it after every merge, `make test-vllm` on this CPU.

Usage:
    result = run_smoke(argv, env, "http://127.0.0.1:8000", run / "logs" / "smoke_vllm.log", key,
                       recipe.served_name, images, question, startup_timeout_s=900)
    result["ok"]   # healthy, every route but /health refuses a request without the key, and one page answered

`probe_server` is the part after the start, for a server that is already up (the vLLM tier's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from vlm3.cloud.support import ServeError as SmokeError  # noqa: F401 - what a failed start raises
from vlm3.cloud.support import auth_probe_routes, smoke_request, unguarded_routes, wait_until_healthy

HEALTH_POLL_S = 2.0
REQUEST_TIMEOUT_S = 300.0  # one page question on a cold server
STOP_TIMEOUT_S = 60.0


def wait_healthy(server: subprocess.Popen, root: str, timeout_s: float, log_file: Path) -> float:
    """Seconds until /health answers 200; SmokeError when the server exits first or the time runs out."""
    return round(wait_until_healthy(root, server, timeout_s, str(log_file), HEALTH_POLL_S), 1)


def probe_server(root: str, key: str, served_name: str, image_urls: list[str], question: str) -> dict[str, Any]:
    """The key guard over every route the server lists, then one page question under the served name."""
    import httpx

    result: dict[str, Any] = {"unauthenticated_status": httpx.get(f"{root}/v1/models", timeout=10).status_code}
    # Every route but /health must refuse a request without the key (vLLM's --api-key guards only /v1/*).
    openapi = httpx.get(f"{root}/openapi.json", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    routes = auth_probe_routes(openapi.json() if openapi.status_code == 200 else {})
    statuses = {f"{method} {path}": httpx.request(method, root + path, timeout=10).status_code for method, path in routes}
    result["unguarded_routes"] = unguarded_routes(statuses)
    asked = time.monotonic()
    response = httpx.post(f"{root}/v1/chat/completions", json=smoke_request(served_name, image_urls, question),
                          headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    result.update(question=question, answer=response.json()["choices"][0]["message"]["content"],
                  answer_s=round(time.monotonic() - asked, 2))
    result["ok"] = bool(result["answer"].strip()) and result["unauthenticated_status"] == 401 and not result["unguarded_routes"]
    return result


def run_smoke(argv: list[str], env: Mapping[str, str], root: str, log_file: Path, key: str, served_name: str,
              image_paths: list[str], question: str, startup_timeout_s: float) -> dict[str, Any]:
    """Start the server, wait for it, probe it, stop it. Any failure is `ok: false` with the error, never raised."""
    from harness.generate import image_data_url

    log_file.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": argv}
    with log_file.open("ab") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
    try:
        result["load_s"] = wait_healthy(server, root, startup_timeout_s, log_file)
        result.update(probe_server(root, key, served_name, [image_data_url(p) for p in image_paths], question))
    except Exception as exc:  # noqa: BLE001 - the smoke test reports every failure as its result
        result.update(ok=False, error=str(exc))
    finally:
        stop(server)
    return result


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (vLLM's engine runs in child processes); whatever of the group is
    still there after the grace period gets SIGKILL."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    while time.monotonic() < deadline:
        server.poll()  # reaps the leader, so an empty group reads as gone
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()
