"""The shape of tests/data/spec_cases_manuals.jsonl, the spec checker's corpus written from manuals' notations.

Only the file's shape is checked here (bench/bench_specs.py measures the checker against it): every
case is a labelled (reference, answer) pair with its manual kind and category, and the corpus keeps
the spread it was written for: enough cases, categories, manual kinds, and failures.
"""

from __future__ import annotations

import json
from collections import Counter

from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "data" / "spec_cases_manuals.jsonl"
CLASSES = {"value", "unit", "label", "condition", "qualifier", "sequence", "equivalent", "notation",
           "not_applicable", "hallucination"}
FIELDS = {"id", "manual", "category", "class", "expected", "actual", "passed", "note"}


def load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_case_has_the_fields_and_values_the_benchmark_reads():
    cases = load()
    ids = Counter(case["id"] for case in cases)
    assert not [i for i, n in ids.items() if n > 1], "duplicate ids"
    for case in cases:
        assert set(case) == FIELDS, (case["id"], sorted(set(case) ^ FIELDS))
        assert case["class"] in CLASSES, case["id"]
        assert case["passed"] in (True, False, None), case["id"]
        assert (case["passed"] is None) == (case["class"] == "not_applicable"), case["id"]
        for field in ("manual", "category", "expected", "actual", "note"):
            assert isinstance(case[field], str) and case[field].strip(), (case["id"], field)


def test_the_corpus_keeps_its_spread():
    cases = load()
    assert len(cases) >= 300
    categories = Counter(case["category"] for case in cases)
    assert len(categories) >= 30
    assert min(categories.values()) >= 6, [name for name, n in categories.items() if n < 6]
    assert len({case["manual"] for case in cases}) >= 8
    failures = sum(case["passed"] is False for case in cases) / len(cases)
    assert 0.35 <= failures <= 0.45, f"{failures:.1%} failures"
