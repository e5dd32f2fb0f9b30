"""Dataset checks beyond the row format: images, duplicates, leakage, metadata and sequence length.

Usage:
    problems = check_dataset(train_rows, val_rows, Path("training_data"), recipe)

Each image is opened once, however many rows show it; only its header is read unless
decode_images is set (a truncated JPEG passes the header and fails the trainer, so `vlm3 train`
decodes). A row's visual tokens are the sum over its pages, each counted at its upright size
(EXIF orientation applied, as the trainer's loader does). A row may show up to
`data.max_images_per_row` pages, or none. With `data.long_rows: drop`, rows over the sequence
length are left out of the counts here, as `prepare` leaves them out of training, and a split
that would lose most of its rows is an error before anything is priced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_adapters.images import PageFormat, describe_open
from data_adapters.pipeline import METADATA_ALIASES, PipelineRow, Problem, is_regular_file, resolve_image
from data_adapters.tokens import MAX_ASPECT_RATIO, estimate_text_tokens, visual_tokens

MIN_IMAGE_SIDE = 28  # px: smaller than one merged patch says the file is not a page
MAX_IMAGE_PIXELS = 60_000_000  # ~ a 600-dpi A3 scan; beyond this the file is probably not a page image
REFUSED_IMAGE_PIXELS = 200_000_000  # px: past this an image is refused before decoding (a decompression bomb
# decodes to gigabytes: 20000x20000 RGB is 1.2 GB); PIL's own bomb check refuses 2x its default 89.5 MP
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # one page image as a file; larger is not a page (and fills the request)
MAX_DROPPED_FRACTION = 0.5  # long_rows: drop losing more than this share of a split is a mis-set limit, not a few outliers
MOSTLY_MISSING = 0.5  # a metadata name missing from more than this share of rows is reported


@dataclass(frozen=True)
class ImageInfo:
    path: Path | None
    width: int = 0  # upright: after the EXIF orientation, as the model sees the page
    height: int = 0
    problem: str | None = None
    code: str = "image"
    format: PageFormat | None = None


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
            page_format = describe_open(img)
            width, height = page_format.size
            if width * height > REFUSED_IMAGE_PIXELS:
                return ImageInfo(path, width, height, f"image {image!r} is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
                                 f"{REFUSED_IMAGE_PIXELS / 1e6:.0f} MP limit (a decompression bomb or a scan at absurd dpi): "
                                 "resize it", "image_too_large")
            if decode:
                img.load()
    except Image.DecompressionBombError as exc:
        return ImageInfo(path, problem=f"image {image!r} is a decompression bomb ({exc}): resize it", code="image_too_large")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        return ImageInfo(path, problem=f"image {image!r} cannot be decoded ({exc})", code="image_undecodable")
    if min(width, height) < 1 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        return ImageInfo(path, width, height, f"image {image!r} is {width}x{height}: Qwen2-VL refuses an aspect ratio over {MAX_ASPECT_RATIO}", "image_aspect")
    return ImageInfo(path, width, height, format=page_format)


@dataclass(frozen=True)
class RowStats:
    file: str
    line: int
    split: str
    images: tuple[str, ...]  # the row's pages in order; empty for a text-only row
    sizes: tuple[tuple[int, int], ...]  # each page's upright (width, height)
    text_tokens: int
    visual_tokens: int  # the sum over the row's pages
    answer_words: int
    content_type: str
    section: str

    @property
    def tokens(self) -> int:
        return self.text_tokens + self.visual_tokens


@dataclass
class DatasetScan:
    problems: list[Problem] = field(default_factory=list)
    rows: list[RowStats] = field(default_factory=list)  # the rows that will train: long rows dropped by data.long_rows are not here
    images: int = 0
    formats: dict[str, PageFormat] = field(default_factory=dict)  # each readable page, once
    dropped: dict[str, int] = field(default_factory=dict)  # split -> rows dropped as too long
    max_images_per_row: int = 0


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
    has_images = any(row.images for row in train + val)
    if has_images and not images_root.is_dir():
        problems.append(Problem(str(images_root), None, "images root not found; check data.images_root in the recipe", code="images_root"))
        return scan
    infos: dict[str, ImageInfo] = {}
    limit = recipe.data.max_images_per_row
    images_cfg, factor = recipe.images, recipe.family.factor
    kept: dict[str, int] = {"train": 0, "val": 0}
    splits = [("train", row) for row in train] + [("val", row) for row in val]
    for split, row in splits:
        repeated = sorted({image for image in row.images if row.images.count(image) > 1})
        if repeated:
            problems.append(Problem(row.file, row.line, f"page(s) {', '.join(map(repr, repeated))} listed more than once in the row: "
                                    "each copy costs its visual tokens again; list each page once", "warning", "repeated_page"))
        if len(row.images) > limit:
            problems.append(Problem(row.file, row.line, f"the row shows {len(row.images)} pages, over data.max_images_per_row {limit}: "
                                    "raise it in the recipe (each page costs its visual tokens) or split the row", code="too_many_images"))
            continue
        usable = True
        for image in row.images:
            if image not in infos:
                infos[image] = inspect_image(images_root, image, decode_images)
                info = infos[image]
                if info.problem is None and (min(info.width, info.height) < MIN_IMAGE_SIDE or info.width * info.height > MAX_IMAGE_PIXELS):
                    problems.append(Problem(row.file, row.line, f"image {image!r} is {info.width}x{info.height}: is this a page image?",
                                            "warning", "image_size"))
            info = infos[image]
            if info.problem:
                problems.append(Problem(row.file, row.line, info.problem, code=info.code))
                usable = False
        if not usable:
            continue
        sizes = tuple((infos[i].width, infos[i].height) for i in row.images)
        visual = sum(visual_tokens(w, h, images_cfg.min_pixels, images_cfg.max_pixels, factor) for w, h in sizes)
        added_system = None if row.turns[0].role == "system" else (recipe.data.system_prompt or recipe.family.default_system)
        text = estimate_text_tokens([t.content for t in row.turns], tokenizer, images=len(row.images), system=added_system)
        meta = row.metadata
        tokens = text + visual
        if tokens > recipe.train.sequence_len:
            severity = "error" if recipe.data.long_rows == "fail" else "warning"
            action = "raise train.sequence_len, lower images.max_pixels, or set data.long_rows: drop" if severity == "error" else "dropped"
            problems.append(Problem(row.file, row.line, f"~{tokens} tokens is over train.sequence_len {recipe.train.sequence_len} ({action})", severity, "too_long"))
            if severity == "warning":
                scan.dropped[split] = scan.dropped.get(split, 0) + 1
                continue
        kept[split] += 1
        scan.max_images_per_row = max(scan.max_images_per_row, len(row.images))
        scan.rows.append(RowStats(row.file, row.line, split, row.images, sizes, text, visual,
                                  sum(len(t.content.split()) for t in row.turns if t.role == "assistant"),
                                  str(meta.get("content_type") or "unknown"), str(meta.get("section") or "unknown")))
    scan.formats = {image: info.format for image, info in infos.items() if info.problem is None and info.format is not None}
    scan.images = len(scan.formats)
    problems.extend(dropped_problems(scan.dropped, {"train": train, "val": val}, kept, recipe))
    problems.extend(metadata_problems(train + val, recipe))

    for rows in (train, val):
        seen: dict[str, PipelineRow] = {}
        for row in rows:
            first = seen.setdefault(row.id, row)
            if first is not row:
                problems.append(Problem(row.file, row.line, f"duplicate of line {first.line} (same pages and question)", "warning", "duplicate"))

    train_pages = {image for row in train for image in row.images}
    reported: set[str] = set()
    for row in val:
        shared = [image for image in row.images if image in train_pages and image not in reported]
        if shared:
            reported.update(shared)
            pages = ", ".join(repr(i) for i in shared)
            problems.append(Problem(row.file, row.line, f"page(s) {pages} of this validation row are in training too: scores on it "
                                    "measure memorisation", "warning", "leakage"))
    return scan


def dropped_problems(dropped: dict[str, int], rows: dict[str, list], kept: dict[str, int], recipe) -> list[Problem]:
    """`long_rows: drop` that would leave a split empty or nearly so: an error, before anything is priced."""
    problems = []
    for split, count in dropped.items():
        total = len(rows[split])
        path = recipe.data.train if split == "train" else recipe.data.val
        if (split == "train" and kept[split] == 0) or count > MAX_DROPPED_FRACTION * total:
            problems.append(Problem(path, None, f"data.long_rows: drop leaves {kept[split]} of {total} {split} rows ({count} are over "
                                    f"train.sequence_len {recipe.train.sequence_len}): raise train.sequence_len or lower "
                                    "images.max_pixels (`vlm3 plan` shows the trade-off)", code="dropped_most"))
    return problems


def metadata_problems(rows: list[PipelineRow], recipe) -> list[Problem]:
    """A `data.metadata` name no row carries is an error; vlm3 names most rows lack are one warning each, with
    the keys the rows do carry, so "unknown" never silently stands for a section."""
    if not rows:
        return []
    names = dict(recipe.data.metadata or {})
    where = recipe.data.train
    carried: dict[str, int] = {}  # the pipeline's own keys (a name filled by the mapping is not one)
    for row in rows:
        for key in row.source_keys:
            carried[key] = carried.get(key, 0) + 1
    problems = []
    for ours, theirs in names.items():
        if theirs not in carried:
            problems.append(Problem(where, None, f"data.metadata.{ours} names {theirs!r}, which no row's metadata has; the rows carry: "
                                    f"{', '.join(sorted(carried)) or 'no metadata'}", code="metadata_map"))
    for ours in ("section", "page", "content_type"):
        counted = [row for row in rows if row.images] if ours == "page" else rows  # a text-only row has no page to name
        missing = sum(1 for row in counted if row.metadata.get(ours) in (None, ""))
        if not counted or missing <= MOSTLY_MISSING * len(counted):
            continue
        suggestion = next((alias for alias in METADATA_ALIASES[ours] if alias in carried), None)
        hint = (f"map it with data.metadata: {{{ours}: {suggestion}}}" if suggestion
                else f"map one with data.metadata: {{{ours}: <key>}}" if carried else "the pipeline writes no metadata")
        effect = ("pages are named by their image files" if ours == "page"
                  else "they group as 'unknown' in reports and `vlm3 weak`")
        problems.append(Problem(where, None, f"{missing} of {len(counted)} rows have no {ours!r} in their metadata, so {effect}; "
                                f"the rows carry: {', '.join(sorted(carried)) or 'nothing'}; {hint}", "warning", "metadata_missing"))
    return problems


FIRST_PLACES = 3  # places named for each group of warnings; the rest are counted
# Causes whose message names the row itself (its token count, the line it duplicates): grouped by cause, not by message.
ROW_CAUSES = {
    "too_long": "rows over train.sequence_len",
    "duplicate": "rows that duplicate an earlier row (same pages and question)",
    "repeated_page": "rows that list a page more than once (each copy costs its visual tokens again)",
}


@dataclass(frozen=True)
class ProblemGroup:
    """Problems with one cause: a message repeated at several places (the same image in many rows), or
    one of ROW_CAUSES; `places` are the first few "file:line", `count` is all of them."""

    severity: str
    code: str
    cause: str
    count: int
    places: tuple[str, ...]
    example: str | None = None  # for a ROW_CAUSES group: the first row's own message

    def __str__(self) -> str:
        if self.count == 1:
            where = f"{self.places[0]}: " if self.places and self.places[0] else ""
            return f"{where}{self.example or self.cause}"
        more = f", ... {self.count - len(self.places)} more" if self.count > len(self.places) else ""
        example = f"; first: {self.example}" if self.example else ""
        return f"{self.cause} ({self.count} places: {', '.join(self.places)}{more}){example}"

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "cause": self.cause, "count": self.count,
                "places": list(self.places), **({"example": self.example} if self.example else {})}


def group_problems(problems: list[Problem], first: int = FIRST_PLACES) -> list[ProblemGroup]:
    """Problems grouped by cause, in the order each cause first appears; every problem is counted in one group."""
    groups: dict[tuple[str, str, str], list[Problem]] = {}
    for problem in problems:
        cause = ROW_CAUSES.get(problem.code, problem.message)
        groups.setdefault((problem.severity, problem.code, cause), []).append(problem)
    result = []
    for (severity, code, cause), members in groups.items():
        places = tuple(dict.fromkeys(f"{p.file}:{p.line}" if p.line else p.file for p in members))
        example = members[0].message if code in ROW_CAUSES else None
        result.append(ProblemGroup(severity, code, cause, len(members), places[:first], example))
    return result
