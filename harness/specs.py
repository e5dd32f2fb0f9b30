"""Deterministic checks of answers that state service specifications.

Usage:
    from harness.specs import match
    result = match("Stage 1: 40 Nm, Stage 2: 90°", answer_text)
    print(result.passed, result.score, *result.details, sep="\\n")

Quantities are read from free text and normalised to one canonical unit per
family: torque N·m, angle degrees, length mm, pressure bar, volume litres,
temperature °C (°F is converted affinely; ranges convert end by end).

Tolerance: two values of a family agree when
    |a - b| <= max(ABS_TOL[family], REL_TOL[family] * max(|a|, |b|)).
REL_TOL is 2 % so rounded conversions pass (30 ft-lb = 40.7 N·m against
40 N·m); ABS_TOL keeps small values from needing absurd precision (0.5 N·m,
0.5°, 0.005 mm, 0.01 bar, 0.01 L). Temperature uses only its absolute
tolerance of 1 °C, because a percentage of a Celsius reading means nothing.

Ranges: an expected range matches only a range whose two ends both agree.
A single value inside an expected range is not a match (the details say so);
a range stated where a single value is expected is a wrong value.

Equivalents: "40 Nm (30 ft-lb)" or "40 Nm / 30 ft-lb" is one quantity; the
bracketed values are kept in Quantity.equivalents and either form may match,
so an answer need not repeat the equivalent, and a conversion rounded in the
manual ("10 Nm (7 ft-lb)") still matches an answer quoting either number.

Sequences: expected quantities are aligned to the answer greedily in order;
equal values (two 90° stages) each need their own match; a match found only
before the previous one makes order_ok False.

Hallucination: an answer quantity left unaligned whose family occurs in the
expected text is hallucinated, except a plain repetition of a value when the
expected text has just one quantity of that family (an answer may restate
"40 Nm" in a summary, but a fourth 90° stage is an error). Answer quantities
of families the expected text never mentions are reported but not judged.

passed = applicable and every expected quantity matched and order_ok and
nothing hallucinated.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Callable

CANONICAL_UNIT = {"torque": "N·m", "angle": "°", "length": "mm",
                  "pressure": "bar", "volume": "L", "temperature": "°C"}
REL_TOL = {"torque": 0.02, "angle": 0.02, "length": 0.02,
           "pressure": 0.02, "volume": 0.02, "temperature": 0.0}
ABS_TOL = {"torque": 0.5, "angle": 0.5, "length": 0.005,
           "pressure": 0.01, "volume": 0.01, "temperature": 1.0}

# Conversion factors, each from its definition.
LBF_IN_N = 4.4482216152605
INCH_IN_MM = 25.4
FOOT_IN_MM = 12 * INCH_IN_MM
PSI_IN_PA = 6894.757293168
PA_PER_BAR = 100_000.0
US_GALLON_IN_L = 231 * (INCH_IN_MM / 100) ** 3  # 231 in³; 1 in = 0.254 dm, 1 L = 1 dm³
IMPERIAL_GALLON_IN_L = 4.54609


@dataclass(frozen=True)
class Quantity:
    value: float  # canonical unit of the family; the low end of a range
    high: float | None  # high end of a range, None for a single value
    family: str
    raw: str
    stage: int | None = None
    equivalents: tuple[Quantity, ...] = ()  # restatements in other units


@dataclass(frozen=True)
class SpecMatch:
    passed: bool
    applicable: bool
    score: float
    details: list[str]
    missing: tuple[Quantity, ...]
    hallucinated: tuple[Quantity, ...]
    order_ok: bool


@dataclass(frozen=True)
class KeywordMatch:
    passed: bool
    recall: float
    found: tuple[str, ...]
    missing: tuple[str, ...]


def _times(factor: float) -> Callable[[float], float]:
    return lambda v: v * factor


_SP = r"[ \t\u00a0\u202f]*"
_END = r"(?![A-Za-zµμ³²])"  # a unit must not run on into a longer word
# Words after which "in" is the preposition, not inches: "40 in two stages".
_NOT_INCH = r"the|a|an|each|every|one|two|three|four|five|six|several|stages?|steps?|sequence|order|total|turns?|increments?|this|that|place|addition"

# First alternative that matches wins, so °C/°F precede the bare degree sign
# and in-lb precedes the inch.
_UNITS: list[tuple[str, str, Callable[[float], float]]] = [
    (rf"(?:[°˚]|(?i:deg(?:ree)?s?\.?)){_SP}(?:C|(?i:celsius|centigrade)){_END}", "temperature", _times(1.0)),
    (rf"(?:[°˚]|(?i:deg(?:ree)?s?\.?)){_SP}(?:F|(?i:fahrenheit)){_END}", "temperature", lambda v: (v - 32) * 5 / 9),
    (rf"(?i:n{_SP}[·⋅•.*-]?{_SP}m|newton[\s-]?met(?:er|re)s?){_END}", "torque", _times(1.0)),
    (rf"(?i:(?:in|inch)\.?[\s·⋅-]?(?:lbf?s?|pounds?)|(?:lbf?s?|pounds?)\.?[\s·⋅-]?(?:inch(?:es)?|in)){_END}",
     "torque", _times(LBF_IN_N * INCH_IN_MM / 1000)),
    (rf"(?i:(?:ft|foot|feet)\.?[\s·⋅-]?(?:lbf?s?|pounds?)|(?:lbf?s?|pounds?)\.?[\s·⋅-]?(?:ft|foot|feet)){_END}",
     "torque", _times(LBF_IN_N * FOOT_IN_MM / 1000)),
    (rf"(?:[°˚]|(?i:deg(?:ree)?s?){_END})", "angle", _times(1.0)),
    (rf"(?i:mm|millimet(?:er|re)s?){_END}", "length", _times(1.0)),
    (rf"(?i:cm|centimet(?:er|re)s?){_END}", "length", _times(10.0)),
    (rf"(?:[µμ]m|um|(?i:microns?|micromet(?:er|re)s?)){_END}", "length", _times(0.001)),
    (rf"(?:(?i:inch(?:es)?){_END}|(?<=\d)[\"″]|in{_END}(?!\s+(?i:{_NOT_INCH})\b))", "length", _times(INCH_IN_MM)),
    (rf"(?i:bars?){_END}", "pressure", _times(1.0)),
    (rf"(?i:psi){_END}", "pressure", _times(PSI_IN_PA / PA_PER_BAR)),
    (rf"(?i:kpa){_END}", "pressure", _times(1000 / PA_PER_BAR)),
    (rf"(?i:mpa){_END}", "pressure", _times(1e6 / PA_PER_BAR)),
    (rf"(?:(?i:ml|millilit(?:er|re)s?|cc)|cm³){_END}", "volume", _times(0.001)),
    (rf"(?i:lit(?:er|re)s?|l){_END}", "volume", _times(1.0)),
    (rf"(?i:(?:imp\.?|uk){_SP}(?:qts?|quarts?)){_END}", "volume", _times(IMPERIAL_GALLON_IN_L / 4)),
    (rf"(?i:(?:imp\.?|uk){_SP}(?:pts?|pints?)){_END}", "volume", _times(IMPERIAL_GALLON_IN_L / 8)),
    (rf"(?i:(?:us{_SP})?(?:gal(?:lon)?s?)){_END}", "volume", _times(US_GALLON_IN_L)),
    (rf"(?i:(?:us{_SP})?(?:qts?|quarts?)){_END}", "volume", _times(US_GALLON_IN_L / 4)),
    (rf"(?i:(?:us{_SP})?(?:pts?|pints?)){_END}", "volume", _times(US_GALLON_IN_L / 8)),
]


def _unit_alternation(prefix: str) -> str:
    return "|".join(f"(?P<{prefix}{i}>{pattern})" for i, (pattern, _, _) in enumerate(_UNITS))


# A decimal comma is taken only where it cannot be a thousands separator:
# "0,150", "4,5", "12,25" are decimals, "1,000" is a thousand.
_NUMBER = r"(?:0,\d+|[1-9]\d{0,2}(?:,\d{3})+(?!\d)|\d+(?:\.\d+|,\d{1,2}(?!\d))?|\.\d+)"
_RANGE_SEP = r"(?:\s*[-–—‒−]\s*|\s*(?:\.{2,3}|…)\s*|\s+to\s+|(?(between)\s+and\s+|(?!)))"
_QUANTITY_RE = re.compile(
    rf"(?:(?P<between>(?i:\bbetween))\s+)?"
    rf"(?<![\w.,])(?P<sign_a>[-−])?(?P<a>{_NUMBER})"
    rf"(?:(?:{_SP}(?P<unit_a>{_unit_alternation('ua')}))?"
    rf"(?:{_RANGE_SEP}(?P<sign_b>[-−])?(?P<b>{_NUMBER})|\s*(?:±|\+/-|\+-)\s*(?P<tol>{_NUMBER})))?"
    rf"{_SP}(?P<unit_b>{_unit_alternation('ub')})"
)

_STAGE_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
                "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_STAGE_RE = re.compile(
    r"\b(?:stage|step)\s*#?\s*(?P<num>\d+)\b"
    r"|\b(?P<ordinal>\d+)(?:st|nd|rd|th)\s+(?:stage|step)\b"
    r"|\b(?P<before>first|second|third|fourth|fifth|sixth)\s+(?:stage|step)\b"
    r"|\b(?:stage|step)\s+(?P<after>one|two|three|four|five|six)\b",
    re.IGNORECASE,
)
# What may sit in brackets besides the equivalent values themselves.
_EQUIVALENT_FILLER = re.compile(r"(?:[\s,;/=≈~*_]|\b(?:or|approx|approximately|about|ca)\b\.?)*", re.IGNORECASE)


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    quantity: Quantity


def _parse_number(text: str) -> float:
    if re.fullmatch(r"[1-9]\d{0,2}(?:,\d{3})+", text):
        return float(text.replace(",", ""))
    return float(text.replace(",", "."))


def _unit_of(m: re.Match, prefix: str) -> int:
    return next(i for i in range(len(_UNITS)) if m.group(f"{prefix}{i}") is not None)


def _make(text: str, start: int, end: int, unit: int, low: float, high: float | None) -> _Found:
    _, family, to_canonical = _UNITS[unit]
    if family != "temperature":
        # Only temperatures go below zero; a minus elsewhere is a stray dash.
        low, high = abs(low), None if high is None else abs(high)
    values = sorted(to_canonical(v) for v in ((low,) if high is None or high == low else (low, high)))
    top = values[1] if len(values) == 2 else None
    return _Found(start, end, Quantity(values[0], top, family, text[start:end].strip()))


def _from_match(m: re.Match, text: str) -> list[_Found]:
    def signed(name: str) -> float:
        number = _parse_number(m.group(name))
        return -number if m.group(f"sign_{name}") else number

    unit_b = _unit_of(m, "ub")
    start = m.start()
    if m.group("unit_a") is not None and _unit_of(m, "ua") != unit_b:
        # "40 Nm to 90°" or "0.15 mm - 0.006 in": two statements, not a range.
        first = _make(text, m.start("sign_a") if m.group("sign_a") else m.start("a"),
                      m.end("unit_a"), _unit_of(m, "ua"), signed("a"), None)
        second_start = m.start("sign_b") if m.group("sign_b") else m.start("b" if m.group("b") else "tol")
        second = _make(text, second_start, m.end(), unit_b,
                       signed("b") if m.group("b") else _parse_number(m.group("tol")), None)
        return [first, second]
    if m.group("b") is not None:
        return [_make(text, start, m.end(), unit_b, signed("a"), signed("b"))]
    if m.group("tol") is not None:
        tolerance = _parse_number(m.group("tol"))
        return [_make(text, start, m.end(), unit_b, signed("a") - tolerance, signed("a") + tolerance)]
    return [_make(text, start, m.end(), unit_b, signed("a"), None)]


def _equivalents_after(found: list[_Found], i: int, text: str) -> tuple[int, int]:
    """Index of the first quantity after found[i]'s equivalents, and where they end."""
    head = found[i]
    slash = re.compile(r"[\s*_]*[/=≈][\s*_]*").match(text, head.end)
    if slash and i + 1 < len(found) and found[i + 1].start == slash.end() \
            and found[i + 1].quantity.family == head.quantity.family:
        return i + 2, found[i + 1].end
    opening = re.compile(r"[\s*_]*([(\[])").match(text, head.end)  # markdown may sit between
    if not opening:
        return i + 1, head.end
    close = text.find(")" if opening.group(1) == "(" else "]", opening.end())
    j = i + 1
    while j < len(found) and close != -1 and found[j].end <= close:
        j += 1
    inside = found[i + 1:j]
    if not inside or any(f.quantity.family != head.quantity.family for f in inside):
        return i + 1, head.end
    if any(not _consistent(head.quantity, f.quantity) for f in inside):
        return i + 1, head.end  # "22 Nm (160 ft-lb)" states two different torques: both are checked
    leftover, cursor = [], opening.end()
    for f in inside:
        leftover.append(text[cursor:f.start])
        cursor = f.end
    leftover.append(text[cursor:close])
    if not _EQUIVALENT_FILLER.fullmatch("".join(leftover)):
        return i + 1, head.end  # "(then 60 Nm)" is a further instruction, not an equivalent
    return j, close + 1


def _stage_markers(text: str) -> list[tuple[int, int, int]]:
    markers = []
    for m in _STAGE_RE.finditer(text):
        number = m.group("num") or m.group("ordinal")
        word = m.group("before") or m.group("after")
        markers.append((m.start(), m.end(), int(number) if number else _STAGE_WORDS[word.lower()]))
    return markers


def extract_quantities(text: str) -> list[Quantity]:
    """Quantities with a recognised unit, in text order, equivalents folded in."""
    markers = _stage_markers(text)
    # Blank out stage labels so "Stage 1 - 40 Nm" is not read as the range 1-40 N·m.
    scan = list(text)
    for start, end, _ in markers:
        scan[start:end] = " " * (end - start)
    found = [f for m in _QUANTITY_RE.finditer("".join(scan)) for f in _from_match(m, text)]

    quantities, previous_end, i = [], 0, 0
    while i < len(found):
        head = found[i]
        next_i, end = _equivalents_after(found, i, text)
        equivalents = tuple(f.quantity for f in found[i + 1:next_i])
        # A stage label belongs to the quantity that follows it with no other quantity between.
        stage = None
        for marker_start, marker_end, number in markers:
            if previous_end <= marker_start and marker_end <= head.start:
                stage = number
        quantities.append(replace(head.quantity, raw=text[head.start:end].strip(),
                                  stage=stage, equivalents=equivalents))
        previous_end, i = end, next_i
    return quantities


EQUIVALENT_REL_TOL = 0.08  # a restatement rounded to whole units: 10 Nm is "7 ft-lb" (9.5 N·m, 5% off)


def _consistent(head: Quantity, other: Quantity) -> bool:
    """Whether a bracketed value restates the head in other units (within the rounding of whole units)."""
    def agree(x: float, y: float) -> bool:
        return abs(x - y) <= max(2 * ABS_TOL[head.family], EQUIVALENT_REL_TOL * max(abs(x), abs(y)))
    head_high = head.value if head.high is None else head.high
    other_high = other.value if other.high is None else other.high
    return agree(head.value, other.value) and agree(head_high, other_high)


def _close(x: float, y: float, family: str) -> bool:
    return abs(x - y) <= max(ABS_TOL[family], REL_TOL[family] * max(abs(x), abs(y)))


def _compare(expected: Quantity, actual: Quantity) -> str:
    """'match', 'inside' (a single value within an expected range) or 'miss'."""
    if expected.family != actual.family:
        return "miss"
    verdict = "miss"
    for e in (expected, *expected.equivalents):
        for a in (actual, *actual.equivalents):
            e_high = e.value if e.high is None else e.high
            a_high = a.value if a.high is None else a.high
            if _close(e.value, a.value, e.family) and _close(e_high, a_high, e.family):
                return "match"
            if e.high is not None and a.high is None and \
                    (e.value <= a.value <= e_high or _close(a.value, e.value, e.family) or _close(a.value, e_high, e.family)):
                verdict = "inside"
    return verdict


def _describe(q: Quantity) -> str:
    gap = "" if q.family == "angle" else " "
    span = f"{q.value:.4g}" if q.high is None else f"{q.value:.4g}–{q.high:.4g}"
    return f"{span}{gap}{CANONICAL_UNIT[q.family]}"


def _first(want: Quantity, given: list[Quantity], used: set[int], indices: range, verdict: str = "match") -> int | None:
    return next((j for j in indices if j not in used and _compare(want, given[j]) == verdict), None)


def match(expected: str, actual: str) -> SpecMatch:
    """Check that `actual` states the quantities of `expected`, in order, and no others."""
    wanted = extract_quantities(expected)
    if not wanted:
        return SpecMatch(False, False, 0.0, ["not applicable: the expected text states no quantity with a unit"],
                         (), (), True)
    given = extract_quantities(actual)

    assigned: dict[int, int] = {}
    out_of_order: set[int] = set()
    used: set[int] = set()
    cursor = 0
    for i, want in enumerate(wanted):
        j = _first(want, given, used, range(cursor, len(given)))
        if j is not None:
            cursor = j + 1
        else:
            j = _first(want, given, used, range(cursor))
            if j is None:
                continue
            out_of_order.add(i)
        assigned[i] = j
        used.add(j)

    details: list[str] = []
    missing: list[Quantity] = []
    for i, want in enumerate(wanted):
        label = f"expected {want.raw!r}" + (f" (stage {want.stage})" if want.stage else "")
        if i in assigned:
            got = given[assigned[i]]
            notes = " (out of order)" if i in out_of_order else ""
            if want.stage and got.stage and want.stage != got.stage:
                notes += f" (labelled stage {got.stage})"
            details.append(f"{label}: matched {got.raw!r}{notes}")
            continue
        missing.append(want)
        j = _first(want, given, used, range(len(given)), verdict="inside")
        if j is not None:
            used.add(j)  # accounted for: not invented, just too vague
            details.append(f"{label}: only the single value {given[j].raw!r} inside the range; the range is required")
            continue
        rivals = [j for j in range(len(given)) if j not in used and given[j].family == want.family]
        if rivals:
            nearest = min(rivals, key=lambda j: abs(given[j].value - want.value))
            details.append(f"{label}: wrong value, answer says {given[nearest].raw!r} "
                           f"({_describe(given[nearest])} vs {_describe(want)})")
        else:
            details.append(f"{label}: missing")

    families = [w.family for w in wanted]
    hallucinated: list[Quantity] = []
    for j, got in enumerate(given):
        if j in used:
            continue
        if got.family not in families:
            # An added angle stage or temperature is an unsupported specification, as dangerous as a wrong torque.
            hallucinated.append(got)
            details.append(f"hallucinated: {got.raw!r} ({_describe(got)}): the reference states no {got.family}")
        elif families.count(got.family) == 1 and any(_compare(w, got) == "match" for w in wanted):
            details.append(f"repeated: {got.raw!r}")
        else:
            hallucinated.append(got)
            details.append(f"hallucinated: {got.raw!r} ({_describe(got)}) matches no expected {got.family}")

    order = [assigned[i] for i in sorted(assigned)]
    order_ok = all(a < b for a, b in zip(order, order[1:]))
    passed = len(assigned) == len(wanted) and order_ok and not hallucinated
    return SpecMatch(passed, True, len(assigned) / len(wanted), details,
                     tuple(missing), tuple(hallucinated), order_ok)


def _normalise_words(text: str) -> str:
    # "Top-Dead-Centre", "top dead  centre" and "top_dead_centre" all become "top dead centre".
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    return " ".join(re.sub(r"[-‐‑‒–—_]+", " ", text).split())


def keyword_recall(keywords: list[str], actual: str, threshold: float = 1.0) -> KeywordMatch:
    """Fraction of `keywords` present in `actual` as whole words (a plural s/es is allowed).

    Blank keywords are ignored; with none left, recall is 1.0.
    """
    haystack = _normalise_words(actual)
    found: list[str] = []
    missing: list[str] = []
    for keyword in keywords:
        needle = _normalise_words(keyword)
        if not needle:
            continue
        present = re.search(rf"(?<!\w){re.escape(needle)}(?:e?s)?(?!\w)", haystack)
        (found if present else missing).append(keyword)
    counted = len(found) + len(missing)
    recall = len(found) / counted if counted else 1.0
    return KeywordMatch(recall >= threshold, recall, tuple(found), tuple(missing))
