"""Pipeline JSONL in, Axolotl's multimodal chat JSONL out, checked on the way.

Usage:
    report = prepare_dataset(recipe, out_dir=run.data_dir, image_dir="/abs/training_data")

Reads the recipe's train and validation files (never modifies them), checks every row
and image, and writes `train.jsonl` and `val.jsonl` under out_dir only when nothing is
wrong; a DataError lists every problem with file and line otherwise.

A page the trainer's loader would read otherwise than the harness sends it (EXIF-rotated,
16-bit, CMYK, transparent, WebP: data_adapters.images) is trained from a lossless PNG of its
normalised pixels, written under out_dir/pages/ and named in the row by its path relative to
the run directory (where the trainer runs, locally and on Modal).

Each written row carries `length`: its visual plus text tokens, the count `vlm3 check` makes.
The trainer's length-grouped sampler (`group_by_length`) reads that column in both splits, so
micro-batches hold rows of similar length and little of each batch is padding.

`data_version` names the converted data: a short hash of train.jsonl and val.jsonl as written, with the
images folder's own path left out (the same data converted in another checkout or container has the same
version). Reports carry it, so two runs on the same data can be told from two runs on different data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from data_adapters.checks import group_problems, scan_dataset
from vlm3.core.jsonio import write_jsonl
from data_adapters.images import normalised_copy
from data_adapters.pipeline import DataError, PipelineRow, Problem, read_pipeline, resolve_image, to_axolotl_row
from data_adapters.tokens import load_tokenizer


@dataclass
class DatasetReport:
    train_rows: int
    val_rows: int
    images: int
    dropped: int = 0
    warnings: list[Problem] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    max_images_per_row: int = 1  # vLLM's --limit-mm-per-prompt for this run's model
    normalised_pages: int = 0  # pages trained from a normalised copy
    data_version: str | None = None  # data_version() of the written files

    def to_dict(self) -> dict:
        return {
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "images": self.images,
            "max_images_per_row": self.max_images_per_row,
            "normalised_pages": self.normalised_pages,
            "dropped": self.dropped,
            "warnings": [str(w) for w in self.warnings],  # every one, each at its file and line
            "warning_groups": [g.to_dict() for g in group_problems(self.warnings)],  # by cause, with counts
            "files": self.files,
            "data_version": self.data_version,
        }


@dataclass
class LoadedData:
    train: list[PipelineRow]
    val: list[PipelineRow]
    problems: list[Problem]
    lengths: dict[tuple[str, int], int] = field(default_factory=dict)  # (file, line) -> visual + text tokens
    formats: dict = field(default_factory=dict)  # image -> data_adapters.images.PageFormat


def load_data(recipe, decode_images: bool = True) -> LoadedData:
    """Read and check the recipe's data; nothing is written."""
    train, train_problems = read_pipeline(recipe.data.train, recipe.data.metadata)
    val, val_problems = read_pipeline(recipe.data.val, recipe.data.metadata)
    problems = train_problems + val_problems
    tokenizer = load_tokenizer(recipe.model.base)  # the same token counts as `vlm3 check`
    scan = scan_dataset(train, val, Path(recipe.data.images_root), recipe, decode_images=decode_images, tokenizer=tokenizer)
    lengths = {(r.file, r.line): r.tokens for r in scan.rows}
    return LoadedData(train, val, problems + scan.problems, lengths, scan.formats)


def prepare_dataset(
    recipe, out_dir: Path, image_dir: str | None = None, decode_images: bool = True, data: LoadedData | None = None
) -> DatasetReport:
    """Check and convert the recipe's data into out_dir; raise DataError if any row is unusable."""
    data = data or load_data(recipe, decode_images=decode_images)
    errors = [p for p in data.problems if p.severity == "error"]
    if errors:
        raise DataError(errors)
    too_long = {(p.file, p.line) for p in data.problems if p.code == "too_long"}
    train = [r for r in data.train if (r.file, r.line) not in too_long]
    val = [r for r in data.val if (r.file, r.line) not in too_long]
    dropped = len(data.train) + len(data.val) - len(train) - len(val)
    if recipe.data.max_samples:
        train = train[: recipe.data.max_samples]
    if recipe.data.max_val_samples:
        val = val[: recipe.data.max_val_samples]
    if not train:
        raise DataError([Problem(recipe.data.train, None, "no training rows left after filtering", code="empty_file")])

    image_dir = image_dir or str(Path(recipe.data.images_root).resolve())
    out_dir.mkdir(parents=True, exist_ok=True)
    system = recipe.data.system_prompt
    missing = [r for r in train + val if (r.file, r.line) not in data.lengths]
    if missing:  # every usable row was scanned; a gap is a bug here, not bad data
        raise RuntimeError(f"no token count for {missing[0].file} line {missing[0].line}")

    pages = {image for row in train + val for image in row.images}
    copies = {image: f"{out_dir.name}/pages/{normalised_copy(resolve_image(Path(recipe.data.images_root), image), out_dir / 'pages').name}"
              for image in sorted(pages) if data.formats[image].needs_copy}

    def row_with_length(row: PipelineRow) -> dict:
        return {**to_axolotl_row(row, image_dir, system, copies), "length": data.lengths[(row.file, row.line)]}

    write_jsonl(out_dir / "train.jsonl", (row_with_length(r) for r in train))
    write_jsonl(out_dir / "val.jsonl", (row_with_length(r) for r in val))
    version = data_version([out_dir / "train.jsonl", out_dir / "val.jsonl"], image_dir)
    return DatasetReport(
        train_rows=len(train),
        val_rows=len(val),
        images=len(pages),
        # Over every row the harness may send (the whole validation file, dropped long rows included), not just those trained.
        max_images_per_row=max((len(r.images) for r in data.train + data.val), default=0),
        normalised_pages=len(copies),
        dropped=dropped,
        warnings=[p for p in data.problems if p.severity != "error"],
        files={"train": str(out_dir / "train.jsonl"), "val": str(out_dir / "val.jsonl")},
        data_version=version,
    )


DATA_VERSION_CHARS = 10  # hex digits: short enough to read in a title, ample to tell a user's datasets apart


def data_version(files: list[Path], image_dir: str | None = None) -> str:
    """A short hash of converted data files, in order; image_dir (where the rows' images were resolved) is
    left out of their text, so the version does not change with the checkout or container path."""
    digest = hashlib.sha256()
    for path in files:
        data = Path(path).read_bytes() if Path(path).is_file() else b""
        if image_dir:
            data = data.replace(image_dir.rstrip("/").encode("utf-8"), b"<images>")
        digest.update(Path(path).name.encode("utf-8") + b"\0" + str(len(data)).encode("ascii") + b"\0" + data)
    return digest.hexdigest()[:DATA_VERSION_CHARS]
