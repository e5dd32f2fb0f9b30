"""Tests for the synthetic sample manual and the shipped probe sets.

Usage: python -m pytest tests/test_sample_manual.py -q
"""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from vlm3.demo.sample_manual import generate_sample_manual, main

REPO_ROOT = Path(__file__).resolve().parents[1]
E30M3_PROBES = REPO_ROOT / "harness" / "probes" / "e30m3.jsonl"
PROBE_FIELDS = {"id", "category", "image", "question", "content_type"}
CONTENT_TYPES = {"specification", "torque_sequence", "procedure"}
VALUE_WITH_UNIT = re.compile(r"\d+(?:\.\d+)?(?:–\d+(?:\.\d+)?)? ?(?:Nm(?: \(\d+ ft-lb\))?|mm|L|bar|°C|°)")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def exchanges(row: dict) -> list[tuple[str, str]]:
    turns = row["conversations"]
    return [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)]


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("manual")
    generate_sample_manual(out_dir, seed=0)
    return out_dir


@pytest.fixture(scope="module")
def train_rows(manual) -> list[dict]:
    return read_jsonl(manual / "training_data" / "vlm_train.jsonl")


@pytest.fixture(scope="module")
def val_rows(manual) -> list[dict]:
    return read_jsonl(manual / "training_data" / "vlm_val.jsonl")


@pytest.fixture(scope="module")
def probes(manual) -> list[dict]:
    return read_jsonl(manual / "probes.jsonl")


def test_same_seed_gives_identical_files(tmp_path):
    first = generate_sample_manual(tmp_path / "a", seed=0)
    second = generate_sample_manual(tmp_path / "b", seed=0)
    assert first == second
    files_a, files_b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert files_a == files_b


def test_different_seeds_give_different_values(tmp_path):
    generate_sample_manual(tmp_path / "a", seed=0)
    generate_sample_manual(tmp_path / "b", seed=1)
    train = "training_data/vlm_train.jsonl"
    assert (tmp_path / "a" / train).read_bytes() != (tmp_path / "b" / train).read_bytes()


def test_counts_match_files(tmp_path):
    counts = generate_sample_manual(tmp_path, seed=0)
    assert counts["pages"] == len(list((tmp_path / "training_data" / "images").glob("*.jpg")))
    assert counts["train_rows"] == len(read_jsonl(tmp_path / "training_data" / "vlm_train.jsonl"))
    assert counts["val_rows"] == len(read_jsonl(tmp_path / "training_data" / "vlm_val.jsonl"))
    assert counts["probes"] == len(read_jsonl(tmp_path / "probes.jsonl"))
    assert 12 <= counts["pages"] <= 16
    assert 10 <= counts["probes"] <= 14


def test_main_writes_layout(tmp_path, capsys):
    assert main([str(tmp_path), "--seed", "3"]) == 0
    assert (tmp_path / "training_data" / "vlm_train.jsonl").is_file()
    assert (tmp_path / "training_data" / "vlm_val.jsonl").is_file()
    assert (tmp_path / "probes.jsonl").is_file()
    assert "pages: " in capsys.readouterr().out


def test_rows_follow_the_pipeline_schema(manual, train_rows, val_rows):
    rows = train_rows + val_rows
    metadata_types = {key: type(value) for key, value in rows[0]["metadata"].items()}
    assert {"content_type", "section", "page", "page_text"} <= metadata_types.keys()
    for row in rows:
        assert set(row) == {"image", "conversations", "metadata"}
        turns = row["conversations"]
        assert len(turns) >= 2 and len(turns) % 2 == 0
        for index, turn in enumerate(turns):
            assert set(turn) == {"role", "content"}
            assert turn["role"] == ("user" if index % 2 == 0 else "assistant")
            assert isinstance(turn["content"], str) and turn["content"].strip()
        # Hugging Face `datasets` needs one schema for the nested metadata.
        assert {key: type(value) for key, value in row["metadata"].items()} == metadata_types
        assert row["metadata"]["content_type"] in CONTENT_TYPES
        assert row["image"] == f"images/{row['metadata']['page']}.jpg"
        with Image.open(manual / "training_data" / row["image"]) as image:
            image.verify()


def test_images_are_jpeg_pages(manual):
    for path in sorted((manual / "training_data" / "images").glob("*.jpg")):
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (850, 1100)


def test_rows_per_page_and_multi_turn_share(train_rows, val_rows):
    rows = train_rows + val_rows
    rows_per_page = {}
    for row in rows:
        rows_per_page[row["image"]] = rows_per_page.get(row["image"], 0) + 1
    assert all(4 <= count <= 8 for count in rows_per_page.values())
    multi_turn = sum(len(row["conversations"]) > 2 for row in rows)
    assert len(rows) / 10 <= multi_turn <= len(rows) / 4


def test_answers_are_short(train_rows, val_rows):
    for row in train_rows + val_rows:
        for _, answer in exchanges(row):
            assert len(answer.split()) <= 40, answer


def test_answers_quote_values_as_printed(train_rows, val_rows):
    """Every value with a unit in an answer is printed the same way on its page."""
    for row in train_rows + val_rows:
        for _, answer in exchanges(row):
            for value in VALUE_WITH_UNIT.findall(answer):
                assert value in row["metadata"]["page_text"], (value, row["metadata"]["page"])


def test_split_by_page_without_overlap(train_rows, val_rows):
    train_pages = {row["metadata"]["page"] for row in train_rows}
    val_pages = {row["metadata"]["page"] for row in val_rows}
    assert not train_pages & val_pages
    assert 9 <= len(train_pages) <= 12
    assert 2 <= len(val_pages) <= 4


def test_probes_are_well_formed(manual, probes):
    assert len({probe["id"] for probe in probes}) == len(probes)
    for probe in probes:
        assert PROBE_FIELDS <= probe.keys()
        assert ("expected_answer" in probe) != ("expected_keywords" in probe)
        assert probe["source"] in {"train_page", "val_page"}
        assert probe["content_type"] in CONTENT_TYPES
        assert (manual / "training_data" / probe["image"]).is_file()
        if "expected_keywords" in probe:
            assert probe["expected_keywords"] and all(isinstance(k, str) and k for k in probe["expected_keywords"])


def test_probes_come_from_the_right_split(probes, train_rows, val_rows):
    images_by_source = {
        "train_page": {row["image"] for row in train_rows},
        "val_page": {row["image"] for row in val_rows},
    }
    for probe in probes:
        assert probe["image"] in images_by_source[probe["source"]]
    assert sum(probe["source"] == "val_page" for probe in probes) >= 2


def test_most_probes_repeat_a_training_exchange(probes, train_rows):
    """The demo measures memorisation: a probe must be a verbatim training Q&A."""
    training_exchanges = {(row["image"], question, answer) for row in train_rows for question, answer in exchanges(row)}
    training_questions = {(row["image"], question) for row in train_rows for question, _ in exchanges(row)}
    memorised = [
        probe for probe in probes
        if (probe["image"], probe["question"], probe.get("expected_answer")) in training_exchanges
    ]
    assert len(memorised) >= 8
    for probe in probes:
        if probe["source"] == "train_page":
            assert (probe["image"], probe["question"]) in training_questions


def test_e30m3_probes_parse():
    probes = read_jsonl(E30M3_PROBES)
    assert 20 <= len(probes) <= 30
    assert len({probe["id"] for probe in probes}) == len(probes)
    for probe in probes:
        assert PROBE_FIELDS <= probe.keys()
        assert ("expected_answer" in probe) != ("expected_keywords" in probe)
        assert probe["content_type"] in CONTENT_TYPES
        assert probe["image"].startswith("images/") and probe["image"].endswith(".jpg")
