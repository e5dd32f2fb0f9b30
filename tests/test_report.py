import base64
import io
import re

import pytest
from PIL import Image

from vlm3.core.charts import histogram_counts
from vlm3.core.templates import environment, pct
from harness.report import render_report, thumbnail_data_uri

HOSTILE_ANSWER = "<script>alert(1)</script> 50 Nm"
HOSTILE_CATEGORY = '"><img onerror=alert(2) src=x>'


@pytest.fixture
def page_image(tmp_path):
    path = tmp_path / "images" / "11-03.jpg"
    path.parent.mkdir()
    Image.new("RGB", (1000, 1400), (230, 220, 200)).save(path, "JPEG")
    return path


def sample(sample_id, *, passed, kind="val", category="torque_spec", image=None, answer="ok", error=None,
           spec=None, keywords=None, token_f1=0.5, judge=None, question=None):
    return {
        "id": sample_id, "kind": kind, "category": category, "content_type": "specification", "source": "val_page",
        "image": str(image) if image else None, "image_ref": "images/11-03.jpg",
        "question": question or f"question {sample_id}?", "expected": "Tighten to 45 Nm (33 ft-lb).",
        "expected_keywords": None, "answer": None if error else answer, "error": error,
        "checks": {"spec": spec, "keywords": keywords, "token_f1": token_f1}, "passed": passed, "judge": judge,
    }


def summary(**overrides):
    base = {
        "label": "finetuned", "model": "qwen2-vl-7b-e30m3", "endpoint": "http://127.0.0.1:8000/v1",
        "created": "2026-11-25T17:30:00Z",
        "counts": {"samples": 4, "answered": 3, "errors": 1, "deterministic": 3},
        "metrics": {"pass_rate": 0.4, "spec_pass_rate": 0.5, "keyword_recall": 0.7, "token_f1": 0.55},
        "by_category": {"torque_spec": {"n": 3, "pass_rate": 0.6, "token_f1": 0.7, "spec_pass_rate": 0.6, "keyword_recall": None},
                        HOSTILE_CATEGORY: {"n": 1, "pass_rate": 0.0, "token_f1": 0.1}},
        "by_content_type": {"specification": {"n": 4, "pass_rate": 0.25}},
        "by_kind": {"probe": {"n": 2, "pass_rate": 0.5}, "val": {"n": 2, "pass_rate": 0.125}},
        "probes": {"n": 2, "pass_rate": 0.75, "threshold": 0.85, "passed": False,
                   "by_source": {"train_page": {"n": 1, "pass_rate": 1.0}, "val_page": {"n": 1, "pass_rate": 0.5}}},
        "judge": {"metrics": {"correctness": {"mean": 0.8, "pass_rate": 0.9, "scored": 30, "unscored": 7}},
                  "calls": 60, "cost_usd": 0.12},
        "notes": ["Probes from training pages measure memorisation, not generalisation."],
        "passed": False,
    }
    return {**base, **overrides}


def failing_spec(detail="expected 45 Nm: found 50 Nm (wrong value)"):
    return {"applicable": True, "passed": False, "score": 0.5, "details": [detail]}


@pytest.fixture
def scores(page_image):
    return [
        sample("passing-one", passed=True, image=page_image,
               spec={"applicable": True, "passed": True, "score": 1.0, "details": ["matched 45 Nm"]}, token_f1=0.95),
        sample("failing-val", passed=False, image=page_image, answer=HOSTILE_ANSWER, category=HOSTILE_CATEGORY,
               spec=failing_spec(), token_f1=0.15,
               judge={"metrics": {"correctness": {"score": 0.2, "passed": False, "reason": "states 50 <b>Nm</b>"},
                                  "faithfulness": {"score": None, "unscored": True, "raw": "I cannot <rate> this"}}}),
        sample("failing-probe", passed=False, kind="probe", image=page_image, spec=failing_spec(), token_f1=0.35),
        sample("errored", passed=None, error="HTTP 500 <oops>", token_f1=None),
    ]


def render(tmp_path, summary_data, scores_data, **kwargs):
    path = render_report(summary_data, scores_data, tmp_path / "out" / "report.html", **kwargs)
    return path, path.read_text(encoding="utf-8")


def gallery(text):
    return text.split('id="gallery"', 1)[1]


def test_writes_one_self_contained_file_with_all_sections(tmp_path, scores):
    path, text = render(tmp_path, summary(), scores)
    assert path == tmp_path / "out" / "report.html"
    for section_id in ("notes", "metrics", "probes", "plots", "judge", "gallery"):
        assert f'id="{section_id}"' in text
    assert text.count("<svg") >= 4  # two histograms, category bars, probe bars
    assert "data:image/jpeg;base64," in text
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:|#)', text)


@pytest.mark.parametrize("expected", [
    "finetuned", "qwen2-vl-7b-e30m3", "http://127.0.0.1:8000/v1", "2026-11-25T17:30:00Z",
    "Probes from training pages measure memorisation, not generalisation.",
    "40.0%",          # overall pass rate
    "0.550",          # token F1 is a score, not a rate
    "75.0% of 2 probes passed, threshold 85.0%",
    "threshold 85%",  # the dashed line on the probe plot
    "$0.1200",
])
def test_header_metrics_and_probes_are_shown(tmp_path, scores, expected):
    _, text = render(tmp_path, summary(), scores)
    assert expected in text


def test_counts_show_errors(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores)
    assert re.search(r"<dt>errors \(not scored\)</dt><dd>1</dd>", text)
    assert re.search(r"<dt>samples</dt><dd>4</dd>", text)


def test_overall_badge_follows_summary_passed(tmp_path, scores):
    _, failed = render(tmp_path, summary(passed=False), scores)
    _, passed = render(tmp_path, summary(passed=True), scores)
    header = lambda text: text.split("</h1>", 1)[0]
    assert "badge fail" in header(failed) and "badge pass" not in header(failed)
    assert "badge pass" in header(passed) and "badge fail" not in header(passed)


def test_unscored_judge_counts_are_shown(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores)
    assert "correctness: mean 0.800, scored 30, unscored 7" in text
    judge_table = text.split('id="judge"', 1)[1].split("</section>", 1)[0]
    assert re.search(r"<th>unscored</th>", judge_table)
    assert '<td class="num">7</td>' in judge_table


def test_unscored_judge_metric_in_gallery_shows_raw_reply(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores)
    assert "<td>unscored</td>" in gallery(text)
    assert "raw reply: I cannot &lt;rate&gt; this" in gallery(text)


def test_hostile_strings_are_escaped(tmp_path, scores):
    _, text = render(tmp_path, summary(label="<script>label()</script>", model='m"><img onerror=x>'), scores)
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;script&gt;label()&lt;/script&gt;" in text
    assert "<img onerror" not in text
    assert "&quot;&gt;&lt;img onerror=alert(2) src=x&gt;" in text
    assert "<b>Nm</b>" not in text and "states 50 &lt;b&gt;Nm&lt;/b&gt;" in text
    assert "HTTP 500 &lt;oops&gt;" in text


def test_gallery_holds_failures_and_errors_but_not_passes(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores)
    shown = gallery(text)
    assert "failing-val" in shown and "failing-probe" in shown and "errored" in shown
    assert "passing-one" not in shown
    assert "expected 45 Nm: found 50 Nm (wrong value)" in shown


def test_errored_sample_shows_the_error_instead_of_an_answer(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores)
    card = gallery(text).split("<h3>errored", 1)[1]
    assert "ERROR</span>" in card
    assert "generation error" in card and "model answer" not in card
    assert "no checks ran" in card


def test_gallery_puts_probes_first_and_respects_the_limit(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores)
    assert gallery(text).index("failing-probe") < gallery(text).index("failing-val")
    _, limited = render(tmp_path, summary(), scores, max_gallery=1)
    assert "3 failed or errored samples, showing the first 1" in limited
    assert "failing-probe" in gallery(limited) and "failing-val" not in gallery(limited)


@pytest.mark.parametrize("image, placeholder", [
    ("missing.jpg", "image unavailable: images/11-03.jpg"),
    ("not-an-image.jpg", "image unavailable: images/11-03.jpg"),
    ("a-directory", "image unavailable: images/11-03.jpg"),
    (None, "no page image images/11-03.jpg"),
])
def test_unreadable_or_missing_image_shows_a_placeholder(tmp_path, image, placeholder):
    path = tmp_path / image if image else None
    if image == "not-an-image.jpg":
        path.write_text("this is not a JPEG")
    if image == "a-directory":
        path.mkdir()
    broken = sample("broken-image", passed=False, image=path, spec=failing_spec())
    _, text = render(tmp_path, summary(), [broken])
    assert f'<div class="placeholder">{placeholder}</div>' in gallery(text)
    assert "data:image/jpeg" not in text


def test_thumbnail_is_a_jpeg_about_360_wide(page_image):
    uri = thumbnail_data_uri(page_image)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (360, 504)


def test_empty_and_partial_inputs_do_not_crash(tmp_path):
    _, text = render(tmp_path, {}, [{}])
    assert 'id="gallery"' in text and "0 failed or errored samples" in text
    _, text = render(tmp_path, {"counts": None, "probes": None, "judge": None, "notes": None}, [{"passed": False}])
    assert "1 failed or errored samples" in text


def test_title_overrides_default(tmp_path, scores):
    _, text = render(tmp_path, summary(), scores, title="Base <vs> tuned")
    assert "<title>Base &lt;vs&gt; tuned</title>" in text


@pytest.mark.parametrize("values, counts", [
    ([0.0, 0.05, 0.1, 0.99, 1.0], [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]),
    ([-0.5, 1.5], [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    ([None, float("nan"), 0.55], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
])
def test_histogram_counts(values, counts):
    assert histogram_counts(values, 10) == counts


@pytest.mark.parametrize("rate, text", [(0.4, "40.0%"), (1, "100.0%"), (None, "—"), (True, "—")])
def test_pct(rate, text):
    assert pct(rate) == text


def test_templates_escape_text_and_attributes():
    page = environment().from_string('<p title="{{ title }}">{{ text }}</p>')
    assert page.render(title='"x"', text="<i>") == '<p title="&quot;x&quot;">&lt;i&gt;</p>'
    nested = environment().from_string('{% macro bold(text) %}<b>{{ text }}</b>{% endmacro %}<div>{{ bold("ok") }}</div>')
    assert nested.render() == "<div><b>ok</b></div>"


def test_a_page_is_embedded_once_and_its_thumbnail_opens_it_full_size(tmp_path, page_image):
    shared = [dict(sample(f"s{i}", passed=False, image=page_image, spec=failing_spec()), section="11 Engine", page="11-03")
              for i in range(3)]
    _, text = render(tmp_path, summary(), shared)
    assert text.count("data:image/jpeg;base64,") == 1  # three cards, one page, one copy
    assert text.count('href="#full-pg1"') == 3 and 'id="full-pg1"' in text
    assert "11 Engine · page 11-03" in gallery(text)  # each card says where in the manual it is


def test_histogram_title_and_counts_do_not_overlap_and_an_outlier_keeps_small_bins_visible():
    from vlm3.core.charts import histogram

    plot = environment().get_template("_charts.html.j2").module.histogram(histogram([0.95] * 200 + [0.05], "token F1"))
    title_y = float(re.search(r'<text x="[\d.]+" y="([\d.]+)"[^>]*>token F1', plot).group(1))
    count_ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="middle">\d+</text>', plot)]
    assert count_ys and min(count_ys) - title_y >= 12  # one text line apart (11 px font)
    heights = [float(h) for h in re.findall(r'<rect[^>]* height="([\d.]+)"', plot)]
    assert sorted(h for h in heights if h > 0)[0] >= 3  # the single 0.05 still shows next to the 200


@pytest.mark.parametrize("probes", [{"n": 0, "pass_rate": None, "threshold": 0.85, "passed": None, "by_source": {}},
                                    {"n": 0, "pass_rate": None, "threshold": 0.85, "passed": False, "by_source": {}}])  # an older summary
def test_no_probes_show_no_badge_and_say_so(tmp_path, scores, probes):
    _, text = render(tmp_path, summary(probes=probes, passed=probes["passed"]), scores)
    header = text.split("<header>", 1)[1].split("</header>", 1)[0]
    probes_section = text.split('id="probes"', 1)[1].split("</section>", 1)[0]
    assert "badge" not in header and "no probes" in header
    assert "badge" not in probes_section and "No probes" in probes_section


def not_applicable(sample_id, question, reason="the reference states no quantity with a unit the checker reads"):
    return sample(sample_id, passed=None, question=question,
                  spec={"applicable": False, "passed": False, "score": 0.0, "details": [f"not applicable: {reason}"]})


def test_samples_the_spec_check_cannot_grade_are_listed_with_their_reason(tmp_path, scores):
    ungraded = [not_applicable("proc-1", "How is the <b>gasket</b> fitted?"),
                not_applicable("proc-2", "Which hoses?"),
                not_applicable("long-1", "Torque?", reason="the reference is 9,000 characters <over>")]
    _, text = render(tmp_path, summary(), scores + ungraded)
    section = text.split('id="spec-not-applicable"', 1)[1].split("</section>", 1)[0]
    assert "Not graded by the spec check (3)" in section
    for expected in ("proc-1", "How is the &lt;b&gt;gasket&lt;/b&gt; fitted?", "Which hoses?",
                     "the reference is 9,000 characters &lt;over&gt;",
                     "<td>the reference states no quantity with a unit the checker reads</td><td class=\"num\">2</td>"):
        assert expected in section
    assert "<b>gasket" not in text and "passing-one" not in section
    _, without = render(tmp_path, summary(), scores)
    assert 'id="spec-not-applicable"' not in without


def test_the_terminal_says_how_many_samples_the_spec_check_did_not_grade(tmp_path, capsys):
    from harness.score import score_sample, summarize
    from vlm3.cli.evaluate import print_summary

    base = {"kind": "val", "question": "Q?", "expected_keywords": None}
    records = [score_sample({**base, "id": "a", "expected": "Replace the gasket."}, {"answer": "Replace it."}),
               score_sample({**base, "id": "b", "expected": "Check the hoses."}, {"answer": "Checked."}),
               score_sample({**base, "id": "c", "expected": "45 Nm"}, {"answer": "45 Nm"})]
    print_summary(summarize(records, label="t"), tmp_path)
    out = capsys.readouterr().out
    assert "2 samples not graded by the spec check (see report)" in out and "no probes" in out
    print_summary(summarize(records[2:], label="t"), tmp_path)
    assert "not graded by the spec check" not in capsys.readouterr().out
