"""One normalisation of a page image, used by every stage: the pixels trained on, sent to an endpoint,
resized, counted and shown are the same.

Usage:
    page = open_page(path)                    # RGB, upright, 8 bits per channel
    oriented_size(path)                       # (width, height) as the model sees the page
    data, mime = page_bytes(path)             # what the harness sends: the file, or a lossless PNG
    describe(path).needs_copy                 # True when the trainer must be given a normalised copy

The trainer's loader (transformers' `load_image`, which Axolotl's collator calls on a path)
applies the EXIF orientation and then PIL's `convert("RGB")`. Three of PIL's conversions lose a
page: a 16-bit greyscale PNG (mode I;16) is clipped to white, so its header bar and page number
vanish; RGBA/LA drop the alpha channel, so transparent pixels become black; a palette image with a
transparent colour does the same. Here 16-bit and 32-bit greyscale are scaled to 8 bits, and
transparency is flattened onto white (a page's paper). Everything else (CMYK, palette, greyscale,
WebP, TIFF) goes through the same `convert("RGB")` the trainer uses.

A page that is not already an upright 8-bit RGB or greyscale JPEG or PNG is trained on and sent as
a lossless PNG of these pixels, so no later decoder can read it another way.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

PLAIN_FORMATS = ("JPEG", "PNG")  # decoded identically by PIL in the trainer, vLLM and transformers serve
PLAIN_MODES = ("RGB", "L")  # `convert("RGB")` of these is exact
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16-bit and 32-bit greyscale
EXIF_ORIENTATION = 0x0112
SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # a quarter turn: width and height swap


@dataclass(frozen=True)
class PageFormat:
    """What a page file is, and what the normalisation does to it."""

    format: str  # PIL's format name: JPEG, PNG, WEBP, TIFF, ...
    mode: str  # PIL's mode: RGB, L, CMYK, P, RGBA, I;16, ...
    width: int  # as stored in the file
    height: int
    orientation: int = 1  # EXIF orientation tag (1 = upright)

    @property
    def rotated(self) -> bool:
        return self.orientation not in (0, 1)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation is applied: what the model sees."""
        if self.orientation in SWAPPED_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height

    @property
    def transparent(self) -> bool:
        return self.mode in ALPHA_MODES

    @property
    def needs_copy(self) -> bool:
        """The file would not reach every reader as the same upright 8-bit RGB: write a normalised PNG."""
        return self.rotated or self.format not in PLAIN_FORMATS or self.mode not in PLAIN_MODES

    @property
    def notes(self) -> list[str]:
        """What the normalisation does to this page, one phrase each (for the dataset card)."""
        notes = []
        if self.rotated:
            notes.append(f"EXIF orientation {self.orientation}: turned upright"
                         + (f" ({self.width}x{self.height} -> {self.size[0]}x{self.size[1]})" if self.size != (self.width, self.height) else ""))
        if self.mode in WIDE_GREY_MODES:
            notes.append(f"{self.mode} greyscale: scaled to 8 bits (not clipped)")
        elif self.transparent:
            notes.append(f"{self.mode}: transparency flattened onto white")
        elif self.mode == "P":
            notes.append("palette: expanded to RGB")
        elif self.mode == "CMYK":
            notes.append("CMYK: converted to RGB")
        elif self.mode not in PLAIN_MODES:
            notes.append(f"{self.mode}: converted to RGB")
        if self.format not in PLAIN_FORMATS and not notes:
            notes.append(f"{self.format}: sent and trained as a lossless PNG")
        return notes


def orientation_of(image) -> int:
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: PIL's exif_transpose ignores it too
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def describe_open(image) -> PageFormat:
    """The format of an opened (not necessarily decoded) PIL image."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "PA"  # a palette with a transparent colour: flattened like alpha
    return PageFormat(str(image.format or "unknown"), mode, image.width, image.height, orientation_of(image))


def describe(path: str | Path) -> PageFormat:
    """Read a page's header (nothing is decoded)."""
    from PIL import Image

    with Image.open(path) as image:
        return describe_open(image)


def normalise(image):
    """Upright 8-bit RGB pixels of an opened PIL image (see the module docstring for each mode)."""
    from PIL import Image, ImageOps

    mode = describe_open(image).mode
    image = ImageOps.exif_transpose(image)
    if image.mode in WIDE_GREY_MODES:
        image = scale_to_8_bits(image)
    elif mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        page = Image.new("RGB", rgba.size, "white")
        page.paste(rgba, mask=rgba.getchannel("A"))
        return page
    return image.convert("RGB")


def scale_to_8_bits(image):
    """A 16- or 32-bit greyscale image mapped onto 0..255: 16-bit by its full range (v / 257, rounded);
    a 32-bit integer or float image by its own range when it leaves 0..255."""
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
        image = image.convert("I")
    else:
        low, high = (float(v) for v in image.getextrema())
        if low >= 0 and high <= 65535 and image.mode == "I":
            low, high = 0.0, (65535.0 if high > 255 else 255.0)
        if image.mode == "F":
            image = image.point(lambda v: (v - low) * (65535.0 / max(high - low, 1e-12))).convert("I")
            low, high = 0.0, 65535.0
    scale = 255.0 / max(high - low, 1e-12)
    return image.point(lambda v: (v - low) * scale + 0.5).convert("L").convert("RGB")


def open_page(path: str | Path):
    """The page's normalised pixels (a decoded PIL RGB image)."""
    from PIL import Image

    with Image.open(path) as image:
        page = normalise(image)
        page.load()
        return page


def oriented_size(path: str | Path) -> tuple[int, int]:
    return describe(path).size


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; fast over small
    return buffer.getvalue()


def page_bytes(path: str | Path) -> tuple[bytes, str]:
    """(bytes, MIME type) to send for a page: the file itself when every reader decodes it to the
    normalised pixels, else a PNG of them."""
    path = Path(path)
    fmt = describe(path)
    if not fmt.needs_copy:
        return path.read_bytes(), "image/png" if fmt.format == "PNG" else "image/jpeg"
    return png_bytes(open_page(path)), "image/png"


def normalised_copy(path: Path, folder: Path) -> Path:
    """A lossless PNG of the page's normalised pixels in `folder`, named by the file's content (written once)."""
    import os
    import tempfile

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    target = folder / f"{digest}.png"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=folder, prefix=f".{digest}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(png_bytes(open_page(path)))
        os.replace(staging, target)  # two writers of one page write the same bytes: the last rename wins, whole
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target
