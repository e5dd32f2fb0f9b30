"""Generate a small synthetic BMW E30 M3 service manual for demos and tests.

Usage: python -m vlm3.demo.sample_manual OUT_DIR [--seed N]

The output has the same layout as the real training pipeline, so every later
stage (training, evaluation, probes) can run end to end without the real
manual:

    OUT_DIR/training_data/vlm_train.jsonl
    OUT_DIR/training_data/vlm_val.jsonl
    OUT_DIR/training_data/images/<page>.jpg
    OUT_DIR/probes.jsonl

Image paths in the rows and in probes.jsonl are relative to training_data/.
The content is E30 M3 / S14 flavoured but invented: values are drawn from a
random.Random(seed) and must never be used on a real car. The same seed gives
byte-identical files.
"""

from __future__ import annotations

import argparse
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

from vlm3.core.jsonio import write_jsonl

PAGE_SIZE = (850, 1100)
JPEG_QUALITY = 85
NM_TO_FT_LB = 0.7376
FOOTER_TEXT = "BMW E30 M3 service manual (synthetic sample, not for workshop use)"
MAX_ANSWER_WORDS = 40

# Which spec kinds become which probe category; kinds not listed (temperature,
# wear limits) stay in the training data but are never probed.
PROBE_CATEGORY_BY_KIND = {
    "torque": "torque_spec",
    "clearance": "clearance",
    "capacity": "capacity",
    "pressure": "pressure",
}
TRAIN_PROBE_QUOTA = {
    "torque_spec": 3,
    "clearance": 1,
    "capacity": 1,
    "pressure": 1,
    "torque_sequence": 2,
    "procedure": 1,
}


def torque(low: int, high: int, step: int = 5) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        newton_metres = rng.randrange(low, high + 1, step)
        return f"{newton_metres} Nm ({round(newton_metres * NM_TO_FT_LB)} ft-lb)"

    return draw


def clearance_range(low_hundredths: int, high_hundredths: int, width_hundredths: int = 5) -> Callable[[random.Random], str]:
    # Integer hundredths of a millimetre avoid float formatting surprises.
    def draw(rng: random.Random) -> str:
        lower = rng.randrange(low_hundredths, high_hundredths + 1)
        upper = lower + width_hundredths
        return f"{lower / 100:.2f}–{upper / 100:.2f} mm"

    return draw


def hundredths_mm(low: int, high: int) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        return f"{rng.randrange(low, high + 1) / 100:.2f} mm"

    return draw


def tenths(low: int, high: int, unit: str) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        return f"{rng.randrange(low, high + 1) / 10:.1f} {unit}"

    return draw


def degrees_celsius(low: int, high: int, step: int = 1) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        return f"{rng.randrange(low, high + 1, step)} °C"

    return draw


@dataclass(frozen=True)
class SpecItem:
    """One table row: `label` and the drawn value are printed; `answer` is formatted with {value}."""

    label: str
    kind: str
    draw_value: Callable[[random.Random], str]
    question: str
    answer: str


@dataclass(frozen=True)
class SequenceItem:
    """A fastener tightened in stages; a stage is ("Nm", low, high) or ("angle", choices)."""

    label: str
    subject: str
    stages: tuple


@dataclass(frozen=True)
class PageSpec:
    page: str
    section: str
    title: str
    content_type: str
    items: tuple = ()
    note: str = ""
    # Procedure pages only.
    activity: str = ""
    steps: tuple = ()
    keywords: tuple = ()


@dataclass
class QA:
    """One question about a page; `follow_up` is an optional second exchange."""

    question: str
    answer: str
    probe_category: str | None = None
    keywords: tuple = ()
    follow_up: tuple[str, str] | None = None


@dataclass
class Page:
    spec: PageSpec
    lines: list[tuple[str, str]]  # (style, text) in drawing order
    qas: list[QA] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Everything drawn on the page, header and footer included, one line each."""
        body = [text for _, text in self.lines]
        return "\n".join([self.spec.section, self.spec.page, *body, FOOTER_TEXT])


def tighten(subject: str) -> tuple[str, str]:
    """Question and answer template for a plain torque row."""
    return (
        f"What is the tightening torque for the {subject}?",
        f"Tighten the {subject} to {{value}}.",
    )


PAGES: tuple[PageSpec, ...] = (
    PageSpec(
        page="11-03",
        section="11 Engine",
        title="Cylinder head and lubrication, S14 engine",
        content_type="specification",
        items=(
            SpecItem("Valve clearance, intake (cold)", "clearance", clearance_range(15, 25),
                 "What is the intake valve clearance with the engine cold?",
                 "The intake valve clearance (cold) is {value}."),
            SpecItem("Valve clearance, exhaust (cold)", "clearance", clearance_range(25, 35),
                 "What is the exhaust valve clearance with the engine cold?",
                 "The exhaust valve clearance (cold) is {value}."),
            SpecItem("Camshaft bearing cap nuts", "torque", torque(10, 25),
                 *tighten("camshaft bearing cap nuts")),
            SpecItem("Engine oil capacity with filter", "capacity", tenths(42, 52, "L"),
                 "How much engine oil does the S14 take with a filter change?",
                 "The engine oil capacity with filter change is {value}."),
            SpecItem("Oil pressure at idle, minimum", "pressure", tenths(5, 15, "bar"),
                 "What is the minimum oil pressure at idle?",
                 "The minimum oil pressure at idle is {value}."),
            SpecItem("Oil drain plug", "torque", torque(25, 40),
                 *tighten("oil drain plug")),
        ),
    ),
    PageSpec(
        page="11-07",
        section="11 Engine",
        title="Cylinder head bolts and covers",
        content_type="torque_sequence",
        note="Tighten the cylinder head bolts in sequence, working from the centre outwards.",
        items=(
            SequenceItem("Cylinder head bolts", "cylinder head bolts",
                         (("Nm", 30, 50), ("angle", (90,)), ("angle", (90, 60)))),
            SequenceItem("Cylinder head cover nuts", "cylinder head cover nuts",
                         (("Nm", 5, 8), ("Nm", 9, 12))),
            SequenceItem("Intake manifold studs", "intake manifold studs",
                         (("Nm", 10, 15), ("Nm", 20, 25), ("angle", (30, 45)))),
        ),
    ),
    PageSpec(
        page="11-12",
        section="11 Engine",
        title="Crankshaft, connecting rods and flywheel",
        content_type="torque_sequence",
        note="Use new connecting rod bolts and flywheel bolts every time they are removed.",
        items=(
            SequenceItem("Connecting rod bolts", "connecting rod bolts",
                         (("Nm", 5, 10), ("Nm", 20, 30), ("angle", (70, 80, 90)))),
            SequenceItem("Main bearing cap bolts", "main bearing cap bolts",
                         (("Nm", 20, 30), ("Nm", 55, 65), ("angle", (45, 60)))),
            SequenceItem("Flywheel bolts", "flywheel bolts",
                         (("Nm", 40, 60), ("angle", (60, 90)))),
        ),
    ),
    PageSpec(
        page="11-18",
        section="11 Engine",
        title="Checking and adjusting valve clearance",
        content_type="procedure",
        activity="adjusting the valve clearance",
        steps=(
            "Cool engine below {temp}.",
            "Remove cylinder head cover.",
            "Turn engine until cam lobe points away.",
            "Measure clearance with feeler gauge.",
            "Replace shim to correct clearance.",
            "Refit cover, nuts to {torque}.",
        ),
        keywords=("feeler gauge", "shim", "cam lobe"),
    ),
    PageSpec(
        page="13-02",
        section="13 Fuel system",
        title="Fuel injection specifications",
        content_type="specification",
        items=(
            SpecItem("Fuel system pressure", "pressure", tenths(28, 32, "bar"),
                 "What is the fuel system pressure?",
                 "The fuel system pressure is {value}."),
            SpecItem("Residual pressure after 20 minutes, minimum", "pressure", tenths(15, 25, "bar"),
                 "What is the minimum residual fuel pressure after 20 minutes?",
                 "The minimum residual fuel pressure after 20 minutes is {value}."),
            SpecItem("Fuel tank capacity", "capacity", tenths(540, 700, "L"),
                 "What is the fuel tank capacity?",
                 "The fuel tank capacity is {value}."),
            SpecItem("Fuel rail mounting bolts", "torque", torque(8, 12, 1),
                 *tighten("fuel rail mounting bolts")),
            SpecItem("Throttle body nuts", "torque", torque(8, 15, 1),
                 *tighten("throttle body nuts")),
        ),
    ),
    PageSpec(
        page="17-01",
        section="17 Cooling",
        title="Cooling system specifications",
        content_type="specification",
        items=(
            SpecItem("Coolant capacity, with heater", "capacity", tenths(65, 95, "L"),
                 "What is the coolant capacity including the heater?",
                 "The coolant capacity including the heater is {value}."),
            SpecItem("Thermostat starts to open", "temperature", degrees_celsius(78, 84),
                 "At what temperature does the thermostat start to open?",
                 "The thermostat starts to open at {value}."),
            SpecItem("Thermostat fully open", "temperature", degrees_celsius(90, 96),
                 "At what temperature is the thermostat fully open?",
                 "The thermostat is fully open at {value}."),
            SpecItem("Radiator cap opening pressure", "pressure", tenths(8, 14, "bar"),
                 "What is the radiator cap opening pressure?",
                 "The radiator cap opens at {value}."),
            SpecItem("Water pump mounting bolts", "torque", torque(8, 12, 1),
                 *tighten("water pump mounting bolts")),
            SpecItem("Coolant drain plug, engine block", "torque", torque(20, 30),
                 *tighten("engine block coolant drain plug")),
        ),
    ),
    PageSpec(
        page="17-04",
        section="17 Cooling",
        title="Replacing the thermostat",
        content_type="procedure",
        activity="replacing the thermostat",
        steps=(
            "Drain coolant below thermostat level.",
            "Remove the thermostat housing cover.",
            "Fit the new thermostat with a new O-ring.",
            "Tighten the housing bolts to {torque}.",
            "Refill with coolant and bleed the system.",
        ),
        keywords=("drain", "O-ring", "bleed"),
    ),
    PageSpec(
        page="21-02",
        section="21 Clutch",
        title="Clutch specifications",
        content_type="specification",
        items=(
            SpecItem("Pressure plate to flywheel bolts", "torque", torque(20, 30, 1),
                 *tighten("pressure plate to flywheel bolts")),
            SpecItem("Clutch disc thickness, wear limit", "wear_limit", tenths(65, 75, "mm"),
                 "What is the clutch disc thickness wear limit?",
                 "The clutch disc thickness wear limit is {value}."),
            SpecItem("Clutch disc runout, maximum", "clearance", hundredths_mm(30, 50),
                 "What is the maximum clutch disc runout?",
                 "The maximum clutch disc runout is {value}."),
            SpecItem("Slave cylinder mounting nuts", "torque", torque(20, 25, 1),
                 *tighten("slave cylinder mounting nuts")),
        ),
    ),
    PageSpec(
        page="23-01",
        section="23 Manual transmission",
        title="Getrag 265 five-speed transmission",
        content_type="specification",
        items=(
            SpecItem("Transmission oil capacity", "capacity", tenths(10, 14, "L"),
                 "What is the manual transmission oil capacity?",
                 "The manual transmission oil capacity is {value}."),
            SpecItem("Transmission drain plug", "torque", torque(40, 60),
                 *tighten("transmission drain plug")),
            SpecItem("Transmission filler plug", "torque", torque(40, 60),
                 *tighten("transmission filler plug")),
            SpecItem("Output flange collar nut", "torque", torque(90, 110),
                 *tighten("transmission output flange collar nut")),
            SpecItem("Transmission to engine bolts (M10)", "torque", torque(45, 50, 1),
                 *tighten("M10 transmission to engine bolts")),
        ),
    ),
    PageSpec(
        page="33-02",
        section="33 Rear axle",
        title="Final drive and rear suspension specifications",
        content_type="specification",
        items=(
            SpecItem("Final drive oil capacity", "capacity", tenths(15, 19, "L"),
                 "What is the final drive oil capacity?",
                 "The final drive oil capacity is {value}."),
            SpecItem("Final drive filler plug", "torque", torque(50, 70),
                 *tighten("final drive filler plug")),
            SpecItem("Ring gear backlash", "clearance", clearance_range(8, 12, 4),
                 "What is the ring gear backlash?",
                 "The ring gear backlash is {value}."),
            SpecItem("Drive shaft to output flange bolts", "torque", torque(60, 80),
                 *tighten("drive shaft to output flange bolts")),
            SpecItem("Rear trailing arm pivot bolts", "torque", torque(65, 85),
                 *tighten("rear trailing arm pivot bolts")),
        ),
    ),
    PageSpec(
        page="33-04",
        section="33 Rear axle",
        title="Rear wheel bearings and drive flange",
        content_type="torque_sequence",
        note="Stake the collar nut after the final stage.",
        items=(
            SequenceItem("Drive flange collar nut", "drive flange collar nut",
                         (("Nm", 150, 200), ("angle", (30, 45)))),
            SequenceItem("Rear shock absorber upper nuts", "rear shock absorber upper nuts",
                         (("Nm", 8, 12), ("Nm", 20, 25))),
            SequenceItem("Final drive rear mount bolt", "final drive rear mount bolt",
                         (("Nm", 40, 60), ("Nm", 80, 95))),
        ),
    ),
    PageSpec(
        page="34-01",
        section="34 Brakes",
        title="Brake system specifications",
        content_type="specification",
        items=(
            SpecItem("Front caliper carrier bolts", "torque", torque(100, 120),
                 *tighten("front caliper carrier bolts")),
            SpecItem("Caliper guide bolts", "torque", torque(25, 35),
                 *tighten("caliper guide bolts")),
            SpecItem("Wheel bolts", "torque", torque(90, 110),
                 *tighten("wheel bolts")),
            SpecItem("Front brake disc thickness, wear limit", "wear_limit", tenths(260, 280, "mm"),
                 "What is the front brake disc thickness wear limit?",
                 "The front brake disc thickness wear limit is {value}."),
            SpecItem("Brake pad lining thickness, minimum", "wear_limit", tenths(20, 30, "mm"),
                 "What is the minimum brake pad lining thickness?",
                 "The minimum brake pad lining thickness is {value}."),
        ),
    ),
    PageSpec(
        page="34-08",
        section="34 Brakes",
        title="Bleeding the brake system",
        content_type="procedure",
        activity="bleeding the brake system",
        steps=(
            "Fill reservoir with new DOT 4 fluid.",
            "Connect bleeder at {pressure}.",
            "Bleed right rear caliper.",
            "Bleed left rear caliper.",
            "Bleed right front caliper.",
            "Bleed left front caliper.",
        ),
        keywords=("right rear", "left rear", "right front", "left front"),
    ),
    PageSpec(
        page="32-03",
        section="32 Steering",
        title="Steering specifications",
        content_type="specification",
        items=(
            SpecItem("Tie rod end to steering arm nut", "torque", torque(30, 40, 1),
                 *tighten("tie rod end to steering arm nut")),
            SpecItem("Steering wheel nut", "torque", torque(75, 85),
                 *tighten("steering wheel nut")),
            SpecItem("Power steering fluid capacity", "capacity", tenths(10, 14, "L"),
                 "What is the power steering fluid capacity?",
                 "The power steering fluid capacity is {value}."),
            SpecItem("Steering rack to subframe bolts", "torque", torque(38, 45, 1),
                 *tighten("steering rack to subframe bolts")),
            SpecItem("Tie rod inner joint axial play, maximum", "clearance", hundredths_mm(5, 15),
                 "What is the maximum axial play of the inner tie rod joint?",
                 "The maximum axial play of the inner tie rod joint is {value}."),
        ),
    ),
)


def draw_stage(stage: tuple, rng: random.Random) -> str:
    kind, *limits = stage
    if kind == "Nm":
        low, high = limits
        return f"{rng.randrange(low, high + 1)} Nm"
    (choices,) = limits
    return f"{rng.choice(choices)}°"


def build_spec_page(page_spec: PageSpec, rng: random.Random) -> Page:
    lines = [("table_head", "Item | Value")]
    qas = []
    for item in page_spec.items:
        value = item.draw_value(rng)
        lines.append(("table_row", f"{item.label} | {value}"))
        qas.append(QA(
            item.question,
            item.answer.format(value=value),
            probe_category=PROBE_CATEGORY_BY_KIND.get(item.kind),
            follow_up=(
                "Where in the manual is that listed?",
                f"Page {page_spec.page}, section {page_spec.section}: {page_spec.title}.",
            ),
        ))
    return Page(page_spec, lines, qas)


def build_sequence_page(page_spec: PageSpec, rng: random.Random) -> Page:
    lines = []
    full_sequences, first_stages = [], []
    for item in page_spec.items:
        stages = [f"Stage {number}: {draw_stage(stage, rng)}" for number, stage in enumerate(item.stages, 1)]
        lines.append(("subheading", item.label))
        lines.append(("body", " / ".join(stages)))
        follow_up = (
            "How many stages is that?",
            f"The {item.subject} are tightened in {len(stages)} stages."
            if item.subject.endswith("s") else
            f"The {item.subject} is tightened in {len(stages)} stages.",
        )
        full_sequences.append(QA(
            f"What is the tightening sequence for the {item.subject}?",
            ", ".join(stages) + ".",
            probe_category="torque_sequence",
            follow_up=follow_up,
        ))
        first_stages.append(QA(
            f"What is Stage 1 when tightening the {item.subject}?",
            f"For the {item.subject}, {stages[0]}.",
            follow_up=follow_up,
        ))
    qas = full_sequences + first_stages
    if page_spec.note:
        lines.append(("note", f"Note: {page_spec.note}"))
        qas.append(QA(f"What does the note on page {page_spec.page} say?", page_spec.note))
    return Page(page_spec, lines, qas)


def build_procedure_page(page_spec: PageSpec, rng: random.Random) -> Page:
    values = {
        "temp": f"{rng.randrange(30, 40)} °C",
        "torque": torque(8, 12, 1)(rng),
        "pressure": f"{rng.randrange(10, 21) / 10:.1f} bar",
    }
    steps = [step.format(**values) for step in page_spec.steps]
    lines = [("body", f"{number}. {step}") for number, step in enumerate(steps, 1)]
    activity = page_spec.activity
    follow_up = (
        "How many steps does that procedure have?",
        f"The procedure for {activity} has {len(steps)} steps.",
    )
    overview = QA(
        f"What are the steps for {activity}?",
        " ".join(f"{number}. {step}" for number, step in enumerate(steps, 1)),
        probe_category="procedure",
        keywords=page_spec.keywords,
        follow_up=follow_up,
    )
    qas = [overview]
    qas.append(QA(f"What is the first step when {activity}?", f"Step 1: {steps[0]}", follow_up=follow_up))
    for number in range(2, len(steps)):
        qas.append(QA(f"What is step {number} when {activity}?", f"Step {number}: {steps[number - 1]}"))
    qas.append(QA(f"What is the last step when {activity}?", f"Step {len(steps)}: {steps[-1]}", follow_up=follow_up))
    return Page(page_spec, lines, qas[:8])


BUILDERS = {
    "specification": build_spec_page,
    "torque_sequence": build_sequence_page,
    "procedure": build_procedure_page,
}


def build_pages(rng: random.Random) -> list[Page]:
    pages = []
    for page_spec in PAGES:
        page = BUILDERS[page_spec.content_type](page_spec, rng)
        page.lines.insert(0, ("title", page_spec.title))
        # One row per page keeps its follow-up turn, so roughly 1 row in 6 is
        # multi-turn. Rows that are not probe material are preferred, so the
        # probe candidates stay single-turn where the page allows it.
        with_follow_up = [i for i, qa in enumerate(page.qas) if qa.follow_up]
        unprobed = [i for i in with_follow_up if not page.qas[i].probe_category]
        multi_turn_index = rng.choice(unprobed or with_follow_up)
        for index, qa in enumerate(page.qas):
            if index != multi_turn_index:
                qa.follow_up = None
        pages.append(page)
    return pages


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, fill="black") -> None:
    """Draw text, rendering the en dash by hand because the bundled font lacks it."""
    x, y = xy
    pieces = text.split("–")
    for index, piece in enumerate(pieces):
        draw.text((x, y), piece, font=font, fill=fill)
        x += draw.textlength(piece, font=font)
        if index < len(pieces) - 1:
            size = getattr(font, "size", 11)  # the bitmap fallback font has no size
            dash_width = size * 0.5
            mid_y = y + size * 0.62
            draw.line((x + 1, mid_y, x + dash_width, mid_y), fill=fill, width=max(1, size // 12))
            x += dash_width + 2


def render_page(page: Page) -> Image.Image:
    width, height = PAGE_SIZE
    image = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(image)
    header_font, title_font, body_font, small_font = (ImageFont.load_default(size=size) for size in (20, 28, 20, 14))
    margin = 60

    draw_text(draw, (margin, 40), page.spec.section, header_font)
    page_label = page.spec.page
    draw_text(draw, (width - margin - int(draw.textlength(page_label, font=header_font)), 40), page_label, header_font)
    draw.line((margin, 72, width - margin, 72), fill="black", width=2)

    y = 100
    value_x = 520
    for style, text in page.lines:
        if style == "title":
            draw_text(draw, (margin, y), text, title_font)
            y += 60
        elif style in ("table_head", "table_row"):
            label, value = text.split(" | ")
            if style == "table_head":
                draw.rectangle((margin, y - 6, width - margin, y + 30), fill=(225, 225, 225))
            draw_text(draw, (margin + 10, y), label, body_font)
            draw_text(draw, (value_x, y), value, body_font)
            draw.line((margin, y + 30, width - margin, y + 30), fill=(120, 120, 120), width=1)
            draw.line((value_x - 12, y - 6, value_x - 12, y + 30), fill=(120, 120, 120), width=1)
            y += 36
        elif style == "subheading":
            y += 10
            draw_text(draw, (margin, y), text, header_font)
            y += 30
        elif style == "note":
            y += 20
            for wrapped in textwrap.wrap(text, 70):
                draw_text(draw, (margin, y), wrapped, small_font)
                y += 22
        else:
            for wrapped in textwrap.wrap(text, 60):
                draw_text(draw, (margin + 20, y), wrapped, body_font)
                y += 30
            y += 6
    if y > height - 80:
        raise ValueError(f"page {page.spec.page} overflows the page image")

    draw.line((margin, height - 60, width - margin, height - 60), fill="black", width=1)
    draw_text(draw, (margin, height - 48), FOOTER_TEXT, small_font)
    return image


def choose_val_pages(rng: random.Random) -> set[str]:
    """One page of each content type goes to validation, so val covers all kinds."""
    val_pages = set()
    for content_type in BUILDERS:
        candidates = sorted(p.page for p in PAGES if p.content_type == content_type)
        val_pages.add(rng.choice(candidates))
    return val_pages


def dataset_row(page: Page, qa: QA) -> dict:
    conversation = [
        {"role": "user", "content": qa.question},
        {"role": "assistant", "content": qa.answer},
    ]
    if qa.follow_up:
        follow_question, follow_answer = qa.follow_up
        conversation += [
            {"role": "user", "content": follow_question},
            {"role": "assistant", "content": follow_answer},
        ]
    return {
        "image": image_path(page),
        "conversations": conversation,
        # Every row carries the same string-valued keys: `datasets` infers one
        # schema for nested metadata and fails on rows that differ.
        "metadata": {
            "content_type": page.spec.content_type,
            "section": page.spec.section,
            "page": page.spec.page,
            "title": page.spec.title,
            "page_text": page.text,
            "source": "synthetic",
        },
    }


def image_path(page: Page) -> str:
    return f"images/{page.spec.page}.jpg"


def probe_record(page: Page, qa: QA, source: str) -> dict:
    record = {
        "id": "",
        "category": qa.probe_category,
        "image": image_path(page),
        "question": qa.question,
    }
    # Procedures are judged by keyword recall, everything else by exact values.
    if qa.probe_category == "procedure":
        record["expected_keywords"] = list(qa.keywords)
    else:
        record["expected_answer"] = qa.answer
    record["content_type"] = page.spec.content_type
    record["source"] = source
    # Where the probe's page sits in the manual: `vlm3 weak` and the breakdowns group by these.
    record["section"] = page.spec.section
    record["page"] = page.spec.page
    return record


def choose_probes(pages: list[Page], val_pages: set[str], rng: random.Random) -> list[dict]:
    """Mostly memorisation probes copied from training rows, plus one per val page.

    Only single-turn rows are used so a probe's question and answer are exactly
    one training exchange.
    """
    candidates: dict[str, list[tuple[Page, QA]]] = {}
    for page in pages:
        if page.spec.page in val_pages:
            continue
        for qa in page.qas:
            if qa.probe_category and not qa.follow_up:
                candidates.setdefault(qa.probe_category, []).append((page, qa))

    probes = []
    for category, quota in TRAIN_PROBE_QUOTA.items():
        pool = candidates.get(category, [])
        for page, qa in rng.sample(pool, min(quota, len(pool))):
            probes.append(probe_record(page, qa, "train_page"))

    for page in pages:
        if page.spec.page not in val_pages:
            continue
        pool = [qa for qa in page.qas if qa.probe_category and not qa.follow_up]
        if pool:
            probes.append(probe_record(page, rng.choice(pool), "val_page"))

    probes.sort(key=lambda p: (p["source"] != "train_page", p["image"], p["question"]))
    for number, probe in enumerate(probes, 1):
        probe["id"] = f"demo-{number:03d}"
    return probes


def check_dataset(pages: list[Page], train_rows: list[dict], val_rows: list[dict]) -> None:
    train_images = {row["image"] for row in train_rows}
    val_images = {row["image"] for row in val_rows}
    assert not train_images & val_images, f"pages in both splits: {train_images & val_images}"
    questions = [qa.question for page in pages for qa in page.qas]
    assert len(questions) == len(set(questions)), "first-turn questions must be unique"
    for page in pages:
        assert 4 <= len(page.qas) <= 8, f"page {page.spec.page} has {len(page.qas)} rows"
        for qa in page.qas:
            assert len(qa.answer.split()) <= MAX_ANSWER_WORDS, f"answer too long: {qa.answer}"
            for keyword in qa.keywords:
                assert keyword.lower() in qa.answer.lower(), f"keyword {keyword!r} not in answer"


def generate_sample_manual(out_dir: Path, seed: int = 0) -> dict:
    """Write the synthetic manual under out_dir and return the counts written."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    pages = sorted(build_pages(rng), key=lambda page: page.spec.page)
    val_pages = choose_val_pages(rng)

    train_rows, val_rows = [], []
    for page in pages:
        rows = val_rows if page.spec.page in val_pages else train_rows
        rows.extend(dataset_row(page, qa) for qa in page.qas)
    check_dataset(pages, train_rows, val_rows)
    probes = choose_probes(pages, val_pages, rng)

    training_dir = out_dir / "training_data"
    images_dir = training_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for page in pages:
        render_page(page).save(images_dir / f"{page.spec.page}.jpg", "JPEG", quality=JPEG_QUALITY)
    write_jsonl(training_dir / "vlm_train.jsonl", train_rows)
    write_jsonl(training_dir / "vlm_val.jsonl", val_rows)
    write_jsonl(out_dir / "probes.jsonl", probes)

    return {
        "pages": len(pages),
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "probes": len(probes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write training_data/ and probes.jsonl into")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    args = parser.parse_args(argv)
    counts = generate_sample_manual(args.out_dir, seed=args.seed)
    print(", ".join(f"{name}: {count}" for name, count in counts.items()) + f" -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
