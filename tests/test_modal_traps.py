"""Modal traps: what an image ships, what a run can cost at most, which containers hold a GPU or CPUs,
and which modules Liger really patches. No account and no network: the app is declared here and read back.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_modal import RECIPES, load_entry
from vlm3.cloud import support as ms
from vlm3.recipe.schema import load_recipe

PACKAGES = ("vlm3", "data_adapters", "harness")  # modal_entry.LOCAL_SOURCES
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"


def image_files(image) -> set[str]:
    """The remote paths of every local file an image adds (its mount layers, walked as Modal uploads them)."""
    from modal._utils.async_utils import synchronizer
    from modal.mount import _Mount

    files: set[str] = set()
    pending = [synchronizer._translate_in(image)]
    while pending:
        obj = pending.pop()
        if isinstance(obj, _Mount):
            files |= {str(remote) for entry in obj.entries for _, remote in entry.get_files_to_upload()}
        elif obj._deps is not None:
            pending.extend(obj._deps())
    return files


def package_data_files() -> set[str]:
    """Every file of our packages that is not Python source, as it must appear in a container (/root/<package>/...)."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            rel = path.relative_to(ROOT)
            if path.is_file() and path.suffix not in (".py", ".pyc") and not any(
                    part == "__pycache__" or part.startswith(".") for part in rel.parts):
                found.add(f"/root/{rel.as_posix()}")
    return found


@pytest.mark.parametrize("image", ["trainer_image", "vllm_image", "eval_image"])
def test_every_image_ships_the_packages_data_files(monkeypatch, image):
    entry = load_entry(monkeypatch)
    shipped = image_files(getattr(entry, image))
    from harness.general_probes import PROBES_FILE
    from vlm3.demo.tiny_model import QWEN3_VL_TEMPLATE

    from vlm3.core.templates import environment

    templates = [ROOT / "vlm3" / "core" / "templates" / name for name in environment().list_templates()]
    read_at_run_time = {f"/root/{p.relative_to(ROOT).as_posix()}" for p in (PROBES_FILE, QWEN3_VL_TEMPLATE, *templates)}
    assert any(path.endswith("/base.html.j2") for path in read_at_run_time)  # the reports' templates
    assert read_at_run_time <= package_data_files(), "the data files moved: update this test"
    assert package_data_files() - shipped == set()
    assert "/root/vlm3/cloud/support.py" in shipped and "/root/harness/general_probes.py" in shipped
    assert not [f for f in shipped if f.endswith(".pyc") or "/__pycache__/" in f or "/." in f]


def declared_options(monkeypatch) -> tuple[object, dict[str, dict]]:
    """modal_entry imported with every @app.function's keyword arguments recorded, by function name."""
    import modal

    declared: dict[str, dict] = {}
    original = modal.App.function

    def recording(self, *args, **kwargs):
        decorate = original(self, *args, **kwargs)

        def wrapper(f):
            declared[getattr(f, "__name__", None) or getattr(getattr(f, "raw_f", None), "__name__", "?")] = kwargs
            return decorate(f)

        return wrapper

    monkeypatch.setattr(modal.App, "function", recording)
    return load_entry(monkeypatch), declared


def test_the_retry_budget_is_the_apps(monkeypatch):
    """The numbers the cost and the time budget are computed from are the ones the functions declare."""
    _, declared = declared_options(monkeypatch)
    assert declared["train"]["retries"].max_retries == ms.TRAIN_RETRIES
    assert declared["merge"]["retries"].max_retries == ms.MERGE_RETRIES and declared["merge"]["timeout"] == ms.MERGE_TIMEOUT_S
    assert declared["smoke_test"]["retries"] == ms.SMOKE_RETRIES and declared["smoke_test"]["timeout"] == ms.SMOKE_TIMEOUT_S
    assert declared["pipeline"]["timeout"] == ms.PIPELINE_TIMEOUT_S


@pytest.mark.parametrize("path", [p for p in RECIPES if load_recipe(p).compute.gpu != "cpu"], ids=lambda p: p.stem)
def test_the_printed_cap_counts_every_attempt_at_its_timeout(monkeypatch, path):
    _, declared = declared_options(monkeypatch)
    recipe = load_recipe(path)
    attempts = ms.train_retries(recipe) + 1
    assert 1 <= attempts <= declared["train"]["retries"].max_retries + 1
    timeout_s = ms.train_call_options(recipe)["timeout"]
    name, _, count = recipe.compute.gpu.partition(":")
    worst = ms.GPU_USD_PER_HOUR[name] * int(count or 1) * attempts * timeout_s / 3600
    line = next(line for line in ms.cost_lines(recipe) if line.startswith("training:"))
    assert re.search(r"at most \$([\d.]+)", line).group(1) == f"{worst:.2f}", line
    # Every attempt, then the merge and the smoke test with all their retries, fit in the pipeline's timeout.
    after = ((declared["merge"]["retries"].max_retries + 1) * declared["merge"]["timeout"]
             + (declared["smoke_test"]["retries"] + 1) * declared["smoke_test"]["timeout"])
    if attempts > 1:
        assert attempts * timeout_s + after <= declared["pipeline"]["timeout"]
        assert f"up to {attempts} attempts" in line
    else:
        assert "one attempt" in line


@pytest.mark.parametrize("hours,attempts", [(1, 2), (8, 2), (8.25, 1), (12, 1), (24, 1)])
def test_training_is_retried_only_when_the_pipeline_can_wait_for_it(hours, attempts):
    from vlm3.recipe.schema import parse_recipe

    recipe = parse_recipe({"name": "t", "compute": {"gpu": "H100", "timeout_hours": hours}})
    assert ms.train_retries(recipe) + 1 == attempts
    notes = ms.pipeline_time_notes(recipe)
    assert bool(notes) == (hours * 3600 + ms.after_train_worst_s() + ms.PIPELINE_RESERVE_S > ms.PIPELINE_TIMEOUT_S)


def test_the_merge_and_its_check_run_in_a_cpu_container(monkeypatch):
    """verify-merge computes in fp32 on the CPU (the 7B does not fit an A10G in fp32): no GPU waits beside it."""
    entry = load_entry(monkeypatch)
    spec = entry.merge._spec_
    assert spec.gpus is None
    assert spec.cpu == ms.MERGE_CPU >= 4 and spec.memory == ms.MERGE_MEMORY_MIB
    source = Path(ROOT / "modal_entry.py").read_text()
    merge_body = source[source.index("def merge(run_name"):source.index("@app.function", source.index("def merge(run_name"))]
    assert "steps.merge_run(" in merge_body, "the merge function runs the merge and its check"


def test_smoke_test_and_endpoint_reserve_cpu_and_memory(monkeypatch):
    entry = load_entry(monkeypatch, VLM3_RUN="runs/e30m3-lora/20261125T170000Z",
                       VLM3_RECIPE=str(ROOT / "recipes" / "e30m3_lora.yaml"))
    for function in (entry.smoke_test, entry.Endpoint._get_class_service_function()):
        spec = function._spec_
        assert spec.cpu == ms.SERVE_CPU and spec.memory == ms.SERVE_MEMORY_MIB
    # 32 concurrent pages at ~46 ms of CPU each decode in well under a second, not ~12 s on 0.125 cores
    assert 32 * 0.046 / (ms.SERVE_CPU - 2) < 1.0
    assert ms.SERVE_MEMORY_MIB * 2**20 > 17e9, "the bf16 7B checkpoint passes through host memory as it loads"


LIGER_PROBE = r"""
import json, sys
import yaml
from axolotl.integrations.liger.plugin import LigerPlugin
from axolotl.utils.dict import DictDefault
from liger_kernel.transformers.rms_norm import LigerRMSNorm
from vlm3.train.axolotl_plugin import Vlm3Plugin
from vlm3.demo.tiny_model import build_model, build_tokenizer

family, config_path = sys.argv[1], sys.argv[2]
cfg = DictDefault(yaml.safe_load(open(config_path)))
cfg.model_config_type = family
LigerPlugin().pre_model_load(cfg)  # as Axolotl does before it builds the model
model = build_model(build_tokenizer(), family=family)
Vlm3Plugin().post_model_build(cfg, model)
text = model.model.language_model
norms = [text.norm] + [n for layer in text.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
print(json.dumps({
    "liger_rms_norm": cfg.liger_rms_norm,
    "patched": [n.forward.__func__ is LigerRMSNorm.forward for n in norms],
    "classes": sorted({type(n).__name__ for n in norms}),
}))
"""


@pytest.mark.trainer
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_liger_rms_norm_patches_the_language_models_norms(tmp_path, family):
    """The recipe's Liger settings (rendered for a GPU), applied as training applies them, reach every RMSNorm."""
    if not TRAIN_PYTHON.exists():
        pytest.skip("needs .venv-train (make trainer-env)")
    import yaml

    from vlm3.train.render import LIGER_PLUGIN, render_axolotl_config

    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")  # liger: true, on an H100
    config = render_axolotl_config(recipe, "Qwen/Qwen2-VL-7B-Instruct")
    assert LIGER_PLUGIN in config["plugins"] and config["liger_rms_norm"] is True
    config_path = tmp_path / "axolotl.yaml"
    config_path.write_text(yaml.safe_dump(config))
    probe = subprocess.run([str(TRAIN_PYTHON), "-c", LIGER_PROBE, family, str(config_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-4000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["liger_rms_norm"] is True
    assert result["patched"] and all(result["patched"]), result
