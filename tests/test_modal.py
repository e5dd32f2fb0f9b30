"""Modal: the app imports without an account, declares what the recipes ask for, checks everything
before it uploads, and its functions run the very step functions the local CLI runs.

Nothing here talks to Modal: volumes are folders (FolderVolume), and the function bodies run
here through `Function.local()`. Tests that need an account are marked `modal` and skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEMO_RECIPE, ROOT, TINY_MODEL
from vlm3.cloud import support as ms
from vlm3.recipe.schema import load_recipe, parse_recipe
from vlm3.serve.vllm import format_command, images_per_prompt, max_lora_rank, served_model_dir, sleep_mode_command, vllm_argv

GOLDEN = ROOT / "tests" / "golden"
UPDATE = bool(os.environ.get("VLM3_UPDATE_GOLDEN"))
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"


def load_entry(monkeypatch, **env: str):
    """A fresh import of modal_entry.py under the given environment (its decorators read it at import)."""
    for name in ("VLM3_RUN", "VLM3_RECIPE", ms.SERVE_TARGET_ENV, ms.MOUNT_ROOT_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(f"modal_entry_under_test_{time.monotonic_ns()}", ROOT / "modal_entry.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def secret_names(function) -> list[str]:
    return [getattr(s, "_name", None) for s in function._spec_.secrets if getattr(s, "_name", None)]


class FolderBatch:
    def __init__(self, root: Path, force: bool):
        self.root, self.force, self.paths = root, force, []

    def put_file(self, local, remote: str) -> None:
        target = self.root / remote.lstrip("/")
        if target.exists() and not self.force:
            raise FileExistsError(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(local.getvalue() if isinstance(local, io.BytesIO) else Path(local).read_bytes())
        self.paths.append(remote)

    def put_directory(self, local, remote: str) -> None:
        shutil.copytree(local, self.root / remote.lstrip("/"), symlinks=True)
        self.paths.append(remote)


class FolderVolume:
    """A Modal Volume stand-in: a folder holding what a container sees under the mount."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.batches: list[list[str]] = []

    def read_file(self, path: str):
        target = self.root / path.lstrip("/")
        if not target.is_file():
            raise FileNotFoundError(path)
        yield target.read_bytes()

    @contextlib.contextmanager
    def batch_upload(self, force: bool = False):
        batch = FolderBatch(self.root, force)
        yield batch
        self.batches.append(batch.paths)


class NoCloud:
    """Fails the test if the entrypoint touches Modal before the recipe and the data pass."""

    def __getattr__(self, name):
        raise AssertionError(f"touched Modal ({name}) before the recipe and data were checked")


# Import and declarations


def test_importing_needs_no_credentials_and_no_heavy_packages(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"))
    code = "import sys, modal_entry; print(sorted(m for m in ('torch', 'transformers', 'axolotl', 'vllm', 'deepeval') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_app_declares_functions_volumes_and_secrets(monkeypatch):
    entry = load_entry(monkeypatch)
    import modal

    for name in ("pipeline", "train", "merge", "smoke_test", "evaluate", "push_to_hub"):
        assert isinstance(getattr(entry, name), modal.Function), name
    assert not hasattr(entry, "serve") and not hasattr(entry, "endpoint"), "no endpoint is declared until VLM3_RUN names a run"
    assert entry.app.name == ms.APP_NAME
    mounts = {"/vol/data", "/vol/runs", "/vol/hf"}
    for function in (entry.pipeline, entry.train, entry.merge, entry.smoke_test, entry.push_to_hub):
        assert set(function._spec_.volumes) == mounts
    assert set(entry.evaluate._spec_.volumes) == {"/vol/data", "/vol/runs"}
    assert secret_names(entry.train) == ["huggingface"] == secret_names(entry.merge) == secret_names(entry.push_to_hub)
    assert entry.train._spec_.gpus is None, "training's GPU comes from the recipe on each call"
    assert entry.merge._spec_.gpus == ms.MERGE_GPU and entry.merge._spec_.memory == ms.MERGE_MEMORY_MIB
    assert entry.pipeline._spec_.gpus is None


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_training_options_come_from_the_recipe(path: Path):
    recipe = load_recipe(path)
    options = ms.train_call_options(recipe)
    assert options["gpu"] == (None if recipe.compute.gpu == "cpu" else recipe.compute.gpu)
    assert options["timeout"] == recipe.compute.timeout_hours * 3600
    assert ms.smoke_call_options(recipe) == {"gpu": recipe.serve.gpu}
    assert ms.train_secret_names(recipe)[0] == "huggingface"


@pytest.mark.parametrize("gpu,cards", [("H100", 1), ("H100:4", 4), ("A100-80GB:2", 2), ("L40S", 1)])
def test_training_cpu_and_memory_scale_with_the_cards(gpu, cards):
    """One training process per card, each with its DataLoader workers: CPU and memory are per card."""
    recipe = parse_recipe({"name": "t", "compute": {"gpu": gpu}})
    options = ms.train_call_options(recipe)
    assert options["cpu"] == cards * ms.TRAIN_CPU_PER_GPU and options["memory"] == cards * ms.TRAIN_MEMORY_PER_GPU_MIB
    # The pages a card consumes at its peak rate fit in the cores it gets, with the training process's own core.
    prep_cores = ms.SAMPLE_PREP_CPU_S * ms.PEAK_SAMPLES_PER_GPU_S
    assert ms.TRAIN_CPU_PER_GPU >= 1 + 2 * prep_cores and ms.TRAIN_CPU_PER_GPU > 0.125
    from vlm3.train.render import DATALOADER_WORKERS

    assert DATALOADER_WORKERS <= ms.TRAIN_CPU_PER_GPU, "a worker per reserved core at most"


def test_the_eval_image_installs_pyprojects_requirements():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = ms.light_requirements(ROOT / "pyproject.toml")
    assert requirements == project["dependencies"] + project["optional-dependencies"]["judge"]
    assert "deepeval==4.3.1" in requirements and not any(r.startswith(("torch", "axolotl")) for r in requirements)


@pytest.mark.parametrize("gpu,flash,env,expected", [
    ("H100", False, "", []),
    ("B200", False, "", []),  # SDPA: torch's own wheel has sm_100 kernels
    ("H100", True, "1", []),
    ("A10G", True, "1", []),  # sm_86 runs the sm_80 code
    ("H100", True, "", ["has no flash-attn"]),
    ("B200", True, "1", ["sm_100"]),
    ("T4", True, "1", ["sm_75"]),
])
def test_flash_attention_needs_its_image_and_a_gpu_it_has_kernels_for(gpu, flash, env, expected):
    recipe = parse_recipe({"name": "t", "compute": {"gpu": gpu}, "train": {"flash_attention": flash}})
    problems = ms.flash_attn_problems(recipe, {ms.FLASH_ATTN_ENV: env})
    assert len(problems) == len(expected) and all(word in p for word, p in zip(expected, problems)), problems


@pytest.mark.trainer
def test_torchs_wheel_has_kernels_for_every_modal_gpu():
    """SDPA needs no extra kernels: the trainer image's torch carries code for each GPU (same major, minor <= it)."""
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    probe = subprocess.run([str(env.python), "-c", "import torch; print(torch._C._cuda_getArchFlags())"],
                           capture_output=True, text=True, timeout=120)
    arches = {int(flag.removeprefix("sm_")) for flag in probe.stdout.split() if flag.startswith("sm_")}
    assert arches, probe.stdout + probe.stderr
    for gpu, sm in ms.GPU_SM.items():
        assert any(a // 10 == sm // 10 and a <= sm for a in arches), f"{gpu} (sm_{sm}) has no kernels in {sorted(arches)}"


@pytest.mark.parametrize("flash", ["", "1"])
def test_the_default_trainer_image_compiles_nothing(monkeypatch, flash):
    """flash-attn (sdist only: a compile) is in the trainer image only when asked for, with a bounded build."""
    import modal

    installs: list[tuple[tuple, dict]] = []
    original = modal.Image.pip_install

    def recording(self, *packages, **kwargs):
        installs.append((packages, kwargs))
        return original(self, *packages, **kwargs)

    monkeypatch.setattr(modal.Image, "pip_install", recording)
    load_entry(monkeypatch, **{ms.FLASH_ATTN_ENV: flash})
    flash_layers = [kwargs for packages, kwargs in installs if any(p.startswith("flash-attn") for p in packages)]
    assert len(flash_layers) == (1 if flash else 0), installs
    if flash:
        env = flash_layers[0]["env"]
        jobs, threads = int(env["MAX_JOBS"]), int(env["NVCC_THREADS"])
        assert jobs * threads * 6 <= 32, "compilers at ~6 GB each must fit a 32 GB builder"
        assert env["FLASH_ATTN_CUDA_ARCHS"] == "80;90"


def test_checkpoint_notes_size_the_full_fine_tune():
    full = load_recipe(ROOT / "recipes" / "e30m3_full.yaml")
    size = ms.checkpoint_bytes(full)
    assert 120e9 < size < 140e9  # 16 bytes x 8.29e9 parameters
    (note,) = ms.checkpoint_notes(full)
    limit = full.train.save_total_limit
    assert f"keeps up to {limit + 1}" in note and f"~{size * (limit + 1) / 1e9:.0f} GB" in note
    lora = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    assert ms.checkpoint_bytes(lora) < 3e9


def test_wandb_and_judge_secrets_only_when_the_recipe_uses_them():
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    assert ms.train_secret_names(recipe) == ["huggingface"]
    with_wandb = recipe.model_copy(update={"axolotl": {"wandb_project": "vlm3"}})
    assert ms.train_secret_names(with_wandb) == ["huggingface", "wandb"]
    assert ms.eval_secret_names(recipe) == ["vlm3-endpoint", "anthropic"]
    no_judge = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"judge": None})})
    assert ms.eval_secret_names(no_judge) == ["vlm3-endpoint"]


def test_endpoint_is_declared_from_the_recipe(monkeypatch, tmp_path):
    raw = yaml.safe_load((ROOT / "recipes" / "e30m3_lora.yaml").read_text())
    raw["serve"].update(gpu="L40S", scaledown_window_s=120, concurrent_inputs=8, api_key_secret="my-endpoint-key")
    recipe_file = tmp_path / "serve.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    entry = load_entry(monkeypatch, VLM3_RUN="runs/e30m3-lora/20261125T170000Z", VLM3_RECIPE=str(recipe_file))
    assert entry.SERVE_TARGET.run == "e30m3-lora/20261125T170000Z"
    assert entry.endpoint.name == ms.endpoint_app_name("e30m3-lora/20261125T170000Z"), "the run's own app"
    service = entry.Endpoint._get_class_service_function()
    assert service._spec_.gpus == "L40S"
    assert "my-endpoint-key" in secret_names(service)
    assert entry.SERVE_SPEC.concurrent_inputs == 8
    options = ms.serve_function_options(entry.SERVE_TARGET)
    assert options["scaledown_window"] == 120 and options["gpu"] == "L40S"
    # the serving container re-declares the same function from the JSON it is handed
    again = ms.serve_target_from_env({ms.SERVE_TARGET_ENV: entry.SERVE_TARGET.to_env()})
    assert again == entry.SERVE_TARGET


def test_plan_serve_settings_use_the_plans_idle_window():
    target = ms.ServeTarget("e30m3-lora/20261125T170000Z", load_recipe(ROOT / "recipes" / "e30m3_lora.yaml").serve.model_dump())
    assert ms.serve_function_options(target)["scaledown_window"] == 300
    assert ms.serve_function_options(target)["gpu"] == "A10G"


# The vLLM command line


def endpoint_command(recipe, model_dir: str) -> list[str]:
    """What the Modal endpoint and its smoke test run: vllm_argv's command with sleep mode (for snapshots)."""
    return sleep_mode_command(vllm_argv(recipe, model_dir), {})[0]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_vllm_command_matches_golden(path: Path):
    recipe = load_recipe(path)
    model_dir = str(served_model_dir(Path(f"/vol/runs/{recipe.name}/RUN"), recipe))
    argv = endpoint_command(recipe, model_dir)
    check_golden(f"vllm_{path.stem}.txt", format_command(argv))
    assert argv[-1] == "--enable-sleep-mode"
    assert argv[:3] == ["vllm", "serve", model_dir]
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags["--served-model-name"] == recipe.served_name
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 1, "video": 0}
    assert json.loads(flags["--mm-processor-kwargs"]) == {"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels}
    assert flags["--generation-config"] == "vllm"
    assert flags["--max-model-len"] == str(recipe.serve.max_model_len)
    assert not any("api-key" in arg or "API_KEY" in arg for arg in argv), "the key comes from VLLM_API_KEY, never the command line"


def test_vllm_takes_as_many_pages_per_prompt_as_the_runs_largest_row(tmp_path):
    """prepare records the largest row's page count; the server is started to take that many images."""
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    run = tmp_path / "run"
    assert images_per_prompt(run) == 1  # a run prepared before rows had several pages
    (run / "data").mkdir(parents=True)
    for recorded, probes, expected in ((3, 0, 3), (0, 0, 1), ("two", 0, 1), (1, 2, 2)):  # 0: a text-only dataset still serves one page
        (run / "data" / "data_report.json").write_text(json.dumps({"max_images_per_row": recorded, "max_images_per_probe": probes}))
        flags = vllm_argv(recipe, "/m", images=images_per_prompt(run))
        assert json.loads(flags[flags.index("--limit-mm-per-prompt") + 1]) == {"image": expected, "video": 0}


def test_adapter_mode_command_matches_golden():
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    recipe = recipe.model_copy(update={"serve": recipe.serve.model_copy(update={"serve_adapter": True})})
    argv = endpoint_command(recipe, "/vol/runs/e30m3-lora/RUN/output")
    check_golden("vllm_e30m3_lora_adapter.txt", format_command(argv))
    assert argv[2] == "Qwen/Qwen2-VL-7B-Instruct"
    assert argv[argv.index("--lora-modules") + 1] == "e30m3=/vol/runs/e30m3-lora/RUN/output"
    assert argv[argv.index("--max-lora-rank") + 1] == "64"
    assert argv[argv.index("--served-model-name") + 1] == "e30m3-base"


@pytest.mark.parametrize("r, rank", [(1, 8), (8, 8), (9, 16), (32, 32), (64, 64), (65, 128), (320, 320), (512, 512)])
def test_max_lora_rank_is_one_vllm_accepts(r, rank):
    assert max_lora_rank(r) == rank


def test_max_lora_rank_above_vllms_largest_is_refused():
    with pytest.raises(ValueError, match="merged model"):
        max_lora_rank(1024)


@pytest.mark.parametrize(
    "method, adapter, expected",
    [("lora", False, "output/merged"), ("qlora", False, "output/merged"), ("full", False, "output"), ("lora", True, "output")],
)
def test_served_model_dir(method, adapter, expected):
    raw = {"name": "x", "train": {"method": method}, "serve": {"serve_adapter": adapter}}
    assert served_model_dir(Path("/r"), parse_recipe(raw)) == Path("/r") / expected


# Where `vllm serve`'s parser lives: vllm.entrypoints.openai.cli_args until 0.31, launchers.cli_args in 0.32
# (the CPU build here), common.cli_args in 0.33 (the Modal image's pin; read in its wheel).
VLLM_PARSER_MODULES = ("vllm.entrypoints.common.cli_args", "vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args")


def vllm_make_arg_parser():
    """vLLM's make_arg_parser from whichever module this vLLM keeps it in; None when vLLM is not importable."""
    import importlib

    for name in VLLM_PARSER_MODULES:
        try:
            return importlib.import_module(name).make_arg_parser
        except ImportError:
            continue
    return None


def test_vllms_own_parser_accepts_the_command():
    """vLLM needs a GPU to install; where it is importable, its parser must take our flags."""
    make_arg_parser = vllm_make_arg_parser()
    if make_arg_parser is None:
        pytest.skip("vLLM is not installed here (GPU only); the golden files pin the command instead")
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    for adapter in (False, True):
        recipe = recipe.model_copy(update={"serve": recipe.serve.model_copy(update={"serve_adapter": adapter})})
        argv = endpoint_command(recipe, "/vol/runs/e30m3-lora/RUN/output")
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", argv[2], *argv[3:]])
        assert args.max_model_len == recipe.serve.max_model_len
        assert args.enable_sleep_mode is True


# What vLLM does with `--middleware X` (vllm/entrypoints/openai/api_server.py): import X by its
# dotted path; a class goes to FastAPI's app.add_middleware(X). Run here on FastAPI/Starlette (the
# trainer environment has them), from a folder outside the project with only vllm_environ's path.
MIDDLEWARE_AS_VLLM_LOADS_IT = """
import importlib, inspect, os, sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
app = FastAPI()
for path in ("/health", "/metrics", "/v1/models", "/tokenize"):
    app.add_api_route(path, lambda: {"ok": True})
module_path, name = sys.argv[1].rsplit(".", 1)
imported = getattr(importlib.import_module(module_path), name)
assert inspect.isclass(imported)
app.add_middleware(imported)
client = TestClient(app)
key = os.environ["VLLM_API_KEY"]
print({p: (client.get(p).status_code, client.get(p, headers={"Authorization": f"Bearer {key}"}).status_code)
       for p in ("/health", "/metrics", "/v1/models", "/tokenize")})
"""


@pytest.mark.trainer
def test_the_served_command_guards_every_route_but_health(tmp_path):
    from vlm3.serve.vllm import KEY_MIDDLEWARE, vllm_environ

    if not TRAIN_PYTHON.exists():
        pytest.skip("needs .venv-train (FastAPI, as in the vLLM image)")
    argv = vllm_argv(load_recipe(ROOT / "recipes" / "e30m3_lora.yaml"), "/vol/runs/x/output/merged")
    assert argv[argv.index("--middleware") + 1] == KEY_MIDDLEWARE
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env = vllm_environ(base, "VLLM_API_KEY", "k-123")
    assert "k-123" not in argv
    proc = subprocess.run([str(TRAIN_PYTHON), "-c", MIDDLEWARE_AS_VLLM_LOADS_IT, KEY_MIDDLEWARE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    codes = eval(proc.stdout.strip().splitlines()[-1])  # a dict literal printed by the script above
    assert codes == {"/health": (200, 200), "/metrics": (401, 200), "/v1/models": (401, 200), "/tokenize": (401, 200)}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run `make golden` and review the diff"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed: run `make golden` and review the diff"


# Checks before anything starts


def bad_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntrain:\n  epochs: three\n  lora:\n    rank: 8\ncompute:\n  gpu: H1000\n")
    return path


def test_entrypoint_refuses_a_bad_recipe_before_contacting_modal(monkeypatch, tmp_path, capsys):
    entry = load_entry(monkeypatch)
    lines: list[str] = []
    code = entry.launch(recipe=str(bad_recipe(tmp_path)), cloud=NoCloud(), out=lines.append, runs_root=tmp_path / "runs")
    text = "\n".join(lines)
    assert code == 2
    assert "train.epochs" in text and "train.lora.rank: unknown key (did you mean 'r'?)" in text and "compute.gpu" in text
    assert not (tmp_path / "runs").exists()


def test_the_real_local_entrypoint_exits_2_on_a_bad_recipe(monkeypatch, tmp_path, capsys):
    """`modal run modal_entry.py --recipe bad.yaml` runs this function: it exits before using a volume or function."""
    entry = load_entry(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        entry.main.info.raw_f(recipe=str(bad_recipe(tmp_path)))
    assert exited.value.code == 2
    assert "is not a valid recipe" in capsys.readouterr().out


def test_entrypoint_refuses_missing_images_before_uploading(monkeypatch, tmp_path, sample_dir):
    entry = load_entry(monkeypatch)
    data = tmp_path / "training_data"
    shutil.copytree(sample_dir / "training_data", data)
    first_image = sorted((data / "images").iterdir())[0]
    first_image.unlink()
    raw = yaml.safe_load(DEMO_RECIPE.read_text())
    raw["data"].update(train="training_data/vlm_train.jsonl", val="training_data/vlm_val.jsonl", images_root="training_data", probes=None)
    raw["model"]["base"] = "Qwen/Qwen2-VL-7B-Instruct"
    raw["compute"] = {"gpu": "H100"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    code = entry.launch(recipe="r.yaml", cloud=NoCloud(), out=lines.append, runs_root=tmp_path / "runs")
    assert code == 1
    assert first_image.name in "\n".join(lines) and "Nothing was uploaded or started" in "\n".join(lines)
    assert not (tmp_path / "runs").exists()


def test_entrypoint_refuses_settings_that_cannot_serve(monkeypatch, tmp_path):
    entry = load_entry(monkeypatch)
    raw = yaml.safe_load((ROOT / "recipes" / "e30m3_lora.yaml").read_text())
    raw["serve"]["max_model_len"] = 1024  # one ~1 MP page alone is 1,280 visual tokens
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(raw))
    lines: list[str] = []
    code = entry.launch(recipe=str(path), cloud=NoCloud(), out=lines.append, runs_root=tmp_path / "runs")
    assert code == 2
    assert "serve.max_model_len 1024 cannot hold one page" in "\n".join(lines)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "pass --recipe"),
        ({"recipe": "recipes/e30m3_lora.yaml", "run": "e30m3-lora/20261125T170000Z"}, "pass --recipe"),
        ({"recipe": "recipes/e30m3_lora.yaml", "stage": "merge"}, "acts on a trained run"),
        ({"run": "e30m3-lora/20261125T170000Z", "stage": "deploy"}, "--stage 'deploy'"),
        ({"run": "runs/e30m3-lora/latest"}, "`latest` is a link"),
    ],
)
def test_entrypoint_explains_wrong_arguments(monkeypatch, tmp_path, kwargs, message):
    entry = load_entry(monkeypatch)
    lines: list[str] = []
    assert entry.launch(**kwargs, cloud=NoCloud(), out=lines.append, runs_root=tmp_path / "runs") == 2
    assert message in "\n".join(lines)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"serve": {"max_model_len": 1024}}, "serve.max_model_len 1024 cannot hold one page"),
        ({"serve": {"gpu": "T4"}}, "bfloat16"),
        ({"serve": {"serve_adapter": True}, "train": {"lora": {"modules_to_save": ["lm_head"]}}}, "modules_to_save"),
        ({"serve": {"serve_adapter": True}, "train": {"lora": {"include_vision_tower": True}}}, "vision tower"),
        ({"serve": {"gpu": "L4", "max_model_len": 32768, "gpu_memory_utilization": 0.8}}, "does not fit"),
    ],
)
def test_serve_problems(change, expected):
    raw = yaml.safe_load((ROOT / "recipes" / "e30m3_lora.yaml").read_text())
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                raw[section].setdefault(key, {}).update(value)
            else:
                raw[section][key] = value
    errors, _ = ms.serve_problems(parse_recipe(raw))
    assert any(expected in e for e in errors), errors


def test_shipped_recipes_can_launch_and_say_which_vllm_they_get():
    for path in RECIPES:
        errors, notes = ms.launch_problems(load_recipe(path), cwd=ROOT)
        assert errors == [], (path.name, errors)
    _, notes = ms.serve_problems(parse_recipe({"name": "x", "serve": {"vllm_version": "0.11.0"}}))
    assert any("cannot read checkpoints written by transformers" in n for n in notes)


def test_what_fits_on_the_plans_a10g():
    fit = ms.serve_fit(load_recipe(ROOT / "recipes" / "e30m3_lora.yaml"))
    assert 15 < fit.weights_gib < 16  # 8.29 B parameters in bf16
    assert 50_000 < fit.kv_cache_tokens < 70_000
    assert fit.full_length_sequences >= 10  # 4096-token requests at once


@pytest.mark.parametrize(
    "recipe, cap",
    [("e30m3_lora.yaml", "$31.60"), ("e30m3_full.yaml", "$189.60"), ("e30m3_train_dev.yaml", "$3.95"), ("e30m3_qlora.yaml", "$23.40")],
)
def test_cost_cap_is_price_times_cards_times_timeout(recipe, cap):
    lines = ms.cost_lines(load_recipe(ROOT / "recipes" / recipe))
    assert any(f"at most {cap}" in line for line in lines), lines
    assert any("stops after 300 s" in line for line in lines)


# Data on the volume


def test_volume_keys_mirror_the_project_layout(tmp_path):
    assert ms.volume_key("training_data/images", tmp_path) == "training_data/images"
    assert ms.volume_key(tmp_path / "a" / "b.jsonl", tmp_path) == "a/b.jsonl"
    for outside in ("../elsewhere/data", "/etc/passwd", "."):
        with pytest.raises(ms.LaunchError, match="outside the project"):
            ms.volume_key(outside, tmp_path)


def test_data_files_are_the_pipeline_files_their_images_probes_and_a_local_base(sample_dir):
    recipe = load_recipe(DEMO_RECIPE)
    files = ms.data_files(recipe, cwd=ROOT)
    assert "sample_data/training_data/vlm_train.jsonl" in files and "sample_data/probes.jsonl" in files
    images = [k for k in files if k.startswith("sample_data/training_data/images/")]
    assert images and all(files[k].is_file() for k in images)
    if TINY_MODEL.is_dir():
        assert ".cache/tiny-qwen2-vl/config.json" in files
    assert all(not k.startswith("/") and ".." not in k for k in files)


@pytest.mark.parametrize(
    "manifest, uploaded",
    [
        ({}, ["a.jpg", "b.jpg"]),
        ({"a.jpg": "ha", "b.jpg": "hb"}, []),
        ({"a.jpg": "ha", "b.jpg": "old"}, ["b.jpg"]),
        ({"a.jpg": "ha", "gone.jpg": "hg"}, ["b.jpg"]),
    ],
)
def test_upload_plan_sends_only_new_or_changed_files(manifest, uploaded):
    files = {"a.jpg": Path("a.jpg"), "b.jpg": Path("b.jpg")}
    plan = ms.plan_upload(files, manifest, hashes={"a.jpg": "ha", "b.jpg": "hb"})
    assert list(plan.upload) == uploaded
    assert plan.manifest["a.jpg"] == "ha" and plan.manifest["b.jpg"] == "hb"
    assert set(plan.manifest) >= set(manifest), "files uploaded before stay in the manifest"


def test_sync_skips_unchanged_files_by_content_hash(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for name in ("a.txt", "b.txt"):
        (local / name).write_text(name)
    files = {f"d/{n}": local / n for n in ("a.txt", "b.txt")}
    volume = FolderVolume(tmp_path / "volume")
    assert len(ms.sync_files(volume, files).upload) == 2
    assert (tmp_path / "volume" / "d" / "a.txt").read_text() == "a.txt"
    assert json.loads((tmp_path / "volume" / ms.MANIFEST_KEY).read_text())["d/a.txt"] == ms.sha256_file(local / "a.txt")
    assert ms.sync_files(volume, files).upload == {}
    (local / "b.txt").write_text("changed")
    (local / "a.txt").touch()  # a newer time alone is not a change
    plan = ms.sync_files(volume, files)
    assert list(plan.upload) == ["d/b.txt"] and plan.unchanged == ["d/a.txt"]
    assert (tmp_path / "volume" / "d" / "b.txt").read_text() == "changed"


def test_a_torn_manifest_costs_only_a_full_upload(tmp_path):
    volume = FolderVolume(tmp_path / "volume")
    (tmp_path / "volume" / ".vlm3").mkdir()
    (tmp_path / "volume" / ms.MANIFEST_KEY).write_text('{"a": ')
    assert ms.read_manifest(volume) == {}


@pytest.mark.parametrize(
    "ref, name",
    [
        ("runs/e30m3-lora/20261125T170000Z", "e30m3-lora/20261125T170000Z"),
        ("e30m3-lora/20261125T170000Z", "e30m3-lora/20261125T170000Z"),
        ("/e30m3-lora/20261125T170000Z-2/", "e30m3-lora/20261125T170000Z-2"),
    ],
)
def test_run_names(ref, name):
    assert ms.run_name_from(ref) == name


@pytest.mark.parametrize("ref", ["e30m3-lora", "../x/y", "a/b/c", "runs/e30m3-lora/latest"])
def test_run_names_refused(ref):
    with pytest.raises(ms.LaunchError):
        ms.run_name_from(ref)


def test_a_local_latest_link_names_its_run(tmp_path):
    run = tmp_path / "runs" / "tiny-cpu-demo" / "20261125T170000Z"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: tiny-cpu-demo\n")
    (run.parent / "latest").symlink_to(run.name)
    assert ms.run_name_from(str(run.parent / "latest"), tmp_path / "runs") == "tiny-cpu-demo/20261125T170000Z"


# Checkpoints and commits


def make_checkpoint(output: Path, step: int, complete: bool) -> Path:
    path = output / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        (path / "trainer_state.json").write_text('{"global_step": %d}' % step)
    return path


def test_checkpoints_cut_off_by_preemption_are_found(tmp_path):
    make_checkpoint(tmp_path, 100, True)
    torn = make_checkpoint(tmp_path, 200, False)
    half = make_checkpoint(tmp_path, 300, False)
    (half / "trainer_state.json").write_text('{"global_st')
    assert ms.complete_checkpoints(tmp_path) == {"checkpoint-100"}
    assert ms.incomplete_checkpoints(tmp_path) == [torn, half]


def test_commits_follow_new_checkpoints_and_the_end(tmp_path):
    commits: list[float] = []
    with ms.keep_committing(lambda: commits.append(time.monotonic()), tmp_path, every_s=3600, poll_s=0.05):
        time.sleep(0.2)
        assert commits == [], "nothing new, nothing committed"
        make_checkpoint(tmp_path, 100, True)
        deadline = time.monotonic() + 5
        while not commits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(commits) == 1, "a completed checkpoint is committed at once"
    assert len(commits) == 2, "and once more at the end"


def test_a_failing_commit_does_not_stop_training(tmp_path, capsys):
    def fail() -> None:
        raise RuntimeError("network")

    with ms.keep_committing(fail, tmp_path, every_s=0, poll_s=0.05):
        time.sleep(0.15)
    assert "volume commit failed: network" in capsys.readouterr().err


# The Modal functions run the local step functions
# (their bodies run here through .local(); the folder volumes stand in for the mounted ones)

LOCAL_RUN = pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning")


@pytest.fixture
def cloud_run(monkeypatch, tmp_path, sample_dir):
    """The tiny recipe prepared and uploaded by the entrypoint's own code into folder volumes under tmp."""
    entry = load_entry(monkeypatch, **{ms.MOUNT_ROOT_ENV: str(tmp_path / "vol")})
    monkeypatch.chdir(ROOT)
    if not TINY_MODEL.is_dir():
        pytest.skip("needs the tiny model folder (make tiny-model)")
    raw = yaml.safe_load(DEMO_RECIPE.read_text())
    raw["train"].update(epochs=1, max_steps=4, save_steps=2, eval_steps=2, logging_steps=1)  # saved where evaluated (keep_best)
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    cloud = entry.Cloud(FolderVolume(tmp_path / "vol" / "data"), FolderVolume(tmp_path / "vol" / "runs"))
    lines: list[str] = []
    run_name, recipe = entry.prepare_and_upload(str(recipe_file), 8, cloud, lines.append, tmp_path / "local_runs")
    return entry, run_name, recipe, tmp_path / "vol", lines


def test_upload_writes_the_run_and_the_data_where_the_functions_look(cloud_run):
    entry, run_name, recipe, vol, lines = cloud_run
    run = vol / "runs" / run_name
    assert (run / "recipe.yaml").is_file() and (run / "axolotl.yaml").is_file()
    row = json.loads((run / "data" / "train.jsonl").read_text().splitlines()[0])
    image = next(c["path"] for c in row["messages"][0]["content"] if c["type"] == "image")
    assert image.startswith(f"{vol}/data/sample_data/training_data/images/") and Path(image).is_file()
    config = yaml.safe_load((run / "axolotl.yaml").read_text())
    assert config["base_model"] == f"{vol}/data/.cache/tiny-qwen2-vl"
    assert (Path(config["base_model"]) / "config.json").is_file()
    assert yaml.safe_load((run / "recipe.yaml").read_text())["data"]["max_samples"] == 8
    assert any("uploaded" in line and "unchanged" in line for line in lines)


@LOCAL_RUN
def test_modal_functions_call_the_local_step_functions(cloud_run, monkeypatch):
    entry, run_name, _, vol, _ = cloud_run
    import vlm3.train.steps
    from vlm3.train.trainer_env import TrainerEnv, TrainingLog

    calls: list[tuple] = []

    def fake_train_run(run, env, on_output=None):
        calls.append(("train_run", run.path, env))
        run.mark_stage("train", "done")
        return vlm3.train.steps.TrainResult(TrainingLog(losses=[2.0, 1.0], total_steps=4), run.output_dir)

    def fake_merge_run(run, env):
        calls.append(("merge_run", run.path, env))
        return {"ok": True, "max_abs_diff": 0.0}

    monkeypatch.setattr(vlm3.train.steps, "train_run", fake_train_run)
    monkeypatch.setattr(vlm3.train.steps, "merge_run", fake_merge_run)
    assert entry.train.local(run_name)["final_loss"] == 1.0
    assert entry.merge.local(run_name)["ok"] is True
    run_path = Path(vol / "runs" / run_name)
    assert calls == [("train_run", run_path, TrainerEnv.current()), ("merge_run", run_path, TrainerEnv.current())]
    assert entry.train.local(run_name)["skipped"] == "already trained", "a retried input does not train again"


@LOCAL_RUN
def test_the_modal_train_function_prints_the_consoles_status_line_into_the_modal_logs(cloud_run, monkeypatch, capsys):
    """What `vlm3 modal train` streams from the train function: status lines, not Axolotl's raw bars and dicts."""
    entry, run_name, _, _, _ = cloud_run
    import vlm3.train.steps
    from tests.test_train_console import EXPECTED, RECORDED
    from vlm3.train.trainer_env import TrainingLog, latest_status

    def fake_train_run(run, env, on_output=None):
        log = TrainingLog()
        for start in range(0, len(RECORDED), 100):
            log.feed(RECORDED[start:start + 100])
            on_output(RECORDED[start:start + 100])
        run.mark_stage("train", "done")
        return vlm3.train.steps.TrainResult(log, run.output_dir)

    monkeypatch.setattr(vlm3.train.steps, "train_run", fake_train_run)
    capsys.readouterr()
    entry.train.local(run_name)
    out = capsys.readouterr().out
    assert f"{run_name}/logs/train.log" in out and "{'loss'" not in out and "it/s" not in out
    assert f"training: {EXPECTED}" in out.splitlines()
    assert latest_status(out) == f"{EXPECTED} (done)"


@LOCAL_RUN
def test_the_pipeline_calls_each_stage_with_the_recipes_options(cloud_run, monkeypatch):
    entry, run_name, recipe, _, _ = cloud_run
    import vlm3.train.steps

    seen: list[tuple] = []

    class Recorder:
        def __init__(self, name):
            self.name, self.options = name, {}

        def with_options(self, **options):
            self.options = options
            return self

        def remote(self, *args):
            seen.append((self.name, args, {k: v for k, v in self.options.items() if k != "secrets"}))
            return {"ok": True}

    monkeypatch.setattr(vlm3.train.steps, "check_rendered_config", lambda run, env: seen.append(("check_rendered_config", run.path.name, None)))
    for name in ("train", "merge", "smoke_test"):
        monkeypatch.setattr(entry, name, Recorder(name))
    results = entry.pipeline.local(run_name, list(ms.STAGES["all"]))
    assert [s[0] for s in seen] == ["check_rendered_config", "train", "merge"]
    retries = seen[1][2].pop("retries")  # bounded so that the printed cap holds (tests/test_modal_traps.py)
    assert retries.max_retries == ms.train_retries(recipe)
    assert seen[1][2] == {"gpu": None, "timeout": int(recipe.compute.timeout_hours * 3600), "cpu": ms.CPU_TRAIN_CPU,
                          "memory": ms.CPU_TRAIN_MEMORY_MIB}
    assert "skipped" in results["smoke"], "the tiny CPU model is not smoke-tested with vLLM"


def test_entrypoint_prints_the_run_the_cost_and_the_next_commands(cloud_run, monkeypatch, tmp_path):
    entry, _, _, vol, _ = cloud_run

    class FakeCloud(entry.Cloud):
        def start_pipeline(self, run_name, stages, hub_dataset, hub_model):
            self.started = (run_name, stages)
            return {"train": {"final_loss": 0.5}, "merge": {"ok": True}}

    cloud = FakeCloud(FolderVolume(vol / "data"), FolderVolume(vol / "runs"))
    raw = yaml.safe_load((ROOT / "recipes" / "e30m3_train_dev.yaml").read_text())
    raw["model"]["base"] = str(TINY_MODEL.relative_to(ROOT))
    raw["data"] = yaml.safe_load(DEMO_RECIPE.read_text())["data"] | {"max_samples": 4}
    raw["images"] = yaml.safe_load(DEMO_RECIPE.read_text())["images"]
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(raw))
    lines: list[str] = []
    assert entry.launch(recipe=str(path), cloud=cloud, out=lines.append, runs_root=tmp_path / "local_runs") == 0
    text = "\n".join(lines)
    assert cloud.started[1] == ("validate", "train", "merge", "smoke")
    assert "at most $3.95" in text
    assert f"modal run modal_entry.py --run {cloud.started[0]}" in text
    assert f"VLM3_RUN=runs/{cloud.started[0]} modal deploy modal_entry.py::endpoint" in text
    assert ms.endpoint_app_name(cloud.started[0]) in text, "the app that will serve this run"


@pytest.mark.trainer
def test_modal_train_and_merge_bodies_really_train_the_tiny_recipe(cloud_run):
    """The Modal functions' own bodies, in the trainer environment, on the tiny recipe: real Axolotl, real merge check."""
    if not TRAIN_PYTHON.exists():
        pytest.skip("needs .venv-train (make trainer-env)")
    _, run_name, _, vol, _ = cloud_run
    code = (
        "import json, modal_entry as m\n"
        f"print('RESULT', json.dumps(m.train.local({run_name!r})))\n"
        f"print('RESULT', json.dumps(m.merge.local({run_name!r})))\n"
    )
    env = {**os.environ, ms.MOUNT_ROOT_ENV: str(vol), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(TRAIN_PYTHON), "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train, merge = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert train["final_loss"] is not None
    assert merge["ok"] is True and merge["max_abs_diff"] < 1e-4
    run = vol / "runs" / run_name
    status = json.loads((run / "status.json").read_text())["stages"]
    assert all(status[s]["state"] == "done" for s in ("prepare", "train", "merge"))
    assert "checkpoint-4" in ms.complete_checkpoints(run / "output"), "max_steps 4, saved every 2 steps onto the runs volume"
    assert (run / "output" / "merged" / "config.json").is_file()


@pytest.mark.modal
def test_the_tiny_recipe_trains_on_modal():
    """The real thing, for pennies: a CPU container trains the tiny model (VLM3_MODAL_TESTS=1 and `modal token new`)."""
    if not os.environ.get("VLM3_MODAL_TESTS"):
        pytest.skip("needs a Modal account: set VLM3_MODAL_TESTS=1 after `modal token new`")
    modal_cli = Path(sys.executable).parent / "modal"
    proc = subprocess.run([str(modal_cli), "run", "modal_entry.py", "--recipe", str(DEMO_RECIPE.relative_to(ROOT)), "--stage", "train"],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train:" in proc.stdout


def test_serving_must_hold_the_datas_largest_row_of_pages():
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")  # 4,096 tokens; 1,280 visual tokens a page
    assert ms.serve_problems(recipe, pages=1)[0] == []
    errors, _ = ms.serve_problems(recipe, pages=4)
    assert errors and "cannot hold 4 pages (the data's largest row)" in errors[0]
