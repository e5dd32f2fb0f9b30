"""Keyword recall: does an answer state the words and numbers a probe asks for?

Usage:
    from harness.keywords import keyword_recall
    result = keyword_recall(["3"], "There are three squares.")
    print(result.passed, result.recall, result.found, result.missing)

Words. A keyword of words matches whole words, case and Unicode forms folded, hyphens,
dashes and underscores read as spaces ("top-dead-centre" is "top dead centre"); a plural s
or es is allowed ("gasket" matches "gaskets"). A number inside a word keyword must stand
alone too: "2.5 bar" is not in "12.5 bar", "M8" is not in "M8.5".

Numbers. A keyword that is one number ("3", "2.5", "1,300", "-40") matches only an answer
that states that whole number, compared by value ("2.50" is "2.5"):
- "3" matches "3", "3.", "(3)", "#3", "3 squares", "3x", "10mm" for "10" (a unit may follow),
  "3.0", and the words zero to twenty standing alone ("three", "Three"; "twenty one" is not read).
- "3" does not match "3.5", "13", "1,300", "3/4", "3:30", "-3" ("6" is not in "M6"), nor an ordinal: "3rd" and
  "third" are a position, not a count (write the keyword "3rd" to ask for the ordinal).
- In the answer a comma followed by three digits groups thousands ("1,300" is 1300; "0,417" is a
  decimal), any other comma between digits is a decimal comma ("2,5" is 2.5); a point is always
  decimal. A text like "1.2.3" is no number at all. Spaces never group digits ("1 300" is 1 and 300).
- A keyword that is a number word ("three") is read as that number, so the answer's "3" counts.

Keywords that are not text or are blank are ignored: `vlm3 check` refuses them in a probes
file (data_adapters.samples.probe_grading_problems); with none left there is nothing to grade and
keyword_recall raises ValueError (harness.score never asks: it grades no keyword then).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")
# One number as written: digits, with points or commas between digits, and the letters right after it (a unit,
# or an ordinal's suffix). Not a number when it is part of a word ("M6"), of a fraction ("3/4") or of a time or
# ratio ("3:30"); a sign counts when nothing stands before it ("-40", not the "-" of "2-3").
NUMBER_TOKEN = re.compile(r"(?<![\w.])(?<!\d[,/⁄:])([-−]?)(\d+(?:[.,]\d+)*)(?!\d|[.,/⁄:]\d)([^\W\d_]*)")
# Number words in a row ("twenty one", "one hundred") are one larger number, which is not read: only a lone word counts.
_NUMBER_WORD = rf"(?:{'|'.join(NUMBER_WORDS)}|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand)"
SPELLED_NUMBERS = re.compile(rf"(?<!\w){_NUMBER_WORD}(?:\s+(?:and\s+)?{_NUMBER_WORD})*(?!\w)")


@dataclass(frozen=True)
class KeywordMatch:
    passed: bool
    recall: float
    found: tuple[str, ...]
    missing: tuple[str, ...]


def usable_keywords(keywords: Any) -> list[str]:
    """The keywords of a list that can be looked for: text that is not blank; none from anything but a list."""
    if not isinstance(keywords, (list, tuple)):
        return []
    return [k for k in keywords if isinstance(k, str) and k.strip()]


def normalise_words(text: str) -> str:
    # "Top-Dead-Centre", "top dead  centre" and "top_dead_centre" all become "top dead centre".
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    return " ".join(re.sub(r"[-‐‑‒–—_]+", " ", text).split())


def read_number(text: str) -> Decimal | None:
    """The value of one number as written ("1,300", "2,5", "-40"); None when the text is not one number."""
    sign, digits = (-1, text[1:]) if text[:1] in "-−" else (1, text)
    if re.fullmatch(r"[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?", digits):
        value = Decimal(digits.replace(",", ""))
    elif re.fullmatch(r"\d+(?:\.\d+)?", digits):
        value = Decimal(digits)
    elif re.fullmatch(r"\d+,\d+", digits):
        value = Decimal(digits.replace(",", "."))
    else:
        return None
    return sign * value


def keyword_number(keyword: str) -> Decimal | None:
    """The number a keyword asks for ("3", "2.5", "three"); None for a keyword of words."""
    text = unicodedata.normalize("NFKC", keyword).strip().casefold()
    if text in NUMBER_WORDS:
        return Decimal(NUMBER_WORDS.index(text))
    return read_number(text)


def numbers_in(text: str) -> set[Decimal]:
    """Every whole number the text states, in digits or as a word from zero to twenty; ordinals are not counts."""
    text = unicodedata.normalize("NFKC", text).casefold()
    found: set[Decimal] = set()
    for sign, digits, letters in NUMBER_TOKEN.findall(text):
        value = read_number(sign + digits)
        if value is not None and letters not in ORDINAL_SUFFIXES:
            found.add(value)
    found |= {Decimal(NUMBER_WORDS.index(run)) for run in SPELLED_NUMBERS.findall(normalise_words(text)) if run in NUMBER_WORDS}
    return found


def has_words(needle: str, haystack: str) -> bool:
    """`needle` as whole words of `haystack` (both normalised), a plural s/es allowed; a number in it stands alone."""
    return re.search(rf"(?<!\w)(?<!\d[.,]){re.escape(needle)}(?:e?s)?(?!\w)(?![.,]\d)", haystack) is not None


def keyword_recall(keywords: list[str], actual: str, threshold: float = 1.0) -> KeywordMatch:
    """Fraction of `keywords` the answer states: words as whole words, numbers as whole numbers (module docstring)."""
    wanted = usable_keywords(keywords)
    if not wanted:
        raise ValueError("no keyword to look for: every keyword is blank or not text")
    actual = actual if isinstance(actual, str) else ""
    haystack = normalise_words(actual)
    numbers = numbers_in(actual)
    found: list[str] = []
    missing: list[str] = []
    for keyword in wanted:
        number = keyword_number(keyword)
        present = number in numbers if number is not None else has_words(normalise_words(keyword), haystack)
        (found if present else missing).append(keyword)
    recall = len(found) / len(wanted)
    return KeywordMatch(recall >= threshold, recall, tuple(found), tuple(missing))
