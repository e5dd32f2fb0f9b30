"""Scoring: token F1, per-sample verdicts, and the summary's groupings."""

from __future__ import annotations

import pytest

from harness.score import score_sample, summarize, token_f1


@pytest.mark.parametrize(
    "expected,actual,f1",
    [
        ("Tighten to 45 Nm.", "Tighten to 45 Nm.", 1.0),
        ("Tighten to 45 Nm.", "", 0.0),
        ("a b c d", "a b", 2 * (1.0 * 0.5) / 1.5),
        ("4.5 L", "4.5 l", 1.0),
        ("x y", "z", 0.0),
    ],
)
def test_token_f1(expected, actual, f1):
    assert token_f1(expected, actual) == pytest.approx(f1)


def sample(**kw):
    base = {"id": "s1", "kind": "probe", "category": "torque_spec", "content_type": "specification", "source": "train_page",
            "image": "/x.jpg", "image_ref": "images/x.jpg", "question": "Q?", "expected": "Tighten to 45 Nm (33 ft-lb).", "expected_keywords": None}
    return {**base, **kw}


@pytest.mark.parametrize(
    "smp,answer,passed",
    [
        (sample(), "45 Nm", True),
        (sample(), "33 ft-lb", True),
        (sample(), "50 Nm", False),
        (sample(), "45 Nm, then 90 Nm", False),  # a spec the reference does not support
        (sample(expected=None, expected_keywords=["drain", "refill"]), "Drain the oil, then refill.", True),
        (sample(expected=None, expected_keywords=["drain", "refill"]), "Drain the oil.", False),
        (sample(expected="Check the hoses for cracks."), "Check the hoses.", None),  # nothing exact to check
    ],
)
def test_score_sample_verdicts(smp, answer, passed):
    record = score_sample(smp, {"answer": answer, "error": None})
    assert record["passed"] is passed
    assert record["answer"] == answer


def test_missing_and_failed_predictions():
    assert score_sample(sample(), None)["error"].startswith("no prediction")
    failed = score_sample(sample(), {"answer": None, "error": "APITimeoutError"})
    # A failed request is not a wrong answer: no verdict, counted apart.
    assert failed["passed"] is None and failed["error"] == "APITimeoutError" and failed["error_kind"] == "request"
    assert score_sample(sample(), None)["error_kind"] == "missing"


def test_failures_stay_out_of_pass_rates_and_thresholds():
    """25 probes right, 3 failed requests: the rate is 25/25 over what was answered, the errors counted apart."""
    records = [score_sample(sample(id=f"ok{i}"), {"answer": "45 Nm"}) for i in range(25)]
    records += [score_sample(sample(id=f"bad{i}"), {"answer": None, "error": "InternalServerError: HTTP 500"}) for i in range(3)]
    records.append(score_sample(sample(id="never"), None))
    summary = summarize(records, label="t", probe_threshold=0.85)
    assert summary["probes"]["pass_rate"] == 1.0 and summary["probes"]["passed"] is True
    assert summary["metrics"]["pass_rate"] == 1.0
    assert summary["counts"].items() >= {"errors": 4, "failed": 3, "missing": 1, "answered": 25}.items()
    assert summary["probes"]["errors"] == 4 and summary["complete"] is False


def test_summary_groups_and_threshold():
    records = [
        score_sample(sample(id="a"), {"answer": "45 Nm"}),
        score_sample(sample(id="b"), {"answer": "50 Nm"}),
        score_sample(sample(id="c", kind="val", source="val_page", category="capacity", expected="4.5 L"), {"answer": "4.5 L"}),
    ]
    summary = summarize(records, label="t", probe_threshold=0.85, model="m")
    assert summary["metrics"]["pass_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["by_category"]["torque_spec"]["pass_rate"] == 0.5
    assert summary["by_category"]["capacity"]["pass_rate"] == 1.0
    assert summary["probes"] == {**summary["probes"], "n": 2, "pass_rate": 0.5, "passed": False}
    assert summary["by_kind"]["val"]["n"] == 1
    assert summary["notes"] and "memorisation" in summary["notes"][0]


def test_spec_not_applicable_is_counted_apart_and_graded_by_keywords():
    records = [
        score_sample(sample(id="a"), {"answer": "45 Nm"}),
        score_sample(sample(id="b", expected="Replace the gasket."), {"answer": "Replace it."}),
        score_sample(sample(id="c", expected="Remove the 13 mm bolts.", expected_keywords=["bolts"]), {"answer": "Remove the bolts."}),
    ]
    assert [r["checks"]["spec"]["applicable"] for r in records] == [True, False, False]
    assert records[1]["passed"] is None  # only the judge can grade it
    assert records[2]["passed"] is True  # keywords grade it; the spec check is not a verdict
    assert records[2]["checks"]["spec"]["details"][0].startswith("not applicable: ")
    summary = summarize(records, label="t")
    assert summary["counts"]["spec_checked"] == 1 and summary["counts"]["spec_not_applicable"] == 2
    assert summary["metrics"]["spec_pass_rate"] == 1.0  # the inapplicable samples are in neither count


@pytest.mark.parametrize("kinds, answers, probes_passed, passed", [
    (["val", "val"], ["45 Nm", "50 Nm"], None, None),  # no probes: nothing held to the probe threshold, not a failure
    (["val", "probe"], ["45 Nm", None], None, None),  # the one probe failed to answer: no probe graded
    (["val", "probe"], ["50 Nm", "45 Nm"], True, True),
    (["val", "probe"], ["45 Nm", "50 Nm"], False, False),
])
def test_the_overall_verdict_is_the_probes_and_none_without_a_graded_probe(kinds, answers, probes_passed, passed):
    records = [score_sample(sample(id=f"s{i}", kind=kind), {"answer": answer, "error": None if answer else "HTTP 500"})
               for i, (kind, answer) in enumerate(zip(kinds, answers))]
    summary = summarize(records, label="t", probe_threshold=0.85)
    assert summary["probes"]["passed"] is probes_passed
    assert summary["passed"] is passed


def test_spec_not_applicable_reasons_are_counted_by_reason():
    long_reference = "Torque 40 Nm. " + "x" * 9000
    records = [
        score_sample(sample(id="a", expected="Replace the gasket."), {"answer": "Replace it."}),
        score_sample(sample(id="b", expected="Check the hoses."), {"answer": "Checked."}),
        score_sample(sample(id="c", expected=long_reference), {"answer": "40 Nm"}),
        score_sample(sample(id="d"), {"answer": "45 Nm"}),
    ]
    reasons = summarize(records, label="t")["spec_not_applicable_reasons"]
    assert sum(reasons.values()) == 3 and len(reasons) == 2
    first, count = next(iter(reasons.items()))
    assert count == 2 and not first.startswith("not applicable")  # the most common first, without the prefix
    assert summarize(records[3:], label="t")["spec_not_applicable_reasons"] == {}


def test_the_page_text_reaches_the_spec_check(monkeypatch):
    import harness.score
    from harness.specs import SpecMatch

    seen = {}

    def fake_match(expected, actual, page_text=None):
        seen.update(expected=expected, actual=actual, page_text=page_text)
        return SpecMatch(True, True, 1.0, [], (), (), True)

    monkeypatch.setattr(harness.score, "match", fake_match)
    score_sample(sample(page_text="Head bolts: 45 Nm, then 90°."), {"answer": "45 Nm"})
    assert seen == {"expected": "Tighten to 45 Nm (33 ft-lb).", "actual": "45 Nm", "page_text": "Head bolts: 45 Nm, then 90°."}
    score_sample(sample(), {"answer": "45 Nm"})  # a probe carries no page text
    assert seen["page_text"] is None


@pytest.mark.parametrize("fields", [
    {"expected": None, "expected_keywords": [""]},
    {"expected": None, "expected_keywords": ["  ", 5]},
    {"expected": 45, "expected_keywords": None},
    {"expected": "", "expected_keywords": "gasket"},
])
def test_a_saved_sample_with_nothing_to_grade_gives_no_verdict_and_no_crash(fields):
    # `vlm3 check` and `vlm3 eval` refuse such probes; samples saved before that are scored without a verdict.
    record = score_sample(sample(**fields), {"answer": ""})
    assert record["passed"] is None and record["checks"]["keywords"] is None
