"""The shape of tests/data/spec_cases_holdout.jsonl, a second, independent labelled set for the spec checker.

Its (reference, answer) pairs were written from real manuals' notations by a grader who neither read
the checker nor ran it while writing them. Only the file's shape is checked here: unique ids, every
field present with a value the measurement reads, and the spread the set was written for (enough
cases, categories of at least six cases, manual kinds, and a failure share of 35-45 %).
"""

from __future__ import annotations

import json
from collections import Counter

from tests.conftest import ROOT

HOLDOUT = ROOT / "tests" / "data" / "spec_cases_holdout.jsonl"
CLASSES = {"value", "unit", "label", "condition", "qualifier", "sequence", "equivalent", "notation",
           "hallucination", "hedge", "not_applicable"}
FIELDS = {"id", "manual", "category", "class", "expected", "actual", "passed", "note"}


def load() -> list[dict]:
    return [json.loads(line) for line in HOLDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_ids_are_unique_and_every_case_has_its_fields():
    cases = load()
    ids = Counter(case["id"] for case in cases)
    assert not [i for i, n in ids.items() if n > 1], "duplicate ids"
    for case in cases:
        assert set(case) == FIELDS, (case["id"], sorted(set(case) ^ FIELDS))
        assert case["class"] in CLASSES, case["id"]
        assert case["passed"] in (True, False, None), case["id"]
        assert (case["passed"] is None) == (case["class"] == "not_applicable"), case["id"]
        for field in ("id", "manual", "category", "expected", "actual", "note"):
            assert isinstance(case[field], str) and case[field].strip(), (case["id"], field)


def test_the_holdout_keeps_its_spread():
    cases = load()
    assert len(cases) >= 200
    categories = Counter(case["category"] for case in cases)
    assert len(categories) >= 25
    assert min(categories.values()) >= 6, [name for name, n in categories.items() if n < 6]
    assert len({case["manual"] for case in cases}) >= 10
    failures = sum(case["passed"] is False for case in cases) / len(cases)
    assert 0.35 <= failures <= 0.45, f"{failures:.1%} failures"
