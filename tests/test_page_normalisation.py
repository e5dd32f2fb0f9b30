"""The one page normalisation (data_adapters.images): what each odd format becomes, and when a copy is needed.

The trainer's side of the same pixels (transformers' `load_image` on the copy `prepare` writes) is
checked in tests/test_page_pixels.py, in the trainer environment.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from data_adapters.images import describe, normalise, normalised_copy, open_page, page_bytes


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def write(tmp_path, name: str, image: Image.Image, **save) -> str:
    path = tmp_path / name
    image.save(path, **save)
    return str(path)


def test_plain_pages_are_sent_as_they_are(tmp_path):
    for name, image in (("p.jpg", Image.new("RGB", (60, 80), "white")), ("g.jpg", Image.new("L", (60, 80), 128)),
                        ("p.png", Image.new("RGB", (60, 80), "red"))):
        path = write(tmp_path, name, image)
        data, mime = page_bytes(path)
        assert not describe(path).needs_copy and data == open(path, "rb").read()
        assert mime == ("image/png" if name.endswith(".png") else "image/jpeg")


def test_a_rotated_photo_is_upright_and_its_size_swaps(tmp_path):
    stored = Image.new("RGB", (80, 60), "white")
    stored.paste((0, 0, 0), (0, 0, 10, 60))  # the page's top edge, stored on the left
    path = write(tmp_path, "photo.jpg", stored, exif=exif_orientation(6), quality=100)
    fmt = describe(path)
    assert fmt.rotated and fmt.needs_copy and (fmt.width, fmt.height) == (80, 60) and fmt.size == (60, 80)
    page = open_page(path)
    assert page.size == (60, 80) and page.convert("L").getpixel((30, 2)) < 40  # the dark edge is on top
    data, mime = page_bytes(path)
    assert mime == "image/png" and Image.open(io.BytesIO(data)).tobytes() == page.tobytes()


@pytest.mark.parametrize("mode,fill,expected", [
    ("I;16", 8000, round(8000 / 257)),  # PIL's convert("RGB") makes this 255: the header bar vanishes
    ("I;16", 65535, 255),
    ("I;16", 0, 0),
])
def test_16_bit_greyscale_is_scaled_not_clipped(mode, fill, expected):
    image = Image.new(mode, (4, 4), fill)
    assert normalise(image).getpixel((0, 0)) == (expected,) * 3
    if 0 < fill < 65535:
        assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)  # the clipping this replaces


def test_transparency_is_white_paper_not_black(tmp_path):
    for name, image in (("a.png", Image.new("RGBA", (8, 8), (0, 0, 0, 0))), ("la.png", Image.new("LA", (8, 8), (0, 0)))):
        path = write(tmp_path, name, image)
        assert describe(path).needs_copy and open_page(path).getextrema() == ((255, 255),) * 3
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0] * 256)
    path = write(tmp_path, "p.png", palette, transparency=0)
    assert describe(path).mode == "PA" and open_page(path).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_webp_and_palette_go_through_the_trainers_conversion(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    path = write(tmp_path, "c.jpg", cmyk)
    with Image.open(path) as original:
        assert open_page(path).tobytes() == original.convert("RGB").tobytes()  # what load_image does to a CMYK page
    assert describe(path).needs_copy and page_bytes(path)[1] == "image/png"
    webp = write(tmp_path, "w.webp", Image.new("RGB", (8, 8), "blue"), lossless=True)
    assert describe(webp).format == "WEBP" and describe(webp).needs_copy and open_page(webp).getpixel((0, 0)) == (0, 0, 255)


def test_normalised_copies_are_named_by_content_and_written_once(tmp_path):
    path = tmp_path / "deep.png"
    Image.new("I;16", (8, 8), 30000).save(path)
    first = normalised_copy(path, tmp_path / "pages")
    mtime = first.stat().st_mtime_ns
    assert normalised_copy(path, tmp_path / "pages") == first and first.stat().st_mtime_ns == mtime
    assert Image.open(first).tobytes() == open_page(path).tobytes()
    assert not list((tmp_path / "pages").glob(".*partial"))
