"""What the harness asks: the validation set and the hand-written probes, as one list of samples.

Usage:
    samples = load_eval_samples(recipe, only="all", max_samples=None)

A validation row becomes one sample (its first question and answer); a probe becomes one
sample with `expected_answer` or `expected_keywords`. Image paths resolve against the
recipe's images root, as in training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from data_adapters.checks import inspect_image
from data_adapters.pipeline import DataError, Problem, read_pipeline, sample_id

Only = Literal["all", "val", "probes"]


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
        missing = [k for k in ("id", "image", "question") if not isinstance(probe.get(k), str) or not probe[k].strip()]
        if missing:
            problems.append(Problem(*where, f"missing {', '.join(missing)}", code="probe"))
            continue
        answer, keywords = probe.get("expected_answer"), probe.get("expected_keywords")
        if (answer is None) == (keywords is None):
            problems.append(Problem(*where, "give exactly one of expected_answer and expected_keywords", code="probe"))
            continue
        if probe["id"] in seen:
            problems.append(Problem(*where, f"duplicate id {probe['id']!r}", code="probe"))
            continue
        seen.add(probe["id"])
        info = inspect_image(images_root, probe["image"], decode=False)  # probes are checked like training images
        if info.problem and info.code != "image_alpha":
            problems.append(Problem(*where, info.problem, code=info.code))
            continue
        image = info.path
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
            )
        )
    return samples, problems


def check_probes(recipe) -> list[Problem]:
    """The recipe's probes file, checked as `vlm3 eval` will read it, before any GPU time is spent.

    Warnings here (training does not read probes); the same problems stop `vlm3 eval`."""
    if not recipe.data.probes:
        return []
    problems = load_probes(Path(recipe.data.probes), Path(recipe.data.images_root))[1]
    return [replace(p, severity="warning", message=f"probe: {p.message} (`vlm3 eval` stops on this)") for p in problems]


def load_val_samples(path: Path, images_root: Path) -> tuple[list[EvalSample], list[Problem]]:
    rows, problems = read_pipeline(path)
    samples = []
    for row in rows:
        info = inspect_image(images_root, row.image, decode=False)
        if info.problem and info.code != "image_alpha":
            problems.append(Problem(row.file, row.line, info.problem, code=info.code))
            continue
        image = info.path
        meta = row.metadata
        samples.append(
            EvalSample(
                id=f"val:{sample_id(row.image, row.question)}",
                kind="val",
                image=str(image),
                image_ref=row.image,
                question=row.question,
                expected=row.answer,
                category=meta.get("category") or meta.get("content_type"),
                content_type=meta.get("content_type"),
                source="val_page",
                page_text=meta.get("page_text") if isinstance(meta.get("page_text"), str) else None,
                system=row.turns[0].content if row.turns[0].role == "system" else None,
            )
        )
    return samples, problems


def load_eval_samples(recipe, only: Only = "all", max_samples: int | None = None) -> list[EvalSample]:
    """Validation rows then probes; DataError if any is unusable."""
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
    if problems:
        raise DataError(problems)
    if not samples:
        raise DataError([Problem(recipe.data.val, None, "nothing to evaluate: no validation rows and no probes", code="empty_file")])
    return samples
