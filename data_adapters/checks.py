"""Dataset checks beyond the row format: images, duplicates, leakage and sequence length.

Usage:
    problems = check_dataset(train_rows, val_rows, Path("training_data"), recipe)

Each image is opened once; only its header is read unless decode_images is set (a
truncated JPEG passes the header and fails the trainer, so `vlm3 train` decodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_adapters.pipeline import PipelineRow, Problem, is_regular_file, resolve_image
from data_adapters.tokens import MAX_ASPECT_RATIO, estimate_text_tokens, visual_tokens

MIN_IMAGE_SIDE = 28  # px: smaller than one merged patch says the file is not a page
MAX_IMAGE_PIXELS = 60_000_000  # ~ a 600-dpi A3 scan; beyond this the file is probably not a page image
REFUSED_IMAGE_PIXELS = 200_000_000  # px: past this an image is refused before decoding (a decompression bomb
# decodes to gigabytes: 20000x20000 RGB is 1.2 GB); PIL's own bomb check refuses 2x its default 89.5 MP
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # one page image as a file; larger is not a page (and fills the request)


@dataclass(frozen=True)
class ImageInfo:
    path: Path | None
    width: int = 0
    height: int = 0
    problem: str | None = None
    code: str = "image"


def inspect_image(images_root: Path, image: str, decode: bool) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    path = resolve_image(images_root, image)
    if path is None:
        if image and not Path(image).is_absolute() and ".." not in Path(image).parts:
            return ImageInfo(None, problem=f"image {image!r} is a symlink (or under one) to a file outside the images root "
                             f"{images_root}: only files inside it are sent; point data.images_root at the real folder", code="image_outside_root")
        return ImageInfo(None, problem=f"image {image!r} points outside the images root {images_root}", code="image_outside_root")
    if not path.exists():
        return ImageInfo(path, problem=f"image {image!r} not found under {images_root}", code="image_missing")
    if not is_regular_file(path):
        return ImageInfo(path, problem=f"image {image!r} is not a regular file (a folder, device or pipe): point it at an image file", code="image_not_file")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        return ImageInfo(path, problem=f"image {image!r} is {path.stat().st_size:,} bytes, over the {MAX_IMAGE_BYTES:,}-byte limit "
                         "for a page image: save it as a smaller JPEG or PNG", code="image_too_large")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > REFUSED_IMAGE_PIXELS:
                return ImageInfo(path, width, height, f"image {image!r} is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
                                 f"{REFUSED_IMAGE_PIXELS / 1e6:.0f} MP limit (a decompression bomb or a scan at absurd dpi): "
                                 "resize it", "image_too_large")
            transparent = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            if decode:
                img.load()
    except Image.DecompressionBombError as exc:
        return ImageInfo(path, problem=f"image {image!r} is a decompression bomb ({exc}): resize it", code="image_too_large")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        return ImageInfo(path, problem=f"image {image!r} cannot be decoded ({exc})", code="image_undecodable")
    if min(width, height) < 1 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        return ImageInfo(path, width, height, f"image {image!r} is {width}x{height}: Qwen2-VL refuses an aspect ratio over {MAX_ASPECT_RATIO}", "image_aspect")
    if transparent:
        return ImageInfo(path, width, height, f"image {image!r} has an alpha channel: the processor drops it, so transparent "
                         "pixels train as black; `vlm3 resize` writes copies flattened onto white", "image_alpha")
    return ImageInfo(path, width, height)


@dataclass(frozen=True)
class RowStats:
    file: str
    line: int
    split: str
    image: str
    width: int
    height: int
    text_tokens: int
    visual_tokens: int
    answer_words: int
    content_type: str
    section: str

    @property
    def tokens(self) -> int:
        return self.text_tokens + self.visual_tokens


@dataclass
class DatasetScan:
    problems: list[Problem] = field(default_factory=list)
    rows: list[RowStats] = field(default_factory=list)
    images: int = 0


def check_dataset(
    train: list[PipelineRow],
    val: list[PipelineRow],
    images_root: Path,
    recipe,
    decode_images: bool = True,
    tokenizer=None,
) -> list[Problem]:
    """Every problem in the two splits; severity "error" blocks training, "warning" is reported."""
    return scan_dataset(train, val, images_root, recipe, decode_images, tokenizer).problems


def scan_dataset(
    train: list[PipelineRow],
    val: list[PipelineRow],
    images_root: Path,
    recipe,
    decode_images: bool = False,
    tokenizer=None,
) -> DatasetScan:
    """Problems and per-row token counts; each image is opened once."""
    scan = DatasetScan()
    problems = scan.problems
    if not images_root.is_dir():
        problems.append(Problem(str(images_root), None, "images root not found; check data.images_root in the recipe", code="images_root"))
        return scan
    infos: dict[str, ImageInfo] = {}
    splits = [("train", row) for row in train] + [("val", row) for row in val]
    for split, row in splits:
        if row.image not in infos:
            infos[row.image] = inspect_image(images_root, row.image, decode_images)
        info = infos[row.image]
        if info.problem and info.code == "image_alpha":
            problems.append(Problem(row.file, row.line, info.problem, "warning", info.code))
        elif info.problem:
            problems.append(Problem(row.file, row.line, info.problem, code=info.code))
            continue
        if min(info.width, info.height) < MIN_IMAGE_SIDE or info.width * info.height > MAX_IMAGE_PIXELS:
            problems.append(Problem(row.file, row.line, f"image {row.image!r} is {info.width}x{info.height}: is this a page image?", "warning", "image_size"))
        visual = visual_tokens(info.width, info.height, recipe.images.min_pixels, recipe.images.max_pixels, recipe.family.factor)
        text = estimate_text_tokens([t.content for t in row.turns], tokenizer)
        meta = row.metadata
        scan.rows.append(RowStats(row.file, row.line, split, row.image, info.width, info.height, text, visual,
                                  sum(len(t.content.split()) for t in row.turns if t.role == "assistant"),
                                  str(meta.get("content_type") or "unknown"), str(meta.get("section") or "unknown")))
        tokens = text + visual
        if tokens > recipe.train.sequence_len:
            severity = "error" if recipe.data.long_rows == "fail" else "warning"
            action = "raise train.sequence_len, lower images.max_pixels, or set data.long_rows: drop" if severity == "error" else "dropped"
            problems.append(Problem(row.file, row.line, f"~{tokens} tokens is over train.sequence_len {recipe.train.sequence_len} ({action})", severity, "too_long"))
    scan.images = sum(1 for info in infos.values() if not info.problem or info.code == "image_alpha")

    for rows in (train, val):
        seen: dict[str, PipelineRow] = {}
        for row in rows:
            first = seen.setdefault(row.id, row)
            if first is not row:
                problems.append(Problem(row.file, row.line, f"duplicate of line {first.line} (same image and question)", "warning", "duplicate"))

    train_pages = {row.image for row in train}
    first_val: dict[str, PipelineRow] = {}
    for row in val:
        first_val.setdefault(row.image, row)
    for image in sorted(first_val.keys() & train_pages):
        row = first_val[image]
        problems.append(Problem(row.file, row.line, f"page {image!r} is in both train and validation: scores on it measure memorisation", "warning", "leakage"))
    return scan
