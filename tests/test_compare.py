import json

import pytest

from harness.compare import (
    Comparison,
    Flip,
    MetricDelta,
    compare_scores,
    format_comparison,
    paired_bootstrap_ci,
    render_compare_html,
)


def sample(sample_id, *, passed=None, f1=None, spec=None, recall=None, judge=None, kind="val", category="torque_spec",
           question=None):
    return {
        "id": sample_id, "kind": kind, "category": category, "question": question or f"question {sample_id}?",
        "checks": {
            "spec": None if spec is None else {"applicable": True, "passed": spec == 1.0, "score": spec, "details": []},
            "keywords": None if recall is None else {"recall": recall, "passed": recall == 1.0, "found": [], "missing": []},
            "token_f1": f1,
        },
        "passed": passed,
        "judge": None if judge is None else {"metrics": judge},
    }


def metric(comparison, name):
    found = [m for m in comparison.metrics if m.name == name]
    assert len(found) <= 1
    return found[0] if found else None


# Four pairs with token-F1 differences +0.5, +0.25, 0, -0.25 (exact in binary): mean +0.125.
HAND_A = [sample(f"s{i}", f1=a) for i, a in enumerate([0.25, 0.5, 0.5, 0.75])]
HAND_B = [sample(f"s{i}", f1=b) for i, b in enumerate([0.75, 0.75, 0.5, 0.5])]


def test_hand_worked_means_and_delta_are_exact():
    m = metric(compare_scores(HAND_A, HAND_B), "token_f1")
    assert (m.n, m.mean_a, m.mean_b, m.delta) == (4, 0.5, 0.625, 0.125)
    assert m.ci_low <= m.delta <= m.ci_high
    assert m.ci_low < m.ci_high
    # Bootstrap means of these four diffs cannot leave the range of the diffs.
    assert -0.25 <= m.ci_low and m.ci_high <= 0.5


@pytest.mark.parametrize("diffs", [[0.1, 0.1, 0.1], [-0.3], [0.0] * 7])
def test_all_equal_diffs_give_a_single_point(diffs):
    assert paired_bootstrap_ci(diffs, resamples=500, seed=3) == (diffs[0], diffs[0])


def test_bootstrap_is_deterministic_for_a_seed_and_varies_with_it():
    diffs = [0.9, -0.4, 0.1, 0.0, 0.7, -0.2, 0.3, 0.05]
    assert paired_bootstrap_ci(diffs, 1000, seed=1) == paired_bootstrap_ci(diffs, 1000, seed=1)
    assert paired_bootstrap_ci(diffs, 1000, seed=1) != paired_bootstrap_ci(diffs, 1000, seed=2)
    assert compare_scores(HAND_A, HAND_B, seed=5) == compare_scores(HAND_A, HAND_B, seed=5)


def test_wider_level_gives_a_wider_interval():
    diffs = [0.9, -0.4, 0.1, 0.0, 0.7, -0.2, 0.3, 0.05]
    low80, high80 = paired_bootstrap_ci(diffs, 2000, seed=0, level=0.80)
    low99, high99 = paired_bootstrap_ci(diffs, 2000, seed=0, level=0.99)
    assert low99 < low80 < high80 < high99


def test_interval_of_a_clear_improvement_excludes_zero():
    a = [sample(f"s{i}", f1=0.2 + 0.01 * i) for i in range(30)]
    b = [sample(f"s{i}", f1=0.6 + 0.02 * i) for i in range(30)]
    m = metric(compare_scores(a, b), "token_f1")
    assert m.ci_low > 0


@pytest.mark.parametrize("diffs, resamples, level", [([], 10, 0.95), ([0.1, 0.2], 0, 0.95), ([0.1, 0.2], 10, 1.0)])
def test_bootstrap_rejects_bad_arguments(diffs, resamples, level):
    with pytest.raises(ValueError):
        paired_bootstrap_ci(diffs, resamples, seed=0, level=level)


def test_pairs_by_id_and_counts_the_unpaired():
    a = [sample("x", f1=0.5), sample("y", f1=0.5), sample("only-a", f1=0.0), {"question": "no id", "passed": True}]
    b = [sample("y", f1=1.0), sample("only-b1", f1=0.0), sample("x", f1=0.75), sample("only-b2", f1=0.0)]
    c = compare_scores(a, b, "base", "tuned")
    assert (c.label_a, c.label_b, c.paired, c.only_a, c.only_b) == ("base", "tuned", 2, 2, 2)
    m = metric(c, "token_f1")
    assert (m.n, m.mean_a, m.mean_b) == (2, 0.5, 0.875)


def test_repeated_ids_pair_occurrence_by_occurrence():
    a = [sample("dup", f1=0.0), sample("dup", f1=0.5), sample("dup", f1=0.25)]
    b = [sample("dup", f1=0.25), sample("dup", f1=1.0), sample("dup", f1=0.25)]
    c = compare_scores(a, b)
    assert c.paired == 3
    assert (metric(c, "token_f1").mean_a, metric(c, "token_f1").mean_b) == (0.25, 0.5)
    # Occurrence pairing gives diffs 0.25, 0.5 and 0; pairing every A with one B sample would not.
    m = metric(c, "token_f1")
    assert paired_bootstrap_ci([0.25, 0.5, 0.0], 2000, 0) == pytest.approx((m.ci_low, m.ci_high))


@pytest.mark.parametrize("name, a_kwargs, b_kwargs, expected_n", [
    ("pass_rate", [{"passed": True}, {"passed": None}, {"passed": False}], [{"passed": False}, {"passed": True}, {"passed": None}], 1),
    ("spec_score", [{"spec": 1.0}, {"spec": None}, {"spec": 0.5}], [{"spec": 0.5}, {"spec": 0.0}, {"spec": 1.0}], 2),
    ("keyword_recall", [{"recall": 0.5}, {}, {"recall": 1.0}], [{"recall": 1.0}, {"recall": 0.5}, {}], 1),
    ("token_f1", [{"f1": 0.5}, {"f1": None}, {"f1": 0.25}], [{}, {"f1": 0.5}, {"f1": 0.75}], 1),
])
def test_each_metric_counts_only_pairs_where_both_sides_have_a_value(name, a_kwargs, b_kwargs, expected_n):
    a = [sample(f"s{i}", **kw) for i, kw in enumerate(a_kwargs)]
    b = [sample(f"s{i}", **kw) for i, kw in enumerate(b_kwargs)]
    assert metric(compare_scores(a, b), name).n == expected_n


def test_inapplicable_spec_is_not_a_score():
    a, b = sample("s", spec=0.0), sample("s", spec=1.0)
    b["checks"]["spec"]["applicable"] = False
    assert metric(compare_scores([a], [b]), "spec_score") is None


def test_metric_without_pairs_is_omitted_and_pass_rate_is_first():
    c = compare_scores([sample("s", passed=True, f1=0.5)], [sample("s", passed=False, f1=0.5)])
    assert [m.name for m in c.metrics] == ["pass_rate", "token_f1"]
    assert metric(c, "pass_rate").delta == -1.0


def test_probe_pass_rate_uses_probes_only():
    a = [sample("p1", passed=False, kind="probe"), sample("p2", passed=True, kind="probe"), sample("v1", passed=True)]
    b = [sample("p1", passed=True, kind="probe"), sample("p2", passed=True, kind="probe"), sample("v1", passed=False)]
    c = compare_scores(a, b)
    probe = metric(c, "probe_pass_rate")
    assert (probe.n, probe.mean_a, probe.mean_b, probe.delta) == (2, 0.5, 1.0, 0.5)
    assert metric(c, "pass_rate").n == 3


def test_judge_metrics_pair_by_name_and_skip_unscored():
    a = [sample("s1", judge={"correctness": {"score": 0.5}, "faithfulness": {"score": 0.25}}),
         sample("s2", judge={"correctness": {"score": 0.25}}),
         sample("s3", judge={"correctness": {"score": 0.9, "unscored": True}})]
    b = [sample("s1", judge={"correctness": {"score": 1.0}}),
         sample("s2", judge={"correctness": {"score": 0.75}, "relevance": {"score": 1.0}}),
         sample("s3", judge={"correctness": {"score": 0.1}})]
    c = compare_scores(a, b)
    judge = [m for m in c.metrics if m.name.startswith("judge:")]
    assert [m.name for m in judge] == ["judge:correctness"]
    assert (judge[0].n, judge[0].mean_a, judge[0].mean_b, judge[0].delta) == (2, 0.375, 0.875, 0.5)


def test_flips_in_both_directions_and_not_through_null():
    a = [sample("up", passed=False, category="clearance", kind="probe", question="Valve clearance?"),
         sample("down", passed=True), sample("same", passed=True), sample("null", passed=None), sample("to-null", passed=True)]
    b = [sample("up", passed=True), sample("down", passed=False), sample("same", passed=True), sample("null", passed=True),
         sample("to-null", passed=None)]
    c = compare_scores(a, b)
    assert c.flips == [Flip(id="up", question="Valve clearance?", category="clearance", kind="probe", before=False, after=True),
                       Flip(id="down", question="question down?", category="torque_spec", kind="val", before=True, after=False)]


def test_to_dict_is_json_serialisable_and_complete():
    c = compare_scores([sample("s", passed=True, f1=0.5)], [sample("s", passed=False, f1=0.75)], "base", "tuned")
    data = json.loads(json.dumps(c.to_dict()))
    assert data["label_b"] == "tuned" and data["paired"] == 1
    assert data["metrics"][1] == {"name": "token_f1", "n": 1, "mean_a": 0.5, "mean_b": 0.75, "delta": 0.25,
                                  "ci_low": None, "ci_high": None, "unscored": 0, "pages": 1,
                                  "no_interval": "1 page: too few for an interval"}
    assert data["flips"][0]["before"] is True and data["flips"][0]["after"] is False


FIXED = Comparison(
    label_a="base", label_b="tuned", paired=40, only_a=2, only_b=1,
    metrics=[MetricDelta("pass_rate", 38, 0.25, 0.625, 0.375, 0.2, 0.55),
             MetricDelta("token_f1", 40, 0.412, 0.538, 0.126, -0.01, 0.25)],
    flips=[Flip("id-up", "Torque for <b>head</b> bolts?", "torque_spec", "probe", False, True),
           Flip("id-down", "Oil\ncapacity?", "capacity", "val", True, False)],
)


@pytest.mark.parametrize("expected", [
    "A = base, B = tuned: 40 paired samples (2 only in A, 1 only in B)",
    "25.0%", "62.5%", "+37.5 pp", "[+20.0, +55.0] pp *",
    "0.412", "0.538", "+0.126", "[-0.010, +0.250]",
    "fail -> pass: 1", "pass -> fail: 1", "id-up", "Oil capacity?",
])
def test_format_comparison_contains_the_numbers(expected):
    assert expected in format_comparison(FIXED)


def test_format_comparison_marks_only_intervals_that_exclude_zero():
    lines = format_comparison(FIXED).splitlines()
    assert next(line for line in lines if line.startswith("pass_rate")).endswith("*")
    assert not next(line for line in lines if line.startswith("token_f1")).endswith("*")


def test_format_comparison_lists_at_most_twenty_flips_per_direction():
    flips = [Flip(f"f{i:02d}", "q", None, None, False, True) for i in range(25)]
    text = format_comparison(Comparison("a", "b", 25, 0, 0, [], flips))
    assert "f19" in text and "f20" not in text
    assert "... and 5 more" in text


def test_compare_html_has_table_whiskers_and_flips(tmp_path):
    path = render_compare_html(FIXED, tmp_path / "sub" / "compare.html")
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "sub" / "compare.html"
    assert "<th>95% CI</th>" in text and "+37.5 pp" in text
    assert text.count("<line") >= 2 * 3  # each metric: whisker plus two caps
    assert 'id="fail-to-pass"' in text and "Fail → pass (1)" in text and "Pass → fail (1)" in text
    assert text.index("id-up") < text.index('id="pass-to-fail"') < text.index("id-down")


def test_compare_html_escapes_data(tmp_path):
    hostile = Comparison(
        label_a="<script>a()</script>", label_b='"><img onerror=x>', paired=1, only_a=0, only_b=0,
        metrics=[MetricDelta("judge:<evil>", 1, 0.5, 0.75, 0.25, 0.25, 0.25)],
        flips=[Flip("<id>", "<script>alert(1)</script>", '"><img onerror=y>', "probe", False, True)])
    text = render_compare_html(hostile, tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "<img" not in text and "<evil>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img onerror=y&gt;" in text
    assert "judge:&lt;evil&gt;" in text


def test_unscored_judge_pairs_are_counted_and_shown():
    def rec(sample_id, score, unscored=False):
        metric = {"score": None, "unscored": True, "raw": "??"} if unscored else {"score": score, "passed": score >= 0.7, "unscored": False}
        return {"id": sample_id, "passed": None, "checks": {}, "judge": {"metrics": {"correctness": metric}}}

    a = [rec("1", 0.5), rec("2", 0.6), rec("3", 0.4)]
    b = [rec("1", 0.9), rec("2", 0.0, unscored=True), rec("3", 0.8)]
    comparison = compare_scores(a, b, "a", "b", resamples=200)
    judge = next(m for m in comparison.metrics if m.name == "judge:correctness")
    assert (judge.n, judge.unscored) == (2, 1)
    assert "2 (1 unscored)" in format_comparison(comparison)


def test_pairs_with_a_failed_request_are_left_out_and_counted():
    ok = {"id": "1", "passed": True, "error": None, "checks": {"token_f1": 1.0}}
    failed = {"id": "1", "passed": False, "error": "APIConnectionError", "checks": {}}
    other_a = {"id": "2", "passed": True, "error": None, "checks": {"token_f1": 0.5}}
    other_b = {"id": "2", "passed": False, "error": None, "checks": {"token_f1": 0.2}}
    comparison = compare_scores([ok, other_a], [failed, other_b], "a", "b", resamples=100)
    assert (comparison.paired, comparison.errored) == (1, 1)
    assert [f.id for f in comparison.flips] == ["2"]
    assert "1 left out: no answer on a side" in format_comparison(comparison)


def paged(sample_id, page, **kw):
    return {**sample(sample_id, **kw), "image_ref": f"images/{page}.jpg"}


# (A's and B's pass verdicts, the page of each pair): pairs on a page resample together.
@pytest.mark.parametrize("a_passed, b_passed, pages, interval, reason", [
    ([True, True], [False, False], ["p1", "p2"], False, "2 pages: too few for an interval"),  # once printed [-100, -100] *
    ([True, False, True, True], [False, False, True, False], ["p1", "p1", "p2", "p2"], False, "2 pages: too few"),
    ([True] * 5, [False] * 5, ["p1", "p2", "p3", "p4", "p5"], False, "every resample gives the same value"),
    # Differences of +1 and -1 on p1, none elsewhere: every page sums to zero, so does every resample.
    ([False, True, True, True, False], [True, False, True, True, False], ["p1", "p1", "p2", "p2", "p3"], False,
     "every resample gives the same value"),
    ([True, True, True, False, True, True], [False, True, False, False, False, True], ["p1", "p2", "p3", "p4", "p5", "p6"], True, None),
])
def test_no_interval_and_no_star_from_too_few_pages_or_resamples_that_do_not_vary(tmp_path, a_passed, b_passed, pages, interval, reason):
    a = [paged(f"s{i}", page, passed=passed) for i, (page, passed) in enumerate(zip(pages, a_passed))]
    b = [paged(f"s{i}", page, passed=passed) for i, (page, passed) in enumerate(zip(pages, b_passed))]
    c = compare_scores(a, b, "base", "tuned", resamples=500)
    m = metric(c, "pass_rate")
    assert m.has_interval is interval
    line = next(row for row in format_comparison(c).splitlines() if row.startswith("pass_rate"))
    data = json.loads(json.dumps(c.to_dict()))["metrics"][0]
    html = render_compare_html(c, tmp_path / "compare.html").read_text(encoding="utf-8")
    if interval:
        assert (data["ci_low"], data["ci_high"]) == (m.ci_low, m.ci_high) and data["no_interval"] is None
        return
    assert reason in m.no_interval and reason in line and reason in html
    assert not line.endswith("*") and "–" in line and "interval excludes zero" not in format_comparison(c)
    assert (data["ci_low"], data["ci_high"]) == (None, None) and reason in data["no_interval"]
    assert "num neg" not in html and "num pos" not in html  # no cell marked as significant


@pytest.mark.parametrize("pages, worse", [
    (["p1", "p2"], None),  # two pages lost: too little to fail a gate on
    (["p1", "p2", "p3"], "worse by the same amount on every one of 3 pages"),  # no interval to show, but every page lost
])
def test_the_gate_fires_on_every_page_lost_alike_but_not_on_too_few_pages(pages, worse):
    from harness.compare import worse_reason, worse_with_confidence

    a = [paged(f"s{i}", page, passed=True) for i, page in enumerate(pages)]
    b = [paged(f"s{i}", page, passed=False) for i, page in enumerate(pages)]
    c = compare_scores(a, b)
    found = worse_with_confidence(c, "pass_rate")
    assert (worse_reason(found) if found else None) == worse
    assert not next(line for line in format_comparison(c).splitlines() if line.startswith("pass_rate")).endswith("*")
