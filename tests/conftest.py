"""Shared fixtures: the project's paths, the trainer environment, and one trained tiny run per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# No test reaches a real API: a developer's own key must not turn `make test` into paid judge calls.
os.environ.pop("ANTHROPIC_API_KEY", None)
# The default tiers serve with transformers serve (fp32 answers the tests compare); the vLLM tier asks for vLLM itself.
os.environ.setdefault("VLM3_ENGINE", "transformers")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
TINY_MODEL = ROOT / ".cache" / "tiny-qwen2-vl"
DEMO_RECIPE = ROOT / "recipes" / "tiny_cpu_demo.yaml"
VLM3 = [sys.executable, "-m", "vlm3.cli.main"]


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess: exit codes and stderr as a user sees them."""
    return subprocess.run([*VLM3, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def trainer_available() -> bool:
    from vlm3.train.trainer_env import TrainerEnv, TrainerEnvMissing

    try:
        TrainerEnv.locate()
    except TrainerEnvMissing:
        return False
    return TINY_MODEL.joinpath("tiny-qwen2-vl.json").exists()


def pytest_collection_modifyitems(config, items):
    if "vllm" not in (config.getoption("markexpr") or ""):  # the vLLM tier runs only when asked for: `make test-vllm`
        skip_vllm = pytest.mark.skip(reason="the vLLM tier (vLLM's community CPU build, ~6 GB): run `make test-vllm`, or pytest -m vllm")
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(skip_vllm)
    if trainer_available():
        return
    if os.environ.get("VLM3_REQUIRE_TRAINER"):
        raise pytest.UsageError("VLM3_REQUIRE_TRAINER is set but .venv-train or the tiny model is missing: run `make trainer-env tiny-model`")
    skip = pytest.mark.skip(reason="needs the trainer environment and the tiny model (make trainer-env tiny-model)")
    for item in items:
        if "trainer" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not (SAMPLE / "training_data" / "vlm_train.jsonl").exists():
        from vlm3.demo.sample_manual import generate_sample_manual

        generate_sample_manual(SAMPLE, seed=0)
    return SAMPLE


@dataclass(frozen=True)
class DemoResult:
    run: Path
    stdout: str
    returncode: int


@pytest.fixture(scope="session")
def demo(tmp_path_factory, sample_dir) -> DemoResult:
    """`vlm3 demo` once per session: the real Axolotl training and merge, two real
    `transformers serve` servers (base and fine-tuned), generation, scoring and comparison."""
    runs = tmp_path_factory.mktemp("runs")
    proc = run_cli("demo", str(DEMO_RECIPE), "--runs-root", str(runs), timeout=1200)
    run = runs / "tiny-cpu-demo" / "latest"
    assert run.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return DemoResult(run, proc.stdout, proc.returncode)


@pytest.fixture(scope="session")
def trained_run(demo) -> Path:
    """The demo recipe, trained and merged through the real CLI, Axolotl and checks."""
    status = (demo.run / "status.json").read_text()
    assert '"merge"' in status, demo.stdout[-3000:]
    return demo.run


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_sample(sample_dir: Path, dest: Path) -> Path:
    shutil.copytree(sample_dir / "training_data", dest / "training_data")
    return dest / "training_data"


def train_measure(*args: str) -> dict:
    """bench.train_measure in the trainer environment (FLOPs, saved bytes, vision calls); its last stdout line is JSON."""
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    proc = subprocess.run([str(env.python), "-m", "bench.train_measure", *args], cwd=ROOT, env=env.environ(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
