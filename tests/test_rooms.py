"""The package tree is the pipeline: each room imports only from rooms before it, so a stage can be opened, re-run
and tested alone. The harness takes values (it never imports the recipe schema), and the demo is apart from the
product (only the CLI reaches it)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The pipeline's order. A module may import from its own room and from any room before it.
ROOMS = {
    "vlm3.core": 0,  # shared plumbing: files, terminal text, report templates
    "vlm3.recipe": 1,  # the recipe schema, model families, the run folder
    "data_adapters": 2,  # data checks and conversion
    "vlm3.plan": 3,
    "vlm3.train": 4,
    "vlm3.serve": 5,
    "harness": 6,  # evaluate
    "vlm3.cloud": 7,
    "vlm3.demo": 8,  # apart from the product: only the CLI imports it
    "vlm3.cli": 9,
}
PRODUCT_NEVER_IMPORTS = {"vlm3.demo": {"vlm3.cli", "vlm3.demo"}}  # the demo: reached from the CLI only


def room_of(module: str) -> str | None:
    for room in sorted(ROOMS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every project module a file imports, at any depth of the file (function-level imports count too)."""
    found = []
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if room_of(base):
                found.append((node.lineno, base))
            else:  # `from vlm3 import cli`: the names are the modules
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if room_of(name)]


def product_files() -> list[Path]:
    files = [p for package in ("vlm3", "data_adapters", "harness") for p in (ROOT / package).rglob("*.py")]
    return sorted(p for p in files if "__pycache__" not in p.parts and p != ROOT / "vlm3" / "__init__.py")  # the package's marker


def upward_imports(files: list[Path]) -> list[str]:
    wrong = []
    for path in files:
        here = room_of(module_name(path))
        if here is None:
            wrong.append(f"{path.relative_to(ROOT)}: in no room; put it in one of {sorted(ROOMS)}")
            continue
        for line, name in imports_of(path):
            there = room_of(name)
            if there == "vlm3.demo" and here not in PRODUCT_NEVER_IMPORTS["vlm3.demo"]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports the demo ({name}); only the CLI may")
            elif ROOMS[there] > ROOMS[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {name}, a later stage ({there})")
    return wrong


def test_every_module_imports_only_from_its_own_room_and_the_ones_before_it():
    assert upward_imports(product_files()) == []


def test_the_harness_takes_values_and_never_imports_the_recipe_schema():
    schema = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in product_files()
        if room_of(module_name(path)) == "harness"
        for line, name in imports_of(path)
        if name.startswith("vlm3.recipe")
    ]
    assert schema == []


@pytest.mark.parametrize(
    "source, wrong",
    [
        ("from vlm3.cli.evaluate import add_engine_arg\n", "vlm3.serve imports vlm3.cli.evaluate, a later stage (vlm3.cli)"),
        ("def f():\n    from harness.generate import redact\n", "vlm3.serve imports harness.generate"),
        ("from vlm3.demo import tiny_model\n", "imports the demo"),
        ("from ..cloud import support\n", "vlm3.serve imports vlm3.cloud"),
    ],
)
def test_the_rule_catches_an_import_that_runs_back_up(tmp_path, monkeypatch, source, wrong):
    # A serve-room module written on the fly: the check must name the line and the later room.
    room = ROOT / "vlm3" / "serve"
    probe = room / "_rooms_probe_module.py"
    probe.write_text(source, encoding="utf-8")
    try:
        found = upward_imports([probe])
    finally:
        probe.unlink()
    assert len(found) == 1 and wrong in found[0] and "_rooms_probe_module.py:" in found[0]


def test_every_room_is_a_folder_with_its_modules():
    for room in ROOMS:
        folder = ROOT / Path(*room.split("."))
        assert (folder / "__init__.py").is_file(), room
        assert [p for p in folder.glob("*.py") if p.name != "__init__.py"], f"{room} is empty"
    loose = [p.name for p in (ROOT / "vlm3").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside every room: {loose}"


def test_the_judge_the_harness_takes_is_the_recipe_s_with_the_same_defaults():
    from harness.judge import JudgeConfig, judge_dict, load_judge_spec
    from vlm3.recipe.schema import JudgeSpec

    assert JudgeConfig().to_dict() == JudgeSpec().model_dump()  # meta.json without a judge scores as the recipe default
    spec = JudgeSpec(metrics=["rubric", "correctness"], threshold=0.5, use_batch_api=True)
    assert load_judge_spec(spec).to_dict() == spec.model_dump() == judge_dict(spec.model_dump())
    assert load_judge_spec(None) is None


def test_every_module_that_finds_the_project_finds_this_checkout():
    # Modules one folder deeper than before the rooms: each PROJECT_ROOT must still be the checkout (/root on Modal).
    from vlm3.cloud.launch import PROJECT_ROOT as launch_root
    from vlm3.serve.vllm import PROJECT_ROOT as vllm_root
    from vlm3.train.trainer_env import PROJECT_ROOT as trainer_root

    assert launch_root == vllm_root == trainer_root == ROOT
    assert (ROOT / "vlm3" / "recipe" / "chat_templates").is_dir()
