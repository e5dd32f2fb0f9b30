"""The spec checker: extraction, conversions from pint, the labelled corpus, bounds on any input."""

import json
import random
import time
from pathlib import Path

import pytest

from harness.specs import (
    MAX_NUMBERS,
    MAX_TEXT_CHARS,
    Quantity,
    SpecMatch,
    consistent_equivalent,
    convert,
    extract_quantities,
    match,
)

CASES_PATH = Path(__file__).parent / "data" / "spec_cases.jsonl"
CASES = [json.loads(line) for line in CASES_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize(
    "text, family, value, high",
    [
        ("Tighten to 40 Nm.", "torque", 40.0, None),
        ("40 N·m", "torque", 40.0, None),
        ("40 N m", "torque", 40.0, None),
        ("40 N-m", "torque", 40.0, None),
        ("30 ft-lb", "torque", 40.6745, None),
        ("30 ft lb", "torque", 40.6745, None),
        ("30 ft-lbs", "torque", 40.6745, None),
        ("30 lb-ft", "torque", 40.6745, None),
        ("30 lbf·ft", "torque", 40.6745, None),
        ("22 in-lb", "torque", 2.4857, None),
        ("22 in-lbs", "torque", 2.4857, None),
        ("22 lb-in", "torque", 2.4857, None),
        ("90°", "angle", 90.0, None),
        ("90 deg", "angle", 90.0, None),
        ("turn 90 degrees clockwise", "angle", 90.0, None),
        ("80 °C", "temperature", 80.0, None),
        ("80°C", "temperature", 80.0, None),
        ("80 deg C", "temperature", 80.0, None),
        ("176 °F", "temperature", 80.0, None),
        ("-10 °C", "temperature", -10.0, None),
        ("0.15 mm", "length", 0.15, None),
        ("0.006 in", "length", 0.1524, None),
        ("0.5 inch", "length", 12.7, None),
        ("2 inches", "length", 50.8, None),
        ('0.5"', "length", 12.7, None),
        ("25 µm", "length", 0.025, None),
        ("0.15–0.20 mm", "length", 0.15, 0.20),
        ("0.15-0.20 mm", "length", 0.15, 0.20),
        ("0.15 to 0.20 mm", "length", 0.15, 0.20),
        ("0.15 mm to 0.20 mm", "length", 0.15, 0.20),
        ("between 0.15 and 0.20 mm", "length", 0.15, 0.20),
        ("0.15…0.20 mm", "length", 0.15, 0.20),
        ("0.006–0.008 in", "length", 0.1524, 0.2032),
        ("2.5 bar", "pressure", 2.5, None),
        ("36 psi", "pressure", 2.48211, None),
        ("250 kPa", "pressure", 2.5, None),
        ("0.25 MPa", "pressure", 2.5, None),
        ("1 000 psi", "pressure", 68.9476, None),
        ("4.5 kgm", "torque", 44.1299, None),
        ("4.5 mkg", "torque", 44.1299, None),
        ("4.5 kpm", "torque", 44.1299, None),
        ("4.5 kgf·m", "torque", 44.1299, None),
        ("4.5 daN·m", "torque", 45.0, None),
        ("2.0 kg/cm²", "pressure", 1.96133, None),
        ("2.0 kp/cm2", "pressure", 1.96133, None),
        ("4.5 ltr", "volume", 4.5, None),
        ("4.5 ℓ", "volume", 4.5, None),
        ("250 cc", "volume", 0.25, None),
        ("250 cm³", "volume", 0.25, None),
        ("80 ℃", "temperature", 80.0, None),
        ("80º C", "temperature", 80.0, None),
        ("176F", "temperature", 80.0, None),
        ("30 ft/lbs", "torque", 40.6745, None),
        ("30 ft.lbs.", "torque", 40.6745, None),
        ("3/16 in", "length", 4.7625, None),
        ("2 1/2 in", "length", 63.5, None),
        ("⅜ in", "length", 9.525, None),
        ("sixty degrees", "angle", 60.0, None),
        ("one hundred and twenty degrees", "angle", 120.0, None),
        ("a quarter turn", "angle", 90.0, None),
        ("half a turn", "angle", 180.0, None),
        ("1/4 turn", "angle", 90.0, None),
        ("1 200 kPa", "pressure", 12.0, None),
        ("0.10 ~ 0.15 mm", "length", 0.10, 0.15),
        ("10 Nm +/- 1", "torque", 9.0, 11.0),
        ("22.990 mm +0.02/-0.01", "length", 22.98, 23.01),
        ("850 ± 50 rpm", "speed", 800.0, 900.0),
        ("18 in Hg", "pressure", 0.609553, None),
        ("4.5 L", "volume", 4.5, None),
        ("4.5 l", "volume", 4.5, None),
        ("4 litres", "volume", 4.0, None),
        ("4 liters", "volume", 4.0, None),
        ("500 ml", "volume", 0.5, None),
        ("4.8 US qt", "volume", 4.54249, None),
        ("4.8 quarts", "volume", 4.54249, None),
        ("1 US pt", "volume", 0.473176, None),
        ("2 pints", "volume", 0.946353, None),
        ("0,15 mm", "length", 0.15, None),
        ("4,5 L", "volume", 4.5, None),
        ("60 ± 5 Nm", "torque", 55.0, 65.0),
        ("M10 bolt: 45 Nm", "torque", 45.0, None),
        ("Stage 1 - 40 Nm", "torque", 40.0, None),
        # Units read by their context, cubed lengths, kelvin, kitchen measures, thousands written "k".
        ("Caster 7°30' ± 30'", "angle", 7.0, 8.0),
        ("toe 0°15′", "angle", 0.25, None),
        ("12° 30′ 15″", "angle", 12.504167, None),
        ("2.5 arcmin", "angle", 2.5 / 60, None),
        ('16″ rim', "length", 406.4, None),
        ("−40° on the Fahrenheit scale", "temperature", -40.0, None),
        ("-273.15° on the Celsius scale", "temperature", -273.15, None),
        ("398.15 kelvin", "temperature", 125.0, None),
        ("colour temperature 4300 K", "temperature", 4026.85, None),
        ("4km^3", "volume", 4e12, None),
        ("4 cubic kilometers", "volume", 4e12, None),
        ("4 km cubed", "volume", 4e12, None),
        ("0.05 m³", "volume", 50.0, None),
        ("1.5 cu ft", "volume", 42.4753, None),
        ("⅓ cup of sauce", "volume", 0.0788627, None),
        ("½ tbsp", "volume", 0.00739338, None),
        ("2 tsp", "volume", 0.00985784, None),
        ("a size of 2.1 pm", "length", 2.1e-9, None),
        ("2.123 am", "length", 2.123e-15, None),
        ("0.5k miles", "distance", 804.672, None),
        ("every 100K km", "distance", 100000.0, None),
    ],
)
def test_extract_single_quantity(text, family, value, high):
    [quantity] = extract_quantities(text)
    assert quantity.family == family
    assert quantity.value == pytest.approx(value, rel=1e-4)
    assert quantity.high == (None if high is None else pytest.approx(high, rel=1e-4))


@pytest.mark.parametrize(
    "text",
    [
        "Replace the gasket and clean the mating surfaces.",
        "Tighten in two stages.",
        "Torque to 40 in two stages",
        "Use 2 bolts and 4 washers.",
        "Apply the M10 x 1.25 thread.",
        # Symbols that mean something else here.
        "Fit a 6' hose.",  # feet: not read, and not minutes of arc
        "The 1990's models",
        "Set the dial to '5'.",
        'He said "use bolt 101" then left.',  # a closing quotation mark, not inches
        "Finish at 2 pm.",
        "Start at 2.30 pm or 11:45 am.",
        "Spray 2K clear coat.",
        "Fit a 10K resistor.",
        "Fit the 4 M3 screws.",
        "Replace the 2 cups.",
        "The 1st, 2nd, 3rd and 4th cylinders; the 1990s",
    ],
)
def test_extract_finds_nothing_without_units(text):
    assert extract_quantities(text) == []


@pytest.mark.parametrize(
    "text, stages",
    [
        ("Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°", [1, 2, 3]),
        ("1st stage 40 Nm; 2nd stage 90°", [1, 2]),
        ("First stage: 40 Nm. Second stage: turn a further 90°.", [1, 2]),
        ("Step 1 - 30 Nm, then 90°", [1, None]),
        ("Stage 1: 30 Nm, Stage 2: 60 Nm, Stage 3: 90°", [1, 2, 3]),
        ("40 Nm then 90°", [None, None]),
    ],
)
def test_extract_stage_numbers(text, stages):
    assert [q.stage for q in extract_quantities(text)] == stages


@pytest.mark.parametrize(
    "text, raw, equivalent_count",
    [
        ("40 Nm (30 ft-lb)", "40 Nm (30 ft-lb)", 1),
        ("40 Nm (approx. 30 ft-lb)", "40 Nm (approx. 30 ft-lb)", 1),
        ("40 Nm or 30 ft-lb", "40 Nm or 30 ft-lb", 1),
        ("40 Nm / 30 ft-lb", "40 Nm / 30 ft-lb", 1),
        ("Torque: **40 Nm** (30 lb-ft)", "40 Nm** (30 lb-ft)", 1),
        ("0.15–0.20 mm (0.006–0.008 in)", "0.15–0.20 mm (0.006–0.008 in)", 1),
        ("4.5 L (4.8 US qt, 4.0 Imp qt)", "4.5 L (4.8 US qt, 4.0 Imp qt)", 2),
    ],
)
def test_extract_folds_equivalents_into_one_quantity(text, raw, equivalent_count):
    [quantity] = extract_quantities(text)
    assert quantity.raw == raw
    assert len(quantity.equivalents) == equivalent_count


@pytest.mark.parametrize(
    "text, count",
    [
        ("Stage 1: 20 Nm (then 40 Nm)", 2),  # a further instruction, not an equivalent
        ("40 Nm (90°)", 2),  # different family
        ("40 Nm to 90°", 2),  # not a range across families
    ],
)
def test_extract_keeps_brackets_that_are_not_equivalents(text, count):
    assert len(extract_quantities(text)) == count


def test_extract_returns_quantities_in_text_order():
    quantities = extract_quantities("Drain 4.5 L, torque the plug to 25 Nm, then check at 80 °C.")
    assert [q.family for q in quantities] == ["volume", "torque", "temperature"]
    assert isinstance(quantities[0], Quantity)


def test_a_comma_and_three_digits_is_thousands_unless_a_decimal_comma_is_written():
    [thousands] = extract_quantities("1,000 psi")
    assert [r[0] for r in thousands.readings] == [1000.0]
    [decimal] = extract_quantities("1,000 psi; 0,5 bar")[:1]
    assert [r[0] for r in decimal.readings] == [1.0]
    [thousands] = extract_quantities("1,000 psi; 0.5 bar")[:1]
    assert [r[0] for r in thousands.readings] == [1000.0]
    # The notation passed in (the reference's) decides only where the text itself does not say.
    # An answer that does not say, read in a reference's decimal commas, may mean either: both readings are kept
    # ("1,750 rpm" against "20,4 daN.m à 1750 tr/min").
    [decimal] = extract_quantities("22,990 mm", decimal_comma=True)
    assert [r[0] for r in decimal.readings] == [22.99, 22990.0]
    [thousands] = extract_quantities("22,990 mm and 0.5 bar", decimal_comma=True)[:1]
    assert [r[0] for r in thousands.readings] == [22990.0]


@pytest.mark.parametrize(
    "expected, actual, passed",
    [
        ("Journal 22,990 mm; clearance 0,025 mm", "22,990 mm and 0,025 mm", True),  # the reference writes commas
        ("Journal 22,990 mm; clearance 0,025 mm", "22.990 mm and 0.025 mm", True),
        ("Journal 22.990 mm", "22,990 mm", False),  # the reference writes points: 22990 mm
        ("Fuel pressure 1200 kPa", "1,200 kPa", True),  # nobody says: thousands
        ("Clearance 0,25 mm; pressure 1 200 kPa", "0.25 mm; 1,200 kPa", True),  # the answer's own points first
        ("Clearance 0,25 mm; pressure 1 200 kPa", "0,25 mm; 1,200 kPa", False),  # its own commas: 1.2 kPa
    ],
)
def test_the_reference_sets_the_decimal_notation_of_an_answer_that_does_not_say(expected, actual, passed):
    assert match(expected, actual).passed is passed


def test_symbols_read_by_context():
    [arc] = extract_quantities("a 2½' (150\") field")
    assert (arc.unit, arc.value) == ("arcminute", pytest.approx(2.5 / 60))
    assert [e.unit for e in arc.equivalents] == ["arcsecond"] and consistent_equivalent(arc, arc.equivalents[0])
    assert [q.unit for q in extract_quantities('a 9" and a 10" blade')] == ["inch", "inch"]
    assert [q.raw for q in extract_quantities('a 12"x 12" pad')] == ['12"', '12"']  # a letter may follow the mark
    [kelvin] = extract_quantities("300 °C (572 °F, 573.15K)")
    assert [e.unit for e in kelvin.equivalents] == ["degree_Fahrenheit", "kelvin"]
    assert extract_quantities("It boils at 398 K.") == []
    [boils] = extract_quantities("It boils at 398 K.", temperature=True)  # match() passes this for a temperature
    assert boils.value == pytest.approx(124.85)
    assert match("Coolant boiling point 125 °C", "It boils at 398 K.").passed


def test_conversions_come_from_pint():
    import pint

    registry = pint.UnitRegistry()
    assert convert(1.0, "kgm", "newton * meter") == pytest.approx(registry("kilogram_force * meter").to("N*m").magnitude, rel=1e-12)
    assert convert(1.0, "kgcm2", "bar") == pytest.approx(registry("kilogram_force / cm**2").to("bar").magnitude, rel=1e-12)
    assert convert(1.0, "foot * force_pound", "newton * meter") == pytest.approx(registry("ft*lbf").to("N*m").magnitude, rel=1e-12)
    assert convert(100.0, "degree_Celsius", "degree_Fahrenheit") == pytest.approx(212.0, rel=1e-12)
    assert convert(1.0, "turn", "degree") == pytest.approx(360.0, rel=1e-12)


def test_conversion_factors_match_reference_values():
    assert extract_quantities("1 ft-lb")[0].value == pytest.approx(1.3558179483314004, rel=1e-12)
    assert extract_quantities("1 in-lb")[0].value == pytest.approx(0.1129848290276167, rel=1e-12)
    assert extract_quantities("1 psi")[0].value == pytest.approx(0.06894757293168, rel=1e-12)
    assert extract_quantities("1 US qt")[0].value == pytest.approx(0.946352946, rel=1e-12)
    assert extract_quantities("1 US gal")[0].value == pytest.approx(3.785411784, rel=1e-12)
    assert extract_quantities("212 °F")[0].value == pytest.approx(100.0, rel=1e-12)
    assert extract_quantities("-40 °F")[0].value == pytest.approx(-40.0, rel=1e-12)


STAGES = "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_labelled_case(case):
    result = match(case["expected"], case["actual"])
    verdict = result.passed if result.applicable else None
    assert verdict == case["passed"], f"{case['class']}: {case['note']}; details: {result.details}"


def test_corpus_is_large_and_covers_each_class_both_ways():
    assert len(CASES) >= 250
    assert len({c["id"] for c in CASES}) == len(CASES)
    classes = {c["class"] for c in CASES}
    assert {"value", "unit", "notation", "equivalent", "hedge", "qualifier", "condition", "label", "sequence",
            "hallucination", "not_applicable"} <= classes
    for name in classes - {"not_applicable"}:
        verdicts = {c["passed"] for c in CASES if c["class"] == name}
        assert verdicts == {True, False}, name
    assert all(c["note"].strip() for c in CASES)


@pytest.mark.parametrize(
    "expected, actual, passed",
    [
        ("40 Nm", "Tighten the bolts to 40 Nm.", True),
        ("40 Nm", "40 N·m", True),
        ("40 Nm", "30 ft-lb", True),
        ("40 Nm", "50 Nm", False),
        ("40 Nm", "The torque is 40 Nm, so use 40 Nm.", True),  # plain repetition
        ("40 Nm", "40 Nm, then 40 Nm again", False),  # a repeated stage is a further stage
        ("40 Nm", "40 Nm and 120 Nm", False),  # hallucinated extra torque
        ("40 Nm", "40 Nm with the engine at 80 °C", True),  # a condition the reference does not state is not judged
        ("Tighten to 22 Nm", "Tighten to 22 Nm, then 90°", False),  # an invented angle stage
        ("22 Nm", "22 Nm (160 ft-lb)", False),  # the bracket states a different torque
        ("90 Nm (66 ft-lb)", "90 Nm (80 ft-lb)", False),
        ("10 Nm (7 ft-lb)", "10 Nm (7 ft-lb)", True),  # whole-unit rounding of an equivalent is fine
        ("40 Nm", "40°", False),
        ("40 Nm", "", False),
        ("2.5 Nm", "22 in-lb", True),
        ("90°", "90 degrees", True),
        ("90°", "45°", False),
        ("0.15–0.20 mm", "0.006–0.008 in", True),
        ("0.15–0.20 mm", "0.15 to 0.20 mm", True),
        ("0.15–0.20 mm", "0.15–0.30 mm", False),
        ("0.15–0.20 mm", "0.18 mm", False),  # single value inside the range
        ("0.20 mm", "0.15–0.25 mm", False),  # a range where one value is expected
        ("1.5 mm", '0.06"', True),
        ("5 mm", "5 in", False),
        ("2.5 bar", "36 psi", True),
        ("2.5 bar", "250 kPa", True),
        ("4.5 L", "4.8 US qt", True),
        ("80 °C", "176 °F", True),
        ("-10 °C", "14 °F", True),
        ("60 ± 5 Nm", "55–65 Nm", True),
        ("60 ± 5 Nm", "60 Nm", False),
        (STAGES, "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°", True),
        (STAGES, "Tighten to 30 ft-lb, then 90 degrees, then a further 90 degrees.", True),
        (STAGES, "Stage 1: 90°, Stage 2: 40 Nm, Stage 3: 90°", False),  # labels swapped
        (STAGES, "Stage 1: 40 Nm, Stage 2: 90°", False),  # missing stage
        (STAGES, "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°, Stage 4: 90°", False),  # extra stage
        (STAGES, "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°, and 120 Nm", False),
    ],
)
def test_match_pass_fail(expected, actual, passed):
    assert match(expected, actual).passed is passed


def test_match_wrong_value_is_explained():
    result = match("40 Nm", "50 Nm")
    assert result.score == 0.0
    assert [q.raw for q in result.missing] == ["40 Nm"]
    assert any("wrong value" in line and "50 Nm" in line and "40 N·m" in line for line in result.details)


def test_match_single_value_inside_range_is_explained_but_not_hallucinated():
    result = match("0.15–0.20 mm", "about 0.18 mm")
    assert not result.passed
    assert result.hallucinated == ()
    assert any("inside the range" in line for line in result.details)


def test_match_hallucination_is_listed():
    result = match("40 Nm", "40 Nm and 120 Nm")
    assert result.score == 1.0
    assert [q.raw for q in result.hallucinated] == ["120 Nm"]
    assert any(line.startswith("hallucinated: '120 Nm'") for line in result.details)


def test_match_unlabelled_stages_out_of_order_are_reported():
    result = match("40 Nm, then 90°", "90°, then 40 Nm")
    assert not result.passed and not result.order_ok
    assert any("out of order" in line for line in result.details)


def test_match_labels_pair_values_and_a_swap_names_both():
    result = match("Intake 0.25 mm, exhaust 0.35 mm", "Intake 0.35 mm, exhaust 0.25 mm")
    assert not result.passed and result.score == 0.0
    assert any("intake" in line and "0.35 mm" in line and "wrong value" in line for line in result.details)


def test_match_missing_stage_scores_partially():
    result = match(STAGES, "Stage 1: 40 Nm, Stage 2: 90°")
    assert result.score == pytest.approx(2 / 3)
    assert [q.stage for q in result.missing] == [3]
    assert any("missing" in line for line in result.details)


def test_match_quantities_of_other_families_are_hallucinations():
    result = match("40 Nm", "40 Nm. Coolant capacity 7 L.")
    assert not result.passed
    assert [q.family for q in result.hallucinated] == ["volume"]
    assert any(line.startswith("hallucinated: '7 L'") for line in result.details)


def test_match_inconsistent_equivalent_is_named():
    result = match("110 Nm (81 ft-lb)", "118 Nm (81 ft-lb).")
    assert not result.passed
    assert any("wrong value" in line and "118 Nm" in line for line in result.details)
    result = match("45 Nm", "45 Nm (40 ft-lb)")
    assert not result.passed
    assert any("equivalent '40 ft-lb'" in line and "disagrees" in line for line in result.details)


def test_consistent_equivalent_allows_the_printed_rounding_only():
    [ten] = extract_quantities("10 Nm (7 ft-lb)")
    [forty_five] = extract_quantities("45 Nm (40 ft-lb)")
    assert consistent_equivalent(ten, ten.equivalents[0])
    assert not consistent_equivalent(forty_five, forty_five.equivalents[0])


def test_match_qualifier_and_condition_details_name_both_sides():
    qualifier = match("max 0.10 mm", "at least 0.10 mm")
    assert any("qualifier differs: reference max, answer min" in line for line in qualifier.details)
    condition = match("1.5 bar at idle", "1.5 bar at 3000 rpm")
    assert not condition.passed
    assert any("at idle" in line and "3000 rpm" in line for line in condition.details)


@pytest.mark.parametrize("expected", ["Replace the gasket.", "Use two bolts", "", "Remove the 13 mm bolts.", "Step 3"])
def test_match_without_units_is_not_applicable(expected):
    result = match(expected, "40 Nm")
    assert result.applicable is False
    assert result.passed is False
    assert result.details[0].startswith("not applicable: ")


_RNG = random.Random(10)
HOSTILE = {
    "empty": "",
    "spaces": " " * 1000,
    "control characters": "".join(chr(c) for c in range(32)) * 30 + "40 Nm\x00\x1b[31m",
    "other scripts": "扭矩 ٤٠ нм 四十牛米 ４０ Ｎｍ トルク 40 Нм 🔩 ελληνικά İstanbul ß",
    "lone surrogate": "40 Nm \ud800 90°",
    "random unicode": "".join(chr(_RNG.randrange(0x20, 0x3000)) for _ in range(5000)),
    "random ascii": "".join(chr(_RNG.randrange(0x20, 0x7F)) for _ in range(7900)),
    "dense numbers": "40 Nm, " * 1100,
    "dense ranges": "1-" * 3900,
    "dense brackets": "40 Nm (" * 1100,
    "dense sequence": "Stage 1: 40 Nm (30 ft-lb), then 90° at 3000 rpm; intake 0.25, exhaust 0.35 mm max. " * 90,
    "digits": "1" * 7900,
    "grouped digits": "1 000 " * 1300,
    "number words": "one hundred and twenty " * 330,
    "symbols read by context": "7°30' ± 30' 9\" \"a\" 2½' (150\") 2 pm 2.1 pm 300 °C (573K) 1k km 4 m3 " * 110,
    "any unit pint knows": "15 kΩ/min per s, 4e14 s-1, 3 sq mi, 0,5 l/1000 km, 10.5:1, 12 VDC, 800 U/min; " * 110,
    "unread symbols": "1 Ж 2 ₴ 3 ⌀ 4 ☐ " * 500,
    "unit-like words": "5 foo 6 barz 7 bazq 8 quxx 9 at 10 in 11 a " * 180,
    "names and labels": "on at 92 °C, off at 87 °C, IN 0.15 mm, EX 0.25 mm, vorn 2,0 bar, hinten 2,3 bar; " * 90,
    "condition words": "1 mm hot without filter " * 330,
    "labels of one kind": "M8 M8 M8 M8 M8 M8 M8 M8 M8 M8 M8 1 mm " * 200,
    "1 MB": "Tighten to 40 Nm. " * 58_000,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_any_string_gets_a_verdict(name):
    text = HOSTILE[name]
    for expected, actual in ((STAGES, text), (text, STAGES), (text, text)):
        result = match(expected, actual)
        assert isinstance(result, SpecMatch)
        assert isinstance(result.passed, bool) and isinstance(result.applicable, bool)
        assert result.details and all(isinstance(line, str) and line for line in result.details)


def _best_seconds(expected: str, actual: str, runs: int = 3) -> float:
    match(expected, actual)  # warm the caches (pint registry, conversions) once
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()  # CPU time: other processes on a shared box do not count
        match(expected, actual)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("name", ["dense numbers", "dense ranges", "dense brackets", "dense sequence", "digits",
                                  "grouped digits", "number words", "random ascii", "symbols read by context",
                                  "any unit pint knows", "unread symbols", "unit-like words", "names and labels",
                                  "condition words", "labels of one kind"])
def test_hostile_text_at_the_cap_is_graded_in_under_50_ms(name):
    text = HOSTILE[name][:MAX_TEXT_CHARS]
    assert _best_seconds(STAGES, text) < 0.050
    assert _best_seconds(text, text) < 0.050


@pytest.mark.parametrize("name", ["dense sequence", "any unit pint knows", "names and labels"])
def test_an_answer_at_the_cap_with_a_page_text_at_the_cap_is_graded_in_under_50_ms(name):
    text = HOSTILE[name][:MAX_TEXT_CHARS]
    match(STAGES, text, page_text=text)  # warm the caches
    start = time.process_time()
    match(STAGES, text, page_text=text)
    assert time.process_time() - start < 0.050


def test_a_100_kb_answer_is_graded_in_under_50_ms_and_10_mb_in_under_1_s():
    hundred_kb = ("Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°. " * 2400)[:100_000]
    assert _best_seconds(STAGES, hundred_kb) < 0.050
    ten_mb = "40 Nm " * 1_750_000
    assert _best_seconds(STAGES, ten_mb, runs=1) < 1.0


def test_an_answer_over_the_cap_fails_with_the_reason():
    result = match(STAGES, "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°. " + "x" * MAX_TEXT_CHARS)
    assert result.applicable and not result.passed
    assert f"{MAX_TEXT_CHARS:,}" in result.details[0]
    reference = match("40 Nm " + "x" * MAX_TEXT_CHARS, "40 Nm")
    assert not reference.applicable and "not applicable" in reference.details[0]


def test_an_answer_with_too_many_numbers_fails_with_the_reason():
    result = match("40 Nm", "40 Nm " + "1 " * (MAX_NUMBERS + 5))
    assert result.applicable and not result.passed
    assert str(MAX_NUMBERS) in result.details[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_text_of_the_sample_manual_grades_itself_as_a_pass(tmp_path, seed):
    # The project's own synthetic manual (equivalents rounded with its own factor, page layouts with
    # slashes between stages): a correct answer copied from the page must pass.
    from vlm3.demo.sample_manual import generate_sample_manual

    generate_sample_manual(tmp_path, seed=seed)
    texts = set()
    for path in tmp_path.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.update(t for t in (row.get("expected_answer"), (row.get("metadata") or {}).get("page_text")) if t)
            texts.update(m["content"] for m in row.get("conversations", []) if m.get("role") == "assistant")
    assert len(texts) > 50
    failures = [(text, match(text, text).details) for text in texts if match(text, text).applicable and not match(text, text).passed]
    assert failures == []


# Any manual's notation (the units pint knows, other languages, names that pair values).


@pytest.mark.parametrize(
    "text, family, value, high",
    [
        ("15–17 Ω", "resistance", 15.0, 17.0),
        ("1.5 kΩ", "resistance", 1500.0, None),
        ("max. 5 mΩ", "resistance", 0.005, None),
        ("14.2–14.8 V", "voltage", 14.2, 14.8),
        ("28.0 VDC", "voltage", 28.0, None),
        ("30 A", "current", 30.0, None),
        ("0.22 µF", "capacitance", 2.2e-7, None),
        ("0.20 mfd", "capacitance", 2e-7, None),
        ("1,350 kg", "mass", 1350.0, None),
        ("200 N", "force", 200.0, None),
        ("50 daN", "force", 500.0, None),
        ("110 kW", "power", 110000.0, None),
        ("150 PS", "power", 150 * 735.49875, None),
        ("5 s", "time", 5.0, None),
        ("100 km/h", "road speed", 100 / 3.6, None),
        ("35 %", "percent", 35.0, None),
        ("10.5:1", "ratio", 10.5, None),
        ("9,5/1", "ratio", 9.5, None),
        ("185 cc/min", "flow", 185e-6 / 60, None),
        ("10 mL per minute", "flow", 10e-6 / 60, None),
        ("800 1/min", "speed", 800.0, None),
        ("750 U/min", "speed", 750.0, None),
        ("850 tr/min", "speed", 850.0, None),
        ("8,000 min⁻¹", "speed", 8000.0, None),
        ("3000 r.p.m.", "speed", 3000.0, None),
        ("30 psig", "pressure", 30 * 0.0689475729, None),
        ("4 thou", "length", 0.1016, None),
        ("475 cc per leg", "volume", 0.475, None),
        ("使用限度は36.5 mmです", "length", 36.5, None),
        ("0.7〜0.8 mm", "length", 0.7, 0.8),
        ("22…25 Nm", "torque", 22.0, 25.0),
        ("0,20 bis 0,25 mm", "length", 0.2, 0.25),
        ("0,20 à 0,25 mm", "length", 0.2, 0.25),
        ("−0°30′", "angle", -0.5, None),
        ("4e14 s-1", "frequency", 4e14, None),
        ("116,347 sq mi", "area", 116347 * 1609.344 ** 2, None),
    ],
)
def test_extract_reads_any_unit_pint_knows(text, family, value, high):
    [quantity] = extract_quantities(text)
    assert quantity.family == family
    assert quantity.value == pytest.approx(value, rel=1e-4)
    assert quantity.high == (None if high is None else pytest.approx(high, rel=1e-4))


@pytest.mark.parametrize(
    "expected, actual, passed",
    [
        # Checked in part (the outside finding): the main value is read, so a wrong one fails.
        ("Injector resistance: 15–17 Ω at 20 °C", "15–17 kΩ at 20 °C", False),
        ("Injector resistance: 15–17 Ω at 20 °C", "15 to 17 ohms at 20 °C", True),
        ("Charging voltage 14.2–14.8 V at 5,000 rpm", "12.2–12.8 V at 5,000 rpm", False),
        ("Injector flow 185 cc/min at 3.0 bar", "350 cc/min at 3.0 bar", False),
        ("Injector flow 185 cc/min at 3.0 bar", "185 cc/min at 2.0 bar", False),
        ("Spring load 45 kg at 40 mm", "441 N at 40 mm", True),  # a manual's kg is kgf
        ("Maximum output 150 PS", "110 kW", True),
        ("Top speed 100 km/h", "62 mph", True),
        ("Compression ratio 10.5:1", "10.5 to 1", True),
        ("Compression ratio 10.5:1", "11.5:1", False),
        # Labels outside a fixed list pair their values; a swap fails.
        ("Thermo switch: on at 92 °C, off at 87 °C", "on at 92 °C and off at 87 °C", True),
        ("Thermo switch: on at 92 °C, off at 87 °C", "on at 87 °C and off at 92 °C", False),
        ("Valve clearance: IN 0.15 mm, EX 0.25 mm", "intake 0.15 mm, exhaust 0.25 mm", True),
        ("Valve clearance: IN 0.15 mm, EX 0.25 mm", "IN 0.25 mm, EX 0.15 mm", False),
        ("Thermostat: starts to open 82 °C, fully open 95 °C", "starts to open at 95 °C, fully open at 82 °C", False),
        ("Oil pressure: 1.0 bar at low idle, 3.5 bar at rated speed", "1.0 bar at rated speed, 3.5 bar at low idle", False),
        ("Final drive: 3.727:1 (manual), 3.909:1 (automatic)", "manual 3.909:1, automatic 3.727:1", False),
        ("Toe setting: 2 ± 1 mm toe-in", "2 ± 1 mm toe-out", False),
        ("Ignition timing: 10° BTDC at idle", "10° ATDC at idle", False),
        ("Reifendruck: vorn 2,0 bar, hinten 2,3 bar", "front 2.0 bar, rear 2.3 bar", True),
        ("Reifendruck: vorn 2,0 bar, hinten 2,3 bar", "front 2.3 bar, rear 2.0 bar", False),
        # Signs of angles are kept.
        ("Camber −0°30′ ± 30′", "+0°30′ ± 30′", False),
        ("Camber −0°30′ ± 30′", "-0.5° ± 0.5°", True),
        # Word conditions and other languages.
        ("Oil capacity with filter change: 4.5 L", "4.5 L without filter change", False),
        ("Oil capacity with filter change: 4.5 L", "4.5 L with a filter change", True),
        ("Ventilspiel: kalt 0,20 mm; warm 0,25 mm", "cold 0.20 mm, warm 0.25 mm", True),
        ("Ventilspiel: kalt 0,20 mm; warm 0,25 mm", "cold 0.25 mm, warm 0.20 mm", False),
        ("Bremsbelag mind. 2,0 mm", "at least 2.0 mm", True),
        ("Bremsbelag mind. 2,0 mm", "max. 2.0 mm", False),
        ("Épaisseur mini 2,0 mm", "2 mm minimum", True),
        # A quantity's name is no qualifier; braces are equivalents; the manual's own equivalent passes.
        ("Max. torque: 230 Nm at 4750 rpm", "230 Nm at 4,750 rpm", True),
        ("Couple maxi : 20,4 daN.m à 1750 tr/min", "204 N·m at 1,750 rpm", True),
        ("127 N·m {1,300 kgf·cm, 94 ft·lbf}", "127 N·m", True),
        ("127 N·m {1,300 kgf·cm, 94 ft·lbf}", "94 ft·lbf", True),
        ("Timing belt: every 6,000 km (4,000 mi)", "every 4,000 miles", True),
        ("Timing belt: every 6,000 km (4,000 mi)", "every 5,000 miles", False),
        ("Maximum output: 7.5 kW (10.2 PS)/8,000 min⁻¹", "10.2 PS at 7,000 rpm", False),
        # Japanese: numbers glued to words, 〜 ranges, 以上/以下, 前/後.
        ("シリンダ内径の使用限度は36.5 mmです", "The service limit is 36.5 mm.", True),
        ("バルブクリアランス：0.7〜0.8 mm", "0.7 to 0.8 mm", True),
        ("バッテリー電圧：12.5 V以上", "at least 12.5 V", True),
        ("タイヤ空気圧：前200kPa、後225kPa", "front 225 kPa, rear 200 kPa", False),
    ],
)
def test_any_manuals_notation(expected, actual, passed):
    result = match(expected, actual)
    assert result.applicable
    assert result.passed is passed, result.details


def test_a_reference_value_in_a_unit_nothing_reads_is_no_partial_verdict():
    # Only "20 °C" would be readable: checking it alone would pass any resistance.
    result = match("Resistance 15 Ж at 20 °C", "16 Ж at 20 °C")
    assert result.applicable is False and not result.passed
    assert "'15 Ж'" in result.details[0]
    assert match("締付トルク：24N・m、3箇所", "24 N·m").passed  # a Japanese word glued to a number is a word


def test_a_value_the_page_states_is_evidence_not_a_hallucination():
    reference, answer = "Engine oil capacity 4.5 litres", "Engine oil capacity 4.5 litres, 4.7 litres with filter"
    assert not match(reference, answer).passed
    page = "Engine oil: 4.5 litres without filter; 4.7 litres with filter. Drain plug 25 Nm."
    result = match(reference, answer, page_text=page)
    assert result.passed, result.details
    assert not match(reference, "4.5 litres, 5.7 litres with filter", page_text=page).passed  # not on the page


@pytest.mark.parametrize("name", ["spec_cases_manuals.jsonl", "spec_cases_holdout.jsonl"])
def test_no_wrong_answer_passes_on_the_corpora_written_from_manuals(name):
    # Written from many manuals' notations by graders who did not see the checker (bench/bench_specs.py reports
    # them per category). A false pass is never allowed; agreement must stay at the 97 %.
    cases = [json.loads(line) for line in (CASES_PATH.parent / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    false_passes, agree = [], 0
    for case in cases:
        result = match(case["expected"], case["actual"])
        verdict = result.passed if result.applicable else None
        agree += verdict == case["passed"]
        if verdict is True and case["passed"] is False:
            false_passes.append((case["id"], case["expected"], case["actual"], result.details))
    assert false_passes == []
    assert agree / len(cases) >= 0.97


def test_units_never_seen_are_parsed_within_a_budget_per_text():
    # Each unit pint has not parsed before costs about a millisecond: a text asks for at most MAX_NEW_UNITS of them.
    from harness.specs import MAX_NEW_UNITS
    pieces = ["kJ", "MJ", "mW", "GW", "µA", "kA", "nF", "pH", "mH", "kPa", "hPa", "dN", "cN", "mN", "ng", "cg", "dg"]
    units = [f"{a}/{b}" for a in pieces for b in pieces if a != b]
    text = " ".join(f"{i} {unit}" for i, unit in enumerate(units[:200], 1))[:MAX_TEXT_CHARS]
    start = time.process_time()
    found = extract_quantities(text)
    assert time.process_time() - start < 0.050 + 0.002 * MAX_NEW_UNITS
    assert 0 < len(found) <= 200


@pytest.mark.parametrize(
    "expected, actual, passed",
    [
        # Negated and named qualifiers, limits.
        ("Pad thickness: at least 3 mm", "must not fall below 3 mm", True),
        ("Runout: max 0.1 mm", "should never be above 0.1 mm", True),
        ("Runout: max 0.1 mm", "must not fall below 0.1 mm", False),
        ("Minimum torque 20 Nm", "Maximum torque 20 Nm", False),
        ("Brake disc wear limit 22.0 mm", "22.0 mm maximum", False),
        ("Drive shaft runout limit: 0.1 mm", "0.1 mm minimum", False),
        ("Engine oil capacity 4.5 L", "Fill up to 4.5 L", True),
        # Names in other words and languages.
        ("Upper arm bolt 50 Nm, lower arm bolt 80 Nm", "Bottom arm bolt 50 Nm, top arm bolt 80 Nm", False),
        ("Tire pressure: left 2.2 bar, right 2.4 bar", "RH 2.2 bar, LH 2.4 bar", False),
        ("Ventilspiel: Einlass 0,20 mm, Auslass 0,30 mm", "Auslassventile 0,20 mm, Einlassventile 0,30 mm", False),
        ("Ignition timing 10° BTDC", "10° after top dead centre", False),
        ("Fork oil 475 cc each leg", "475 cc total", False),
        ("Toe-in 2 mm", "Toe 2 mm out", False),
        ("Fuel pressure 43 psig", "43 psia", False),
        ("Alternator output 12 V DC", "12 V AC", False),
        # Values hidden without a unit, in a pair, as a part's size, as a further pass.
        ("Torque 40 Nm", "40 Nm, or 45 if reused", False),
        ("Tighten to 40 Nm, then 90°", "Tighten to 40 Nm, then 90°, then a further 90", False),
        ("Tyre pressure: 28/32 psi", "35/40 psi", False),
        ("Tyre pressure: 28/32 psi", "28 psi front, 32 psi rear", True),
        ("Drive shaft nut 250 Nm", "130 Nm drive shaft nut", False),
        ("Cylinder head nuts 40 Nm", "40 Nm, then retorque to 40 Nm after the first heat cycle", False),
        # Precision: equivalents at the printed digits, answers no coarser than a rounding.
        ("45 Nm (33 ft-lb)", "45 Nm (34 ft-lb)", False),
        ("Coolant temperature 90 °C", "90 °C (196 °F)", False),
        ("Valve clearance 0.15 mm", "0.01 in", False),
        ("Tyre pressure 19 psi", "1 bar", False),
        ("Tyre pressure 29 psi", "2 bar", True),
        # Notations.
        ("Opening temperature –37 °C", "37 °C", False),
        ("4.7 µF", "4.7 mF", False),
        ("Tighten to 40 Nm", "$40\\,\\mathrm{N\\cdot m}$", True),
        ("Thermostat opens at 82 °C", "The thermostat opens at 82 degrees", True),
        ("Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°", "40 Nm, then 90°, 2 times", True),
        ("Adjusting screw: 1/2 turn out", "two and a half turns out", False),
        ("Coil resistance 1.5 kΩ ± 10 %", "1.35–1.65 kΩ", True),
        ("Superheat: 8-12 °F", "4.4–6.7 °C", True),
        ("Superheat: 10 °F", "-12.2 °C superheat", False),
        ("Evacuate the system to 500 microns", "0.5 Torr", True),
        ("Idle speed (in P or N position): 700 ± 50 rpm", "700 ± 50 rpm in D", False),
        ("Oil pressure 1.5 bar at idle", "1.5 bar at idle (800 rpm)", True),
        ("Valve clearance: IN 0.15 mm, EX 0.25 mm", "IN/EX 0.15/0.25 mm", True),
        ("Valve clearance: IN 0.15 mm, EX 0.25 mm", "IN/EX 0.25/0.15 mm", False),
        ("Front 2.2 bar, rear 2.4 bar", "Front/rear: 2.4/2.2 bar", False),
    ],
)
def test_notations_found_from_outside(expected, actual, passed):
    # Classes found by a second set written without the checker and by an adversarial review.
    result = match(expected, actual)
    assert result.applicable
    assert result.passed is passed, result.details


@pytest.mark.parametrize(
    "reference",
    ["Kinematic viscosity 46 cSt at 40 °C", "Hardness 58 HRC", "Lambda 1.00 ± 0.03 at 2500 rpm",
     "Airspeed 65 KIAS at 2,300 lb"],
)
def test_a_value_in_a_notation_nothing_reads_leaves_the_reference_ungraded(reference):
    result = match(reference, "anything at all, 40 °C, 2500 rpm, 2,300 lb")
    assert result.applicable is False and not result.passed


def test_a_conversion_pint_cannot_make_is_no_agreement_and_no_crash():
    for reference, answer in [("Heating capacity 60,000 BTU/h", "60,000 BTU"), ("Enthalpy 250 kJ/kg", "250 kJ"),
                              ("Energy consumption 150 Wh/km", "150 Wh"), ("Impact energy 30 J/cm²", "30 J")]:
        result = match(reference, answer)
        assert result.applicable and not result.passed
