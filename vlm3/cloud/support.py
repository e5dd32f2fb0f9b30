"""The pure side of running vlm3 on Modal: names, pins, call options, upload plans, checks, costs.

Usage:
    problems = launch_problems(recipe)              # Modal-specific checks, every problem at once
    options = train_call_options(recipe)            # {"gpu": "H100", "timeout": 28800}
    files = data_files(recipe)                      # {"training_data/images/21-03.jpg": Path(...), ...}
    plan = sync_files(data_volume, files)           # uploads only what changed (sha256 manifest on the volume)

Nothing here imports `modal`: modal_entry.py declares the app and passes Modal objects in
(volumes are duck-typed: `read_file`, `batch_upload`), so every rule here is tested without
an account.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import posixpath
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from vlm3.recipe.families import FamilyError
from vlm3.plan.estimate import GPUS, ModelShape, shape_of
from vlm3.recipe.schema import Recipe, ServeSpec, load_recipe

APP_NAME = "vlm3"
VOLUME_NAMES = {"data": "vlm3-data", "runs": "vlm3-runs", "hf": "vlm3-hf-cache"}
MOUNT_ROOT_ENV = "VLM3_MODAL_MOUNT_ROOT"  # tests run the function bodies against folders under tmp
DEFAULT_MOUNT_ROOT = "/vol"

# Modal Secrets (create them once: see docs/modal.md) and the variable each must hold.
HF_SECRET = "huggingface"
WANDB_SECRET = "wandb"
ANTHROPIC_SECRET = "anthropic"
SECRET_KEYS = {HF_SECRET: "HF_TOKEN", WANDB_SECRET: "WANDB_API_KEY", ANTHROPIC_SECRET: "ANTHROPIC_API_KEY"}
ENDPOINT_KEY_VAR = "VLLM_API_KEY"  # vLLM reads it; the key is never on a command line or in a file

# Image pins. The trainer image is requirements-train.txt (what the tests run locally) plus
# DeepSpeed at the version Axolotl 0.19.0's extras name, all from wheels: its first build takes
# minutes. Attention is PyTorch's SDPA, whose kernels ship in torch's wheel for every GPU here
# (torch 2.13.0+cu130 carries sm_75 sm_80 sm_86 sm_90 sm_100 sm_120: B200 included). flash-attention is an opt-in image (FLASH_ATTN_ENV), compiled once.
PYTHON_VERSION = "3.11"
AXOLOTL_VERSION = "0.19.0"
TORCH_VERSION = "2.13.0"  # PyPI's build is CUDA 13.0 (torch.version.cuda == "13.0")
TORCHVISION_VERSION = "0.28.0"
FLASH_ATTN_VERSION = "2.8.3"  # axolotl[flash-attn]
DEEPSPEED_REQUIREMENT = "deepspeed>=0.18.6,<0.19.0"  # axolotl[deepspeed]
TRANSFORMERS_VERSION = "5.16.1"  # Axolotl 0.19.0's pin: the version that writes the merged checkpoint
TRAINER_BASE_IMAGE = "nvidia/cuda:13.0.0-devel-ubuntu22.04"  # nvcc for DeepSpeed's just-in-time ops (and flash-attn)
# flash-attn 2.8.x is sdist-only on PyPI (no wheel for torch 2.13): with FLASH_ATTN_ENV=1 the trainer
# image compiles it once. 72 CUDA files at ~5 min and 4-6 GB each (measured for two of them): with
# MAX_JOBS 4 and one nvcc thread, 4 compilers at once need ~24 GB and ~72 x 5 / 4 = 90 min (an
# estimate, not a measured build). MAX_JOBS 8 with nvcc's default threads asked for ~70 GB.
FLASH_ATTN_ENV = "VLM3_FLASH_ATTN"
FLASH_ATTN_CUDA_ARCHS = "80;90"  # sm_80 code also runs on A10G/L4/L40S (8.x); sm_90 is H100/H200; no PTX
FLASH_ATTN_BUILD_ENV = {"MAX_JOBS": "4", "NVCC_THREADS": "1", "FLASH_ATTN_CUDA_ARCHS": FLASH_ATTN_CUDA_ARCHS}
FLASH_ATTN_BUILD_MINUTES = 90  # estimate above; docs/modal.md
# Compute capability major.minor of each Modal GPU; flash-attn's kernels above cover 8.x and 9.0 only.
GPU_SM = {"T4": 75, "A10G": 86, "L4": 89, "L40S": 89, "A100-40GB": 80, "A100-80GB": 80, "H100": 90, "H200": 90, "B200": 100}
FLASH_ATTN_SM = (80, 90)
# vLLM 0.33.0 requires transformers>=5.16.1,<5.21: it reads what Axolotl's transformers wrote.
# vLLM before 0.19.1 requires transformers<5 and cannot be installed beside it.
VLLM_VERSION = "0.33.0"
MIN_VLLM_FOR_TRANSFORMERS_5 = (0, 19, 1)
VLLM_BASE_IMAGE = "nvidia/cuda:13.0.0-devel-ubuntu22.04"  # nvcc for FlashInfer's just-in-time kernels
# The evaluation image installs the light environment: pyproject.toml's dependencies and these extras.
EVAL_EXTRAS = ("judge",)
# What of our packages is left out of every image. Modal's add_local_python_source ships only .py files
# by default (modal.file_pattern_matcher.NON_PYTHON_FILES); the packages read data files beside their code
# at run time (harness/probes/general.jsonl, vlm3/recipe/chat_templates/*.jinja, the report templates vlm3/core/templates/*.j2), so everything else ships too.
# A list, not a tuple: Modal turns a list of patterns into a FilePatternMatcher (modal/mount.py).
PACKAGE_IGNORE = ["**/__pycache__", "**/*.pyc", "**/.*"]

HOUR = 3600  # seconds
MODAL_MAX_TIMEOUT_S = 24 * HOUR
# The merge runs on CPU: the check that follows it (trainer_side.verify_merge) holds the fp32 base + adapter
# (~33 GB for the 7B), more than an A10G's 22.5 GiB, so it runs on the CPU, and a GPU beside it would sit idle
# for its 10-20 minutes. Axolotl's merge itself is a load, one small B @ A per LoRA module and a save: it
# needs no GPU ("merging is still functional" without one, axolotl/utils/schemas/config.py).
MERGE_GPU = None
# The merge check holds the fp32 base + adapter (~33 GB for the 7B) beside the bf16 merged model (~17 GB),
# then the merged model alone in fp32 (~33 GB): ~50 GB at its peak.
MERGE_MEMORY_MIB = 64 * 1024
MERGE_CPU = 8.0  # the fp32 forward passes of the check: ~1.3e14 FLOPs for the 7B on CHECK_EXAMPLES rows, minutes on 8 cores
MERGE_TIMEOUT_S = 2 * HOUR
TRAIN_MEMORY_MIB = 32 * 1024  # the train function's default; each call asks train_call_options' amount
# CPU and memory per GPU for training. Each GPU has one training process (accelerate starts one per
# card) and DATALOADER_WORKERS persistent DataLoader workers that decode, resize and normalise the pages
# (Axolotl's collator caches nothing). Measured: 73 ms of CPU per 1700x2200 page through the DataLoader.
# A bf16 LoRA on the 7B consumes at most ~16 samples/s per GPU (ms-swift: 4.3/s on an A100; an H100 has
# ~3.2x its bf16 peak, a B200 more but not yet measured), so the pages need 16 x 0.073 = 1.2 cores;
# with 2x headroom for large pages and the training process's own core: 1 + 2.3 = 3.3, rounded up to 4.
# Modal's default is 0.125 cores, which would starve the GPU (1 page per 0.6 s).
SAMPLE_PREP_CPU_S = 0.073
PEAK_SAMPLES_PER_GPU_S = 16.0
PREP_HEADROOM = 2.0
TRAIN_CPU_PER_GPU = float(math.ceil(1 + SAMPLE_PREP_CPU_S * PEAK_SAMPLES_PER_GPU_S * PREP_HEADROOM))  # 4 cores
# Host memory per GPU: the bf16 7B checkpoint read before it moves to the card (~17 GB), plus each
# worker (~1.5 GB: Python, torch and the dataset) and its prefetched batches (2 x 4 pages x 22 MB of
# fp32 pixel_values): 17 + 4 x 1.7 = 24 GB; 32 GiB leaves room for ZeRO-3 gathering the weights to save.
TRAIN_MEMORY_PER_GPU_MIB = 32 * 1024
CPU_TRAIN_CPU, CPU_TRAIN_MEMORY_MIB = 2.0, 8 * 1024  # a CPU recipe (the tiny model)
SMOKE_TIMEOUT_S = 45 * 60
# Retries. Modal gives every attempt a fresh timeout, so each attempt is billed up to its timeout, and the
# pipeline (which waits on train, merge and smoke in turn) must outlast all of them. A preempted container
# restarts by itself without using a retry; that time is billed too and is not bounded here.
TRAIN_RETRIES = 1  # one crash is retried (it resumes from the last checkpoint) when the pipeline has time for it
TRAIN_RETRY_DELAY_S = 30.0
MERGE_RETRIES = 2
SMOKE_RETRIES = 1
PIPELINE_TIMEOUT_S = MODAL_MAX_TIMEOUT_S
PIPELINE_RESERVE_S = 30 * 60  # the validate stage and each container's start
# Serving and the smoke test: vLLM's API server decodes and resizes every page on the CPU (~30-46 ms per
# 1 MP JPEG, see FACTS) and its engine process drives the GPU from another core. At the endpoint's 32
# concurrent requests a burst of pages is ~1.5 core-seconds; Modal's default 0.125 cores would take ~12 s
# for it and starve the GPU. 8 cores: the two processes, the tokenizer and ~6 cores for pages (~150 pages/s).
# Memory: the ~17 GB bf16 checkpoint passes through host memory as it loads, plus the decoded pages in flight.
SERVE_CPU = 8.0
SERVE_MEMORY_MIB = 32 * 1024
EVAL_TIMEOUT_S = 4 * HOUR
HUB_TIMEOUT_S = 2 * HOUR
SERVE_PORT = 8000
SERVE_STARTUP_TIMEOUT_S = 20 * 60  # vLLM loads ~17 GB from the volume and captures CUDA graphs
SERVE_REQUEST_TIMEOUT_S = 10 * 60
COMMIT_EVERY_S = 10 * 60  # commit logs at least this often; new complete checkpoints are committed at once
CHECKPOINT_POLL_S = 30

# Pipeline stages: what `modal run modal_entry.py --stage S` runs in the cloud.
STAGES = {
    "all": ("validate", "train", "merge", "smoke"),
    "train": ("validate", "train"),
    "merge": ("merge", "smoke"),
    "smoke": ("smoke",),
    "eval": ("eval",),
    "hub": ("hub",),
}

# Modal list prices per GPU-hour: the one table lives in vlm3.plan.estimate (with its date and source).
GPU_USD_PER_HOUR = {name: gpu["usd_per_hour"] for name, gpu in GPUS.items() if gpu["usd_per_hour"]}
# Memory a GPU reports to CUDA, in GiB (a "24 GB" A10G shows 22.5 GiB).
GPU_MEMORY_GIB = {"H100": 79.6, "H200": 140.0, "B200": 179.0, "A100-80GB": 80.0, "A100-40GB": 40.0,
                  "L40S": 45.0, "A10G": 22.5, "L4": 22.5, "T4": 15.0}
VLLM_OVERHEAD_GIB = 1.5  # activations, CUDA graphs and the vision encoder's profile run
PROMPT_MARGIN_TOKENS = 256  # question, chat template and a short answer beside one page's visual tokens
GIB = 1024**3

RUN_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*/[0-9A-Za-z][0-9A-Za-z._-]*$")
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MANIFEST_KEY = ".vlm3/manifest.json"  # on the data volume: {volume path: sha256} of what was uploaded


class LaunchError(Exception):
    """Something to fix before anything starts on Modal; str() lists every problem."""

    def __init__(self, problems: list[str], what: str = "cannot start on Modal"):
        self.problems = problems
        super().__init__(f"{what}:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Mounts:
    """Where the volumes appear inside a container."""

    root: PurePosixPath

    @property
    def data(self) -> PurePosixPath:
        return self.root / "data"

    @property
    def runs(self) -> PurePosixPath:
        return self.root / "runs"

    @property
    def hf(self) -> PurePosixPath:
        return self.root / "hf"


def mounts_from_env(environ: dict[str, str] | None = None) -> Mounts:
    environ = os.environ if environ is None else environ
    return Mounts(PurePosixPath(environ.get(MOUNT_ROOT_ENV) or DEFAULT_MOUNT_ROOT))


# GPUs, call options, secrets


def modal_gpu(gpu: str) -> str | None:
    """The recipe's GPU as Modal spells it ("H100", "H100:4"); None for a CPU container."""
    return None if gpu == "cpu" else gpu


def train_call_options(recipe: Recipe) -> dict[str, Any]:
    """Function.with_options for training: the recipe's GPU (count included), timeout, and CPU and memory per GPU."""
    options = {"gpu": modal_gpu(recipe.compute.gpu), "timeout": int(recipe.compute.timeout_hours * HOUR)}
    if recipe.on_cpu:
        return {**options, "cpu": CPU_TRAIN_CPU, "memory": CPU_TRAIN_MEMORY_MIB}
    cards = max(recipe.compute.gpu_count, 1)
    return {**options, "cpu": cards * TRAIN_CPU_PER_GPU, "memory": cards * TRAIN_MEMORY_PER_GPU_MIB}


def flash_attn_image_enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether the trainer image compiles flash-attn (FLASH_ATTN_ENV=1 when the app is created)."""
    environ = os.environ if environ is None else environ
    return environ.get(FLASH_ATTN_ENV, "") == "1"


def light_requirements(pyproject: Path, extras: Iterable[str] = EVAL_EXTRAS) -> list[str]:
    """The light environment's requirements, read from pyproject.toml (one list: the evaluation image's)."""
    import tomllib

    project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    missing = [extra for extra in extras if extra not in optional]
    if missing:
        raise ValueError(f"{pyproject}: [project.optional-dependencies] has no {missing}")
    return [*project["dependencies"], *(req for extra in extras for req in optional[extra])]


def after_train_worst_s() -> int:
    """The longest the merge and the smoke test can take, every retry counted (each gets a fresh timeout)."""
    return (MERGE_RETRIES + 1) * MERGE_TIMEOUT_S + (SMOKE_RETRIES + 1) * SMOKE_TIMEOUT_S


def train_retries(recipe: Recipe) -> int:
    """Retries for training: TRAIN_RETRIES when every attempt at the recipe's timeout, then the merge and the
    smoke test at their worst, fit in the pipeline's timeout; none otherwise (the pipeline would expire during
    the retry and merge and smoke would never run)."""
    timeout_s = recipe.compute.timeout_hours * HOUR
    budget_s = PIPELINE_TIMEOUT_S - PIPELINE_RESERVE_S - after_train_worst_s()
    attempts = max(1, min(TRAIN_RETRIES + 1, int(budget_s // timeout_s)))
    return attempts - 1


def smoke_call_options(recipe: Recipe) -> dict[str, Any]:
    """The smoke test loads the model the way the endpoint will: same GPU, same vLLM command."""
    return {"gpu": modal_gpu(recipe.serve.gpu)}


def uses_wandb(recipe: Recipe) -> bool:
    return bool(recipe.axolotl.get("wandb_project"))


def train_secret_names(recipe: Recipe) -> list[str]:
    return [HF_SECRET] + ([WANDB_SECRET] if uses_wandb(recipe) else [])


def eval_secret_names(recipe: Recipe) -> list[str]:
    judge = recipe.eval.judge
    return [recipe.serve.api_key_secret] + ([ANTHROPIC_SECRET] if judge and judge.provider == "anthropic" else [])


def stages_for(stage: str) -> tuple[str, ...]:
    if stage not in STAGES:
        raise LaunchError([f"--stage {stage!r}: one of {', '.join(STAGES)}"], "unknown stage")
    return STAGES[stage]


# Costs


def gpu_cost_cap_usd(gpu: str, hours: float) -> float | None:
    """The most a GPU function can cost: price x cards x its timeout (Modal bills per second)."""
    if gpu == "cpu":
        return 0.0
    name, _, count = gpu.partition(":")
    price = GPU_USD_PER_HOUR.get(name)
    return None if price is None else round(price * int(count or 1) * hours, 2)


def cost_lines(recipe: Recipe) -> list[str]:
    """What a run costs: `vlm3 plan`'s estimate when it can count the data, and the timeout's cap."""
    lines = []
    estimate = plan_estimate(recipe)
    if estimate:
        lines.append(f"estimate: {estimate}")
    hours = recipe.compute.timeout_hours
    attempts = train_retries(recipe) + 1
    per_attempt = gpu_cost_cap_usd(recipe.compute.gpu, hours)
    gpu = recipe.compute.gpu
    retry = (f"up to {attempts} attempts (a crash is retried once, each attempt with a fresh {hours:g} h timeout), "
             f"each at most ${per_attempt or 0:.2f}" if attempts > 1 else
             f"one attempt: a retry at this timeout would leave the {PIPELINE_TIMEOUT_S // HOUR} h pipeline no time to merge and smoke-test")
    if per_attempt is None:
        lines.append(f"training on {gpu}: no list price on file; {attempts} x the {hours:g} h timeout caps the bill")
    elif gpu != "cpu":
        name, _, count = gpu.partition(":")
        lines.append(
            f"training: at most ${per_attempt * attempts:.2f} ({int(count or 1)} x {name} at ${GPU_USD_PER_HOUR[name]:.2f}/h "
            f"for the {hours:g} h timeout; {retry}; billed per second, so a shorter run costs less; "
            "a preempted container restarts outside this count and its time is billed too)"
        )
    serve_price = GPU_USD_PER_HOUR.get(recipe.serve.gpu.partition(":")[0])
    if serve_price:
        lines.append(
            f"serving: ${serve_price:.2f}/h on {recipe.serve.gpu} while a container is up; "
            f"it stops after {recipe.serve.scaledown_window_s} s without requests"
        )
    return lines


def plan_estimate(recipe: Recipe) -> str | None:
    """`vlm3 plan`'s hours and dollars on the recipe's GPU (counted from the data), when that module is here."""
    try:
        from vlm3.plan.estimate import plan_run
        from vlm3.plan.dataset import dataset_tokens, scan_data
    except ImportError:
        return None
    try:
        scan = scan_data(recipe).scan
        if not scan.rows:
            return None
        plan = plan_run(recipe, dataset_tokens(scan, recipe), gpus=[recipe.compute.gpu_type])
    except Exception as exc:  # an estimate must never stop a launch
        return f"none ({exc})"
    if not plan.gpus:
        return None
    est = plan.gpus[0]
    gpu = f"{est.count} x {est.gpu}" if est.count > 1 else est.gpu
    money = f", ${est.usd[0]:,.2f}-{est.usd[1]:,.2f}" if est.usd else ""
    return f"{plan.steps:,} optimizer steps, {est.hours[0]:.2f}-{est.hours[1]:.2f} h on {gpu}{money} (`vlm3 plan` for the details)"


# What fits when serving


@dataclass(frozen=True)
class ServeFit:
    gpu: str
    weights_gib: float
    kv_cache_tokens: int
    full_length_sequences: int  # requests of max_model_len tokens that fit in the KV cache at once

    def __str__(self) -> str:
        return (
            f"{self.gpu}: weights ~{self.weights_gib:.1f} GiB, KV cache ~{self.kv_cache_tokens:,} tokens "
            f"({self.full_length_sequences} requests of full length at once)"
        )


def model_shape(recipe: Recipe) -> ModelShape | None:
    """The base model's shape from its config (vlm3.plan.estimate, vlm3.recipe.families); None where no config can be read here."""
    try:
        return shape_of(recipe.model.base)
    except FamilyError:
        return None


def serve_fit(recipe: Recipe) -> ServeFit | None:
    """A rough memory budget for serving the base model's shape in bf16; None for a model whose config is not here."""
    shape = model_shape(recipe)
    gpu_name, _, count = recipe.serve.gpu.partition(":")
    memory = GPU_MEMORY_GIB.get(gpu_name)
    if shape is None or memory is None:
        return None
    per_token = shape.kv_bytes_per_token  # 2 (k, v) x layers x kv heads x head dim x 2 bytes
    weights = shape.total_params * 2 / GIB
    usable = memory * int(count or 1) * recipe.serve.gpu_memory_utilization
    kv_tokens = max(0, int((usable - weights - VLLM_OVERHEAD_GIB) * GIB / per_token))
    return ServeFit(recipe.serve.gpu, weights, kv_tokens, kv_tokens // recipe.serve.max_model_len)


def visual_tokens(recipe: Recipe) -> int:
    """The most visual tokens one page can become under the recipe's pixel cap, in its family's rule."""
    return recipe.images.max_pixels // recipe.family.pixels_per_token


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def serve_problems(recipe: Recipe, pages: int = 1) -> tuple[list[str], list[str]]:
    """(errors, notes) about serving this recipe with vLLM on Modal; `pages`: the most pages one prompt carries."""
    serve, errors, notes = recipe.serve, [], []
    pages = max(pages, 1)
    needed = pages * visual_tokens(recipe) + PROMPT_MARGIN_TOKENS
    if serve.max_model_len < needed:
        what = "one page" if pages == 1 else f"{pages} pages (the data's largest row)"
        errors.append(
            f"serve.max_model_len {serve.max_model_len} cannot hold {what} at images.max_pixels "
            f"({visual_tokens(recipe)} {recipe.family.label} visual tokens a page) plus a question and answer: use at least {needed}"
        )
    if serve.gpu in ("cpu", "T4"):
        errors.append(f"serve.gpu {serve.gpu!r}: vLLM serves in bfloat16, which needs an A10G, L4, L40S or newer")
    fit = serve_fit(recipe)
    if fit is not None and fit.full_length_sequences < 1:
        errors.append(f"serve.gpu {serve.gpu}: the model does not fit with max_model_len {serve.max_model_len} ({fit}); pick a larger card")
    if serve.serve_adapter:
        lora = recipe.train.lora
        if recipe.train.method == "full":
            errors.append("serve.serve_adapter is set but train.method is 'full': there is no adapter to serve")
        elif lora.modules_to_save:
            errors.append(f"serve.serve_adapter: vLLM cannot load an adapter with modules_to_save {lora.modules_to_save}; serve the merged model")
        elif lora.include_vision_tower:
            errors.append("serve.serve_adapter: vLLM 0.33 loads LoRA on the vision tower only with its experimental "
                          "--enable-tower-connector-lora, which vlm3 does not pass; serve the merged model")
    if parse_version(serve.vllm_version) < MIN_VLLM_FOR_TRANSFORMERS_5:
        notes.append(
            f"serve.vllm_version {serve.vllm_version} cannot read checkpoints written by transformers {TRANSFORMERS_VERSION}; "
            f"the Modal vLLM image pins vllm {VLLM_VERSION}"
        )
    elif serve.vllm_version != VLLM_VERSION:
        notes.append(f"serve.vllm_version {serve.vllm_version}: the Modal vLLM image pins vllm {VLLM_VERSION}")
    if serve.max_model_len < recipe.train.sequence_len:
        notes.append(
            f"serve.max_model_len {serve.max_model_len} is below train.sequence_len {recipe.train.sequence_len}: "
            "the longest training conversations would not fit at serving time"
        )
    return errors, notes


# Data on the data volume: the project-relative layout, mirrored


def volume_key(path: str | Path, cwd: Path | None = None) -> str:
    """A local path inside the project as a path on the data volume (the same relative path).

    Recipes name data relative to the project root; mirroring that layout onto the volume means
    the same recipe resolves the same files in a container whose working directory is the mount.
    """
    cwd = Path(cwd or Path.cwd())
    absolute = os.path.abspath(cwd / path)  # no symlink resolution: a linked training_data/ stays training_data/
    relative = os.path.relpath(absolute, os.path.abspath(cwd))
    if relative == "." or relative.startswith(".."):
        raise LaunchError([f"{path} is outside the project directory {cwd}: Modal runs mirror paths relative to it"], "cannot upload")
    return PurePosixPath(*Path(relative).parts).as_posix()


def data_problems(recipe: Recipe, cwd: Path | None = None) -> list[str]:
    cwd = Path(cwd or Path.cwd())
    paths = {"data.train": recipe.data.train, "data.val": recipe.data.val, "data.images_root": recipe.data.images_root}
    if recipe.data.probes:
        paths["data.probes"] = recipe.data.probes
    if (cwd / recipe.model.base).is_dir():
        paths["model.base"] = recipe.model.base
    problems = []
    for field_name, path in paths.items():
        try:
            volume_key(path, cwd)
        except LaunchError as exc:
            problems.append(f"{field_name}: {exc.problems[0]}")
    return problems


def data_files(recipe: Recipe, cwd: Path | None = None) -> dict[str, Path]:
    """Every file a run needs on the data volume: the pipeline files, their images, probes, a local base model."""
    from data_adapters.pipeline import read_pipeline
    from data_adapters.samples import load_probes

    cwd = Path(cwd or Path.cwd())
    files: dict[str, Path] = {}
    for name in (recipe.data.train, recipe.data.val, recipe.data.probes):
        if name and (cwd / name).is_file():
            files[volume_key(name, cwd)] = cwd / name
    images_root = cwd / recipe.data.images_root
    root_key = volume_key(recipe.data.images_root, cwd)
    images: set[str] = set()
    for name in (recipe.data.train, recipe.data.val):
        rows, _ = read_pipeline(cwd / name)
        images |= {image for row in rows for image in row.images}
    if recipe.data.probes:
        samples, _ = load_probes(cwd / recipe.data.probes, images_root)
        images |= {ref for sample in samples for ref in sample.image_refs}
    for image in sorted(images):
        local = images_root / image
        if local.is_file():  # missing images were reported by the data check before we got here
            files[f"{root_key}/{posixpath.normpath(image)}"] = local
    base = cwd / recipe.model.base
    if base.is_dir():
        base_key = volume_key(recipe.model.base, cwd)
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            files[f"{base_key}/{path.relative_to(base).as_posix()}"] = path
    return files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class UploadPlan:
    upload: dict[str, Path]  # volume path -> local file, new or changed since the last upload
    unchanged: list[str]
    manifest: dict[str, str]  # the manifest after the upload: every file ever uploaded, with its hash

    @property
    def upload_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.upload.values())


def plan_upload(files: dict[str, Path], manifest: dict[str, str], hashes: dict[str, str] | None = None) -> UploadPlan:
    """Which files to send: those whose sha256 differs from the manifest's (or that it lacks)."""
    hashes = hashes if hashes is not None else {key: sha256_file(path) for key, path in files.items()}
    upload = {key: files[key] for key in sorted(files) if manifest.get(key) != hashes[key]}
    unchanged = sorted(key for key in files if key not in upload)
    return UploadPlan(upload, unchanged, {**manifest, **hashes})


def read_manifest(volume) -> dict[str, str]:
    try:
        raw = b"".join(volume.read_file(MANIFEST_KEY))
    except FileNotFoundError:
        return {}
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError:
        return {}  # a torn manifest only costs a full upload
    return manifest if isinstance(manifest, dict) else {}


def sync_files(volume, files: dict[str, Path]) -> UploadPlan:
    """Upload what changed since the last upload (by content hash), then the new manifest, in one batch."""
    plan = plan_upload(files, read_manifest(volume))
    if plan.upload:
        with volume.batch_upload(force=True) as batch:
            for key, local in plan.upload.items():
                batch.put_file(str(local), f"/{key}")
            batch.put_file(io.BytesIO(json.dumps(plan.manifest, indent=1, sort_keys=True).encode()), f"/{MANIFEST_KEY}")
    return plan


def upload_run(volume, run_path: Path, run_name: str) -> None:
    """A freshly prepared run directory (recipe, converted data, Axolotl config) onto the runs volume."""
    with volume.batch_upload() as batch:
        batch.put_directory(str(run_path), f"/{run_name}")


# Runs and checkpoints


def run_name_from(ref: str, runs_root: Path = Path("runs")) -> str:
    """"runs/e30m3-lora/20261125T170000Z", a local `latest` link, or "e30m3-lora/2026..." -> "e30m3-lora/2026..."."""
    local = Path(ref)
    if local.is_dir() and (local / "recipe.yaml").is_file():
        resolved = local.resolve()
        name = f"{resolved.parent.name}/{resolved.name}"
    else:
        name = ref.strip("/")
        prefix = f"{runs_root.as_posix().strip('/')}/"
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.endswith("/latest"):
        raise LaunchError([f"{ref}: `latest` is a link on the machine that made the run; pass the run's time, e.g. {name[:-6]}20261125T170000Z"], "unknown run")
    if not RUN_NAME.match(name):
        raise LaunchError([f"{ref}: pass a run as runs/<recipe name>/<time> or <recipe name>/<time>"], "unknown run")
    return name


def complete_checkpoints(output_dir: Path) -> set[str]:
    """Checkpoints the Trainer finished: trainer_state.json is the last file it writes."""
    done = set()
    for path in Path(output_dir).glob("checkpoint-*"):
        state = path / "trainer_state.json"
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        done.add(path.name)
    return done


def incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints cut off by a preemption: resuming from one would crash, so they are removed first."""
    done = complete_checkpoints(output_dir)
    return sorted(p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name not in done)


@contextlib.contextmanager
def keep_committing(
    commit: Callable[[], None], output_dir: Path, every_s: float = COMMIT_EVERY_S, poll_s: float = CHECKPOINT_POLL_S
) -> Iterator[None]:
    """Commit the volume as soon as a checkpoint completes (and every every_s for the logs), and once at the end.

    A preempted container loses what was not committed; the retry resumes from the last committed checkpoint.
    """
    stop = threading.Event()

    def commit_quietly() -> None:
        try:
            commit()
        except Exception as exc:  # a failed commit must not stop training; the next one carries the same files
            print(f"volume commit failed: {exc}", file=sys.stderr)

    def loop() -> None:
        seen, last = complete_checkpoints(output_dir), time.monotonic()
        while not stop.wait(poll_s):
            now = complete_checkpoints(output_dir)
            if now != seen or time.monotonic() - last >= every_s:
                commit_quietly()
                seen, last = now, time.monotonic()

    thread = threading.Thread(target=loop, name="commit-checkpoints", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        commit_quietly()


# Serving: fixed when the endpoint is deployed


SERVE_TARGET_ENV = "VLM3_SERVE_TARGET"  # JSON handed from `modal deploy` to the serving container


@dataclass(frozen=True)
class ServeTarget:
    """Which run the endpoint serves, and the serve settings it was deployed with."""

    run: str
    serve: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ServeSpec:
        return ServeSpec.model_validate(self.serve)

    def to_env(self) -> str:
        return json.dumps({"run": self.run, "serve": self.serve}, sort_keys=True)

    @classmethod
    def from_env(cls, text: str) -> "ServeTarget":
        raw = json.loads(text)
        return cls(raw["run"], raw["serve"])


def serve_target_from_env(environ: dict[str, str] | None = None, runs_root: Path = Path("runs")) -> ServeTarget | None:
    """The endpoint to declare: VLM3_RUN (which run) and VLM3_RECIPE (serve settings; default the run's own).

    None when no run is named: `modal deploy` then deploys the training functions only.
    """
    environ = os.environ if environ is None else environ
    if environ.get(SERVE_TARGET_ENV):
        return ServeTarget.from_env(environ[SERVE_TARGET_ENV])
    ref = environ.get("VLM3_RUN")
    if not ref:
        return None
    run = run_name_from(ref, runs_root)
    recipe_path = environ.get("VLM3_RECIPE")
    if recipe_path:
        serve = load_recipe(recipe_path).serve
    elif (runs_root / run / "recipe.yaml").is_file():
        from vlm3.recipe.runs import RunDir

        serve = RunDir(runs_root / run).recipe().serve
    else:
        raise LaunchError([f"VLM3_RUN={ref} has no local copy under {runs_root}/: set VLM3_RECIPE to the recipe it was trained with"],
                          "cannot deploy the endpoint")
    return ServeTarget(run, serve.model_dump(mode="json"))


def serve_function_options(target: ServeTarget) -> dict[str, Any]:
    """The endpoint's Modal settings, all from the recipe's serve section."""
    spec = target.spec
    return {
        "gpu": modal_gpu(spec.gpu),
        "cpu": SERVE_CPU,
        "memory": SERVE_MEMORY_MIB,
        "scaledown_window": spec.scaledown_window_s,
        "timeout": SERVE_REQUEST_TIMEOUT_S,
        "startup_timeout": SERVE_STARTUP_TIMEOUT_S,
    }


def recipe_for_serving(run_recipe: Recipe, target: ServeTarget) -> Recipe:
    """The run's recipe (its training pixel limits) with the serve settings the endpoint was deployed with."""
    return run_recipe.model_copy(update={"serve": target.spec})


def endpoint_url(web_url: str) -> str:
    """The OpenAI base URL of a deployed web server."""
    return web_url.rstrip("/") + "/v1"


# Endpoints side by side: one deployed Modal app per run, so deploying run B leaves run A's endpoint up.
# (A parametrized class would share one app, but Modal gives a web endpoint one URL per class, not per
# parameter, and the GPU and idle window differ per recipe.) Each app is `modal_entry.py::endpoint`,
# declared for the run VLM3_RUN names; the training app ("vlm3") holds no endpoint.

ENDPOINT_APP_VAR = "endpoint"  # modal_entry's App variable: `modal deploy modal_entry.py::endpoint`
ENDPOINT_CLASS = "Endpoint"  # its class, and the class's web method: modal.Cls.from_name(app, ENDPOINT_CLASS)().serve
ENDPOINT_METHOD = "serve"
# Modal: app names of at most 64 of [A-Za-z0-9._-] (modal/_utils/name_utils.py); a URL label (the
# "<app>-endpoint-serve" in https://<workspace>--<label>.modal.run) is a DNS label, lowercase letters, digits
# and dashes, cut by Modal beyond 63. 48 keeps "vlm3-<recipe>-<time>-<hash>" whole for recipe names up to 19.
ENDPOINT_APP_NAME_MAX = 48  # characters
RUN_HASH_CHARS = 6  # hex digits of the run name's sha256: two runs never share an app, however their names slug


def endpoint_app_name(run_name: str) -> str:
    """The Modal app serving one run: "vlm3-<recipe>-<time>-<hash>" in lowercase letters, digits and dashes.

    `e30m3-lora/20261125T170000Z` -> `vlm3-e30m3-lora-20261125t170000z-<6 hex>`. Long recipe names are cut
    (the time is kept whole); the hash of the exact run name keeps runs apart that slug alike.
    """
    if not RUN_NAME.match(run_name):
        raise LaunchError([f"{run_name!r}: pass a run as <recipe name>/<time>"], "unknown run")
    recipe, time_part = (re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in run_name.split("/"))
    digest = hashlib.sha256(run_name.encode("utf-8")).hexdigest()[:RUN_HASH_CHARS]
    room = ENDPOINT_APP_NAME_MAX - len(f"{APP_NAME}--{time_part}-{digest}")
    stem = "-".join(part for part in (APP_NAME, recipe[:max(room, 0)].strip("-"), time_part) if part)
    return f"{stem[:ENDPOINT_APP_NAME_MAX - RUN_HASH_CHARS - 1].rstrip('-')}-{digest}"


def deploy_command(run_name: str) -> str:
    """The command that deploys (or redeploys) a run's endpoint."""
    return f"VLM3_RUN=runs/{run_name} modal deploy modal_entry.py::{ENDPOINT_APP_VAR}"


def deploy_target(app_ref: str) -> str:
    """The App variable a `modal deploy FILE[::NAME]` reference names (Modal's default: "app")."""
    return app_ref.partition("::")[2] or "app"


# Cold starts in seconds: vLLM sleeps inside Modal's memory snapshot (modal_entry.Endpoint).
# Before the snapshot (@modal.enter(snap=True)): start vLLM with sleep mode, wait for /health, warm it up with
# the run's own page questions (the vision encoder, prefill and decode all run once, kernels compiled, CUDA
# graphs captured), then sleep. Modal snapshots host memory and, with enable_gpu_snapshot, the card's.
# After each restore (@modal.enter(snap=False)): wake. Snapshots exist for `modal deploy` only; with
# `modal serve` or without a snapshot both hooks simply run in turn.
SLEEP_LEVEL = 1  # vLLM level 1: the weights move to host memory, the KV cache is dropped; level 2 would drop the weights
WARMUP_ROUNDS = 2  # requests before sleeping; the first pays compilation, the second checks the warm path
WARMUP_MAX_TOKENS = 16
WAKE_TIMEOUT_S = 2 * 60  # the weights back to the card: ~17 GB at several GB/s, seconds
SLEEP_TIMEOUT_S = 2 * 60
HEALTH_POLL_S = 2.0


class ServeError(RuntimeError):
    """The endpoint's vLLM did not start, warm up, sleep or wake; the message names the step."""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_until_healthy(root: str, process, timeout_s: float = SERVE_STARTUP_TIMEOUT_S, log: str = "",
                       poll_s: float = HEALTH_POLL_S) -> float:
    """Seconds until `root`/health answered 200; ServeError when `process` (a Popen) exits first or time runs out."""
    import httpx

    started = time.monotonic()
    where = f"; see {log}" if log else ""
    while True:
        if process.poll() is not None:
            raise ServeError(f"vLLM exited with {process.returncode} before it was ready{where}")
        try:
            if httpx.get(f"{root}/health", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout_s:
            raise ServeError(f"vLLM did not answer /health within {timeout_s:.0f} s{where}")
        time.sleep(poll_s)


def _post(root: str, path: str, key: str, what: str, timeout_s: float, **kwargs):
    import httpx

    try:
        response = httpx.post(f"{root}{path}", headers=bearer(key), timeout=timeout_s, **kwargs)
    except httpx.HTTPError as exc:
        raise ServeError(f"{what}: POST {path} failed ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        hint = " (vLLM serves its sleep routes only with VLLM_SERVER_DEV_MODE=1)" if response.status_code == 404 else ""
        raise ServeError(f"{what}: POST {path} answered {response.status_code}{hint}: {response.text[:300]}")
    return response


def warm_up(root: str, key: str, request: dict[str, Any], rounds: int = WARMUP_ROUNDS,
            timeout_s: float = SERVE_REQUEST_TIMEOUT_S) -> list[float]:
    """Ask `request` (an OpenAI chat completion) `rounds` times; the seconds each took. ServeError on a refusal."""
    took = []
    for _ in range(rounds):
        started = time.monotonic()
        _post(root, "/v1/chat/completions", key, "warm-up", timeout_s, json=request)
        took.append(time.monotonic() - started)
    return took


def engine_sleeping(root: str, key: str) -> bool:
    """vLLM's /is_sleeping (a development route: VLLM_SERVER_DEV_MODE=1)."""
    import httpx

    try:
        response = httpx.get(f"{root}/is_sleeping", headers=bearer(key), timeout=30)
        if response.status_code == 200:
            return bool(response.json()["is_sleeping"])
        problem = f"answered {response.status_code}: {response.text[:300]}"
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        problem = f"failed ({type(exc).__name__}: {exc})"
    raise ServeError(f"GET /is_sleeping {problem} (vLLM serves it only with VLLM_SERVER_DEV_MODE=1)")


def sleep_engine(root: str, key: str, level: int = SLEEP_LEVEL, timeout_s: float = SLEEP_TIMEOUT_S) -> float:
    """Put vLLM to sleep (POST /sleep?level=N) and check that it says so; the seconds it took."""
    started = time.monotonic()
    _post(root, f"/sleep?level={level}", key, "sleep", timeout_s)
    if not engine_sleeping(root, key):
        raise ServeError(f"sleep: POST /sleep?level={level} answered 200 but /is_sleeping says the engine is awake")
    return time.monotonic() - started


def wake_engine(root: str, key: str, timeout_s: float = WAKE_TIMEOUT_S, poll_s: float = 0.5) -> float:
    """Wake vLLM (POST /wake_up) and wait until /is_sleeping says it is awake; the seconds it took."""
    started = time.monotonic()
    _post(root, "/wake_up", key, "wake", timeout_s)
    while engine_sleeping(root, key):
        if time.monotonic() - started > timeout_s:
            raise ServeError(f"wake: the engine still sleeps {timeout_s:.0f} s after POST /wake_up")
        time.sleep(poll_s)
    return time.monotonic() - started


def prepare_for_snapshot(root: str, key: str, process, warmup_request: dict[str, Any], log: str = "",
                         startup_timeout_s: float = SERVE_STARTUP_TIMEOUT_S) -> dict[str, Any]:
    """The work before Modal's snapshot: wait for a started vLLM, warm it up, put it to sleep. Timings in seconds."""
    load_s = wait_until_healthy(root, process, startup_timeout_s, log)
    warmup_s = warm_up(root, key, warmup_request)
    sleep_s = sleep_engine(root, key)
    return {"load_s": round(load_s, 1), "warmup_s": [round(s, 2) for s in warmup_s], "sleep_s": round(sleep_s, 2)}


OPEN_ROUTES = ("/health",)  # the only route an endpoint may answer without its key (readiness checks)
DOC_ROUTES = ("/openapi.json", "/docs", "/redoc")  # FastAPI's own pages, not listed in the OpenAPI paths


def auth_probe_routes(openapi: dict) -> list[tuple[str, str]]:
    """(method, path) of every route a server lists in its OpenAPI document, plus FastAPI's doc pages,
    except /health: each must answer 401 without the key. Path parameters get a placeholder value."""
    routes = {("GET", path) for path in DOC_ROUTES}
    for path, operations in (openapi.get("paths") or {}).items():
        if path in OPEN_ROUTES or not isinstance(operations, dict):
            continue
        concrete = re.sub(r"\{[^}]*\}", "x", path)
        routes |= {(method.upper(), concrete) for method in operations if method.lower() in ("get", "post", "put", "delete", "patch")}
    return sorted(routes, key=lambda r: (r[1], r[0]))


def unguarded_routes(statuses: dict[str, int]) -> list[str]:
    """The "METHOD /path" entries that did not answer 401 without the key."""
    return sorted(route for route, code in statuses.items() if code != 401)


def smoke_request(model: str, image_urls: list[str], question: str, max_tokens: int = 128) -> dict[str, Any]:
    """One chat completion with the row's pages first, in order, as the harness and the training data put them."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": [
            *({"type": "image_url", "image_url": {"url": url}} for url in image_urls),
            {"type": "text", "text": question},
        ]}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }


# Hugging Face Hub (optional)


def hub_targets(recipe: Recipe, dataset_repo: str = "", model_repo: str = "") -> tuple[str | None, str | None]:
    """(dataset repo, model repo) from the command line, else the recipe's `hub:` section if it has one."""
    hub = getattr(recipe, "hub", None)
    dataset = dataset_repo or getattr(hub, "dataset_repo", None) or None
    model = model_repo or getattr(hub, "model_repo", None) or None
    bad = [repo for repo in (dataset, model) if repo and not HUB_REPO.match(repo)]
    if bad:
        raise LaunchError([f"{repo!r} is not a Hub repository id such as you/e30m3-vlm" for repo in bad], "cannot push to the Hub")
    return dataset, model


# Checks before anything starts, and what to run next


def largest_row_pages(recipe: Recipe, cwd: Path | None = None) -> int:
    """The most pages one training or validation row shows (the served model must take them in one prompt)."""
    from data_adapters.pipeline import read_pipeline

    cwd = Path(cwd or Path.cwd())
    rows = [row for name in (recipe.data.train, recipe.data.val) for row in read_pipeline(cwd / name)[0]]
    return max((len(row.images) for row in rows), default=1)


def launch_problems(recipe: Recipe, cwd: Path | None = None) -> tuple[list[str], list[str]]:
    """(errors, notes) about running this recipe on Modal; errors stop the launch before any upload."""
    errors = data_problems(recipe, cwd)
    serve_errors, notes = serve_problems(recipe, pages=largest_row_pages(recipe, cwd))
    errors += serve_errors
    if recipe.compute.gpu != "cpu" and recipe.compute.gpu_type not in GPU_MEMORY_GIB:
        errors.append(f"compute.gpu {recipe.compute.gpu!r} is not a Modal GPU")
    if recipe.compute.gpu == "cpu":
        notes.append("compute.gpu is 'cpu': training runs in a CPU container (the tiny model; a 7B model needs a GPU)")
    errors += flash_attn_problems(recipe)
    notes += checkpoint_notes(recipe) + pipeline_time_notes(recipe)
    return errors, notes


# Bytes per parameter in one resumable checkpoint. Full fine-tune with ZeRO-3: bf16 parameter shards (2),
# fp32 master weights (4), Adam's two moments (8), and the gathered bf16 model the Trainer saves beside
# them (2, stage3_gather_16bit_weights_on_model_save): 16, ~133 GB for Qwen2-VL-7B's 8.29e9 parameters.
# LoRA: the fp32 adapter and its Adam state (4 + 8 per trainable parameter), ~2 GB at r 64 on the 7B.
FULL_CHECKPOINT_BYTES_PER_PARAM = 16
LORA_CHECKPOINT_BYTES_PER_TRAINABLE = 12


def checkpoint_bytes(recipe: Recipe) -> float | None:
    """One checkpoint's size on the runs volume, from the model's shape; None where it cannot be counted here."""
    shape = model_shape(recipe)
    if shape is None:
        return None
    if recipe.train.method == "full":
        return shape.total_params * FULL_CHECKPOINT_BYTES_PER_PARAM
    lora = recipe.train.lora
    if lora.include_vision_tower:
        return None  # the tower's adapters are not in the shape's LoRA count
    return shape.lora_trainable(lora.r, lora.target_modules) * LORA_CHECKPOINT_BYTES_PER_TRAINABLE


def checkpoint_notes(recipe: Recipe) -> list[str]:
    """What the recipe's checkpoints cost on the runs volume (the Trainer writes a new one before it deletes
    the oldest, so save_total_limit + 1 exist at once); a resume needs only the newest."""
    size = checkpoint_bytes(recipe)
    if size is None:
        return []
    limit = recipe.train.save_total_limit
    peak = size * (limit + 1)
    note = (
        f"checkpoints every {recipe.train.save_steps} steps, ~{size / 1e9:.0f} GB each; save_total_limit {limit} "
        f"keeps up to {limit + 1} while rotating (~{peak / 1e9:.0f} GB on {VOLUME_NAMES['runs']}); a resume needs only the newest"
    )
    if recipe.train.method == "full" and limit > 1:
        note += f"; train.save_total_limit: 1 would hold ~{2 * size / 1e9:.0f} GB"
    return [note]


def pipeline_time_notes(recipe: Recipe) -> list[str]:
    """Whether the pipeline's timeout still covers the merge and smoke test after a training of full length."""
    worst_s = (train_retries(recipe) + 1) * recipe.compute.timeout_hours * HOUR + after_train_worst_s() + PIPELINE_RESERVE_S
    if worst_s <= PIPELINE_TIMEOUT_S:
        return []
    return [f"compute.timeout_hours {recipe.compute.timeout_hours:g}: a training that runs to its timeout leaves the "
            f"{PIPELINE_TIMEOUT_S // HOUR} h pipeline too little time to merge and smoke-test; continue with "
            "`modal run modal_entry.py --run <run> --stage merge`"]


def flash_attn_problems(recipe: Recipe, environ: dict[str, str] | None = None) -> list[str]:
    """train.flash_attention needs the flash-attn image and a GPU its kernels were compiled for."""
    if not recipe.train.flash_attention or recipe.on_cpu:
        return []
    problems = []
    if not flash_attn_image_enabled(environ):
        problems.append(
            f"train.flash_attention is true but the trainer image has no flash-attn: set {FLASH_ATTN_ENV}=1 to compile it "
            f"once (~{FLASH_ATTN_BUILD_MINUTES} min, docs/modal.md), or remove the line to train with SDPA"
        )
    sm = GPU_SM.get(recipe.compute.gpu_type)
    if sm is not None and not (sm // 10 * 10 in FLASH_ATTN_SM or sm in FLASH_ATTN_SM):
        problems.append(
            f"train.flash_attention: compute.gpu {recipe.compute.gpu_type} is sm_{sm}; the flash-attn image has kernels for "
            f"sm_{' and sm_'.join(str(s) for s in FLASH_ATTN_SM)} only (FLASH_ATTN_CUDA_ARCHS {FLASH_ATTN_CUDA_ARCHS}); "
            "train with SDPA (remove train.flash_attention) or pick an A100, H100 or H200"
        )
    return problems


def next_commands(run_name: str, recipe: Recipe) -> list[str]:
    volume = VOLUME_NAMES["runs"]
    return [
        f"resume or continue: modal run modal_entry.py --run {run_name}",
        f"merge again:        modal run modal_entry.py --run {run_name} --stage merge",
        f"serve (endpoint):   {deploy_command(run_name)}   (app {endpoint_app_name(run_name)}; one per run)",
        f"evaluate locally:   vlm3 eval runs/{run_name} --endpoint <the URL the deploy prints> --api-key $VLLM_API_KEY",
        f"evaluate on Modal:  modal run modal_entry.py --run {run_name} --stage eval",
        f"fetch the results:  modal volume get {volume} {run_name}/train_metrics.json runs/{run_name}/",
    ]


def describe(items: Iterable[str]) -> str:
    return "\n".join(f"  {item}" for item in items)
