"""The product serves any manual: outside the demo fixtures no code names the sample car.

The sample manual (vlm3/demo/sample_manual.py), the tiny models' builder and the sample's own recipes and
probes are fixtures; every other file that runs (code, templates, prompts) must hold for a manual
nobody here has seen, so it may not say E30, M3 or BMW. "M3" as a thread size is not the car.
"""

from __future__ import annotations

import re

from tests.conftest import ROOT

FIXTURES = {"vlm3/demo/sample_manual.py", "vlm3/demo/tiny_model.py"}
CODE_SUFFIXES = (".py", ".jinja", ".j2", ".html", ".txt")
CODE_ROOTS = ("vlm3", "harness", "data_adapters", "bench", "examples", "modal_entry.py")
SAMPLE_NAMES = re.compile(r"\b(BMW|E30|M3)\b")


def code_files():
    for top in CODE_ROOTS:
        path = ROOT / top
        for file in ([path] if path.is_file() else sorted(path.rglob("*"))):
            relative = file.relative_to(ROOT).as_posix()
            if file.suffix in CODE_SUFFIXES and relative not in FIXTURES and "__pycache__" not in relative:
                yield relative, file


def test_no_code_outside_the_demo_fixtures_names_the_sample_car():
    found = []
    for relative, file in code_files():
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if SAMPLE_NAMES.search(line) and "thread" not in line:
                found.append(f"{relative}:{number}: {line.strip()[:120]}")
    assert not found, "the product names the sample manual:\n" + "\n".join(found)


def test_the_scan_sees_the_files_it_guards():
    files = {relative for relative, _ in code_files()}
    assert {"harness/judge_metrics.py", "harness/judge.py", "data_adapters/pipeline.py", "modal_entry.py"} <= files
    assert not files & FIXTURES
    assert SAMPLE_NAMES.search("the BMW E30 M3 service manual") and not SAMPLE_NAMES.search("e30m3-lora, km3, M30 bolts")
