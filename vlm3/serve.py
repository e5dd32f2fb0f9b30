"""Serve a model folder locally with `transformers serve` (OpenAI-compatible) from the trainer environment.

Usage:
    with local_server(Path("runs/tiny-cpu-demo/latest/output/merged"), log_file=Path("serve.log")) as server:
        server.base_url, server.model     # e.g. http://127.0.0.1:41234/v1 and the model id to request

The server binds 127.0.0.1 only; with api_key it answers 401 on every route but /health
without `Authorization: Bearer <key>` (vlm3.serve_guard). It is ready when /health answers and
one tiny chat completion succeeds (which also loads the weights, so a model that cannot load
fails here, with the server's log, instead of during generation). The server ends with vlm3:
its whole process group is stopped on exit, and the kernel sends it SIGTERM if vlm3 dies
(kill -9 included; Linux PR_SET_PDEATHSIG). A server drains its requests in flight on SIGTERM,
which can take minutes, so a watchdog (`python -m vlm3.serve watch`, in a session of its own)
SIGKILLs the group STOP_GRACE_S after vlm3 is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from vlm3.trainer_env import TrainerEnv, log_tail

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0  # from SIGTERM to SIGKILL, on exit and after vlm3 dies
WATCH_INTERVAL_S = 0.5  # how often the watchdog looks for its parent and the server


class ServeError(Exception):
    pass


@dataclass(frozen=True)
class LocalServer:
    base_url: str
    model: str
    process: subprocess.Popen
    log_file: Path
    api_key: str | None = None


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


def serve_argv(env: TrainerEnv, model_dir: Path, port: int, guarded: bool = False) -> list[str]:
    args = [str(model_dir), "--device", "cpu", "--host", HOST, "--port", str(port)]
    if guarded:  # the same CLI behind a key check; the key travels in the environment, not argv (ps shows argv)
        return [str(env.python), "-m", "vlm3.serve_guard", *args]
    return [env.transformers_cli, "serve", *args]


def weights_identity(model_dir: Path) -> str:
    """Which weights a folder holds, cheaply: a hash of config.json and each weight file's name, size
    and modification time (hashing 15 GB of weights would take minutes). New weights, a new identity."""
    model_dir = Path(model_dir).resolve()
    digest = hashlib.sha256()
    config = model_dir / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for path in sorted(model_dir.glob("*")):
        if path.suffix in (".safetensors", ".bin", ".pt", ".gguf") and path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"weights:{digest.hexdigest()[:16]}"


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    response = httpx.post(f"{server.base_url}/chat/completions", json=probe, headers=headers, timeout=max(5.0, deadline - time.monotonic()))
    if response.status_code != 200:
        raise ServeError(f"the server cannot answer with {server.model} (HTTP {response.status_code}); log {server.log_file}:\n{log_tail(server.log_file)}")


@contextlib.contextmanager
def local_server(model_dir: Path, log_file: Path, port: int | None = None, env: TrainerEnv | None = None,
                 api_key: str | None = None) -> Iterator[LocalServer]:
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").exists():
        raise ServeError(f"{model_dir} holds no model (config.json missing); run `vlm3 merge RUN` first")
    env = env or TrainerEnv.locate()
    port = port or free_port()
    if not port_is_free(port):
        raise ServeError(f"port {port} on {HOST} is busy; pass --port with a free one (or stop what is using it)")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    extra = {"HF_HUB_OFFLINE": "1"} | ({"VLM3_SERVE_API_KEY": api_key} if api_key else {})
    process = start_server(serve_argv(env, model_dir, port, guarded=bool(api_key)), log_file,
                           env.environ(extra | hub_cache_env(log_file.parent)))
    server = LocalServer(f"http://{HOST}:{port}/v1", str(model_dir), process, log_file, api_key)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(process)


def start_server(argv: list[str], log_file: Path, environ: dict[str, str], grace_s: float = STOP_GRACE_S) -> subprocess.Popen:
    """Start a server in its own process group, logging to log_file, that does not outlive vlm3.

    Its own group, so stop() reaches every process it starts; die_with_parent sends it SIGTERM
    when vlm3 dies, and the watchdog SIGKILLs the group grace_s later if it is still draining."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                   start_new_session=True, preexec_fn=die_with_parent)
    # A session of its own: Ctrl-C in the terminal reaches vlm3, which stops the server itself.
    subprocess.Popen([sys.executable, "-m", "vlm3.serve", "watch", str(process.pid), str(os.getpid()), str(grace_s)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return process


def signal_group(group: int, sig: int) -> bool:
    """Send sig to a process group; False when the group has no process left."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def watch(group: int, parent: int, grace_s: float) -> int:
    """The watchdog: once `parent` (vlm3) is gone, SIGTERM the server's group, then SIGKILL it after grace_s.

    It ends by itself when the group is gone (vlm3 stopped the server)."""
    while os.getppid() == parent:  # a dead parent's children are handed to init or a subreaper
        if not signal_group(group, 0):
            return 0
        time.sleep(WATCH_INTERVAL_S)
    signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and signal_group(group, 0):
        time.sleep(0.1)
    signal_group(group, signal.SIGKILL)
    return 0


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's process group, SIGKILL after grace_s."""
    group = process.pid  # start_new_session: the group id is the server's pid
    if process.poll() is None:
        signal_group(group, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(group, signal.SIGKILL)
            process.wait()
    signal_group(group, signal.SIGKILL)  # anything it left behind in its group


if __name__ == "__main__":
    # python -m vlm3.serve watch GROUP PARENT_PID GRACE_S (started by start_server)
    if len(sys.argv) != 5 or sys.argv[1] != "watch":
        sys.exit("usage: python -m vlm3.serve watch GROUP PARENT_PID GRACE_S")
    sys.exit(watch(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
