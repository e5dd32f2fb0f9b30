"""Dataset checks beyond the row format: images, duplicates, leakage and sequence length.

Usage:
    problems = check_dataset(train_rows, val_rows, Path("training_data"), recipe)

Each image is opened once; only its header is read unless decode_images is set (a
truncated JPEG passes the header and fails the trainer, so `vlm3 train` decodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_adapters.pipeline import PipelineRow, Problem, resolve_image
from data_adapters.tokens import MAX_ASPECT_RATIO, estimate_text_tokens, visual_tokens

MIN_IMAGE_SIDE = 28  # px: smaller than one merged patch says the file is not a page
MAX_IMAGE_PIXELS = 60_000_000  # ~ a 600-dpi A3 scan; beyond this the file is probably not a page image


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
        return ImageInfo(None, problem=f"image {image!r} points outside the images root {images_root}", code="image_outside_root")
    if not path.is_file():
        return ImageInfo(path, problem=f"image {image!r} not found under {images_root}", code="image_missing")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if decode:
                img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return ImageInfo(path, problem=f"image {image!r} cannot be decoded ({exc})", code="image_undecodable")
    if min(width, height) < 1 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        return ImageInfo(path, width, height, f"image {image!r} is {width}x{height}: Qwen2-VL refuses an aspect ratio over {MAX_ASPECT_RATIO}", "image_aspect")
    return ImageInfo(path, width, height)


def check_dataset(
    train: list[PipelineRow],
    val: list[PipelineRow],
    images_root: Path,
    recipe,
    decode_images: bool = True,
    tokenizer=None,
) -> list[Problem]:
    """Every problem in the two splits; severity "error" blocks training, "warning" is reported."""
    problems: list[Problem] = []
    if not images_root.is_dir():
        return [Problem(str(images_root), None, "images root not found; check data.images_root in the recipe", code="images_root")]
    infos: dict[str, ImageInfo] = {}
    for row in train + val:
        if row.image not in infos:
            infos[row.image] = inspect_image(images_root, row.image, decode_images)
        info = infos[row.image]
        if info.problem:
            problems.append(Problem(row.file, row.line, info.problem, code=info.code))
            continue
        if min(info.width, info.height) < MIN_IMAGE_SIDE or info.width * info.height > MAX_IMAGE_PIXELS:
            problems.append(Problem(row.file, row.line, f"image {row.image!r} is {info.width}x{info.height}: is this a page image?", "warning", "image_size"))
        tokens = visual_tokens(info.width, info.height, recipe.images.min_pixels, recipe.images.max_pixels)
        tokens += estimate_text_tokens([t.content for t in row.turns], tokenizer)
        if tokens > recipe.train.sequence_len:
            severity = "error" if recipe.data.long_rows == "fail" else "warning"
            action = "raise train.sequence_len, lower images.max_pixels, or set data.long_rows: drop" if severity == "error" else "dropped"
            problems.append(Problem(row.file, row.line, f"~{tokens} tokens is over train.sequence_len {recipe.train.sequence_len} ({action})", severity, "too_long"))

    for rows in (train, val):
        seen: dict[str, PipelineRow] = {}
        for row in rows:
            first = seen.setdefault(row.id, row)
            if first is not row:
                problems.append(Problem(row.file, row.line, f"duplicate of line {first.line} (same image and question)", "warning", "duplicate"))

    train_pages = {row.image for row in train}
    leaked = sorted({row.image for row in val} & train_pages)
    for image in leaked:
        row = next(r for r in val if r.image == image)
        problems.append(Problem(row.file, row.line, f"page {image!r} is in both train and validation: scores on it measure memorisation", "warning", "leakage"))
    return problems
