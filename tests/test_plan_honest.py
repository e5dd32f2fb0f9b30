"""`vlm3 plan` says what will run: CPU time for a CPU recipe, the recipe's own fixed costs, the judge's real
sample count, steps that never evaluate or save, per-method wording, any card with --gpu, and `vlm3 modal train` next."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli
from vlm3.plan.estimate import (CPU_GFLOPS_PER_CORE, DOWNLOAD_MINUTES, FIRST_IMAGE_BUILD, SMOKE_MINUTES, START_MINUTES, DatasetTokens, Rows,
                       floor_flops, format_plan, plan_run, shape_of)
from vlm3.recipe.schema import load_recipe, parse_recipe


def rows(n: int, visual: int = 1240, text: int = 200) -> Rows:
    return Rows(tuple([visual + text] * n), tuple([visual] * n))


def data(n: int, val: int = 20) -> DatasetTokens:
    train = rows(n)
    return DatasetTokens(n, n * 200, n * 1240, 1440, train, rows(val))


def sample_recipe(tmp_path: Path, sample_dir: Path, name: str, **changes) -> Path:
    """A shipped recipe pointed at the sample manual (its own training_data is the user's)."""
    raw = yaml.safe_load((ROOT / "recipes" / name).read_text())
    raw["data"].update(train=str(sample_dir / "training_data" / "vlm_train.jsonl"), val=str(sample_dir / "training_data" / "vlm_val.jsonl"),
                       images_root=str(sample_dir / "training_data"), probes=str(sample_dir / "probes.jsonl"))
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_cpu_recipe_is_priced_in_cpu_time_not_gpu_dollars():
    recipe = parse_recipe({"name": "c", "compute": {"gpu": "cpu"}})
    plan = plan_run(recipe, data(100))
    assert plan.gpus == [] and plan.cpu is not None and plan.fixed == []
    fast, slow = plan.cpu.hours
    assert fast == pytest.approx(plan.flops / (CPU_GFLOPS_PER_CORE[1] * 1e9 * plan.cpu.cores) / 3600)
    assert slow / fast == pytest.approx(CPU_GFLOPS_PER_CORE[1] / CPU_GFLOPS_PER_CORE[0])
    text = format_plan(plan)
    assert "CPU time (an estimate, not a measurement)" in text and "of RAM" in text
    for wrong in ("per GPU", "$0.00", "CUDA context", "H100", "MFU"):
        assert wrong not in text, wrong
    # Priced on a card when asked: the same recipe as if compute.gpu said so.
    on_a10g = plan_run(recipe, data(100), gpus=["A10G"])
    assert [e.gpu for e in on_a10g.gpus] == ["A10G"] and on_a10g.gpus[0].usd is not None


def test_fixed_costs_follow_the_recipes_choices():
    hub = plan_run(parse_recipe({"name": "p", "compute": {"gpu": "H100"}, "serve": {"gpu": "A10G"}}), data(200), gpus=["H100"])
    expected = (START_MINUTES + DOWNLOAD_MINUTES) / 60 * 3.95 + SMOKE_MINUTES / 60 * 1.10  # the merge runs in a CPU container
    assert hub.gpus[0].fixed_usd == pytest.approx(expected)
    text = format_plan(hub)
    assert "not in the dollars: merge" in text and "A10G" not in text.split("not in the dollars")[1].split(";")[0]
    assert FIRST_IMAGE_BUILD not in text and "flash-attention" not in text
    flash = plan_run(parse_recipe({"name": "p", "train": {"flash_attention": True}}), data(200), gpus=["H100"])
    assert FIRST_IMAGE_BUILD in format_plan(flash)



def test_a_local_model_folder_has_no_download(tmp_path):
    import json

    from vlm3.recipe.families import KNOWN_CONFIGS

    (tmp_path / "config.json").write_text(json.dumps(KNOWN_CONFIGS["Qwen/Qwen2-VL-7B-Instruct"]))
    local = plan_run(parse_recipe({"name": "p", "model": {"base": str(tmp_path)}, "serve": {"gpu": "A10G"}}), data(200), gpus=["H100"])
    assert local.gpus[0].fixed_usd == pytest.approx(START_MINUTES / 60 * 3.95 + SMOKE_MINUTES / 60 * 1.10)
    assert "download" not in format_plan(local)


def test_steps_that_never_evaluate_or_save_are_warned():
    recipe = parse_recipe({"name": "p", "train": {"eval_steps": 100, "save_steps": 100}})
    small = plan_run(recipe, data(148), gpus=["H100"])  # 148 rows / 16 per step x 3 epochs = 30 steps
    assert small.steps == 30
    warned = " ".join(small.warnings)
    assert "train.eval_steps 100 is more than the run's 30 optimizer steps: no evaluation loss" in warned
    assert "train.save_steps 100 is more than the run's 30 optimizer steps: no checkpoint" in warned
    big = plan_run(recipe, data(1000), gpus=["H100"])
    assert not [w for w in big.warnings if "_steps" in w]
    no_val = plan_run(recipe, DatasetTokens(148, 148 * 200, 148 * 1240, 1440, rows(148), None), gpus=["H100"])
    assert not [w for w in no_val.warnings if "eval_steps" in w]  # nothing to evaluate: nothing to warn about


@pytest.mark.parametrize("raw,tower", [
    ({}, "the frozen vision tower's forward"),
    ({"train": {"method": "full"}, "compute": {"gpu": "H100:4"}}, "the vision tower's forward and backward (it trains)"),
    ({"train": {"lora": {"include_vision_tower": True}}}, "the vision tower's forward and backward (it trains)"),
])
def test_the_floor_is_worded_for_the_method(raw, tower):
    plan = plan_run(parse_recipe({"name": "p", **raw}), data(200), gpus=["H100"])
    text = format_plan(plan)
    assert tower in text
    if "it trains" in tower:
        assert "frozen" not in text
    assert bool(re.search(r"6N (\(\+2N recompute\) )?per real token", text)) == (raw.get("train", {}).get("method") == "full")


def test_a_full_fine_tune_floor_counts_weight_gradients_and_the_trained_tower():
    shape = shape_of("Qwen/Qwen2-VL-7B-Instruct")
    lengths, visual = [1440] * 10, [1240] * 10
    lora = floor_flops(shape, lengths, visual, False)
    full = floor_flops(shape, lengths, visual, False, full=True, vision_trained=True)
    tower = floor_flops(shape, [0] * 10, visual, False)
    assert full == pytest.approx(lora + 2 * shape.lm_params * sum(lengths) + 2 * tower)


def test_gpu_option_prices_any_card_in_the_table():
    recipe = load_recipe(ROOT / "recipes" / "e30m3_qlora.yaml")  # L40S; its comment says an A10G fits
    plan = plan_run(recipe, data(500), gpus=["A10G", "A100-80GB:4"])
    assert [(e.gpu, e.count) for e in plan.gpus] == [("A10G", 1), ("A100-80GB", 4)]
    four = plan.gpus[1]
    assert four.usd_per_hour == 2.50 and four.hours[0] < plan.gpus[0].hours[0]


def test_plan_cli_on_a_7b_recipe_with_another_card(tmp_path, sample_dir):
    path = sample_recipe(tmp_path, sample_dir, "e30m3_qlora.yaml")
    proc = run_cli("plan", str(path), "--gpu", "A10G")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "priced as compute.gpu: A10G (the recipe says L40S" in out
    assert re.search(r"^  A10G +\$1\.10 ", out, re.M) and "L40S  " not in out
    assert "note: gradient checkpointing is off" in out and "a 24 GB A10G" in out
    # 62 sample rows at 16 per step, 3 epochs: 12 steps, under the recipe's eval_steps and save_steps of 100
    assert "train.eval_steps 100 is more than the run's 12 optimizer steps" in out
    assert f"next: vlm3 modal train {path}" in out and "modal run" not in out
    bad = run_cli("plan", str(path), "--gpu", "V100")
    assert bad.returncode == 1 and "--gpu V100: no such card" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.trainer  # the tiny model's config.json
def test_plan_cli_on_the_cpu_demo(sample_dir, tmp_path):
    from harness.general_probes import load_general_probes
    from data_adapters.samples import load_eval_samples

    proc = run_cli("plan", "recipes/tiny_cpu_demo.yaml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "CPU time (an estimate, not a measurement)" in out and "of RAM" in out
    for wrong in ("per GPU", "$0.00", "H100", "CUDA context", "flash-attention", "modal run"):
        assert wrong not in out, wrong
    assert "next: vlm3 train recipes/tiny_cpu_demo.yaml" in out
    recipe = load_recipe(ROOT / "recipes" / "tiny_cpu_demo.yaml")
    samples = load_eval_samples(recipe, general=load_general_probes(tmp_path / "general"))
    val_rows = sum(1 for line in (sample_dir / "training_data" / "vlm_val.jsonl").read_text().splitlines() if line.strip())
    probes = sum(1 for line in (sample_dir / "probes.jsonl").read_text().splitlines() if line.strip())
    assert len(samples) > val_rows + probes  # later turns of multi-turn rows and the general probes count too
    assert f"judge estimate (claude-sonnet-5-5, answer_relevancy, faithfulness, correctness): {len(samples)} samples" in out
