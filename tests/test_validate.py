"""`vlm3 validate`: every check that needs no network, every problem at once, with suggestions that fit."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import run_cli
from vlm3.recipe.schema import AXOLOTL_ONLY_KEYS, RecipeError, parse_recipe, recipe_problems

BAD = {
    "name": "bad",
    "adapter": "lora",
    "wandb_project": "manuals",
    "model": {"base": "Qwen/Qwen2-VL-7B-Instruct"},
    "train": {"epochs": "three", "lora": {"rank": 8}},
    "compute": {"gpu": "a100x4"},
    "axolotl": {"lora_target_linear": True, "micro_batch_size": "four"},
}


def test_a_schema_error_does_not_hide_the_refusals():
    problems, recipe = recipe_problems(BAD)
    assert recipe is not None  # what is left once the bad fields are set aside, for Axolotl's schema
    text = "\n".join(problems)
    assert "train.epochs: Input should be a valid integer" in text
    assert "train.lora.rank: unknown key (did you mean 'r'?)" in text
    assert "axolotl.lora_target_linear: adapts every linear layer" in text  # a rule, hidden before by the field errors
    with pytest.raises(RecipeError) as info:  # loading still refuses at the first stage, as every command does
        parse_recipe(BAD)
    assert "lora_target_linear" not in str(info.value)


def test_every_rule_is_listed_at_once():
    problems, _ = recipe_problems({"name": "q", "train": {"method": "qlora", "merge_method": "memory_efficient"},
                                   "serve": {"serve_adapter": True}, "compute": {"gpu": "cpu"}})
    assert len(problems) == 3 and all(p.startswith(("train.merge_method", "serve.serve_adapter", "train.method")) for p in problems)


def test_a_rule_over_a_set_aside_field_is_not_judged():
    # compute.gpu is unreadable: the default stands in for it, so "deepspeed needs several cards" would be a guess
    problems, _ = recipe_problems({"name": "d", "train": {"deepspeed": "zero3"}, "compute": {"gpu": "h100x4"}})
    assert problems == ["compute.gpu: unknown GPU 'h100x4' (did you mean 'H100:4'?)"]


@pytest.mark.parametrize("raw,expected", [
    ({"adapter": "lora"}, "adapter: unknown key; Axolotl's `adapter`, which vlm3 sets from train.method"),
    ({"lora_r": 8}, "lora_r: unknown key; an Axolotl key, which vlm3 sets from train.lora.r"),
    ({"wandb_project": "p"}, "wandb_project: unknown key; an Axolotl key: put it under axolotl:"),
    ({"gpu": "H100"}, "gpu: unknown key here (it belongs in 'compute.gpu' or 'serve.gpu')"),
    ({"epochs": 3}, "epochs: unknown key here (it belongs in 'train.epochs')"),
    ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
    ({"compute": {"gpu": "a100x4"}}, "compute.gpu: unknown GPU 'a100x4' (did you mean 'A100-80GB:4' or 'A100-40GB:4'?)"),
    ({"compute": {"gpu": "4xh100"}}, "(did you mean 'H100:4'?)"),
    ({"compute": {"gpu": "H1OO"}}, "(did you mean 'H100'?)"),
    ({"serve": {"gpu": "a10g"}}, "serve.gpu: unknown GPU 'a10g' (did you mean 'A10G'?)"),
])
def test_suggestions_that_fit(raw, expected):
    problems, _ = recipe_problems({"name": "s", **raw})
    assert any(expected in p for p in problems), problems
    assert not any("did you mean 'data'" in p for p in problems)


def test_cli_lists_every_problem_without_axolotl(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(BAD))
    proc = run_cli("validate", str(path), "--no-axolotl")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for fragment in ("train.epochs:", "train.lora.rank:", "compute.gpu: unknown GPU 'a100x4'", "adapter: unknown key",
                     "wandb_project: unknown key", "axolotl.lora_target_linear:"):
        assert fragment in proc.stderr, fragment


def test_cli_says_plainly_when_axolotl_cannot_be_asked(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"name": "ok"}))
    proc = run_cli("validate", str(path), env={"VLM3_TRAINER_PYTHON": str(tmp_path / "no-python")})
    assert proc.returncode == 0, proc.stderr
    assert "Axolotl's schema was not checked: no trainer environment here" in proc.stderr


@pytest.mark.trainer
def test_cli_adds_axolotls_own_schema_to_the_other_stages(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(BAD))
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "axolotl.micro_batch_size: Input should be a valid integer" in proc.stderr and "(Axolotl's schema" in proc.stderr
    assert "train.epochs:" in proc.stderr and "axolotl.lora_target_linear:" in proc.stderr


@pytest.mark.trainer
def test_the_keys_sent_under_axolotl_are_axolotls():
    import json
    import subprocess

    from vlm3.train.render import RECIPE_FIELD
    from vlm3.train.trainer_env import TrainerEnv

    env = TrainerEnv.locate()
    code = "import json; from axolotl.utils.schemas.config import AxolotlInputConfig as C; print(json.dumps(list(C.model_fields)))"
    fields = set(json.loads(subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, env=env.environ(),
                                           check=True).stdout.splitlines()[-1]))
    assert AXOLOTL_ONLY_KEYS <= fields, AXOLOTL_ONLY_KEYS - fields
    assert not AXOLOTL_ONLY_KEYS & set(RECIPE_FIELD)
