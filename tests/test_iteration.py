"""The iteration loop: metadata kept, breakdowns, every turn asked, weak pages, comparisons that hold up.

Usage:
    .venv/bin/python -m pytest tests/test_iteration.py -q

Pure functions on hand-made rows and score records; the CLI (`vlm3 eval`, `weak`, `compare`)
against the real `openai` client and a scripted loopback server on the sample manual.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from bench.loopback_openai import LoopbackOpenAI, question_of
from data_adapters.pipeline import read_pipeline
from harness.bootstrap import cluster_bootstrap_ci
from harness.breakdown import breakdowns, turn_counts
from harness.compare import compare_scores, comparison_file_stem, format_comparison, paired_bootstrap_ci, render_compare_html
from harness.generate import GenerationSettings, build_messages, prompt_hash
from data_adapters.samples import load_val_samples
from harness.score import score_sample, summarize
from harness.weak import find_weak, weak_page_rows
from tests.conftest import DEMO_RECIPE, run_cli


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def page(root: Path, name: str, size=(40, 60)) -> str:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 190, 180)).save(root / "images" / name)
    return f"images/{name}"


@pytest.fixture
def hand_rows(tmp_path) -> Path:
    """Two-round conversations, a system turn, PNG and JPEG, portrait and landscape, metadata that varies."""
    portrait, landscape = page(tmp_path, "a.png", (40, 60)), page(tmp_path, "b.jpg", (60, 40))
    rows = [
        {"image": portrait, "conversations": [
            {"role": "system", "content": "Answer from the manual."},
            {"role": "user", "content": "Torque for the drain plug?"}, {"role": "assistant", "content": "Tighten to 30 Nm."},
            {"role": "user", "content": "And the filler plug?"}, {"role": "assistant", "content": "Tighten to 40 Nm."}],
         "metadata": {"section": "11 Engine", "page": "11-03", "content_type": "specification", "revision": "B", "page_text": "p"}},
        {"image": landscape, "conversations": [
            {"role": "user", "content": "Oil capacity?"}, {"role": "assistant", "content": "4.5 L."}],
         "metadata": {"section": "11 Engine", "content_type": "specification", "chapter": 3}},
    ]
    return write_rows(tmp_path / "val.jsonl", rows)


def test_every_turn_is_a_sample_with_the_conversation_before_it_and_the_metadata(tmp_path, hand_rows):
    samples, problems = load_val_samples(hand_rows, tmp_path)
    assert problems == []
    first, second, other = samples
    assert [s.turn for s in samples] == [1, 2, 1] and [s.turns for s in samples] == [2, 2, 1]
    assert second.id == first.id + "#t2" and second.question == "And the filler plug?" and second.expected == "Tighten to 40 Nm."
    assert second.history == [{"role": "user", "content": "Torque for the drain plug?"}, {"role": "assistant", "content": "Tighten to 30 Nm."}]
    # Metadata: the named keys and every other key (page_text has its own field); the page falls back to the file stem.
    assert (first.section, first.page, first.content_type) == ("11 Engine", "11-03", "specification")
    assert first.metadata == {"section": "11 Engine", "page": "11-03", "content_type": "specification", "revision": "B"}
    assert other.metadata["chapter"] == 3 and other.page == "b"
    assert first.row_ref == f"{hand_rows}:1"

    messages = build_messages(second)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    image_part, text_part = messages[1]["content"]
    assert image_part["type"] == "image_url" and text_part["text"] == "Torque for the drain plug?"
    assert messages[2]["content"] == "Tighten to 30 Nm." and messages[3]["content"] == "And the filler plug?"
    # The first turn is asked as before (saved answers still match); the second turn hashes its history.
    assert [m["role"] for m in build_messages(first)] == ["system", "user"]
    settings = GenerationSettings(base_url="http://x", api_key="k", model="m")
    assert prompt_hash(first, settings) != prompt_hash(second, settings)


def test_metadata_reaches_scores_and_turns_are_counted(tmp_path, hand_rows):
    samples, _ = load_val_samples(hand_rows, tmp_path)
    records = [score_sample(s.to_dict(), {"answer": s.expected}) for s in samples]
    assert records[0]["metadata"]["revision"] == "B" and records[1]["turn"] == 2 and records[2]["page"] == "b"
    summary = summarize(records, label="x")
    assert summary["turns"] == {"rows": 2, "multi_turn_rows": 1, "samples": 3, "later_turn_samples": 1, "skipped_turns": 0}
    # A turn cut off (here: the second turn left out, as --max-samples would) is counted, not silently dropped.
    assert turn_counts(records[:1] + records[2:])["skipped_turns"] == 1
    assert summary["breakdowns"]["val"]["by_section"]["11 Engine"]["n"] == 3


def record(sample_id, *, passed, section="S1", page_ref="images/p1.jpg", kind="val", category=None, content_type="specification",
           answer="an answer", spec_score=None, judge=None, error=None):
    spec = None if spec_score is None else {"applicable": True, "passed": spec_score == 1.0, "score": spec_score, "details": ["expected 30 Nm: found 35 Nm"]}
    return {"id": sample_id, "kind": kind, "section": section, "page": Path(page_ref).stem, "image_ref": page_ref, "image": None,
            "category": category, "content_type": content_type, "question": f"q {sample_id}?", "expected": "30 Nm",
            "answer": None if error else answer, "error": error, "passed": None if error else passed,
            "checks": {"spec": spec, "keywords": None, "token_f1": 0.5}, "judge": judge}


def test_breakdowns_by_section_page_and_content_type_keep_probes_apart_and_errors_out_of_rates():
    records = [
        record("a1", passed=True, page_ref="images/p1.jpg", spec_score=1.0),
        record("a2", passed=False, page_ref="images/p1.jpg", spec_score=0.5),
        record("a3", passed=False, page_ref="images/p2.jpg", spec_score=0.0,
               judge={"metrics": {"correctness": {"score": 0.25, "passed": False}}}),
        record("a4", passed=None, page_ref="images/p2.jpg", error="HTTP 500"),
        record("b1", passed=True, section="S2", page_ref="images/p3.jpg", content_type="procedure",
               judge={"metrics": {"correctness": {"score": 0.75, "passed": True}, "faithfulness": {"score": None, "unscored": True}}}),
        record("probe1", passed=False, kind="probe", category="torque_spec", section="S1", page_ref="images/p1.jpg"),
    ]
    out = breakdowns(records)
    s1 = out["val"]["by_section"]["S1"]
    assert (s1["n"], s1["errors"], s1["checked"], s1["passed"], s1["pass_rate"], s1["pages"]) == (4, 1, 3, 1, 0.3333, 2)
    assert s1["interval_unit"] == "pages" and s1["pass_rate_ci"][0] <= 0.3333 <= s1["pass_rate_ci"][1]
    assert (s1["spec_score"], s1["spec_n"]) == (0.5, 3)
    assert s1["judge"] == {"correctness": {"mean": 0.25, "n": 1, "unscored": 0}}
    assert set(out["val"]["by_page"]) == {"p1", "p2", "p3"} and out["val"]["by_page"]["p1"]["interval_unit"] == "questions"
    assert set(out["val"]["by_content_type"]) == {"specification", "procedure"}
    assert out["val"]["by_section"]["S2"]["judge"]["faithfulness"] == {"mean": None, "n": 0, "unscored": 1}
    # The probe is in its own axis and never in the validation groups.
    assert out["probes"]["by_category"]["torque_spec"]["n"] == 1 and s1["n"] == 4


def test_clustered_bootstrap_widens_when_questions_share_pages():
    """20 pages, 6 questions each; a page's questions all pass or all fail (the model reads the page or not).
    Resampling questions treats 120 draws as independent; resampling pages sees 20."""
    rng = random.Random(7)
    page_outcomes = [rng.random() < 0.5 for _ in range(20)]
    values = [float(ok) for ok in page_outcomes for _ in range(6)]
    pages = [p for p in range(20) for _ in range(6)]
    low_q, high_q = paired_bootstrap_ci(values, 2000, seed=0)
    low_p, high_p = cluster_bootstrap_ci(values, pages, 2000, seed=0)
    assert (high_p - low_p) > 2 * (high_q - low_q)  # sqrt(6) = 2.45 in theory
    # One question per page: the clustered interval is the ordinary one.
    singles = values[::6]
    assert cluster_bootstrap_ci(singles, list(range(20)), 2000, seed=0) == pytest.approx(paired_bootstrap_ci(singles, 2000, seed=0))


def test_clustered_bootstrap_checks_its_arguments():
    with pytest.raises(ValueError, match="differ in length"):
        cluster_bootstrap_ci([1.0, 0.0], ["p"], 10)
    assert cluster_bootstrap_ci([0.5, 0.5], ["p", "q"], 10) == (0.5, 0.5)


def test_weak_ranks_sections_and_pages_with_reasons():
    records = [
        record("a1", passed=False, page_ref="images/p1.jpg", spec_score=0.5),
        record("a2", passed=False, page_ref="images/p1.jpg", spec_score=0.0),
        record("a3", passed=True, page_ref="images/p2.jpg", spec_score=1.0),
        record("b1", passed=None, section="S2", page_ref="images/p3.jpg",
               judge={"metrics": {"correctness": {"score": 0.2, "passed": False, "reason": "wrong stage"}}}),
        record("b2", passed=None, section="S2", page_ref="images/p3.jpg", error="HTTP 400: bad image"),
        record("c1", passed=True, section="S3", page_ref="images/p4.jpg"),
    ]
    weak = find_weak(records)
    assert [g.name for g in weak.sections] == ["S1", "S2"] and [g.failed for g in weak.sections] == [2, 1]
    assert [g.name for g in weak.pages] == ["p1", "p3"]
    assert (weak.failed, weak.errors) == (3, 1)
    rows = weak_page_rows(weak)
    assert rows[0]["image_ref"] == "images/p1.jpg" and rows[0]["section"] == "S1" and rows[0]["failing_ids"] == ["a1", "a2"]
    assert "expected 30 Nm: found 35 Nm" in rows[0]["reasons"][0]["reasons"][0]
    assert rows[1]["errors"] == 1 and "judge correctness 0.2 below threshold (wrong stage)" in rows[1]["reasons"][0]["reasons"][0]


def pair_records(flipped_page: str = "images/p1.jpg"):
    a = [record("x1", passed=True, page_ref=flipped_page, answer="A says 30 Nm", spec_score=1.0),
         record("x2", passed=True, section="S2", page_ref="images/p2.jpg", spec_score=1.0),
         record("x3", passed=False, section="S2", page_ref="images/p2.jpg", spec_score=0.0)]
    b = [record("x1", passed=False, page_ref=flipped_page, answer="<b>B says</b> 35 Nm", spec_score=0.5),
         record("x2", passed=True, section="S2", page_ref="images/p2.jpg", spec_score=1.0),
         record("x3", passed=True, section="S2", page_ref="images/p2.jpg", spec_score=1.0)]
    return a, b


def test_comparison_has_group_deltas_and_flips_with_both_answers(tmp_path):
    image = tmp_path / "p1.png"
    Image.new("RGB", (80, 100), (10, 20, 30)).save(image)
    a, b = pair_records()
    for side in (a, b):
        side[0]["image"] = str(image)
        side[2]["image"] = str(image)  # a second flip on the same page image: embedded once
        side[2]["image_ref"] = "images/p1.jpg"
    c = compare_scores(a, b, "base", "tuned")
    groups = {(g.axis, g.name, g.metric.name): g.metric for g in c.groups}
    assert groups[("section", "S1", "pass_rate")].delta == -1.0
    assert groups[("section", "S2", "pass_rate")].delta == 0.5
    assert ("content_type", "specification", "spec_score") in groups
    [down] = [f for f in c.flips if not f.after]
    assert (down.answer_a, down.answer_b, down.expected, down.section, down.page) == ("A says 30 Nm", "<b>B says</b> 35 Nm", "30 Nm", "S1", "p1")
    text = format_comparison(c)
    assert "A (pass): A says 30 Nm" in text and "B (fail): <b>B says</b> 35 Nm" in text and "section: S2" in text
    html = render_compare_html(c, tmp_path / "c.html").read_text()
    assert "&lt;b&gt;B says&lt;/b&gt; 35 Nm" in html and "<b>B says" not in html
    assert html.count("data:image/jpeg;base64,") == 1 and 'href="#full-pg1"' in html
    assert comparison_file_stem("base", "fine tuned/v2") == "compare-base-vs-fine_tuned_v2"


def answer_from(val_path: Path, wrong_pages: set[str]):
    """A scripted model: the reference answer, except on the given pages (and for probes) where it is wrong."""
    rows, _ = read_pipeline(val_path)
    answers = {}
    for row in rows:
        exchanges = [t.content for t in row.turns if t.role != "system"]
        for question, answer in zip(exchanges[::2], exchanges[1::2]):
            answers[question] = "I cannot read that." if row.page in wrong_pages else answer

    for line in (val_path.parent.parent / "probes.jsonl").read_text(encoding="utf-8").splitlines():
        probe = json.loads(line)
        right = probe.get("expected_answer") or " ".join(probe.get("expected_keywords") or [])
        answers.setdefault(probe["question"], "I cannot read that." if probe.get("page") in wrong_pages else right)

    from harness.general_probes import PROBES_FILE

    for line in PROBES_FILE.read_text(encoding="utf-8").splitlines():
        probe = json.loads(line)
        right = probe.get("expected_answer") or " ".join(probe.get("expected_keywords") or [])
        # The two transcription probes share a question: one answer holds both lines' keywords.
        answers[probe["question"]] = "I cannot read that." if "general" in wrong_pages else " / ".join(
            filter(None, [answers.get(probe["question"]), right]))

    def reply(body: dict) -> str:
        return answers.get(question_of(body), "I cannot read that.")

    return reply


def eval_against(tmp_path: Path, sample_dir: Path, label: str, wrong_pages: set[str]) -> Path:
    out = tmp_path / "evals" / label
    with LoopbackOpenAI(answer=answer_from(sample_dir / "training_data" / "vlm_val.jsonl", wrong_pages)) as server:
        proc = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--model", "m", "--label", label, "--out", str(out),
                       "--no-judge")
        later_turns = [r for r in server.requests if len(r["messages"]) > 2]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Each multi-turn row's second turn was asked after its first exchange, the image in the first user turn.
    assert len(later_turns) == 3 and all(r["messages"][0]["content"][0]["type"] == "image_url" for r in later_turns)
    return out


def test_eval_weak_and_compare_on_the_sample_manual(tmp_path, sample_dir):
    good = eval_against(tmp_path, sample_dir, "v1", wrong_pages=set())
    bad = eval_against(tmp_path, sample_dir, "v2", wrong_pages={"11-07"})
    summary = json.loads((bad / "summary.json").read_text())
    assert summary["turns"]["later_turn_samples"] == 3 and summary["turns"]["skipped_turns"] == 0
    engine = summary["breakdowns"]["val"]["by_section"]["11 Engine"]
    assert engine["failed"] >= 5 and engine["pass_rate"] == 0.0
    assert summary["breakdowns"]["val"]["by_section"]["17 Cooling"]["failed"] == 0
    assert set(summary["breakdowns"]["probes"]["by_category"]) >= {"torque_spec", "procedure"}
    report = (bad / "report.html").read_text()
    assert 'id="breakdowns"' in report and 'id="weak"' in report and "Look first at section 11 Engine" in report
    assert "11 Engine · page 11-07" in report  # a gallery card names its section and page

    weak = run_cli("weak", str(bad))
    assert weak.returncode == 0, weak.stderr
    first = weak.stdout.splitlines()[0]
    assert first.startswith("look first at section 11 Engine") and "page 11-07" in first
    rows = [json.loads(line) for line in (bad / "weak_pages.jsonl").read_text().splitlines()]
    assert [r["page"] for r in rows] == ["11-07"]  # only the page the model cannot read
    assert Path(rows[0]["image"]).is_file() and rows[0]["section"] == "11 Engine" and len(rows[0]["failing_ids"]) == rows[0]["failed"]

    # One unreadable page of the twelve: every question on it flips, but resampling pages says this
    # could be one bad page by chance, so the CI gate does not fire on it alone.
    one_page = run_cli("compare", str(good), str(bad), "--fail-if-worse", "pass_rate")
    assert one_page.returncode == 0, one_page.stdout + one_page.stderr
    flipped = int(re.search(r"pass -> fail: (\d+)", one_page.stdout).group(1))
    assert flipped >= 6 and "section: 11 Engine" in one_page.stdout
    # A section of one page: its questions are one draw, so no interval and no star.
    assert re.search(r"section: 11 Engine +pass_rate .*-100.0 pp +– \(1 page: too few for an interval\)", one_page.stdout)
    html = tmp_path / "evals" / "compare-v1-vs-v2.html"
    assert html.exists() and (tmp_path / "evals" / "compare-v1-vs-v2.json").exists()
    assert "I cannot read that." in html.read_text()
    worse = eval_against(tmp_path, sample_dir, "v3", wrong_pages={"11-07", "17-01", "34-08", "11-03", "13-02", "33-02"})
    proc = run_cli("compare", str(good), str(worse), "--fail-if-worse", "pass_rate")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL: B is worse on pass_rate" in proc.stdout
    assert "general ability (vlm3's reading, counting, transcribing probes): A 6/6, B 6/6 passed -> kept" in proc.stdout
    # A model that still knows the manual but no longer reads, counts or transcribes is caught.
    forgot = eval_against(tmp_path, sample_dir, "v4", wrong_pages={"general"})
    proc = run_cli("compare", str(good), str(forgot))
    assert "A 6/6, B 0/6 passed -> LOST" in proc.stdout and "general:count-circles" in proc.stdout
    assert json.loads((tmp_path / "evals" / "compare-v1-vs-v4.json").read_text())["general"]["kept"] is False
    same = run_cli("compare", str(good), str(good), "--fail-if-worse", "spec_score")
    assert same.returncode == 0 and "B is not worse with confidence" in same.stdout
    unknown = run_cli("compare", str(good), str(bad), "--fail-if-worse", "accuracy")
    assert unknown.returncode == 1 and "--fail-if-worse accuracy: no such metric" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_weak_without_scores_is_a_clear_error(tmp_path):
    proc = run_cli("weak", str(tmp_path))
    assert proc.returncode == 1 and "has no scores.jsonl; run `vlm3 score" in proc.stderr and "Traceback" not in proc.stderr


def test_general_probes_are_drawn_the_same_each_time_and_each_has_a_check(tmp_path):
    from harness.general_probes import load_general_probes

    first = load_general_probes(tmp_path / "a")
    second = load_general_probes(tmp_path / "b")
    assert {s.category for s in first} == {"read_value", "count", "transcribe"}
    assert [Path(s.image).read_bytes() for s in first] == [Path(s.image).read_bytes() for s in second]
    for s in first:
        right = s.expected or " ".join(s.expected_keywords)
        assert score_sample(s.to_dict(), {"answer": right})["passed"] is True, s.id
        assert score_sample(s.to_dict(), {"answer": "I cannot read that."})["passed"] is False, s.id
    # The distractor on the page is a wrong answer, not a pass.
    width = next(s for s in first if s.id == "general:read-parcel-width")
    assert score_sample(width.to_dict(), {"answer": "350 mm"})["passed"] is False


def test_eval_judge_without_a_key_stops_before_generating(tmp_path):
    with LoopbackOpenAI() as server:
        proc = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--model", "m", "--judge", "--out", str(tmp_path / "e"))
        asked = server.request_count
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot run: no ANTHROPIC_API_KEY" in proc.stderr and "Nothing was generated" in proc.stderr
    assert asked == 0 and not (tmp_path / "e" / "predictions.jsonl").exists()


def test_eval_fail_under_and_strict_gate_on_the_probes(tmp_path, sample_dir):
    answer = answer_from(sample_dir / "training_data" / "vlm_val.jsonl", wrong_pages={"11-03"})  # one probe page wrong
    with LoopbackOpenAI(answer=answer) as server:
        common = ["eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--model", "m", "--only", "probes", "--no-judge"]
        strict = run_cli(*common, "--out", str(tmp_path / "a"), "--strict")
        lenient = run_cli(*common, "--out", str(tmp_path / "a"), "--fail-under", "0.5")
        plain = run_cli(*common, "--out", str(tmp_path / "a"))
    # The probes pass 17 of 18 (vlm3's general six included) = 94%: above the recipe's 85%...
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert lenient.returncode == 0 and plain.returncode == 0
    with LoopbackOpenAI(answer=answer_from(sample_dir / "training_data" / "vlm_val.jsonl", wrong_pages={"11-03", "11-12", "11-18", "13-02"})) as server:
        common = ["eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--model", "m", "--only", "probes", "--no-judge"]
        strict = run_cli(*common, "--out", str(tmp_path / "b"), "--strict")
        under = run_cli(*common, "--out", str(tmp_path / "b"), "--fail-under", "0.99")
        plain = run_cli(*common, "--out", str(tmp_path / "b"))
    # ...and below it when four probe pages are wrong: --strict and --fail-under exit 1, a plain eval does not.
    assert strict.returncode == 1 and "FAIL: probes passed" in strict.stdout and "below 85.0%" in strict.stdout
    assert under.returncode == 1 and "below 99.0%" in under.stdout
    assert plain.returncode == 0


def test_deepeval_without_a_judge_key_exits_non_zero(tmp_path, sample_dir):
    with LoopbackOpenAI(answer=answer_from(sample_dir / "training_data" / "vlm_val.jsonl", set())) as server:
        assert run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--model", "m", "--only", "general",
                       "--out", str(tmp_path / "g"), "--no-judge").returncode == 0
    proc = run_cli("deepeval", str(tmp_path / "g"))
    assert proc.returncode == 1 and "no DeepEval test would run: no ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_junit_counts_tests_that_ran(tmp_path):
    from vlm3.cli.evaluate import tests_that_ran

    junit = tmp_path / "j.xml"
    junit.write_text('<testsuites><testsuite tests="3" skipped="3" failures="0"/></testsuites>')
    assert tests_that_ran(junit) == 0
    junit.write_text('<testsuite tests="3" skipped="1"/>')
    assert tests_that_ran(junit) == 2
    assert tests_that_ran(tmp_path / "missing.xml") is None


def test_default_model_is_the_one_the_endpoint_serves(tmp_path):
    from vlm3.cli.evaluate import default_model_name
    from vlm3.recipe.schema import load_recipe

    recipe = load_recipe(DEMO_RECIPE)
    with LoopbackOpenAI() as server:
        import httpx

        httpx.post(f"{server.base_url}/chat/completions", json={"model": "served-x", "messages": [{"role": "user", "content": "hi"}]})
        assert default_model_name(server.base_url, "k", recipe, None, False) == "served-x"
    # No answer at /models: the recipe's served name.
    assert default_model_name("http://127.0.0.1:9/v1", "k", recipe, None, False) == recipe.served_name


@pytest.mark.trainer
def test_transformers_serve_answers_v1_models_and_eval_defaults_to_the_served_model(tmp_path, trained_run):
    import httpx

    from vlm3.cli.evaluate import default_model_name
    from vlm3.recipe.runs import RunDir
    from vlm3.serve.local import local_server

    run = RunDir.open(trained_run)
    # HOME without a Hugging Face cache: vlm3 gives the server an empty one, so /v1/models answers.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path))
        mp.delenv("HF_HOME", raising=False)
        mp.delenv("HF_HUB_CACHE", raising=False)
        with local_server(run.merged_dir, log_file=tmp_path / "serve.log") as server:
            response = httpx.get(f"{server.base_url}/models", timeout=30)
            assert response.status_code == 200 and response.json()["object"] == "list"
            assert default_model_name(server.base_url, "EMPTY", run.recipe(), run, False) == server.model
