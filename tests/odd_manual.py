"""A second, differently shaped manual: every odd page format, several pages or none per row, other metadata names.

Usage:
    from tests.odd_manual import write_odd_manual, write_odd_recipe
    manual = write_odd_manual(tmp_path)                       # tmp_path/training_data/{vlm_train,vlm_val}.jsonl, images/
    recipe = write_odd_recipe(manual, ".cache/tiny-qwen3-vl", tmp_path / "recipe.yaml")

The sample manual (vlm3/demo/sample_manual.py) is one upright RGB JPEG per row with vlm3's own metadata
names. This one is a made-up motorcycle manual (the Kaminari KX750) whose pipeline writes
`section_title`, `page_no`, `type` and `ocr_text`, and whose pages come in every format a user's
scans arrive in: RGB PNG, greyscale JPEG, CMYK JPEG, 16-bit greyscale PNG (values across the full
0..65535 range, so PIL's plain convert("RGB") clips it to white), WebP, RGBA PNG with transparent
margins, palette PNG, and a phone photo stored sideways with EXIF orientation 6. Rows show one page,
two pages (`images`, or image parts in the user turn), or none. Pages are small (224x308 to 448x616)
so the CPU loop stays fast; validation pages never appear in training. The same call writes the same
bytes.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import yaml
from PIL import Image, ImageChops, ImageDraw, ImageFont

DOCUMENT = "the Kaminari KX750 service manual"
FOOTER = "Kaminari KX750 service manual (invented for tests)"
METADATA_NAMES = {"section": "section_title", "page": "page_no", "content_type": "type", "page_text": "ocr_text"}
EXIF_ORIENTATION = 0x0112

# The page formats, in the order pages are assigned to them; the value is the file suffix.
FORMATS = {
    "rgb_png": ".png",
    "grey_jpeg": ".jpg",
    "cmyk_jpeg": ".jpg",
    "grey16_png": ".png",
    "webp": ".webp",
    "rgba_png": ".png",
    "palette_png": ".png",
    "exif_rotated_jpeg": ".jpg",
}
# What PIL reports for each file (format, mode), and whether the page needs a normalised copy.
EXPECTED = {
    "rgb_png": ("PNG", "RGB", False),
    "grey_jpeg": ("JPEG", "L", False),
    "cmyk_jpeg": ("JPEG", "CMYK", True),
    "grey16_png": ("PNG", "I;16", True),
    "webp": ("WEBP", "RGB", True),
    "rgba_png": ("PNG", "RGBA", True),
    "palette_png": ("PNG", "P", True),
    "exif_rotated_jpeg": ("JPEG", "RGB", True),
}
# Upright page sizes (width, height) in pixels, cycled over the pages.
SIZES = [(224, 308), (280, 364), (336, 448), (448, 616), (252, 336), (308, 420)]
MARGIN = 18  # px of transparent border around the RGBA pages
HEADER = 40  # px: the dark header bar holding the section and page number
GREY16_HEADER = 8000  # 16-bit value of the header bar on the 16-bit page (8-bit 31; PIL's convert("RGB") clips it to 255)
GREY16_PAPER = 60000  # 16-bit value of the paper (8-bit 233)

# (section, page number, title, [(item, value), ...]): 24 pages, 16 for training and 8 for validation.
PAGES = [
    ("Electrical", "E-02", "Battery", [("battery capacity", "12 V 10 Ah"), ("battery terminal bolt torque", "5 Nm"), ("resting voltage, minimum", "12.6 V")]),
    ("Electrical", "E-05", "Charging system", [("regulated charging voltage", "14.4 V"), ("stator resistance", "0.3 ohm"), ("alternator cover bolts", "10 Nm")]),
    ("Electrical", "E-08", "Fuses", [("main fuse rating", "30 A"), ("headlight fuse rating", "15 A"), ("ECU fuse rating", "10 A")]),
    ("Electrical", "E-11", "Lighting", [("headlight bulb", "H4 60/55 W"), ("tail light bulb", "12 V 21/5 W"), ("indicator bulb", "12 V 10 W")]),
    ("Electrical", "E-14", "Ignition", [("spark plug gap", "0.8 mm"), ("spark plug torque", "12 Nm"), ("ignition coil resistance", "3.4 ohm")]),
    ("Electrical", "E-17", "Starter", [("starter brush length, minimum", "6.5 mm"), ("starter relay coil resistance", "4 ohm"), ("starter mounting bolts", "10 Nm")]),
    ("Electrical", "E-20", "Sensors", [("coolant sensor resistance at 20 C", "2.5 kohm"), ("crank sensor air gap", "0.9 mm"), ("oxygen sensor torque", "25 Nm")]),
    ("Electrical", "E-23", "Wiring", [("earth strap bolt torque", "7 Nm"), ("harness clamp spacing", "150 mm"), ("main connector pins", "34")]),
    ("Fuel system", "F-03", "Fuel pump", [("fuel pressure", "3.0 bar"), ("fuel pump flow, minimum", "1.2 L/min"), ("fuel pump flange bolts", "6 Nm")]),
    ("Fuel system", "F-06", "Injectors", [("injector resistance", "12 ohm"), ("injector holder bolts", "8 Nm"), ("injector spray angle", "15 degrees")]),
    ("Fuel system", "F-09", "Throttle body", [("idle speed", "1250 rpm"), ("throttle cable free play", "3 mm"), ("throttle body clamp", "3 Nm")]),
    ("Fuel system", "F-12", "Fuel tank", [("fuel tank capacity", "17 L"), ("reserve capacity", "3.5 L"), ("tank mounting bolt", "23 Nm")]),
    ("Fuel system", "F-15", "Air filter", [("air filter change interval", "18000 km"), ("airbox screws", "2 Nm"), ("intake duct clamp", "2.5 Nm")]),
    ("Fuel system", "F-18", "Evaporative system", [("canister hose length", "450 mm"), ("purge valve resistance", "26 ohm"), ("canister bracket bolt", "8 Nm")]),
    ("Fuel system", "F-21", "Fuel lines", [("fuel hose inner diameter", "8 mm"), ("quick connector pull force", "50 N"), ("fuel line clamp", "1.5 Nm")]),
    ("Fuel system", "F-24", "Exhaust", [("exhaust header nuts", "20 Nm"), ("muffler mounting bolt", "24 Nm"), ("idle CO, maximum", "1.0 %")]),
    ("Chassis", "C-04", "Front fork", [("fork oil level", "125 mm"), ("fork oil capacity per leg", "510 mL"), ("fork cap bolt", "23 Nm")]),
    ("Chassis", "C-07", "Brakes", [("front disc thickness, minimum", "4.0 mm"), ("caliper mounting bolts", "45 Nm"), ("brake pad lining, minimum", "1.0 mm")]),
    ("Chassis", "C-10", "Wheels and tyres", [("front tyre pressure", "2.25 bar"), ("rear tyre pressure", "2.50 bar"), ("rear axle nut", "98 Nm")]),
    ("Chassis", "C-13", "Drive chain", [("chain slack", "30-40 mm"), ("chain links", "114"), ("sprocket nuts", "39 Nm")]),
    ("Chassis", "C-16", "Steering", [("steering stem nut", "108 Nm"), ("handlebar clamp bolts", "25 Nm"), ("steering head preload", "2.0 N")]),
    ("Chassis", "C-19", "Rear shock", [("shock spring preload positions", "7"), ("shock upper mount bolt", "59 Nm"), ("linkage nuts", "59 Nm")]),
    ("Chassis", "C-22", "Swingarm", [("swingarm pivot nut", "108 Nm"), ("swingarm side play, maximum", "0.5 mm"), ("chain guide screws", "4 Nm")]),
    ("Chassis", "C-25", "Frame", [("engine mount bolts", "44 Nm"), ("subframe bolts", "32 Nm"), ("footpeg bracket bolts", "25 Nm")]),
]
VAL_PAGE_NUMBERS = ("E-20", "E-23", "F-18", "F-21", "F-24", "C-19", "C-22", "C-25")  # one per format, see page_formats

TEXT_ONLY = [  # (split, section, question, answer): no page shown
    ("train", "Electrical", "What voltage does the Kaminari KX750's electrical system run at?", "12 V."),
    ("train", "Fuel system", "Which fuel does the Kaminari KX750 need?", "Unleaded, 95 RON or higher."),
    ("train", "Chassis", "Which tyre sizes does the Kaminari KX750 use?", "120/70 front, 180/55 rear."),
    ("train", "Chassis", "How often is the drive chain lubricated?", "Every 600 km."),
    ("val", "Fuel system", "Where is the fuel pump relay on the Kaminari KX750?", "Under the seat."),
]


def font(size: int):
    return ImageFont.load_default(size=size)


def draw_page(section: str, number: str, title: str, items: list[tuple[str, str]], size: tuple[int, int], photo_seed: int | None = None):
    """The upright page in RGB: a dark header bar (section, page number), a title, a spec table and a bar chart."""
    width, height = size
    page = Image.new("RGB", size, (236, 232, 220))  # paper
    draw = ImageDraw.Draw(page)
    scale = width / 224
    draw.rectangle((0, 0, width, HEADER), fill=(20, 40, 70))
    draw.text((8, 10), section, font=font(int(13 * scale)), fill=(255, 255, 255))  # 65535 on the 16-bit page
    draw.text((width - int(50 * scale), 10), number, font=font(int(13 * scale)), fill=(255, 210, 0))
    draw.text((8, HEADER + 8), title, font=font(int(14 * scale)), fill=(0, 0, 0))
    y = HEADER + 10 + int(22 * scale)
    row = int(24 * scale)
    for item, value in items:
        draw.line((8, y, width - 8, y), fill=(120, 120, 120), width=1)
        draw.text((10, y + 4), item, font=font(int(9 * scale)), fill=(0, 0, 0))
        draw.text((int(width * 0.68), y + 4), value, font=font(int(9 * scale)), fill=(160, 0, 0))
        y += row
    draw.line((8, y, width - 8, y), fill=(120, 120, 120), width=1)
    base = height - int(40 * scale)  # a bar chart: pixels a text-only reader would not see
    for k, shade in enumerate([(30, 90, 160), (200, 60, 40), (40, 140, 60), (230, 180, 20)]):
        top = base - int((30 + 17 * ((k * 7 + len(title)) % 5)) * scale)
        draw.rectangle((14 + k * int(30 * scale), top, 14 + k * int(30 * scale) + int(20 * scale), base), fill=shade)
    draw.text((8, height - int(18 * scale)), FOOTER, font=font(int(7 * scale)), fill=(60, 60, 60))
    if photo_seed is not None:  # a phone photo of the page: light falling off to one side, and sensor noise
        rng = random.Random(photo_seed)
        light = Image.linear_gradient("L").rotate(90).resize(size).point(lambda v: 255 - v // 4)
        page = ImageChops.multiply(page, Image.merge("RGB", [light] * 3))
        noise = Image.frombytes("L", size, bytes(rng.randrange(0, 20) for _ in range(width * height)))
        page = ImageChops.subtract(page, Image.merge("RGB", [noise] * 3))
    return page


def to_grey16(page):
    """A 16-bit greyscale (I;16) page spanning 0..65535: 8-bit grey v becomes v * 257, except the header bar
    and the paper, set to GREY16_HEADER and GREY16_PAPER."""
    grey = page.convert("L")
    table = [v * 257 for v in range(256)]
    table[grey.getpixel((2, 2))] = GREY16_HEADER
    table[grey.getpixel((page.width - 2, page.height // 2))] = GREY16_PAPER
    packed = [struct.pack("<H", v) for v in table]
    return Image.frombytes("I;16", grey.size, b"".join(packed[v] for v in grey.tobytes()))


def save_page(page, fmt: str, path: Path) -> None:
    if fmt == "rgb_png":
        page.save(path, format="PNG")
    elif fmt == "grey_jpeg":
        page.convert("L").save(path, format="JPEG", quality=90)
    elif fmt == "cmyk_jpeg":
        page.convert("CMYK").save(path, format="JPEG", quality=90)
    elif fmt == "grey16_png":
        to_grey16(page).save(path, format="PNG")
    elif fmt == "webp":
        page.save(path, format="WEBP", quality=80)
    elif fmt == "rgba_png":
        framed = Image.new("RGBA", (page.width + 2 * MARGIN, page.height + 2 * MARGIN), (0, 0, 0, 0))  # transparent black
        framed.paste(page.convert("RGBA"), (MARGIN, MARGIN))
        stamp = Image.new("RGBA", (60, 24), (200, 0, 0, 110))  # a half-transparent "CHECKED" stamp
        framed.alpha_composite(stamp, (page.width - 70, page.height - 80))
        framed.save(path, format="PNG")
    elif fmt == "palette_png":
        page.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path, format="PNG")
    elif fmt == "exif_rotated_jpeg":
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to show": the camera stored it sideways
        page.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=88, exif=exif.tobytes())
    else:
        raise ValueError(fmt)


def page_formats() -> dict[str, str]:
    """Page number -> format: training pages cycle twice through the formats, validation pages once."""
    train = [p[1] for p in PAGES if p[1] not in VAL_PAGE_NUMBERS]
    names = list(FORMATS)
    assigned = {number: names[k % len(names)] for k, number in enumerate(train)}
    assigned.update({number: names[k] for k, number in enumerate(VAL_PAGE_NUMBERS)})
    return assigned


def page_text(section: str, number: str, title: str, items) -> str:
    return "\n".join([section, number, title, *(f"{item} | {value}" for item, value in items), FOOTER])


def metadata(section: str, kind: str, number: str | None = None, text: str | None = None) -> dict:
    meta = {"section_title": section, "type": kind}
    if number is not None:
        meta["page_no"] = number
    if text is not None:
        meta["ocr_text"] = text
    return meta


def single_row(image: str, page, item: int) -> dict:
    section, number, title, items = page
    label, value = items[item]
    return {"image": image,
            "conversations": [{"role": "user", "content": f"What is the {label}?"},
                              {"role": "assistant", "content": f"{value}."}],
            "metadata": metadata(section, "specification", number, page_text(*page))}


def two_page_row(images: tuple[str, str], pages, as_parts: bool) -> dict:
    (a, b) = pages
    question = f"What are the {a[3][0][0]} and the {b[3][0][0]}?"
    answer = f"{a[3][0][1]} and {b[3][0][1]}."
    meta = metadata(a[0], "comparison", f"{a[1]}+{b[1]}", page_text(*a) + "\n\n" + page_text(*b))
    if as_parts:
        content = [{"type": "image", "path": images[0]}, {"type": "image", "path": images[1]}, {"type": "text", "text": question}]
        return {"conversations": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}], "metadata": meta}
    return {"images": list(images),
            "conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], "metadata": meta}


def text_row(section: str, question: str, answer: str) -> dict:
    return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "metadata": metadata(section, "general")}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def write_odd_manual(root: Path) -> dict:
    """Write root/training_data/{vlm_train.jsonl, vlm_val.jsonl, images/*} and describe what was written."""
    data = Path(root) / "training_data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    formats = page_formats()
    by_number = {p[1]: p for p in PAGES}
    image_of: dict[str, str] = {}
    described: dict[str, dict] = {}
    for k, page in enumerate(PAGES):
        section, number, title, items = page
        fmt = formats[number]
        size = SIZES[k % len(SIZES)]
        image = f"images/{number}{FORMATS[fmt]}"
        upright = draw_page(section, number, title, items, size, photo_seed=k if fmt == "exif_rotated_jpeg" else None)
        save_page(upright, fmt, data / image)
        image_of[number] = image
        stored = size[::-1] if fmt == "exif_rotated_jpeg" else ((size[0] + 2 * MARGIN, size[1] + 2 * MARGIN) if fmt == "rgba_png" else size)
        pil_format, mode, needs_copy = EXPECTED[fmt]
        described[image] = {"format": fmt, "pil_format": pil_format, "mode": mode, "needs_copy": needs_copy,
                            "stored_size": stored, "size": stored[::-1] if fmt == "exif_rotated_jpeg" else stored,
                            "page_no": number, "section": section,
                            "split": "val" if number in VAL_PAGE_NUMBERS else "train"}

    train_numbers = [p[1] for p in PAGES if p[1] not in VAL_PAGE_NUMBERS]
    train: list[dict] = []
    val: list[dict] = []
    # One page a row: every training page once, every other one twice (24 rows).
    for k, number in enumerate(train_numbers):
        train.append(single_row(image_of[number], by_number[number], 0))
        if k % 2 == 0:
            train.append(single_row(image_of[number], by_number[number], 1))
    # Two pages a row, pairing pages of different formats: six through `images`, six through image parts.
    pairs = [(train_numbers[k], train_numbers[(k + 3) % len(train_numbers)]) for k in range(12)]
    for k, (a, b) in enumerate(pairs):
        train.append(two_page_row((image_of[a], image_of[b]), (by_number[a], by_number[b]), as_parts=k % 2 == 1))
    for split, section, question, answer in TEXT_ONLY:
        (train if split == "train" else val).append(text_row(section, question, answer))
    # Validation: every validation page once, two two-page rows of each shape and a text-only row (already added).
    for number in VAL_PAGE_NUMBERS:
        val.append(single_row(image_of[number], by_number[number], 2))
    val_pairs = [("E-20", "C-25"), ("F-18", "C-22"), ("E-23", "F-24")]
    for k, (a, b) in enumerate(val_pairs):
        val.append(two_page_row((image_of[a], image_of[b]), (by_number[a], by_number[b]), as_parts=k != 0))
    # Interleave shapes so consecutive rows (a sequential micro-batch) mix one page, two pages and none.
    train = interleave(train)
    val = interleave(val)
    write_jsonl(data / "vlm_train.jsonl", train)
    write_jsonl(data / "vlm_val.jsonl", val)

    def shape(row: dict) -> str:
        if "image" in row:
            return "single"
        if "images" in row:
            return "two_images_key"
        if isinstance(row["conversations"][0]["content"], list):
            return "two_content_parts"
        return "text_only"

    counts = {split: {name: sum(shape(r) == name for r in rows) for name in ("single", "two_images_key", "two_content_parts", "text_only")}
              for split, rows in (("train", train), ("val", val))}
    return {
        "root": Path(root), "training_data": data,
        "train": data / "vlm_train.jsonl", "val": data / "vlm_val.jsonl", "images_root": data,
        "pages": described,
        "by_format": {fmt: sorted(i for i, d in described.items() if d["format"] == fmt) for fmt in FORMATS},
        "counts": {**counts, "train_rows": len(train), "val_rows": len(val), "pages": len(described),
                   "train_pages": sum(d["split"] == "train" for d in described.values()),
                   "val_pages": sum(d["split"] == "val" for d in described.values()),
                   "normalised_pages": sum(d["needs_copy"] for d in described.values())},
        "document": DOCUMENT,
        "metadata": dict(METADATA_NAMES),
    }


def interleave(rows: list[dict]) -> list[dict]:
    """Rows of each shape spread evenly through the file (a stable, deterministic shuffle)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        key = "image" if "image" in row else "images" if "images" in row else "parts" if isinstance(row["conversations"][0]["content"], list) else "text"
        groups.setdefault(key, []).append(row)
    order = sorted(((k + 0.5) / len(group), name, k) for name, group in groups.items() for k in range(len(group)))
    return [groups[name][k] for _, name, k in order]


def write_odd_recipe(manual: dict, base: str | Path, out: Path, name: str = "odd-manual", axolotl: dict | None = None,
                     **train: object) -> Path:
    """recipes/tiny_cpu_demo.yaml on the odd manual: its data and metadata names, the given tiny model, one
    epoch, a log line per step, short answers; `train` overrides keys of the train block, `axolotl` adds raw keys."""
    from tests.conftest import DEMO_RECIPE

    raw = yaml.safe_load(DEMO_RECIPE.read_text(encoding="utf-8"))
    raw["name"] = name
    raw["description"] = f"The tiny CPU demo on {DOCUMENT}: odd page formats, several pages or none per row."
    raw["model"]["base"] = str(base)
    raw["data"] = {
        "train": str(manual["train"]), "val": str(manual["val"]), "images_root": str(manual["images_root"]),
        "probes": None, "metadata": dict(METADATA_NAMES), "max_images_per_row": 2,
    }
    raw["train"].update({"epochs": 1, "logging_steps": 1, "eval_steps": 1000, "save_steps": 1000, **train})
    raw.setdefault("eval", {}).update({"document": DOCUMENT, "max_tokens": 16})
    if axolotl:
        raw["axolotl"] = {**raw.get("axolotl", {}), **axolotl}
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out
