"""General probes shipped with vlm3: can the model still read a printed value, count, and transcribe a line?

Usage:
    from harness.general_probes import load_general_probes
    samples = load_general_probes(eval_dir / "general_probes")   # renders the pages there, returns EvalSamples

A fine-tune that learns the manual can forget how to read. These six pages have nothing to do
with the manual; base and fine-tuned models are asked the same ones (`vlm3 eval`, the demo), and
`vlm3 compare` says whether the fine-tune kept them. The pages are drawn from
harness/probes/general.jsonl with Pillow's bundled font (the same bytes for the same Pillow),
so nothing binary is shipped and the answers are keyed by the rendered bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from data_adapters.samples import EvalSample

PROBES_FILE = Path(__file__).parent / "probes" / "general.jsonl"
PAGE_SIZE = (640, 480)  # px, landscape: the manual's pages are portrait
SECTION = "general ability"


def render_general_page(probe: dict) -> Image.Image:
    image = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(image)
    if probe.get("shapes"):
        # Shapes on a 5x4 grid of cells, positions from the probe id: the same page every time.
        rng = random.Random(probe["id"])
        cells = rng.sample([(col, row) for col in range(5) for row in range(4)], probe["count"])
        for col, row in cells:
            x, y = 40 + col * 120, 40 + row * 110
            box = (x, y, x + 60, y + 60)
            (draw.ellipse if probe["shapes"] == "circle" else draw.rectangle)(box, fill="black")
        return image
    font = ImageFont.load_default(size=26)
    for number, line in enumerate(probe.get("lines") or []):
        draw.text((40, 60 + number * 60), line, font=font, fill="black")
    return image


def load_general_probes(out_dir: Path, probes_file: Path = PROBES_FILE) -> list[EvalSample]:
    """Render each general page into out_dir (kept when unchanged) and return one sample per probe."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for line in probes_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        probe = json.loads(line)
        path = out_dir / f"{probe['id']}.png"
        rendered = render_general_page(probe)
        if not path.is_file():
            rendered.save(path, format="PNG")
        samples.append(EvalSample(
            id=f"general:{probe['id']}", kind="general", image=str(path.resolve()), image_ref=f"general/{probe['id']}.png",
            question=probe["question"], expected=probe.get("expected_answer"), expected_keywords=probe.get("expected_keywords"),
            category=probe["category"], source="general", section=SECTION, page=probe["id"],
            metadata={"category": probe["category"], "shipped_with": "vlm3"}, row_ref=f"{probes_file}:{probe['id']}",
        ))
    return samples
