"""Recipes: every shipped YAML loads, and bad ones fail with every problem, a hint and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli
from vlm3.recipe.schema import DEFAULT_MAX_PIXELS, RecipeError, load_recipe, parse_recipe

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def test_recipes_are_found():
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_loads_and_opens_with_question_and_command(path: Path):
    recipe = load_recipe(path)
    first_two = path.read_text().splitlines()[:2]
    assert first_two[0].startswith("# Question:"), "a recipe opens with the question it answers"
    assert first_two[1].startswith("# Run:"), "then the command that runs it"
    assert recipe.name


def test_plan_lora_recipe_matches_the_plan():
    r = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    assert r.model.base == "Qwen/Qwen2-VL-7B-Instruct"
    assert (r.train.method, r.train.lora.r, r.train.lora.alpha, r.train.lora.dropout) == ("lora", 64, 128, 0.05)
    assert r.train.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert not r.train.lora.include_vision_tower
    # 16 samples per optimizer step as planned, as micro-batch 2 without checkpointing (tests/test_plan.py: what fits)
    assert (r.train.epochs, r.train.micro_batch_size, r.train.gradient_accumulation_steps) == (3, 2, 8)
    assert (r.train.learning_rate, r.train.lr_scheduler, r.train.warmup_ratio, r.train.max_grad_norm) == (2e-4, "cosine", 0.03, 1.0)
    assert (r.train.eval_steps, r.train.save_steps, r.train.logging_steps) == (100, 100, 10)
    assert r.train.precision == "bf16"
    assert r.images.max_pixels == DEFAULT_MAX_PIXELS == 1280 * 28 * 28
    assert (r.data.train, r.data.val, r.data.images_root) == ("training_data/vlm_train.jsonl", "training_data/vlm_val.jsonl", "training_data")


def test_variants():
    qlora = load_recipe(ROOT / "recipes" / "e30m3_qlora.yaml")
    full = load_recipe(ROOT / "recipes" / "e30m3_full.yaml")
    dev = load_recipe(ROOT / "recipes" / "e30m3_train_dev.yaml")
    assert qlora.train.method == "qlora" and qlora.train.precision == "bf16"
    assert full.train.method == "full" and full.compute.gpu_count == 4 and full.train.deepspeed
    assert dev.data.max_samples == 100 and dev.train.epochs == 1


BAD = [
    ({"name": "x", "train": {"lora": {"rank": 8}}}, ["train.lora.rank: unknown key (did you mean 'r'?)"]),
    ({"name": "x", "train": {"epochs": "three"}}, ["train.epochs: Input should be a valid integer", "got 'three'"]),
    ({"name": "x", "trian": {}}, ["trian: unknown key (did you mean 'train'?)"]),
    ({"name": "x", "train": {"method": "qlora"}, "compute": {"gpu": "cpu"}}, ["needs a GPU"]),
    ({"name": "x", "train": {"method": "qlora", "merge_method": "memory_efficient"}}, ["rounds every weight", "use 'legacy'"]),
    ({"name": "x", "train": {"eval_steps": 100, "save_steps": 250}}, ["save_steps (250) is not a multiple of train.eval_steps (100)", "keep_best: false"]),
    ({"name": "x", "train": {"method": "qlora"}, "serve": {"serve_adapter": True}}, ["un-quantized base", "serve_adapter: false"]),
    ({"name": "x", "compute": {"gpu": "H1OO"}}, ["unknown GPU 'H1OO' (did you mean 'H100'?)"]),
    ({"name": "x", "images": {"min_pixels": 5000000}}, ["min_pixels (5000000) is above max_pixels"]),
    ({"name": "Bad Name"}, ["name: String should match pattern"]),
    ({}, ["name: Field required"]),
    ({"name": "x", "train": {"lora": {"target_modules": ["qkv_proj"]}}}, ["train.lora.target_modules.0: Input should be 'q_proj'"]),
    ({"name": "x", "eval": {"judge": {"model": "claude-3-5-sonnet-20241022"}}}, ["eval.judge.model: claude-3-5-sonnet-20241022 is retired"]),
]


@pytest.mark.parametrize("raw,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_recipes_name_the_field_and_the_problem(raw, expected):
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, "r.yaml")
    message = str(info.value)
    assert message.startswith("r.yaml is not a valid recipe:")
    for fragment in expected:
        assert fragment in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(RecipeError) as info:
        parse_recipe({"name": "x", "train": {"lora": {"rank": 8}, "epochs": "three"}, "serve": {"gpuu": "A10G"}})
    assert len(info.value.problems) == 3


def test_cli_validate_exit_codes_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "train": {"lora": {"rank": 8}, "epochs": "three"}}))
    proc = run_cli("validate", str(bad))
    assert proc.returncode == 2
    assert "train.lora.rank: unknown key (did you mean 'r'?)" in proc.stderr
    assert "train.epochs: Input should be a valid integer" in proc.stderr
    assert "Traceback" not in proc.stderr

    ok = run_cli("validate", *map(str, RECIPES))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(": ok") == len(RECIPES)


@pytest.mark.parametrize("text,fragment", [("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "must be a mapping")])
def test_unparseable_files(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_missing_recipe_file():
    proc = run_cli("validate", "recipes/nope.yaml")
    assert proc.returncode == 2 and "file not found" in proc.stderr


def test_help_lists_every_verb():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for verb in ("validate", "check", "plan", "train", "merge", "serve", "generate", "eval", "score", "compare", "demo"):
        assert verb in proc.stdout


@pytest.mark.parametrize("make_path,fragment", [
    (lambda tmp: tmp, "is a folder"),
    (lambda tmp: (tmp / "r.yaml").write_bytes(b"name: \xff\xfe\n") and tmp / "r.yaml", "not UTF-8"),
])
def test_unreadable_recipe_paths(tmp_path, make_path, fragment):
    proc = run_cli("validate", str(make_path(tmp_path)))
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_override_into_an_empty_section(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ndata:\n")
    recipe = load_recipe(path, overrides={"data.max_samples": 5})
    assert recipe.data.max_samples == 5
