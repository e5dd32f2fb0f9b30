"""The shape of the spec checker's corpora written from manuals' notations.

tests/data/spec_cases_manuals.jsonl and tests/data/spec_cases_holdout.jsonl are labelled
(reference, answer) pairs written from real manuals' notations by graders who neither read the
checker nor ran it while writing them (bench/bench_specs.py measures the checker against both;
tests/test_specs.py holds it to no false pass). Only each file's shape is checked here: unique
ids, every field with a value the benchmark reads, and the spread the file was written for.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.conftest import ROOT

CLASSES = {"value", "unit", "label", "condition", "qualifier", "sequence", "equivalent", "notation",
           "hallucination", "hedge", "not_applicable"}
FIELDS = {"id", "manual", "category", "class", "expected", "actual", "passed", "note"}
# file -> (at least this many cases, categories, manual kinds)
SPREAD = {"spec_cases_manuals.jsonl": (300, 30, 8), "spec_cases_holdout.jsonl": (200, 25, 10)}


def load(name: str) -> list[dict]:
    path = ROOT / "tests" / "data" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("name", list(SPREAD))
def test_every_case_has_the_fields_and_values_the_benchmark_reads(name):
    cases = load(name)
    ids = Counter(case["id"] for case in cases)
    assert not [i for i, n in ids.items() if n > 1], "duplicate ids"
    for case in cases:
        assert set(case) == FIELDS, (case["id"], sorted(set(case) ^ FIELDS))
        assert case["class"] in CLASSES, case["id"]
        assert case["passed"] in (True, False, None), case["id"]
        assert (case["passed"] is None) == (case["class"] == "not_applicable"), case["id"]
        for field in ("id", "manual", "category", "expected", "actual", "note"):
            assert isinstance(case[field], str) and case[field].strip(), (case["id"], field)


@pytest.mark.parametrize("name", list(SPREAD))
def test_the_corpus_keeps_its_spread(name):
    least_cases, least_categories, least_manuals = SPREAD[name]
    cases = load(name)
    assert len(cases) >= least_cases
    categories = Counter(case["category"] for case in cases)
    assert len(categories) >= least_categories
    assert min(categories.values()) >= 6, [category for category, n in categories.items() if n < 6]
    assert len({case["manual"] for case in cases}) >= least_manuals
    failures = sum(case["passed"] is False for case in cases) / len(cases)
    assert 0.35 <= failures <= 0.45, f"{failures:.1%} failures"
