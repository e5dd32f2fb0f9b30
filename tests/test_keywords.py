"""Keyword recall: whole words, whole numbers, number words; blank keywords grade nothing."""

import json

import pytest

from harness.general_probes import PROBES_FILE
from harness.keywords import keyword_recall, usable_keywords
from data_adapters.samples import probe_grading_problems


@pytest.mark.parametrize(
    "keywords, actual, passed, recall",
    [
        (["top dead centre"], "Set cylinder 1 to top-dead-centre.", True, 1.0),
        (["top-dead-centre"], "Set cylinder 1 to Top Dead  Centre.", True, 1.0),
        (["TDC", "timing mark"], "Align the Timing Mark at tdc.", True, 1.0),
        (["gasket"], "Replace the gaskets.", True, 1.0),
        (["gasket", "sealant"], "Replace the gasket.", False, 0.5),
        (["bar"], "Use the crossbar.", False, 0.0),
        (["camshaft"], "", False, 0.0),
        # A number inside a word keyword stands alone too.
        (["2.5 bar"], "Inflate to 12.5 bar.", False, 0.0),
        (["2.5 bar"], "Inflate to 2.5 bar.", True, 1.0),
        (["M8"], "Use an M8.5 tap.", False, 0.0),
    ],
)
def test_words_match_whole_words(keywords, actual, passed, recall):
    result = keyword_recall(keywords, actual)
    assert result.passed is passed
    assert result.recall == pytest.approx(recall)


@pytest.mark.parametrize(
    "keyword, actual, present",
    [
        ("3", "how many squares: 3", True),
        ("3", "3", True),
        ("3", "There are 3.", True),  # the sentence's full stop is not a decimal point
        ("3", "Squares (3) in a row.", True),
        ("3", "#3", True),
        ("3", "3.0", True),
        ("3", "three", True),
        ("3", "Three squares.", True),
        ("3", "3.5", False),  # the garbage answer that used to pass
        ("3", "how many squares: 3.5", False),
        ("3", "13", False),
        ("3", "1,300", False),
        ("3", "2,3", False),  # a decimal comma: 2.3
        ("3", "3/4 of them", False),
        ("3", "at 3:30", False),
        ("3", "an M3 screw", False),
        ("3", "-3", False),
        ("3", "the 3rd square", False),  # an ordinal is a position, not a count
        ("3", "the third square", False),
        ("3", "twenty three", False),  # number words in a row are one larger number
        ("3", "3 or 4", True),
        ("3", "2-3", True),  # a range states both ends
        ("10", "a 10mm socket", True),  # a unit may follow the number
        ("5", "five circles", True),
        ("5", "fifteen circles", False),
        ("1300", "1,300 km", True),
        ("1,300", "1300 km", True),
        ("2.5", "2,5 bar", True),
        ("2.5", "2.50 bar", True),
        ("2.5", "2.55 bar", False),
        ("0.417", "0,417", True),
        ("417", "0,417", False),
        ("-40", "down to −40 °C", True),
        ("three", "3 squares", True),  # a number word keyword is the number
        ("3rd", "the 3rd stage", True),  # an ordinal keyword is words: it asks for the ordinal
    ],
)
def test_numbers_match_whole_numbers(keyword, actual, present):
    assert keyword_recall([keyword], actual).passed is present


def test_found_and_missing_are_listed_and_the_threshold_is_honoured():
    result = keyword_recall(["gasket", "sealant"], "Replace the gasket.", threshold=0.5)
    assert result.passed
    assert result.found == ("gasket",)
    assert result.missing == ("sealant",)


@pytest.mark.parametrize("keywords", [[], [""], ["  ", "\t"], [5], None, "gasket"])
def test_nothing_to_look_for_is_not_a_pass(keywords):
    assert usable_keywords(keywords) == []
    with pytest.raises(ValueError, match="no keyword to look for"):
        keyword_recall(keywords, "")


def test_blank_and_non_text_keywords_are_ignored_beside_real_ones():
    result = keyword_recall(["", "gasket", 5], "Replace the gasket.")
    assert (result.passed, result.recall, result.found) == (True, 1.0, ("gasket",))


def test_the_shipped_general_probes_are_gradable_and_pass_their_own_answers():
    for line in PROBES_FILE.read_text(encoding="utf-8").splitlines():
        probe = json.loads(line)
        assert probe_grading_problems(probe) == [], probe["id"]
        if probe.get("expected_keywords"):
            page_text = " ".join(probe.get("lines") or [str(probe.get("count"))])
            assert keyword_recall(probe["expected_keywords"], page_text).passed, probe["id"]
