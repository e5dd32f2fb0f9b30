"""docs/recipe-reference.md is the schema's: every key, its type, default, bounds and comment, and current."""

from pathlib import Path

from vlm3.recipe.reference import field_comments, reference, sections
from vlm3.recipe.schema import JudgeSpec, Recipe, ServeSpec

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "recipe-reference.md"


def test_the_reference_page_is_current():
    assert PAGE.read_text(encoding="utf-8") == reference(), "the schema changed: run `make docs` and commit docs/recipe-reference.md"


def test_every_key_of_every_section_is_listed_with_its_default():
    text = reference()
    keys = [f"`{dotted}{name}`" for dotted, model in sections() for name in model.model_fields]
    assert len(keys) > 80 and all(key in text for key in keys), [k for k in keys if k not in text]
    row = next(line for line in text.splitlines() if line.startswith("| `serve.scaledown_window_s` |"))
    assert "| integer | 300 | ≥ 2 | idle seconds before the container stops |" in row
    judge = next(line for line in text.splitlines() if line.startswith("| `eval.judge.provider` |"))
    assert "one of: anthropic, openai" in judge and f'"{JudgeSpec().provider}"' in judge


def test_comments_come_from_the_schema_source_above_and_beside_each_field():
    serve = field_comments(ServeSpec)
    assert serve["served_model_name"] == "defaults to the recipe name"
    assert "power users" in field_comments(Recipe)["axolotl"]  # the comment lines above the field
