"""The pixels of a page are the same everywhere: what the harness sends, what the trainer reads, what vlm3 opens.

    .venv/bin/python -m pytest -q tests/test_page_pixels.py -s      # prints the table per format

For every odd page format of tests/odd_manual.py (RGB PNG, greyscale JPEG, CMYK JPEG, 16-bit PNG, WebP,
RGBA PNG, palette PNG, an EXIF-rotated phone photo):
- sent: transformers' `load_image` (what `transformers serve` and Axolotl's collator call) on the
  data URL of `data_adapters.images.page_bytes(path)`, in the trainer environment;
- trained: `load_image` on the path `prepare_dataset` wrote into the converted row (a normalised PNG
  under the run's data/pages/, or the file itself), from the run directory as the trainer runs;
- opened: `data_adapters.images.open_page(path)`, here (the light environment's Pillow) and there;
all byte for byte, and the processor's `pixel_values` of sent and trained are equal.

And the problem the normalisation solves is real: `load_image` on the original 16-bit page clips it
to white (its header bar is gone) and on the RGBA page turns the transparent margins black. For the
phone photo, `load_image` applies the EXIF orientation itself (transformers 5.16, image_utils.py
`load_image`: `ImageOps.exif_transpose`), so the trainer alone would have seen it upright; a reader
that decodes the bytes without it (PIL's `Image.open(...).convert("RGB")`) gets it sideways, which is
why the page is sent and trained as an upright PNG.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from data_adapters.images import describe, open_page, page_bytes
from data_adapters.pipeline import read_pipeline
from tests.conftest import ROOT, TINY_MODEL
from tests.odd_manual import EXPECTED, FORMATS, GREY16_HEADER, GREY16_PAPER, METADATA_NAMES, write_odd_manual, write_odd_recipe


def digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


PIXELS_IN_TRAINER = """
import base64, hashlib, json, os, sys
import torch
from PIL import Image
import PIL
from transformers import AutoProcessor
from transformers.image_utils import load_image
from data_adapters.images import open_page

request = json.loads(sys.stdin.read())
processor = AutoProcessor.from_pretrained(request["model"], **request["processor_kwargs"])

def digest(image):
    return hashlib.sha256(image.tobytes()).hexdigest()

def facts(image):
    return {"sha": digest(image), "mode": image.mode, "size": list(image.size),
            "corner": list(image.getpixel((0, 0))), "header": list(image.getpixel((image.width // 2, 24)))}

out = {"pillow": PIL.__version__, "pages": {}}
for page in request["pages"]:
    sent_bytes = open(page["sent"], "rb").read()
    sent = load_image(f"data:{page['mime']};base64," + base64.b64encode(sent_bytes).decode())
    os.chdir(request["run"])  # a normalised copy is named relative to the run directory, where the trainer runs
    trained = load_image(page["trained"])
    os.chdir(request["home"])
    values = [processor.image_processor(images=[image], return_tensors="pt")["pixel_values"] for image in (sent, trained)]
    out["pages"][page["image"]] = {
        "sent": facts(sent), "trained": facts(trained), "opened_here": facts(open_page(page["original"])),
        "original_loaded": facts(load_image(page["original"])),
        "original_plain": facts(Image.open(page["original"]).convert("RGB")),
        "pixel_values_equal": bool(torch.equal(values[0], values[1])), "pixel_values_shape": list(values[0].shape),
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> dict:
    """The odd manual converted by `prepare_dataset`; every page's pixels as sent, trained and opened."""
    from data_adapters.convert import prepare_dataset
    from vlm3.recipe.schema import load_recipe
    from vlm3.train.trainer_env import TrainerEnv

    root = tmp_path_factory.mktemp("pixels")
    manual = write_odd_manual(root)
    recipe = load_recipe(write_odd_recipe(manual, TINY_MODEL, root / "recipe.yaml"))
    run = root / "run"
    prepare_dataset(recipe, out_dir=run / "data")
    trained: dict[str, str] = {}  # page as written in the pipeline -> path in the converted row
    for split in ("train", "val"):
        rows, _ = read_pipeline(manual[split], recipe.data.metadata)
        converted = [json.loads(line) for line in (run / "data" / f"{split}.jsonl").read_text().splitlines()]
        for row, out in zip(rows, converted, strict=True):
            paths = [p["path"] for m in out["messages"] for p in m["content"] if p["type"] == "image"]
            for image, path in zip(row.images, paths, strict=True):
                assert trained.setdefault(image, path) == path
    assert set(trained) == set(manual["pages"])
    sent_dir = root / "sent"
    sent_dir.mkdir()
    here: dict[str, dict] = {}
    request = {"model": str(TINY_MODEL), "run": str(run), "home": str(ROOT), "pages": [],
               "processor_kwargs": {"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels}}
    for k, (image, page) in enumerate(sorted(manual["pages"].items())):
        original = manual["images_root"] / image
        data, mime = page_bytes(original)
        sent = sent_dir / f"{k}.bin"
        sent.write_bytes(data)
        opened = open_page(original)
        here[image] = {"sha": digest(opened), "size": list(opened.size), "mime": mime, "sent_is_file": data == original.read_bytes(),
                       "header": list(opened.getpixel((opened.width // 2, 24))), "corner": list(opened.getpixel((0, 0)))}
        request["pages"].append({"image": image, "original": str(original), "sent": str(sent), "mime": mime, "trained": trained[image]})
    env = TrainerEnv.locate()
    proc = subprocess.run([str(env.python), "-c", PIXELS_IN_TRAINER], input=json.dumps(request), capture_output=True, text=True,
                          cwd=ROOT, env=env.environ(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"manual": manual, "trained": trained, "here": here, "there": there["pages"], "trainer_pillow": there["pillow"]}


@pytest.mark.trainer
@pytest.mark.manuals  # with the second manual's tier: it builds that manual and runs the trainer environment
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sent_trained_and_opened_pixels_are_identical(pixels, fmt, capsys):
    manual = pixels["manual"]
    images = manual["by_format"][fmt]
    with capsys.disabled():  # the measured table, one line a page
        for image in images:
            here, there = pixels["here"][image], pixels["there"][image]
            same = here["sha"] == there["sent"]["sha"] == there["trained"]["sha"] == there["opened_here"]["sha"]
            print(f"\n  {fmt:<18} {image:<17} {'x'.join(map(str, here['size'])):>8}  sent {'file' if here['sent_is_file'] else 'PNG '}"
                  f"  sent = trained = open_page: {same}  pixel_values equal: {there['pixel_values_equal']}", end="")
    for image in images:
        page = manual["pages"][image]
        here, there = pixels["here"][image], pixels["there"][image]
        assert describe(manual["images_root"] / image).needs_copy is EXPECTED[fmt][2]
        # The file itself goes out only when every reader decodes it to the normalised pixels; otherwise a PNG of them.
        assert here["sent_is_file"] is not page["needs_copy"]
        assert pixels["trained"][image].startswith("data/pages/") is page["needs_copy"]
        assert there["sent"]["mode"] == there["trained"]["mode"] == "RGB"
        assert there["sent"]["size"] == there["trained"]["size"] == here["size"] == list(page["size"])
        assert there["sent"]["sha"] == there["trained"]["sha"] == here["sha"], image
        assert there["opened_here"]["sha"] == here["sha"], f"{image}: open_page differs between the trainer's and the light env's Pillow"
        assert there["pixel_values_equal"], image


@pytest.mark.trainer
@pytest.mark.manuals
def test_the_problem_is_real_on_the_originals(pixels, capsys):
    """What the trainer's loader makes of the files themselves, without vlm3's normalisation."""
    manual, here, there = pixels["manual"], pixels["here"], pixels["there"]
    (grey16, *_) = manual["by_format"]["grey16_png"]
    (rgba, *_) = manual["by_format"]["rgba_png"]
    (photo, *_) = manual["by_format"]["exif_rotated_jpeg"]
    with capsys.disabled():
        print(f"\n  16-bit {grey16}: header pixel open_page {here[grey16]['header']}, load_image(original) {there[grey16]['original_loaded']['header']}"
              f"\n  RGBA {rgba}: corner pixel open_page {here[rgba]['corner']}, load_image(original) {there[rgba]['original_loaded']['corner']}"
              f"\n  EXIF-rotated {photo}: open_page {here[photo]['size']}, load_image(original) {there[photo]['original_loaded']['size']}, "
              f"PIL open+convert(original) {there[photo]['original_plain']['size']}")
    # 16-bit: clipped to white; the dark header bar (8000 of 65535) and the page number on it are gone.
    assert there[grey16]["original_loaded"]["sha"] != here[grey16]["sha"]
    assert there[grey16]["original_loaded"]["header"] == [255, 255, 255] and here[grey16]["header"] == [31, 31, 31]
    # RGBA: the transparent margins come out black, not paper white.
    assert there[rgba]["original_loaded"]["sha"] != here[rgba]["sha"]
    assert there[rgba]["original_loaded"]["corner"] == [0, 0, 0] and here[rgba]["corner"] == [255, 255, 255]
    # The photo: load_image turns it upright itself (the same pixels); a decoder without EXIF handling does not.
    assert there[photo]["original_loaded"]["sha"] == here[photo]["sha"]
    assert there[photo]["original_plain"]["size"] == here[photo]["size"][::-1] != here[photo]["size"]
    assert there[photo]["original_plain"]["sha"] != here[photo]["sha"]


def test_the_odd_manual_has_every_format_in_both_splits(tmp_path):
    """The generator itself (no trainer): each format in training and validation, as PIL reads it; validation
    pages held out; the 16-bit pages span 0..65535; the same call writes the same bytes."""
    from PIL import Image

    manual = write_odd_manual(tmp_path)
    for fmt in FORMATS:
        images = manual["by_format"][fmt]
        assert {manual["pages"][image]["split"] for image in images} == {"train", "val"}, fmt
        for image in images:
            found = describe(manual["images_root"] / image)
            assert (found.format, found.mode, found.needs_copy) == EXPECTED[fmt], image
            assert found.size == tuple(manual["pages"][image]["size"])
            assert found.rotated is (fmt == "exif_rotated_jpeg")
    for image in manual["by_format"]["grey16_png"]:
        with Image.open(manual["images_root"] / image) as page:
            assert page.getextrema() == (0, 65535)
            assert page.getpixel((2, 2)) == GREY16_HEADER and page.getpixel((page.width - 2, page.height // 2)) == GREY16_PAPER
    train, problems = read_pipeline(manual["train"], METADATA_NAMES)
    val, more = read_pipeline(manual["val"], METADATA_NAMES)
    assert not problems + more
    assert not {i for r in train for i in r.images} & {i for r in val for i in r.images}
    assert manual["counts"]["train_rows"] == len(train) == 40 and manual["counts"]["val_rows"] == len(val) == 12
    assert {len(r.images) for r in train} == {len(r.images) for r in val} == {0, 1, 2}
    assert all(r.metadata["section"] in ("Electrical", "Fuel system", "Chassis") for r in train + val)  # mapped from section_title
    again = write_odd_manual(tmp_path / "again")
    assert manual["train"].read_bytes() == again["train"].read_bytes()
    assert all((manual["images_root"] / i).read_bytes() == (again["images_root"] / i).read_bytes() for i in manual["pages"])
