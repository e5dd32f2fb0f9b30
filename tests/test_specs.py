import pytest

from harness.specs import Quantity, extract_quantities, keyword_recall, match


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
        ("1,000 psi", "pressure", 68.9476, None),
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


def test_conversion_factors_match_reference_values():
    assert extract_quantities("1 ft-lb")[0].value == pytest.approx(1.3558179483314004, rel=1e-12)
    assert extract_quantities("1 in-lb")[0].value == pytest.approx(0.1129848290276167, rel=1e-12)
    assert extract_quantities("1 psi")[0].value == pytest.approx(0.06894757293168, rel=1e-12)
    assert extract_quantities("1 US qt")[0].value == pytest.approx(0.946352946, rel=1e-12)
    assert extract_quantities("1 US gal")[0].value == pytest.approx(3.785411784, rel=1e-12)
    assert extract_quantities("212 °F")[0].value == pytest.approx(100.0, rel=1e-12)
    assert extract_quantities("-40 °F")[0].value == pytest.approx(-40.0, rel=1e-12)


STAGES = "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°"


@pytest.mark.parametrize(
    "expected, actual, passed",
    [
        ("40 Nm", "Tighten the bolts to 40 Nm.", True),
        ("40 Nm", "40 N·m", True),
        ("40 Nm", "30 ft-lb", True),
        ("40 Nm", "50 Nm", False),
        ("40 Nm", "The torque is 40 Nm, so use 40 Nm.", True),  # plain repetition
        ("40 Nm", "40 Nm and 120 Nm", False),  # hallucinated extra torque
        ("40 Nm", "40 Nm with the engine at 80 °C", False),  # a temperature the reference does not state
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
        ("0,15 mm", "0.15 mm", True),
        ("0.15 mm", "0,15 mm", True),
        ("2.5 bar", "36 psi", True),
        ("2.5 bar", "250 kPa", True),
        ("2.5 bar", "3.5 bar", False),
        ("4.5 L", "4.8 US qt", True),
        ("4.5 L", "4.5 litres", True),
        ("0.5 L", "500 ml", True),
        ("4.5 L", "5.5 L", False),
        ("80 °C", "176 °F", True),
        ("80 °C", "80 °F", False),
        ("-10 °C", "14 °F", True),
        ("60 ± 5 Nm", "55–65 Nm", True),
        ("60 ± 5 Nm", "60 Nm", False),
        ("40 Nm (30 ft-lb)", "40 Nm", True),
        ("40 Nm (30 ft-lb)", "30 ft-lb", True),
        ("40 Nm", "40 Nm (30 ft-lb)", True),
        ("10 Nm (7 ft-lb)", "7 ft-lb", True),  # the manual's rounded equivalent
        (STAGES, "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°", True),
        (STAGES, "Tighten to 30 ft-lb, then 90 degrees, then a further 90 degrees.", True),
        (STAGES, "Stage 1: 90°, Stage 2: 40 Nm, Stage 3: 90°", False),  # swapped
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
    assert any("wrong value" in line and "50 Nm" in line for line in result.details)


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


def test_match_swapped_order_is_reported():
    in_order = match(STAGES, "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90°")
    swapped = match(STAGES, "Stage 1: 90°, Stage 2: 40 Nm, Stage 3: 90°")
    assert in_order.order_ok and in_order.score == 1.0
    assert not swapped.order_ok and swapped.score == 1.0
    assert any("out of order" in line for line in swapped.details)


def test_match_missing_stage_scores_partially():
    result = match(STAGES, "Stage 1: 40 Nm, Stage 2: 90°")
    assert result.score == pytest.approx(2 / 3)
    assert [q.stage for q in result.missing] == [3]
    assert any("missing" in line for line in result.details)


def test_match_quantities_of_other_families_are_hallucinations():
    result = match("40 Nm", "40 Nm at 80 °C")
    assert not result.passed
    assert [q.family for q in result.hallucinated] == ["temperature"]
    assert any(line.startswith("hallucinated: '80 °C'") for line in result.details)


@pytest.mark.parametrize("expected", ["Replace the gasket.", "Use two bolts", ""])
def test_match_without_units_is_not_applicable(expected):
    result = match(expected, "40 Nm")
    assert result.applicable is False
    assert result.passed is False
    assert "not applicable" in result.details[0]


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
        ([], "Anything.", True, 1.0),
    ],
)
def test_keyword_recall(keywords, actual, passed, recall):
    result = keyword_recall(keywords, actual)
    assert result.passed is passed
    assert result.recall == pytest.approx(recall)


def test_keyword_recall_lists_found_and_missing_and_honours_threshold():
    result = keyword_recall(["gasket", "sealant"], "Replace the gasket.", threshold=0.5)
    assert result.passed
    assert result.found == ("gasket",)
    assert result.missing == ("sealant",)
