"""Serve a model folder locally with `transformers serve` (OpenAI-compatible) from the trainer environment.

Usage:
    with local_server(Path("runs/tiny-cpu-demo/latest/output/merged"), log_file=Path("serve.log")) as server:
        server.base_url, server.model     # e.g. http://127.0.0.1:41234/v1 and the model id to request

The server binds 127.0.0.1 only. It is ready when /health answers and one tiny chat
completion succeeds (which also loads the weights, so a model that cannot load fails here,
with the server's log, instead of during generation).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from vlm3.trainer_env import TrainerEnv, log_tail

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0


class ServeError(Exception):
    pass


@dataclass(frozen=True)
class LocalServer:
    base_url: str
    model: str
    process: subprocess.Popen
    log_file: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def hub_cache_env(folder: Path, environ: dict | None = None) -> dict[str, str]:
    """HF_HUB_CACHE for the server when the user has no Hugging Face cache folder.

    `transformers serve` answers /v1/models by scanning the hub cache and fails (HTTP 500) when the
    folder does not exist; an empty folder beside the server's log makes it answer. An existing
    cache is left as it is."""
    environ = os.environ if environ is None else environ
    if environ.get("HF_HUB_CACHE"):
        return {}
    home = Path(environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    if (home / "hub").is_dir():
        return {}
    cache = folder / "hf-hub-cache"
    cache.mkdir(parents=True, exist_ok=True)
    return {"HF_HUB_CACHE": str(cache.resolve())}


def serve_argv(env: TrainerEnv, model_dir: Path, port: int) -> list[str]:
    return [env.transformers_cli, "serve", str(model_dir), "--device", "cpu", "--host", HOST, "--port", str(port)]


def wait_until_ready(server: LocalServer, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    root = server.base_url.removesuffix("/v1")
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServeError(f"the server exited (code {server.process.returncode}) before it was ready; log {server.log_file}:\n{log_tail(server.log_file)}")
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise ServeError(f"the server did not answer /health within {timeout_s:.0f} s; log {server.log_file}:\n{log_tail(server.log_file)}")
    probe = {"model": server.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    response = httpx.post(f"{server.base_url}/chat/completions", json=probe, timeout=max(5.0, deadline - time.monotonic()))
    if response.status_code != 200:
        raise ServeError(f"the server cannot answer with {server.model} (HTTP {response.status_code}); log {server.log_file}:\n{log_tail(server.log_file)}")


@contextlib.contextmanager
def local_server(model_dir: Path, log_file: Path, port: int | None = None, env: TrainerEnv | None = None) -> Iterator[LocalServer]:
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").exists():
        raise ServeError(f"{model_dir} holds no model (config.json missing); run `vlm3 merge RUN` first")
    env = env or TrainerEnv.locate()
    port = port or free_port()
    if not port_is_free(port):
        raise ServeError(f"port {port} on {HOST} is busy; pass --port with a free one (or stop what is using it)")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            serve_argv(env, model_dir, port), stdout=log, stderr=subprocess.STDOUT,
            env=env.environ({"HF_HUB_OFFLINE": "1", **hub_cache_env(log_file.parent)}), start_new_session=True,
        )
    server = LocalServer(f"http://{HOST}:{port}/v1", str(model_dir), process, log_file)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
