"""The pipeline JSONL adapter: pure row conversion, and every kind of bad input named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_adapters.pipeline import PipelineRow, Turn, parse_row, read_pipeline, resolve_image, sample_id, to_axolotl_row
from tests.conftest import ROOT, run_cli

USER_Q = {"role": "user", "content": "What is the torque?"}
ANSWER = {"role": "assistant", "content": "40 Nm (30 ft-lb)."}


def row_of(*turns: tuple[str, str], image: str = "images/21-03.jpg") -> PipelineRow:
    return PipelineRow.of(image, tuple(Turn(r, c) for r, c in turns))


CONVERSIONS = [
    (
        row_of(("user", "Q?"), ("assistant", "A.")),
        None,
        [
            {"role": "user", "content": [{"type": "image", "path": "/data/images/21-03.jpg"}, {"type": "text", "text": "Q?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
        ],
    ),
    (
        row_of(("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2")),
        None,
        [
            {"role": "user", "content": [{"type": "image", "path": "/data/images/21-03.jpg"}, {"type": "text", "text": "Q1"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A1"}]},
            {"role": "user", "content": [{"type": "text", "text": "Q2"}]},  # the image only once, in the first user turn
            {"role": "assistant", "content": [{"type": "text", "text": "A2"}]},
        ],
    ),
    (
        row_of(("user", "Q?"), ("assistant", "A.")),
        "You read BMW manuals.",
        [
            {"role": "system", "content": [{"type": "text", "text": "You read BMW manuals."}]},
            {"role": "user", "content": [{"type": "image", "path": "/data/images/21-03.jpg"}, {"type": "text", "text": "Q?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
        ],
    ),
    (
        row_of(("system", "Own system."), ("user", "Q?"), ("assistant", "A.")),
        "Recipe system prompt is not added twice.",
        [
            {"role": "system", "content": [{"type": "text", "text": "Own system."}]},
            {"role": "user", "content": [{"type": "image", "path": "/data/images/21-03.jpg"}, {"type": "text", "text": "Q?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
        ],
    ),
]


@pytest.mark.parametrize("row,system,messages", CONVERSIONS)
def test_to_axolotl_row(row, system, messages):
    out = to_axolotl_row(row, "/data/", system)
    assert out["messages"] == messages
    assert set(out) == {"id", "messages"}  # no nested metadata: it breaks `datasets` JSON loading
    assert out["id"] == row.id


def test_id_is_stable_and_content_based():
    a = row_of(("user", "Q?"), ("assistant", "A."))
    b = row_of(("user", "Q?"), ("assistant", "another answer"))
    c = row_of(("user", "Q?"), ("assistant", "A."), image="images/other.jpg")
    assert a.id == b.id != c.id


GOOD_LINE = {"image": "images/p.jpg", "conversations": [USER_Q, ANSWER], "metadata": {"page": "21-03"}}

BAD_ROWS = [
    ({**GOOD_LINE, "conversations": [{"role": "human", "content": "Q"}, ANSWER]}, "role is 'human'; use one of user, assistant, system"),
    ({**GOOD_LINE, "conversations": [USER_Q, USER_Q, ANSWER]}, "turns must alternate user, assistant"),
    ({**GOOD_LINE, "conversations": [ANSWER, USER_Q]}, "turns must alternate"),
    ({**GOOD_LINE, "conversations": [USER_Q]}, "must end with an assistant answer"),
    ({**GOOD_LINE, "conversations": [USER_Q, {"role": "assistant", "content": "  "}]}, "is an empty answer"),
    ({**GOOD_LINE, "conversations": []}, "'conversations' must be a non-empty list"),
    ({**GOOD_LINE, "image": ""}, "'image' must be a non-empty path"),
    ({**GOOD_LINE, "image": 5}, "'image' must be a non-empty path"),
    ({**GOOD_LINE, "image": "https://example.com/p.jpg"}, "'image' is a URL"),
    # Several pages: every malformed list named.
    ({**GOOD_LINE, "image": None, "images": []}, "'images' is an empty list"),
    ({**GOOD_LINE, "image": None, "images": "images/a.jpg"}, "'images' must be a list of paths"),
    ({**GOOD_LINE, "image": None, "images": ["images/a.jpg", ""]}, "images[1] must be a non-empty path"),
    ({**GOOD_LINE, "image": None, "images": ["images/a.jpg", None]}, "images[1] must be a non-empty path"),
    ({**GOOD_LINE, "images": ["images/a.jpg"]}, "both 'image' and 'images'"),
    ({**GOOD_LINE, "conversations": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}, ANSWER]},
     "content[0] (an image part) has no path"),
    ({**GOOD_LINE, "conversations": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                                                                   {"type": "text", "text": "Q"}]}, ANSWER]}, "is a URL"),
    ({**GOOD_LINE, "conversations": [{"role": "user", "content": [{"type": "audio", "path": "a.wav"}, {"type": "text", "text": "Q"}]}, ANSWER]},
     "content[0] must be"),
    ({**GOOD_LINE, "conversations": [{"role": "user", "content": [{"type": "image", "path": "images/b.jpg"}, {"type": "text", "text": "Q"}]}, ANSWER]},
     "gives pages twice"),
    ({"conversations": [USER_Q, {"role": "assistant", "content": [{"type": "image", "path": "images/a.jpg"}, {"type": "text", "text": "A"}]}]},
     "pages go in user turns only"),
    # Other datasets' shapes: named, with the mapping to use.
    ({"image": "images/a.jpg", "messages": [USER_Q, ANSWER]}, "rename 'messages' to 'conversations'"),
    ({"image": "images/a.jpg", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
     "ShareGPT shape ('from'/'value' turns): map each turn"),
    ({**GOOD_LINE, "conversations": [{"role": "user", "content": "<image>\nWhat is the torque?"}, ANSWER]}, "<image> placeholder"),
    ({"image": "images/a.jpg", "question": "Q", "answer": "A"}, "a question/answer record"),
    ({**GOOD_LINE, "conversations": [{"role": "user"}, ANSWER]}, "must have 'role' and 'content'"),
    ({**GOOD_LINE, "conversations": [USER_Q, {"role": "assistant", "content": 5}]}, "content must be a string"),
    (["not", "an", "object"], "must be a JSON object"),
    ({**GOOD_LINE, "conversations": [USER_Q, {"role": "assistant", "content": "40 Nm<|im_end|>"}]}, "control token(s) <|im_end|>"),
    ({**GOOD_LINE, "conversations": [{"role": "user", "content": "<|image_pad|> torque?"}, ANSWER]}, "control token(s) <|image_pad|>"),
]


@pytest.mark.parametrize("obj,fragment", BAD_ROWS)
def test_parse_row_rejects(obj, fragment):
    row, problems = parse_row(obj, "train.jsonl", 7)
    assert row is None
    assert any(fragment in p.message for p in problems), [p.message for p in problems]
    assert all(str(p).startswith("train.jsonl:7: ") for p in problems)


TWO_PAGES = ["images/a.jpg", "images/b.png"]
PAGE_SHAPES = [
    ("one page", {"image": "images/a.jpg", "conversations": [USER_Q, ANSWER]}, ("images/a.jpg",)),
    ("images list", {"images": TWO_PAGES, "conversations": [USER_Q, ANSWER]}, tuple(TWO_PAGES)),
    ("image parts", {"conversations": [{"role": "user", "content": [{"type": "image", "path": "images/a.jpg"},
                                                                    {"type": "image", "image": "images/b.png"},
                                                                    {"type": "text", "text": "What is the torque?"}]}, ANSWER]},
     tuple(TWO_PAGES)),
    ("OpenAI image_url parts", {"conversations": [{"role": "user", "content": [{"type": "text", "text": "What is the torque?"},
                                                                               {"type": "image_url", "image_url": {"url": "images/a.jpg"}}]},
                                                  ANSWER]}, ("images/a.jpg",)),
    ("text-only", {"conversations": [USER_Q, ANSWER]}, ()),
    ("image null", {"image": None, "conversations": [USER_Q, ANSWER]}, ()),
]


@pytest.mark.parametrize("case,obj,images", PAGE_SHAPES, ids=[c[0] for c in PAGE_SHAPES])
def test_parse_row_reads_every_page_shape(case, obj, images):
    row, problems = parse_row(obj, "f", 1)
    assert problems == [], [p.message for p in problems]
    assert row.images == images and row.question == "What is the torque?"
    converted = to_axolotl_row(row, "/data")["messages"]
    assert [part.get("path") for part in converted[0]["content"] if part["type"] == "image"] == [f"/data/{i}" for i in images]
    assert converted[0]["content"][-1] == {"type": "text", "text": "What is the torque?"}  # pages first, then the question
    assert not any(part["type"] == "image" for message in converted[1:] for part in message["content"])


def test_page_sets_give_ids_one_page_as_before():
    turns = (Turn("user", "Q?"), Turn("assistant", "A."))
    one = PipelineRow.of("images/a.jpg", turns)
    two = PipelineRow.of(("images/a.jpg", "images/b.jpg"), turns)
    swapped = PipelineRow.of(("images/b.jpg", "images/a.jpg"), turns)
    text = PipelineRow.of((), turns)
    assert one.id == sample_id("images/a.jpg", "Q?")  # saved answers of one-page rows still pair
    assert len({one.id, two.id, swapped.id, text.id}) == 4
    assert (one.page, two.page, text.page) == ("a", "a+b", "")


def test_later_turn_pages_stay_in_their_turn():
    obj = {"conversations": [{"role": "user", "content": [{"type": "image", "path": "images/a.jpg"}, {"type": "text", "text": "Q1"}]},
                             {"role": "assistant", "content": "A1"},
                             {"role": "user", "content": [{"type": "image", "path": "images/b.jpg"}, {"type": "text", "text": "Q2"}]},
                             {"role": "assistant", "content": "A2"}]}
    row, problems = parse_row(obj, "f", 1)
    assert problems == [] and row.images == ("images/a.jpg", "images/b.jpg")
    messages = to_axolotl_row(row, "/d")["messages"]
    assert [[p.get("path") for p in m["content"] if p["type"] == "image"] for m in messages] == [["/d/images/a.jpg"], [], ["/d/images/b.jpg"], []]


def test_metadata_names_are_mapped_and_every_key_kept():
    obj = {**GOOD_LINE, "metadata": {"section_title": "Electrical", "page_no": 12, "type": "spec", "ocr_text": "Stator 0.2-0.3 ohm"}}
    names = {"section": "section_title", "page": "page_no", "content_type": "type", "page_text": "ocr_text"}
    row, problems = parse_row(obj, "f", 1, names)
    assert problems == []
    assert (row.metadata["section"], row.page, row.metadata["content_type"], row.metadata["page_text"]) == ("Electrical", "12", "spec", "Stator 0.2-0.3 ohm")
    assert row.metadata["section_title"] == "Electrical"
    unmapped, _ = parse_row(obj, "f", 1)
    assert "section" not in unmapped.metadata


def test_parse_row_accepts_text_parts_and_system():
    obj = {**GOOD_LINE, "conversations": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "Q"}]}, ANSWER]}
    row, problems = parse_row(obj, "f", 1)
    assert problems == [] and row.question == "Q" and row.answer == ANSWER["content"]


def test_read_pipeline_malformed_json_and_empty_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD_LINE) + "\n{not json\n\n" + json.dumps(GOOD_LINE) + "\n")
    rows, problems = read_pipeline(path)
    assert len(rows) == 2
    assert [(p.line, p.code) for p in problems] == [(2, "json")]

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    rows, problems = read_pipeline(empty)
    assert rows == [] and problems[0].code == "empty_file"


@pytest.mark.parametrize("image,inside", [("images/a.jpg", True), ("../secret.jpg", False), ("images/../../x.jpg", False), ("/etc/passwd", False)])
def test_resolve_image_stays_inside_root(tmp_path, image, inside):
    assert (resolve_image(tmp_path, image) is not None) == inside


def write_data(root: Path, rows: list[dict], val_rows: list[dict] | None = None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (200, 260), "white").save(root / "images" / "p.jpg")
    (root / "vlm_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "vlm_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (val_rows or [GOOD_LINE])))


def recipe_file(tmp: Path, data_extra: str = "") -> Path:
    path = tmp / "r.yaml"
    (tmp / "model").mkdir(exist_ok=True)
    (tmp / "model" / "config.json").write_text('{"model_type": "qwen2_vl"}')  # the family is read from it
    path.write_text(
        "name: bad-data\n"
        f"model: {{base: {tmp}/model}}\n"
        f"data: {{train: {tmp}/td/vlm_train.jsonl, val: {tmp}/td/vlm_val.jsonl, images_root: {tmp}/td{data_extra}}}\n"
        "compute: {gpu: cpu}\n"
    )
    return path


BAD_INPUT = [
    ("missing image", [{**GOOD_LINE, "image": "images/nope.jpg"}], "image 'images/nope.jpg' not found"),
    ("escaping path", [{**GOOD_LINE, "image": "../r.yaml"}], "points outside the images root"),
    ("undecodable", [{**GOOD_LINE, "image": "images/broken.jpg"}], "cannot be decoded"),
    ("bad role", [{**GOOD_LINE, "conversations": [{"role": "bot", "content": "Q"}, ANSWER]}], "role is 'bot'"),
    ("not alternating", [{**GOOD_LINE, "conversations": [USER_Q, USER_Q, ANSWER]}], "turns must alternate"),
    ("empty answer", [{**GOOD_LINE, "conversations": [USER_Q, {"role": "assistant", "content": ""}]}], "empty answer"),
    ("malformed json", None, "not valid JSON"),
    ("empty file", [], "the file has no rows"),
    ("not utf-8", "latin-1", "not UTF-8 text"),
    ("missing page of two", [{**GOOD_LINE, "image": None, "images": ["images/p.jpg", "images/gone.jpg"]}], "image 'images/gone.jpg' not found"),
    ("page of two outside", [{**GOOD_LINE, "image": None, "images": ["images/p.jpg", "../r.yaml"]}], "points outside the images root"),
    ("empty page list", [{**GOOD_LINE, "image": None, "images": []}], "'images' is an empty list"),
    ("image part without path", [{**GOOD_LINE, "image": None, "conversations": [{"role": "user", "content": [{"type": "image"}]}, ANSWER]}],
     "has no path"),
    ("too many pages", [{**GOOD_LINE, "image": None, "images": ["images/p.jpg"] * 5}], "over data.max_images_per_row 4"),
    ("ShareGPT row", [{"image": "images/p.jpg", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}],
     "ShareGPT shape"),
]


@pytest.mark.parametrize("case,rows,fragment", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_cli_bad_input_names_file_and_line_and_leaves_no_run(tmp_path, case, rows, fragment):
    data = tmp_path / "td"
    write_data(data, rows if isinstance(rows, list) else [])
    (data / "images" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    if rows is None:
        (data / "vlm_train.jsonl").write_text(json.dumps(GOOD_LINE) + "\n{\"image\": \n")
    if rows == "latin-1":
        (data / "vlm_train.jsonl").write_bytes(json.dumps(GOOD_LINE).encode() + b"\n" + json.dumps(GOOD_LINE).replace("torque", "Dreh\u00ffmoment").encode("latin-1") + b"\n")
    before = (data / "vlm_train.jsonl").read_bytes()
    runs = tmp_path / "runs"
    proc = run_cli("prepare", str(recipe_file(tmp_path)), "--runs-root", str(runs))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert fragment in proc.stderr
    assert "vlm_train.jsonl" in proc.stderr
    if case not in ("empty file",):
        assert "vlm_train.jsonl:" in proc.stderr  # file:line
    assert "Traceback" not in proc.stderr
    assert not runs.exists(), "no run directory for data that cannot train"
    assert (data / "vlm_train.jsonl").read_bytes() == before, "user data is never modified"


@pytest.mark.trainer  # the demo recipe names the tiny model folder
def test_prepare_converts_the_sample_manual(tmp_path, sample_dir):
    runs = tmp_path / "runs"
    proc = run_cli("prepare", str(ROOT / "recipes" / "tiny_cpu_demo.yaml"), "--runs-root", str(runs))
    assert proc.returncode == 0, proc.stderr
    run = next((runs / "tiny-cpu-demo").iterdir())
    train = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    source = (sample_dir / "training_data" / "vlm_train.jsonl").read_text().splitlines()
    assert len(train) == len(source)
    image = train[0]["messages"][0]["content"][0]
    assert image["type"] == "image" and Path(image["path"]).is_file()
    assert (run / "axolotl.yaml").is_file() and (run / "recipe.yaml").is_file()


def test_metadata_mapping_naming_a_key_no_row_has_is_refused(tmp_path):
    data = tmp_path / "td"
    write_data(data, [{**GOOD_LINE, "metadata": {"section_title": "Electrical", "page_no": 3}}])
    before = (data / "vlm_train.jsonl").read_bytes()
    recipe = recipe_file(tmp_path, ", metadata: {section: section_title, page: page_number}")
    proc = run_cli("prepare", str(recipe), "--runs-root", str(tmp_path / "runs"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "data.metadata.page names 'page_number', which no row's metadata has; the rows carry: page, page_no, section_title" in proc.stderr
    assert not (tmp_path / "runs").exists() and (data / "vlm_train.jsonl").read_bytes() == before


def test_check_says_once_when_most_rows_have_no_section_and_suggests_the_mapping(tmp_path):
    rows = [{**GOOD_LINE, "conversations": [{"role": "user", "content": f"Q{i}?"}, ANSWER],
             "metadata": {"section_title": "Electrical", "page_no": i, "type": "spec"}} for i in range(6)]
    write_data(tmp_path / "td", rows, [{**GOOD_LINE, "image": None}])
    proc = run_cli("check", str(recipe_file(tmp_path)), "--out", str(tmp_path / "pf"))
    report = json.loads((tmp_path / "pf" / "check.json").read_text())
    missing = [p for p in report["problems"] if p["code"] == "metadata_missing"]
    assert [p["severity"] for p in missing] == ["warning"] * 3  # section, page and content type: once each, not per row
    section = next(p["message"] for p in missing if "'section'" in p["message"])
    assert section.startswith("7 of 7 rows have no 'section'")
    assert "the rows carry: page, page_no, section_title, type" in section and "data.metadata: {section: section_title}" in section
    assert "pages are named by their image files" in next(p["message"] for p in missing if "'page'" in p["message"])
    assert proc.returncode == 0, proc.stdout  # a warning: the run can go on
    mapped = recipe_file(tmp_path, ", metadata: {section: section_title, content_type: type, page: page_no}")
    proc = run_cli("check", str(mapped), "--out", str(tmp_path / "pf2"))
    report = json.loads((tmp_path / "pf2" / "check.json").read_text())
    assert not [p for p in report["problems"] if p["code"] == "metadata_missing"] and report["counts"]["text_only_rows"] == 1


def test_null_metadata_and_symlinked_image_folder(tmp_path):
    real = tmp_path / "scans"
    real.mkdir()
    Image.new("RGB", (100, 140), "white").save(real / "p.jpg")
    root = tmp_path / "td"
    root.symlink_to(real, target_is_directory=True)  # the images root itself may be a symlink
    assert resolve_image(root, "p.jpg") == root / "p.jpg"
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "images").symlink_to(real, target_is_directory=True)  # a symlink in the root pointing out is not
    assert resolve_image(inside, "images/p.jpg") is None
    row, problems = parse_row({**GOOD_LINE, "metadata": None}, "f", 1)
    assert problems == [] and row.metadata == {}


@pytest.mark.parametrize("mapping", ["{section: section}", "{section: page, page: section}"])
def test_a_mapping_onto_the_same_or_swapped_names_is_no_error(tmp_path, mapping):
    write_data(tmp_path / "td", [{**GOOD_LINE, "metadata": {"section": "11 Engine", "page": "11-07", "content_type": "spec"}}],
               [{**GOOD_LINE, "metadata": {"section": "12 Electrical", "page": "12-01", "content_type": "spec"}}])
    proc = run_cli("check", str(recipe_file(tmp_path, f", metadata: {mapping}")), "--out", str(tmp_path / "pf"))
    report = json.loads((tmp_path / "pf" / "check.json").read_text())
    assert proc.returncode == 0 and not [p for p in report["problems"] if p["code"] in ("metadata_map", "metadata_missing")], report["problems"]
