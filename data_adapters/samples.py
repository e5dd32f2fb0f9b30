"""What the harness asks: the validation set and the hand-written probes, as one list of samples.

Usage:
    samples = load_eval_samples(recipe, only="all", max_samples=None)

Every assistant turn of a validation row becomes a sample, asked with the conversation before
it (the reference answers of the earlier turns, as in training: teacher forcing); a probe
becomes one sample with `expected_answer` or `expected_keywords`. A sample shows every page of
its row or probe, in order (`images`), or none (a text-only row or probe). Each sample keeps the
pipeline's metadata (section, page, content type and every other key, under vlm3's names where
the recipe's `data.metadata` maps them) so scores can be broken down and weak pages found. Image
paths resolve against the recipe's images root, as in training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from data_adapters.checks import inspect_image
from data_adapters.pipeline import (URL_PREFIXES, DataError, Problem, page_name, read_json_lines, read_pipeline, row_image_keys,
                                    sample_id)

Only = Literal["all", "val", "probes", "general"]


@dataclass(frozen=True)
class EvalSample:
    id: str
    kind: str  # "val", "probe" or "general"
    image: str | None  # the first page's absolute path; None for a text-only sample (readers of one page use it)
    image_ref: str | None  # the first page as written in the data, relative to the images root
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
    page: str | None = None  # the metadata's page, else the pages' file stems joined by "+"; None when text-only
    metadata: dict = field(default_factory=dict)  # every metadata key of the row or probe except page_text
    turn: int = 1  # which assistant turn of its row this sample asks (1-based)
    turns: int = 1  # assistant turns in the row
    history: list = field(default_factory=list)  # turns before the question: [{"role", "content"}], first user turn first
    row_ref: str | None = None  # "file:line" of the row or probe it came from
    images: list[str] = field(default_factory=list)  # every page, absolute paths, in the order they are sent; [] when text-only
    image_refs: list[str] = field(default_factory=list)  # the same pages as written in the data
    # Pages per user turn, first turn first, up to the asked one (a later turn may show its own pages, as in
    # training); empty: every page in the first user turn.
    page_turns: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # One page given the old way (image=, image_ref=) is the page list; a page list gives its first page.
        if not self.images and self.image:
            object.__setattr__(self, "images", [self.image])
        if not self.image_refs and self.image_ref:
            object.__setattr__(self, "image_refs", [self.image_ref])
        if self.image is None and self.images:
            object.__setattr__(self, "image", self.images[0])
        if self.image_ref is None and self.image_refs:
            object.__setattr__(self, "image_ref", self.image_refs[0])

    def to_dict(self) -> dict:
        return asdict(self)


def sample_pages(sample: dict) -> list[tuple[str | None, str | None]]:
    """(path, name as written) of each page of a sample or score record, in order; [] when text-only.

    Records saved before samples had several pages carry only `image` and `image_ref`: their one page."""
    paths = sample.get("images")
    refs = sample.get("image_refs")
    if not isinstance(paths, list) or not paths:
        paths = [sample["image"]] if sample.get("image") else []
    if not isinstance(refs, list) or not refs:
        refs = [sample["image_ref"]] if sample.get("image_ref") else []
    count = max(len(paths), len(refs))
    return [(paths[i] if i < len(paths) else None, refs[i] if i < len(refs) else None) for i in range(count)]


def is_text_only(sample: dict) -> bool:
    return not sample_pages(sample)


def probe_page_refs(probe: dict, where: tuple[str, int]) -> tuple[list[str], list[Problem]]:
    """The pages a probe names, as written: `image` (one), `images` (a list) or neither (a text-only probe),
    read as a pipeline row's are."""
    problems: list[Problem] = []
    refs = row_image_keys(probe, lambda message, code="probe": problems.append(Problem(*where, message, code="probe")), what="probe")
    return ([] if problems else list(refs)), problems


def check_pages(images_root: Path, refs: list[str] | tuple[str, ...], where: tuple[str, int]) -> tuple[list[str], list[Problem]]:
    """Each page's absolute path, checked like a training image; every bad page is a problem at `where`."""
    paths: list[str] = []
    problems: list[Problem] = []
    for ref in refs:
        if ref.lower().startswith(URL_PREFIXES):
            problems.append(Problem(*where, f"image {ref[:40]!r} is a URL: save the page under the images root and give its relative path", code="image_field"))
            continue
        info = inspect_image(images_root, ref, decode=False)  # checked like training images
        if info.problem:
            problems.append(Problem(*where, info.problem, code=info.code))
        else:
            paths.append(str(info.path))
    return paths, problems


def load_probes(path: Path, images_root: Path) -> tuple[list[EvalSample], list[Problem]]:
    samples: list[EvalSample] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    if not path.is_file():
        return [], [Problem(str(path), None, "probes file not found; check data.probes in the recipe", code="missing_file")]
    # The pipeline's bounded reader: docs/data.md promises the same line bounds for probes (4 MiB, 32 levels).
    for number, probe, problem in read_json_lines(path, "probes JSONL", "probe"):
        if problem is not None:
            problems.append(problem)
            continue
        where = (str(path), number)
        if not isinstance(probe, dict):
            problems.append(Problem(*where, "each line must be a JSON object with id, question, an expected answer, "
                                            "and its pages as image or images (none for a text-only probe)", code="probe"))
            continue
        # Every problem of the line at once: the user fixes it in one pass.
        found = [Problem(*where, message, code="probe") for message in probe_grading_problems(probe)]
        answer, keywords = probe.get("expected_answer"), probe.get("expected_keywords")
        if isinstance(probe.get("id"), str) and probe["id"] in seen:
            found.append(Problem(*where, f"duplicate id {probe['id']!r}", code="probe"))
        refs, bad = probe_page_refs(probe, where)
        paths, bad_pages = check_pages(images_root, refs, where)
        found += bad + bad_pages
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
                image=paths[0] if paths else None,
                image_ref=refs[0] if refs else None,
                question=probe["question"],
                expected=answer,
                expected_keywords=list(keywords) if keywords is not None else None,
                category=probe.get("category"),
                content_type=probe.get("content_type"),
                source=probe.get("source"),
                section=_text(metadata.get("section")),
                page=_text(page_name(metadata.get("page"), refs)),
                metadata=metadata,
                row_ref=f"{path}:{number}",
                images=paths,
                image_refs=refs,
            )
        )
    return samples, problems


def probe_grading_problems(probe: dict) -> list[str]:
    """What keeps a probe from being asked and graded, each naming the field and what to write instead.

    A blank keyword or answer would grade nothing (an empty answer passed `expected_keywords: [""]`);
    a number where text belongs would crash the scorer. `vlm3 check` and `vlm3 eval` refuse them."""
    problems = []
    missing = [k for k in ("id", "question") if not isinstance(probe.get(k), str) or not probe[k].strip()]
    if missing:
        problems.append(f"missing {', '.join(missing)}: write each as text, e.g. " + ", ".join(f'"{k}": "{EXAMPLES[k]}"' for k in missing))
    answer, keywords = probe.get("expected_answer"), probe.get("expected_keywords")
    if answer is None and keywords is None:
        problems.append("nothing to grade: give exactly one of expected_answer and expected_keywords, e.g. "
                        f'"expected_answer": "{EXAMPLES["expected_answer"]}" or "expected_keywords": {EXAMPLES["expected_keywords"]}')
    elif answer is not None and keywords is not None:
        problems.append("give exactly one of expected_answer and expected_keywords, not both")
    if answer is not None and not isinstance(answer, str):
        hint = (f'"expected_answer": "{answer} Nm" with its unit, or "expected_keywords": ["{answer}"] for a bare number'
                if _is_number(answer) else f'"expected_answer": "{EXAMPLES["expected_answer"]}"')
        problems.append(f"expected_answer is {_shown(answer)}, not text: write it in quotes, e.g. {hint}")
    elif isinstance(answer, str) and not answer.strip():
        problems.append(f'expected_answer is blank: write the reference answer, e.g. "expected_answer": "{EXAMPLES["expected_answer"]}"')
    if keywords is not None and not isinstance(keywords, list):
        example = json.dumps([keywords]) if isinstance(keywords, str) and keywords.strip() else EXAMPLES["expected_keywords"]
        problems.append(f'expected_keywords is {_shown(keywords)}, not a list: write a list of words, e.g. "expected_keywords": {example}')
    elif keywords == []:
        problems.append("expected_keywords is empty, so nothing would be graded: list the words the answer must contain, "
                        f'e.g. "expected_keywords": {EXAMPLES["expected_keywords"]}')
    for index, keyword in enumerate(keywords if isinstance(keywords, list) else []):
        if not isinstance(keyword, str):
            example = f'"{keyword}"' if _is_number(keyword) else '"gasket"'
            problems.append(f"expected_keywords[{index}] is {_shown(keyword)}, not text: write it in quotes, e.g. {example}")
        elif not keyword.strip():
            problems.append(f"expected_keywords[{index}] is blank and would pass any answer: remove it or write the word the answer must contain")
    return problems


EXAMPLES = {"id": "head-bolt-torque", "question": "What torque do the cylinder head bolts take?", "expected_answer": "45 Nm",
            "expected_keywords": '["gasket", "sealant"]'}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value) -> str:
    """A JSON value for a message: what it is, then the value itself (cut)."""
    kind = ("a number" if _is_number(value) else "text" if isinstance(value, str) else "a list" if isinstance(value, list)
            else "an object" if isinstance(value, dict) else "true/false" if isinstance(value, bool) else "null")
    return f"{kind} ({json.dumps(value, ensure_ascii=False)[:40]})"


# A probe's own fields; every other key of a probe line is its metadata.
PROBE_FIELDS = ("id", "image", "images", "question", "expected_answer", "expected_keywords", "category", "content_type", "source", "metadata")


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


def load_val_samples(path: Path, images_root: Path, metadata_names: dict[str, str] | None = None) -> tuple[list[EvalSample], list[Problem]]:
    """Samples of every usable row; `metadata_names` is the recipe's `data.metadata` (vlm3 name -> pipeline key)."""
    rows, problems = read_pipeline(path, metadata_names)
    samples = []
    for row in rows:
        paths, bad = check_pages(images_root, row.images, (row.file, row.line))
        if bad:
            problems += bad
            continue
        samples.extend(row_samples(row, paths))
    return samples, problems


def row_samples(row, images: list[str] | list[Path]) -> list[EvalSample]:
    """One sample per assistant turn; turn k is asked after turns 1..k-1 with their reference answers.
    `images` are the row's pages as absolute paths, in the row's order.

    Turn 1 keeps the row's plain id (saved answers of earlier versions still pair); later turns add `#tK`."""
    meta = row.metadata
    paths, refs = [str(p) for p in images], list(row.images)
    system = row.turns[0].content if row.turns[0].role == "system" else None
    dialogue = [t for t in row.turns if t.role != "system"]
    exchanges = [(dialogue[i].content, dialogue[i + 1].content) for i in range(0, len(dialogue) - 1, 2)]
    base_id = f"val:{sample_id(row.images, row.question)}"
    metadata = {k: v for k, v in meta.items() if k != "page_text"}  # page_text has its own field
    per_turn = [len(dialogue[i].images) for i in range(0, len(dialogue) - 1, 2)]  # each user turn's own pages
    samples = []
    for number, (question, answer) in enumerate(exchanges, start=1):
        history = [{"role": role, "content": text} for q, a in exchanges[: number - 1] for role, text in (("user", q), ("assistant", a))]
        shown = sum(per_turn[:number])  # a turn is asked with the pages of its own and earlier turns only
        samples.append(
            EvalSample(
                id=base_id if number == 1 else f"{base_id}#t{number}",
                kind="val",
                image=paths[0] if shown else None,
                image_ref=refs[0] if shown else None,
                question=question,
                expected=answer,
                category=_text(meta.get("category")) or _text(meta.get("content_type")),
                content_type=_text(meta.get("content_type")),
                source="val_page",
                page_text=meta.get("page_text") if isinstance(meta.get("page_text"), str) else None,
                system=system,
                section=_text(meta.get("section")),
                page=_text(row.page),
                metadata=metadata,
                turn=number,
                turns=len(exchanges),
                history=history,
                row_ref=f"{row.file}:{row.line}",
                images=paths[:shown],
                image_refs=refs[:shown],
                page_turns=per_turn[:number] if any(per_turn[1:number]) else [],
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
        found, bad = load_val_samples(Path(recipe.data.val), images_root, dict(recipe.data.metadata or {}))
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
