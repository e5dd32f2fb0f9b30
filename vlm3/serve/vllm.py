"""The vLLM command line that serves a run: one pure function, pinned by golden files.

Usage:
    argv = vllm_argv(recipe, "/vol/runs/e30m3-lora/20261125T170000Z/output/merged")
    subprocess.Popen(argv, env=vllm_environ(os.environ, "VLLM_API_KEY", key))   # the key never goes on the command line
    print(format_command(argv))                                         # one flag per line, shell-quoted
    argv, env = local_cpu_command(argv, env, ".venv-vllm/bin/vllm")      # the same on this CPU (make test-vllm)
    argv, env = sleep_mode_command(argv, env)                           # the Modal endpoint's: sleep mode for snapshots

Every serving setting comes from the recipe: the served model name, context length, memory
share, batch size, and the image pixel limits the model was trained with (Qwen's advice: the
same visual-token range in training and inference). `--generation-config vllm` keeps vLLM
from applying the checkpoint's own sampling defaults, so requests mean what they say.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Mapping

from vlm3.recipe.schema import Recipe

DEFAULT_PORT = 8000
IMAGES_PER_PROMPT = 1  # pages per prompt when the run's data shows at most one (vLLM reserves memory per image)
# vLLM accepts only these --max-lora-rank values; its default (16) is below the reference recipes' r 64.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# vLLM's --api-key guards only /v1/*; this middleware (added by vLLM with app.add_middleware, the class
# taking the app) answers 401 on every route but /health without the key, as the smoke test requires.
KEY_MIDDLEWARE = "vlm3.serve.guard.KeyGuard"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where the vlm3 package lives (/root on Modal)
# vLLM's CPU build on this machine (`make test-vllm`): what may differ from the Modal app's command line.
LOCAL_HOST = "127.0.0.1"  # loopback: a test server is not for the network (Modal's container listens on 0.0.0.0)
CPU_KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE; without it, on a CPU --gpu-memory-utilization is that share of the RAM


def vllm_environ(base: Mapping[str, str], key_var: str, key: str) -> dict[str, str]:
    """The server's environment: the key (never on the command line) and vlm3 importable for its middleware."""
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), base.get("PYTHONPATH")]))
    return {**base, key_var: key, "PYTHONPATH": path}


def local_cpu_command(argv: list[str], env: Mapping[str, str], vllm_program: str) -> tuple[list[str], dict[str, str]]:
    """vllm_argv's command line and vllm_environ's environment, made to run under vLLM's CPU build on
    this machine (the `make test-vllm` tier; `vllm-cpu` is a community build used for testing only).

    Every difference from the Modal app's command is here: the program (`vllm_program`, the test
    environment's own `vllm`), --host (loopback), and the KV cache size on a CPU (GiB, in the
    environment). The flags, --dtype included, stay the app's.
    """
    if argv[:2] != ["vllm", "serve"] or "--host" not in argv:
        raise ValueError(f"not a vllm_argv command line: {argv[:3]}")
    local = [vllm_program, *argv[1:]]
    local[local.index("--host") + 1] = LOCAL_HOST
    return local, {**env, "VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}


# Sleep mode, for the Modal endpoint's memory snapshots (modal_entry.Endpoint): vLLM starts, warms up and
# sleeps before Modal snapshots the container, and wakes after every restore. --enable-sleep-mode turns on
# the allocator that can move the weights to host memory and back; /sleep, /wake_up and /is_sleeping are
# vLLM's development routes, served only with VLLM_SERVER_DEV_MODE=1 (behind KEY_MIDDLEWARE like every
# route but /health). vLLM's CPU build refuses the flag ("Sleep mode is not supported on current platform").
SLEEP_MODE_FLAG = "--enable-sleep-mode"
SLEEP_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


def sleep_mode_command(argv: list[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """vllm_argv's command line and environment with sleep mode on: what the Modal endpoint and its smoke test run."""
    if argv[:2] != ["vllm", "serve"]:
        raise ValueError(f"not a vllm_argv command line: {argv[:3]}")
    return ([*argv, SLEEP_MODE_FLAG] if SLEEP_MODE_FLAG not in argv else list(argv)), {**env, **SLEEP_MODE_ENV}


def compact_json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


def max_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank r."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"train.lora.r {r} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]}); serve the merged model")


def images_per_prompt(run_path: Path) -> int:
    """The most pages one training row or probe showed (`prepare` records both): what the served model must take per prompt."""
    report = Path(run_path) / "data" / "data_report.json"
    try:
        recorded = json.loads(report.read_text(encoding="utf-8"))
        counts = [recorded.get(key) for key in ("max_images_per_row", "max_images_per_probe")]
    except (OSError, ValueError, AttributeError):
        return IMAGES_PER_PROMPT
    return max([IMAGES_PER_PROMPT, *(c for c in counts if isinstance(c, int) and not isinstance(c, bool))])


def vllm_argv(recipe: Recipe, model_dir: str, port: int = DEFAULT_PORT, base_model: str | None = None,
              images: int = IMAGES_PER_PROMPT) -> list[str]:
    """`vllm serve ...` for a run's model folder; with serve.serve_adapter, model_dir is the adapter.

    `images` is the most pages a prompt may carry: the run's largest row (`images_per_prompt`).

    In adapter mode the base model (base_model, else the recipe's model.base) is served as
    "<name>-base" and the adapter as "<name>", so clients ask for the same name either way.
    """
    serve = recipe.serve
    name = recipe.served_name
    if serve.serve_adapter:
        model, served_as = base_model or recipe.model.base, f"{name}-base"
    else:
        model, served_as = model_dir, name
    argv = [
        "vllm", "serve", model,
        "--served-model-name", served_as,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--dtype", "bfloat16",
        "--max-model-len", str(serve.max_model_len),
        "--gpu-memory-utilization", str(serve.gpu_memory_utilization),
        "--max-num-seqs", str(serve.max_num_seqs),
        "--limit-mm-per-prompt", compact_json({"image": images, "video": 0}),
        "--mm-processor-kwargs", compact_json({"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels}),
        "--generation-config", "vllm",
        "--middleware", KEY_MIDDLEWARE,
    ]
    if serve.serve_adapter:
        argv += ["--enable-lora", "--lora-modules", f"{name}={model_dir}", "--max-lora-rank", str(max_lora_rank(recipe.train.lora.r))]
    if recipe.model.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv


def served_model_dir(run_path: Path, recipe: Recipe) -> Path:
    """What vLLM loads from a run: the merged model, a full fine-tune's output, or the adapter."""
    output = run_path / "output"
    if recipe.serve.serve_adapter or recipe.train.method == "full":
        return output  # the adapter folder, or the full model Axolotl saved (output/merged is only a link to it)
    return output / "merged"


def format_command(argv: list[str]) -> str:
    """The command as a reader copies it: the program and model on the first line, then one flag per line."""
    lines: list[list[str]] = [[]]
    for arg in argv:
        if arg.startswith("--"):
            lines.append([])
        lines[-1].append(arg)
    return " \\\n  ".join(shlex.join(parts) for parts in lines) + "\n"


def local_command(argv: list[str], env: Mapping[str, str], program: list[str], cpu_build: bool) -> tuple[list[str], dict[str, str]]:
    """vllm_argv's command line for a server vlm3 starts on this machine (`vlm3 serve`, `eval RUN`, `ask RUN`).

    What differs from the Modal app's: the program (`program`, e.g. [".venv-vllm/bin/vllm"] or
    [python, "-m", "vllm.entrypoints.cli.main"]) and --host (loopback); on vLLM's CPU build also
    local_cpu_command's KV cache size. The flags, --dtype included, stay the app's.
    """
    local, local_env = local_cpu_command(argv, env, program[0])
    local[0:1] = program
    return local, (local_env if cpu_build else dict(env))
