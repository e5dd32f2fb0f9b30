"""Data warnings grouped by cause, with counts and the first few places, never silently cut short.

Usage:
    .venv/bin/python -m pytest tests/test_warnings_grouped.py -q
"""

from __future__ import annotations

import json

from data_adapters.checks import ProblemGroup, group_problems
from data_adapters.pipeline import Problem


def warning(line, message, code="image_size"):
    return Problem("td/vlm_train.jsonl", line, message, "warning", code)


def test_one_image_shown_by_six_rows_is_one_warning_with_its_count_and_first_places():
    problems = [warning(line, "image 'images/p.png' is 20x30: is this a page image?") for line in (3, 7, 9, 12, 15, 20)]
    [group] = group_problems(problems)
    assert (group.count, group.places) == (6, ("td/vlm_train.jsonl:3", "td/vlm_train.jsonl:7", "td/vlm_train.jsonl:9"))
    assert str(group) == ("image 'images/p.png' is 20x30: is this a page image? (6 places: td/vlm_train.jsonl:3, "
                          "td/vlm_train.jsonl:7, td/vlm_train.jsonl:9, ... 3 more)")


def test_row_causes_group_rows_whose_messages_differ_and_a_single_warning_reads_as_before():
    long_rows = [warning(line, f"~{600 + line} tokens is over train.sequence_len 512 (dropped)", "too_long") for line in (2, 4, 8, 16)]
    lone = warning(5, "duplicate of line 1 (same pages and question)", "duplicate")
    groups = group_problems([long_rows[0], lone, *long_rows[1:]])
    assert [(g.code, g.count) for g in groups] == [("too_long", 4), ("duplicate", 1)]
    assert str(groups[0]) == ("rows over train.sequence_len (4 places: td/vlm_train.jsonl:2, td/vlm_train.jsonl:4, td/vlm_train.jsonl:8, "
                              "... 1 more); first: ~602 tokens is over train.sequence_len 512 (dropped)")
    assert str(groups[1]) == str(lone) == "td/vlm_train.jsonl:5: duplicate of line 1 (same pages and question)"
    # Nothing is lost: every problem is counted in exactly one group.
    assert sum(g.count for g in groups) == 5


def test_train_prints_every_cause_up_to_ten_and_counts_the_rest(capsys, tmp_path):
    from vlm3.cli.train import SHOWN_WARNING_GROUPS, print_data_warnings

    problems = [warning(line, f"cause number {cause}", f"code{cause}") for cause in range(16) for line in range(1, cause + 2)]
    report = {"warnings": [str(p) for p in problems], "warning_groups": [g.to_dict() for g in group_problems(problems)]}
    print_data_warnings(report, tmp_path / "data_report.json")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == SHOWN_WARNING_GROUPS + 1 == 11
    assert lines[0] == "  warning: td/vlm_train.jsonl:1: cause number 0"
    assert lines[9].startswith("  warning: cause number 9 (10 places: td/vlm_train.jsonl:1, ")
    hidden = sum(range(11, 17))  # causes 10..15 hold 11..16 warnings each
    assert lines[10] == f"  ... 6 more cause(s) ({hidden} warning(s)) in {tmp_path / 'data_report.json'}"


def test_an_old_data_report_without_groups_is_printed_whole(capsys, tmp_path):
    from vlm3.cli.train import print_data_warnings

    print_data_warnings({"warnings": ["a.jsonl:1: one", "a.jsonl:2: two"]}, tmp_path / "data_report.json")
    assert capsys.readouterr().out.splitlines() == ["  warning: a.jsonl:1: one", "  warning: a.jsonl:2: two"]


def test_prepare_writes_every_warning_and_the_groups_with_counts(tmp_path):
    """Six rows on one tiny transparent PNG and three duplicate rows: data_report.json keeps all nine warnings at
    their lines, and groups them into two causes."""
    from data_adapters.convert import prepare_dataset
    from tests.test_preflight import dataset, line

    rows = [line("images/dot.png", conversations=[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "A."}])
            for i in range(6)]
    root, recipe = dataset(tmp_path, rows + [line(), line(), line()], sizes={"dot.png": (20, 30)})
    report = prepare_dataset(recipe, tmp_path / "out").to_dict()
    assert [json.loads(json.dumps(g))["code"] for g in report["warning_groups"]] == ["image_size", "duplicate"]
    sizes, duplicates = report["warning_groups"]
    assert sizes["count"] == 1 and sizes["places"] == [f"{recipe.data.train}:1"]  # once per image, not per row
    assert duplicates["count"] == 2 and duplicates["cause"].startswith("rows that duplicate an earlier row")
    assert len(report["warnings"]) == 3 and sum(g["count"] for g in report["warning_groups"]) == 3
    assert str(ProblemGroup(**{k: (tuple(v) if k == "places" else v) for k, v in duplicates.items()})).startswith(
        "rows that duplicate an earlier row (same pages and question) (2 places: ")


def test_the_data_version_is_the_datas_not_the_checkouts(tmp_path):
    from data_adapters.convert import data_version

    def write(folder, image_dir, answer):
        folder.mkdir(parents=True, exist_ok=True)
        row = {"messages": [{"role": "user", "content": [{"type": "image", "path": f"{image_dir}/images/p.jpg"}]},
                            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}
        (folder / "train.jsonl").write_text(json.dumps(row) + "\n")
        (folder / "val.jsonl").write_text("")
        return data_version([folder / "train.jsonl", folder / "val.jsonl"], image_dir)

    here = write(tmp_path / "a", "/home/me/vlm3/training_data", "40 Nm.")
    assert here == write(tmp_path / "b", "/data/training_data", "40 Nm.") and len(here) == 10
    assert here != write(tmp_path / "c", "/data/training_data", "45 Nm.")


def error(line, message, code="bad_image"):
    return Problem("td/vlm_train.jsonl", line, message, "error", code)


def test_check_prints_problems_grouped_by_cause_and_counts_the_causes_it_does_not_show(tmp_path):
    from vlm3.cli.preflight import problem_lines

    missing = [error(line, "image 'images/p9.jpg' does not exist") for line in range(1, 41)]
    others = [warning(line, f"cause number {cause}", f"code{cause}") for cause in range(3) for line in (1, 2)]
    lines = problem_lines([*missing, *others], show=2, report_file=tmp_path / "check.json")
    assert lines == [
        "  error: image 'images/p9.jpg' does not exist (40 places: td/vlm_train.jsonl:1, td/vlm_train.jsonl:2, "
        "td/vlm_train.jsonl:3, ... 37 more)",
        "  warning: cause number 0 (2 places: td/vlm_train.jsonl:1, td/vlm_train.jsonl:2)",
        f"  ... 2 more cause(s) (4 problem(s)) in {tmp_path / 'check.json'}",
    ]


def test_a_data_error_lists_its_problems_by_cause_and_counts_past_its_limit():
    from data_adapters.pipeline import DataError

    missing = [error(line, "image 'images/p9.jpg' does not exist") for line in range(1, 41)]
    lone = error(50, "not JSON: Expecting value", "json")
    text = str(DataError([*missing, lone]))
    assert text.splitlines() == [
        "41 problem(s) in the data:",
        "  image 'images/p9.jpg' does not exist (40 places: td/vlm_train.jsonl:1, td/vlm_train.jsonl:2, td/vlm_train.jsonl:3, ... 37 more)",
        "  td/vlm_train.jsonl:50: not JSON: Expecting value",
    ]
    many = DataError([error(line, f"cause {line}", f"c{line}") for line in range(1, 36)], limit=30)
    assert str(many).splitlines()[-1] == "  ... and 5 more cause(s) (5 problem(s))"
    assert len(many.problems) == 35, "every problem is kept on the exception"
