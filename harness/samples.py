"""What the harness asks: the validation set and the hand-written probes, as one list of samples.

Usage:
    samples = load_eval_samples(recipe, only="all", max_samples=None)

Every assistant turn of a validation row becomes a sample, asked with the conversation before
it (the reference answers of the earlier turns, as in training: teacher forcing); a probe
becomes one sample with `expected_answer` or `expected_keywords`. Each sample keeps the
pipeline's metadata (section, page, content type and every other key) so scores can be
broken down and weak pages found. Image paths resolve against the recipe's images root, as
in training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from data_adapters.checks import inspect_image
from data_adapters.pipeline import DataError, Problem, read_pipeline, sample_id

Only = Literal["all", "val", "probes", "general"]


@dataclass(frozen=True)
class EvalSample:
    id: str
    kind: str  # "val" or "probe"
    image: str  # absolute path
    image_ref: str  # as written in the data, relative to the images root
    question: str
    expected: str | None
    expected_keywords: list[str] | None = None
    category: str | None = None
    content_type: str | None = None
    source: str | None = None  # "train_page" / "val_page" for probes that say so
    page_text: str | None = None  # the page's text when the pipeline provides it (judge context)
    system: str | None = None  # the row's own system turn, sent as in training (else the recipe's system_prompt)
    extra: dict = field(default_factory=dict)
    section: str | None = None
    page: str | None = None  # the metadata's page, else the image's file stem
    metadata: dict = field(default_factory=dict)  # every metadata key of the row or probe except page_text
    turn: int = 1  # which assistant turn of its row this sample asks (1-based)
    turns: int = 1  # assistant turns in the row
    history: list = field(default_factory=list)  # turns before the question: [{"role", "content"}], first user turn first
    row_ref: str | None = None  # "file:line" of the row or probe it came from

    def to_dict(self) -> dict:
        return asdict(self)


def load_probes(path: Path, images_root: Path) -> tuple[list[EvalSample], list[Problem]]:
    samples: list[EvalSample] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    if not path.is_file():
        return [], [Problem(str(path), None, "probes file not found; check data.probes in the recipe", code="missing_file")]
    for number, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        if "\ufffd" in line:
            problems.append(Problem(str(path), number, "not UTF-8 text: save the probes file as UTF-8", code="encoding"))
            continue
        if not line.strip():
            continue
        where = (str(path), number)
        try:
            probe = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(*where, f"not valid JSON ({exc.msg})", code="json"))
            continue
        if not isinstance(probe, dict):
            problems.append(Problem(*where, "each line must be a JSON object with id, image, question and an expected answer", code="probe"))
            continue
        # Every problem of the line at once: the user fixes it in one pass.
        found: list[Problem] = []
        missing = [k for k in ("id", "image", "question") if not isinstance(probe.get(k), str) or not probe[k].strip()]
        if missing:
            found.append(Problem(*where, f"missing {', '.join(missing)}", code="probe"))
        answer, keywords = probe.get("expected_answer"), probe.get("expected_keywords")
        if (answer is None) == (keywords is None):
            found.append(Problem(*where, "give exactly one of expected_answer and expected_keywords", code="probe"))
        if isinstance(probe.get("id"), str) and probe["id"] in seen:
            found.append(Problem(*where, f"duplicate id {probe['id']!r}", code="probe"))
        image = None
        if "image" not in missing:
            info = inspect_image(images_root, probe["image"], decode=False)  # probes are checked like training images
            if info.problem and info.code != "image_alpha":
                found.append(Problem(*where, info.problem, code=info.code))
            image = info.path
        if found:
            problems += found
            continue
        seen.add(probe["id"])
        metadata = probe.get("metadata") if isinstance(probe.get("metadata"), dict) else {}
        metadata = {**{k: v for k, v in probe.items() if k not in PROBE_FIELDS}, **metadata}
        samples.append(
            EvalSample(
                id=f"probe:{probe['id']}",
                kind="probe",
                image=str(image),
                image_ref=probe["image"],
                question=probe["question"],
                expected=answer,
                expected_keywords=list(keywords) if keywords is not None else None,
                category=probe.get("category"),
                content_type=probe.get("content_type"),
                source=probe.get("source"),
                section=_text(metadata.get("section")),
                page=_text(metadata.get("page")) or Path(probe["image"]).stem,
                metadata=metadata,
                row_ref=f"{path}:{number}",
            )
        )
    return samples, problems


# A probe's own fields; every other key of a probe line is its metadata.
PROBE_FIELDS = ("id", "image", "question", "expected_answer", "expected_keywords", "category", "content_type", "source", "metadata")


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def check_probes(recipe) -> list[Problem]:
    """The recipe's probes file, checked as `vlm3 eval` will read it, before any GPU time is spent.

    Errors: a recipe that names probes evaluates with them, and `vlm3 eval` stops on these, so
    `check` and `train` stop before training rather than after the GPU was paid for."""
    if not recipe.data.probes:
        return []
    problems = load_probes(Path(recipe.data.probes), Path(recipe.data.images_root))[1]
    return [replace(p, message=f"probe: {p.message} (`vlm3 eval` stops on this; fix it or remove data.probes)") for p in problems]


def load_val_samples(path: Path, images_root: Path) -> tuple[list[EvalSample], list[Problem]]:
    rows, problems = read_pipeline(path)
    samples = []
    for row in rows:
        info = inspect_image(images_root, row.image, decode=False)
        if info.problem and info.code != "image_alpha":
            problems.append(Problem(row.file, row.line, info.problem, code=info.code))
            continue
        samples.extend(row_samples(row, info.path))
    return samples, problems


def row_samples(row, image: Path) -> list[EvalSample]:
    """One sample per assistant turn; turn k is asked after turns 1..k-1 with their reference answers.

    Turn 1 keeps the row's plain id (saved answers of earlier versions still pair); later turns add `#tK`."""
    meta = row.metadata
    system = row.turns[0].content if row.turns[0].role == "system" else None
    dialogue = [t for t in row.turns if t.role != "system"]
    exchanges = [(dialogue[i].content, dialogue[i + 1].content) for i in range(0, len(dialogue) - 1, 2)]
    base_id = f"val:{sample_id(row.image, row.question)}"
    metadata = {k: v for k, v in meta.items() if k != "page_text"}  # page_text has its own field
    samples = []
    for number, (question, answer) in enumerate(exchanges, start=1):
        history = [{"role": role, "content": text} for q, a in exchanges[: number - 1] for role, text in (("user", q), ("assistant", a))]
        samples.append(
            EvalSample(
                id=base_id if number == 1 else f"{base_id}#t{number}",
                kind="val",
                image=str(image),
                image_ref=row.image,
                question=question,
                expected=answer,
                category=_text(meta.get("category")) or _text(meta.get("content_type")),
                content_type=_text(meta.get("content_type")),
                source="val_page",
                page_text=meta.get("page_text") if isinstance(meta.get("page_text"), str) else None,
                system=system,
                section=_text(meta.get("section")),
                page=row.page,
                metadata=metadata,
                turn=number,
                turns=len(exchanges),
                history=history,
                row_ref=f"{row.file}:{row.line}",
            )
        )
    return samples


def load_eval_samples(recipe, only: Only = "all", max_samples: int | None = None, general: list[EvalSample] = ()) -> list[EvalSample]:
    """Validation rows, probes, then vlm3's general probes (harness.general_probes, given by the caller
    where `only` asks for them); DataError if any is unusable."""
    images_root = Path(recipe.data.images_root)
    samples: list[EvalSample] = []
    problems: list[Problem] = []
    if only in ("all", "val"):
        found, bad = load_val_samples(Path(recipe.data.val), images_root)
        limit = max_samples or recipe.eval.max_samples
        samples += found[:limit] if limit else found
        problems += bad
    if only in ("all", "probes") and recipe.data.probes:
        found, bad = load_probes(Path(recipe.data.probes), images_root)
        samples += found
        problems += bad
    if only in ("all", "probes", "general"):
        samples += general
    if problems:
        raise DataError(problems)
    if not samples:
        raise DataError([Problem(recipe.data.val, None, "nothing to evaluate: no validation rows and no probes", code="empty_file")])
    return samples
