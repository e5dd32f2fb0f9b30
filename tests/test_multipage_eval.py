"""The harness on rows with several pages or none: samples, requests, report thumbnails, weak pages, the judge.

A tiny images root with two pages and a sideways phone photo; a validation file with a two-page row
(`images`), a row whose user turn lists two image parts, and a text-only row; probes with `images`,
none, and the bad page lists a user writes. Pure functions first, then `vlm3 eval` end to end
against a loopback OpenAI-compatible server.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bench.loopback_openai import LoopbackOpenAI, question_of
from data_adapters.images import open_page
from data_adapters.pipeline import sample_id
from harness.bootstrap import clusters_of, page_of
from harness.generate import GenerationSettings, build_messages, image_data_url, prompt_hash
from harness.report import render_report
from data_adapters.samples import EvalSample, load_probes, load_val_samples
from harness.score import score_sample, summarize
from harness.weak import find_weak, format_weak, weak_page_rows
from tests.conftest import DEMO_RECIPE, ROOT, run_cli

EXIF_ORIENTATION = 0x0112
METADATA_NAMES = {"section": "section_title", "page": "page_no"}
TWO_PAGE_QUESTION = "Torque for the head bolts, across both pages?"
PARTS_QUESTION = "Which page shows the coolant drain?"
TEXT_QUESTION = "Intake valve clearance, engine cold?"


def write_page(path: Path, color: tuple[int, int, int], size=(40, 60)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path.name


def write_sideways_photo(path: Path) -> Path:
    """A 40x20 photo stored sideways: EXIF orientation 6 (turn 90 degrees clockwise to view)."""
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((200, 0, 0), (0, 0, 20, 20))  # left half red, right half white: the turn is visible
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    image.save(path, format="JPEG", exif=exif, quality=95)
    return path


@pytest.fixture
def manual(tmp_path) -> Path:
    root = tmp_path / "training_data"
    write_page(root / "images" / "21-03.png", (200, 60, 60))
    write_page(root / "images" / "21-04.jpg", (60, 60, 200))
    write_sideways_photo(root / "images" / "photo.jpg")
    rows = [
        {"images": ["images/21-03.png", "images/21-04.jpg"],
         "conversations": [{"role": "user", "content": TWO_PAGE_QUESTION}, {"role": "assistant", "content": "Tighten to 60 Nm."}],
         "metadata": {"section_title": "21 Cylinder head", "page_no": "21-03/04"}},
        # The pages as image parts of the user turn, in the opposite order: the row's order is kept.
        {"conversations": [
            {"role": "user", "content": [{"type": "image", "path": "images/21-04.jpg"}, {"type": "image", "path": "images/21-03.png"},
                                         {"type": "text", "text": PARTS_QUESTION}]},
            {"role": "assistant", "content": "Page 21-04."}],
         "metadata": {"section_title": "21 Cylinder head"}},
        {"conversations": [{"role": "user", "content": TEXT_QUESTION}, {"role": "assistant", "content": "0.20 mm."}],
         "metadata": {"section_title": "00 Specifications"}},
    ]
    (root / "vlm_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    probes = [
        {"id": "spread", "images": ["images/21-04.jpg", "images/21-03.png"], "question": "Torque across the spread?",
         "expected_answer": "60 Nm", "section": "21 Cylinder head"},
        {"id": "glossary", "question": "What is BDC?", "expected_keywords": ["bottom", "dead", "centre"]},
        {"id": "photo", "image": "images/photo.jpg", "question": "What colour is the left edge?", "expected_keywords": ["red"]},
    ]
    (tmp_path / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes), encoding="utf-8")
    return root


def test_samples_keep_every_page_in_order_and_text_only_rows(manual):
    samples, problems = load_val_samples(manual / "vlm_val.jsonl", manual, METADATA_NAMES)
    assert problems == []
    spread, parts, text = samples
    assert spread.image_refs == ["images/21-03.png", "images/21-04.jpg"]
    assert spread.images == [str(manual / "images" / "21-03.png"), str(manual / "images" / "21-04.jpg")]
    assert (spread.image, spread.image_ref) == (spread.images[0], "images/21-03.png")  # the first page, for old readers
    assert parts.image_refs == ["images/21-04.jpg", "images/21-03.png"] and parts.question == PARTS_QUESTION
    assert (text.images, text.image_refs, text.image, text.image_ref, text.page) == ([], [], None, None, None)
    # The recipe's data.metadata names: the pipeline's section_title and page_no read as section and page.
    assert (spread.section, spread.page) == ("21 Cylinder head", "21-03/04")
    assert parts.page == "21-04+21-03"  # no metadata page: the pages' stems, in order
    assert text.section == "00 Specifications"
    assert spread.id == f"val:{sample_id(spread.image_refs, TWO_PAGE_QUESTION)}"
    assert text.id == f"val:{sample_id((), TEXT_QUESTION)}"


def test_probes_give_one_page_several_or_none(manual):
    probes, problems = load_probes(manual.parent / "probes.jsonl", manual)
    assert problems == []
    spread, glossary, photo = probes
    assert spread.image_refs == ["images/21-04.jpg", "images/21-03.png"] and spread.page == "21-04+21-03"
    assert (glossary.images, glossary.image, glossary.page) == ([], None, None)
    assert photo.images == [str(manual / "images" / "photo.jpg")] and photo.page == "photo"


@pytest.mark.parametrize("probe, message", [
    ({"images": []}, "'images' is an empty list"),
    ({"images": ["images/21-03.png", "images/missing.jpg"]}, "'images/missing.jpg' not found"),
    ({"images": ["images/21-03.png", "../outside.jpg"]}, "points outside the images root"),
    ({"images": ["images/21-03.png", 7]}, "images[1] must be a non-empty path"),
    ({"images": "images/21-03.png"}, "'images' must be a list"),
    ({"image": "images/21-03.png", "images": ["images/21-04.jpg"]}, "both 'image' and 'images'"),
])
def test_a_bad_probe_page_list_is_a_problem_at_its_line(manual, tmp_path, probe, message):
    good = {"id": "ok", "image": "images/21-03.png", "question": "q?", "expected_answer": "1 Nm"}
    path = tmp_path / "bad_probes.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "bad", "question": "q?", "expected_answer": "1 Nm", **probe}) + "\n")
    samples, problems = load_probes(path, manual)
    assert [s.id for s in samples] == ["probe:ok"]
    assert len(problems) == 1 and str(problems[0]).startswith(f"{path}:2: ") and message in problems[0].message


def test_requests_send_every_page_in_row_order_and_none_for_text_only(manual):
    spread, parts, text = load_val_samples(manual / "vlm_val.jsonl", manual, METADATA_NAMES)[0]
    for sample in (spread, parts):
        [message] = build_messages(sample)
        *pages, question = message["content"]
        assert [p["type"] for p in pages] == ["image_url", "image_url"] and question == {"type": "text", "text": sample.question}
        sent = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in pages]
        assert sent == [Path(path).read_bytes() for path in sample.images]  # plain 8-bit files go as they are, in order
    assert build_messages(text) == [{"role": "user", "content": TEXT_QUESTION}]
    # One page hashes as it always did; the page order and a text-only sample's lack of pages are part of the hash.
    settings = GenerationSettings(base_url="http://x", api_key="k", model="m")
    one = EvalSample(id="x", kind="val", image=spread.images[0], image_ref=spread.image_refs[0], question="q", expected="a")
    assert one.images == [spread.images[0]] and one.image_refs == [spread.image_refs[0]]
    assert prompt_hash(one, settings) == old_prompt_hash(one, settings)
    reversed_pages = EvalSample(**{**spread.to_dict(), "images": spread.images[::-1], "image": spread.images[1]})
    assert prompt_hash(spread, settings) != prompt_hash(reversed_pages, settings)
    assert prompt_hash(text, settings) != prompt_hash(EvalSample(**{**text.to_dict(), "images": [spread.images[0]]}), settings)


def old_prompt_hash(sample: EvalSample, settings: GenerationSettings) -> str:
    """prompt_hash as it was before samples had several pages (saved predictions carry these)."""
    import hashlib

    from harness.generate import TEMPERATURE

    digest = hashlib.sha256()
    digest.update(hashlib.sha256(Path(sample.image).read_bytes()).digest())
    digest.update(json.dumps([sample.question, sample.system or settings.system_prompt, settings.max_tokens, TEMPERATURE]).encode())
    return digest.hexdigest()[:16]


def test_a_sideways_photo_is_sent_and_shown_upright(manual):
    photo = manual / "images" / "photo.jpg"
    url = image_data_url(str(photo))
    assert url.startswith("data:image/png;base64,")  # a normalised page goes as a lossless PNG
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as sent:
        upright = open_page(photo)
        assert sent.size == upright.size == (20, 40)
        assert sent.convert("RGB").tobytes() == upright.tobytes()
        assert sent.convert("RGB").getpixel((10, 5))[0] > 150  # the red half is on top once turned
    from harness.page_images import encode_page

    _, width, height = encode_page(photo)
    assert (width, height) == (20, 40)  # the report's thumbnail is upright too


def scored(manual: Path, failing: set[str]) -> list[dict]:
    samples = load_val_samples(manual / "vlm_val.jsonl", manual, METADATA_NAMES)[0]
    samples += load_probes(manual.parent / "probes.jsonl", manual)[0]
    return [score_sample(s.to_dict(), {"answer": "no idea" if s.question in failing else (s.expected or " ".join(s.expected_keywords))})
            for s in samples]


def test_score_records_carry_every_page():
    record = score_sample({"id": "s", "kind": "val", "images": ["/r/a.png", "/r/b.jpg"], "image_refs": ["a.png", "b.jpg"],
                           "image": "/r/a.png", "image_ref": "a.png", "question": "q", "expected": "30 Nm"}, {"answer": "30 Nm"})
    assert (record["images"], record["image_refs"], record["image"]) == (["/r/a.png", "/r/b.jpg"], ["a.png", "b.jpg"], "/r/a.png")
    old = score_sample({"id": "s", "kind": "val", "image": "/r/a.png", "image_ref": "a.png", "question": "q", "expected": "30 Nm"},
                       {"answer": "30 Nm"})
    assert (old["images"], old["image_refs"]) == (["/r/a.png"], ["a.png"])  # a sample saved before: its one page
    text = score_sample({"id": "t", "kind": "val", "image": None, "question": "q", "expected": "30 Nm"}, {"answer": "30 Nm"})
    assert (text["images"], text["image_refs"]) == ([], [])


def test_weak_counts_a_two_page_failure_on_both_pages_and_text_only_apart(manual):
    records = scored(manual, failing={TWO_PAGE_QUESTION, TEXT_QUESTION})
    weak = find_weak(records)
    pages = {g.image_ref: g for g in weak.pages}
    assert set(pages) == {"images/21-03.png", "images/21-04.jpg"}
    assert all(g.failed == 1 and [f.question for f in g.failures] == [TWO_PAGE_QUESTION] for g in pages.values())
    assert pages["images/21-03.png"].n == 3  # the spread row, the parts row and the spread probe all need this page
    assert weak.failed == 2  # samples, not page counts
    assert weak.text_only is not None and weak.text_only.failed == 1 and weak.text_only.failures[0].question == TEXT_QUESTION
    rows = weak_page_rows(weak)
    assert [r["image_ref"] for r in rows[:2]] == ["images/21-03.png", "images/21-04.jpg"] and rows[2]["text_only"] is True
    text = format_weak(weak, "weak_pages.jsonl")
    assert "text-only samples (no page" in text and "1 text-only sample(s)" in text


def test_an_unknown_section_is_ranked_after_named_ones_and_explained(manual):
    records = scored(manual, failing={TWO_PAGE_QUESTION, "What is BDC?", "What colour is the left edge?"})
    weak = find_weak(records)
    # Two probes carry no section and fail; the named section has fewer failures but is ranked first.
    assert [g.name for g in weak.sections] == ["21 Cylinder head", "unknown section"]
    assert (weak.sections[0].failed, weak.sections[1].failed) == (1, 2)
    assert any("carry no section" in note and "data.metadata" in note for note in weak.notes)
    text = format_weak(weak, "weak_pages.jsonl")
    assert text.startswith("look first at section 21 Cylinder head") and "note: " in text
    # Only unnamed sections fail: "look first" does not name the unknown section without saying why.
    unnamed = find_weak([r for r in records if not r.get("section")])
    first = format_weak(unnamed, "weak_pages.jsonl").splitlines()[0]
    assert "section unknown" not in first and "carry no section" in first


def test_clusters_follow_the_page_set():
    a, b, ab, text = ({"image_ref": "a"}, {"image_refs": ["b"]}, {"image_refs": ["a", "b"]}, {"image": None})
    assert page_of(a) == "a" and page_of(ab) == "a\nb" and page_of(text) is None
    # A question about both pages ties both pages' questions together; a text-only sample stands alone.
    assert clusters_of([a, b, text]) == ["a", "b", ("sample", 2)]
    assert clusters_of([a, b, ab, text]) == ["a", "a", "a", ("sample", 3)]


def test_report_shows_every_page_of_a_card_and_text_only(manual, tmp_path):
    records = scored(manual, failing={TWO_PAGE_QUESTION, TEXT_QUESTION})
    html = render_report(summarize(records, label="x"), records, tmp_path / "report.html").read_text()
    cards = html.split('<article class="sample">')[1:]
    [spread] = [c for c in cards if TWO_PAGE_QUESTION in c]
    [text] = [c for c in cards if TEXT_QUESTION in c]
    assert spread.count('class="page-thumb') == 2
    assert spread.index('aria-label="page images/21-03.png"') < spread.index('aria-label="page images/21-04.jpg"')
    assert 'class="page-thumb' not in text and ">text-only<" in text and "no page image" not in html
    assert html.count("data:image/jpeg;base64,") == 2  # each page embedded once


def test_judge_sends_every_page_and_estimates_sum_over_pages(manual):
    from harness.judge import _sample_sizes
    from harness.judge_client import page_image
    from harness.judge_metrics import JudgeCase

    spread, parts, text = (s.to_dict() for s in load_val_samples(manual / "vlm_val.jsonl", manual, METADATA_NAMES)[0])
    case = JudgeCase.from_sample(spread, "60 Nm")
    assert case.images == tuple(spread["images"]) and case.image == spread["images"][0]
    assert JudgeCase.from_sample(text, "x").images == ()
    one = page_image(spread["images"][0]).tokens
    sizes = _sample_sizes([spread, text], None, images=True)
    assert sizes[0][1] == one + page_image(spread["images"][1]).tokens and sizes[1][1] == 0
    # The judge sees the photo upright, as the model did.
    assert (page_image(manual / "images" / "photo.jpg").width, page_image(manual / "images" / "photo.jpg").height) == (20, 40)


def test_judge_context_has_every_page_in_order(manual):
    pytest.importorskip("deepeval")
    from harness.judge_client import page_image
    from harness.judge_metrics import JudgeCase, prompt_parts, to_test_case

    spread = load_val_samples(manual / "vlm_val.jsonl", manual, METADATA_NAMES)[0][0].to_dict()
    case = JudgeCase.from_sample(spread, "60 Nm")
    pages = [page_image(p) for p in case.images]
    context = to_test_case(case, pages).retrieval_context
    sent = [part for item in context for part in prompt_parts(item) if not isinstance(part, str)]
    assert [p.sha256 for p in sent] == [p.sha256 for p in pages]


def write_recipe(manual: Path, tmp_path: Path) -> Path:
    recipe = yaml.safe_load(DEMO_RECIPE.read_text())
    recipe["model"]["base"] = str(ROOT / recipe["model"]["base"])
    recipe["data"] = {"train": str(manual / "vlm_val.jsonl"), "val": str(manual / "vlm_val.jsonl"), "images_root": str(manual),
                      "probes": str(manual.parent / "probes.jsonl"), "metadata": METADATA_NAMES}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_vlm3_eval_end_to_end_on_pages_and_text_only(manual, tmp_path):
    """`vlm3 eval` against a loopback server: each request carries the sample's pages, the report shows them,
    weak_pages.jsonl counts the two-page failure on both pages."""
    answers = {TWO_PAGE_QUESTION: "I cannot read that.", PARTS_QUESTION: "Page 21-04.", TEXT_QUESTION: "0.20 mm."}
    out = tmp_path / "eval"
    with LoopbackOpenAI(answer=lambda body: answers.get(question_of(body), "I cannot read that.")) as server:
        proc = run_cli("eval", str(write_recipe(manual, tmp_path)), "--endpoint", server.base_url, "--model", "m",
                       "--only", "val", "--no-judge", "--out", str(out))
        pages_sent = {question_of(body): sum(1 for part in body["messages"][-1]["content"] if part["type"] == "image_url")
                      if isinstance(body["messages"][-1]["content"], list) else 0 for body in server.requests}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pages_sent == {TWO_PAGE_QUESTION: 2, PARTS_QUESTION: 2, TEXT_QUESTION: 0}
    weak = [json.loads(line) for line in (out / "weak_pages.jsonl").read_text().splitlines()]
    assert sorted(r["image_ref"] for r in weak) == ["images/21-03.png", "images/21-04.jpg"]
    assert all(r["section"] == "21 Cylinder head" and r["failed"] == 1 for r in weak)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["breakdowns"]["val"]["by_page"]["text-only"]["n"] == 1
    assert set(summary["breakdowns"]["val"]["by_section"]) == {"21 Cylinder head", "00 Specifications"}
    html = (out / "report.html").read_text()
    [card] = [c for c in html.split('<article class="sample">')[1:] if TWO_PAGE_QUESTION in c]
    assert card.count('class="page-thumb') == 2


def test_a_later_turns_pages_are_sent_in_that_turn_as_in_training(manual, tmp_path):
    """Turn 1 shows page a, turn 2 shows page b: turn 1 is asked without b, turn 2 with a in turn 1 and b in turn 2."""
    from data_adapters.pipeline import parse_row, to_axolotl_row
    from data_adapters.samples import row_samples

    obj = {"conversations": [
        {"role": "user", "content": [{"type": "image", "path": "images/21-03.png"}, {"type": "text", "text": "Q1?"}]},
        {"role": "assistant", "content": "A1."},
        {"role": "user", "content": [{"type": "image", "path": "images/21-04.jpg"}, {"type": "text", "text": "Q2?"}]},
        {"role": "assistant", "content": "A2."}]}
    row, problems = parse_row(obj, "f", 1)
    assert problems == []
    paths = [str(manual / ref) for ref in row.images]
    first, second = row_samples(row, paths)
    assert (first.image_refs, second.image_refs) == (["images/21-03.png"], ["images/21-03.png", "images/21-04.jpg"])
    assert first.page_turns == [] and second.page_turns == [1, 1]

    def pages_by_turn(messages) -> list[list[str]]:
        return [[part["image_url"]["url"] for part in m["content"] if part["type"] == "image_url"] if isinstance(m["content"], list) else []
                for m in messages]

    sent = build_messages(second)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert pages_by_turn(sent) == [[image_data_url(paths[0])], [], [image_data_url(paths[1])]]
    assert pages_by_turn(build_messages(first)) == [[image_data_url(paths[0])]]
    # The same turns, pages and order as the trainer's row.
    trained = to_axolotl_row(row, str(manual))["messages"]
    assert [[p["path"] for p in m["content"] if p["type"] == "image"] for m in trained] == [[paths[0]], [], [paths[1]], []]
    settings = GenerationSettings(base_url="http://127.0.0.1:9/v1", model="m", api_key="")
    moved = EvalSample(**{**second.to_dict(), "page_turns": [2, 0]})  # both pages shown first: another prompt
    assert prompt_hash(moved, settings) != prompt_hash(second, settings)
