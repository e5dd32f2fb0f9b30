"""Which sections and pages to regenerate Q&A for: failures ranked, with the questions and why they failed.

Usage:
    vlm3 weak runs/x/latest/eval/finetuned          # prints the ranking, writes weak_pages.jsonl
    from harness.weak import find_weak, weak_page_rows
    weak = find_weak(score_records)                 # pure: score records in, ranking out

A sample fails when a deterministic check (spec values, keywords) fails or a judge metric is
below its threshold. A sample without an answer is an error: counted apart, never a failure.
weak_pages.jsonl has one line per page with at least one failure, worst first:
    {"image": "/abs/images/11-07.jpg", "image_ref": "images/11-07.jpg", "section": "11 Engine",
     "page": "11-07", "kinds": ["val"], "failed": 3, "n": 5, "failing_ids": [...], "reasons": [...]}
Validation pages are held out from training: regenerate training Q&A for the weak sections'
training pages (or move a page into training deliberately), never train on the validation rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.bootstrap import page_of
from harness.breakdown import has_answer, judge_metrics

REASON_LIMIT = 300  # characters of one reason kept: a judge's explanation can be long


@dataclass(frozen=True)
class Failure:
    id: str
    kind: str | None
    question: str
    expected: str | None
    answer: str | None
    reasons: list[str]
    turn: int = 1


@dataclass
class WeakGroup:
    name: str  # a section name, or a page
    n: int = 0
    failed: int = 0
    errors: int = 0
    section: str | None = None
    image: str | None = None
    image_ref: str | None = None
    page: str | None = None
    kinds: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        judged = self.n - self.errors
        return self.failed / judged if judged else 0.0


@dataclass(frozen=True)
class WeakReport:
    sections: list[WeakGroup]  # worst first; only groups with a failure
    pages: list[WeakGroup]
    samples: int
    failed: int
    errors: int

    def to_dict(self) -> dict:
        return asdict(self)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _clip(text: Any) -> str:
    text = str(text)
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT] + "…"


def failure_reasons(record: dict) -> list[str]:
    """Why a record failed, one sentence per failed check; empty when it did not fail."""
    if not has_answer(record):
        return []
    reasons = []
    checks = _dict(record.get("checks"))
    spec = _dict(checks.get("spec"))
    if spec.get("applicable") and spec.get("passed") is False:
        details = "; ".join(map(str, spec.get("details") or [])) or "values differ from the reference"
        reasons.append(_clip(f"spec check failed: {details}"))
    keywords = _dict(checks.get("keywords"))
    if keywords.get("passed") is False:
        reasons.append(_clip(f"keywords missing: {', '.join(map(str, keywords.get('missing') or []))}"))
    for name, metric in sorted(judge_metrics(record).items()):
        metric = _dict(metric)
        if metric.get("passed") is False and not metric.get("unscored"):
            why = f" ({metric['reason']})" if metric.get("reason") else ""
            reasons.append(_clip(f"judge {name} {metric.get('score')} below threshold{why}"))
    if not reasons and record.get("passed") is False:
        reasons.append("failed its checks")
    return reasons


def _section_of(record: dict) -> str:
    return str(record.get("section") or "unknown section")


def find_weak(records: list[dict]) -> WeakReport:
    """Sections and pages ranked by failures (most first, then failure rate), each with its failing questions."""
    sections: dict[str, WeakGroup] = {}
    pages: dict[str, WeakGroup] = {}
    # vlm3's general probes are not pages of the manual: nothing to regenerate there (`vlm3 compare` reports them).
    records = [r for r in records if r.get("kind") != "general"]
    for record in records:
        section = _section_of(record)
        page_key = page_of(record) or str(record.get("page") or record.get("id"))
        groups = (
            sections.setdefault(section, WeakGroup(name=section, section=section)),
            pages.setdefault(page_key, WeakGroup(name=str(record.get("page") or page_key), section=section,
                                                 image=record.get("image"), image_ref=record.get("image_ref"),
                                                 page=record.get("page"))),
        )
        reasons = failure_reasons(record)
        for group in groups:
            group.n += 1
            kind = str(record.get("kind") or "unknown")
            if kind not in group.kinds:
                group.kinds.append(kind)
            if not has_answer(record):
                group.errors += 1
            elif reasons:
                group.failed += 1
                group.failures.append(Failure(id=str(record.get("id")), kind=record.get("kind"), question=str(record.get("question") or ""),
                                              expected=record.get("expected"), answer=record.get("answer"), reasons=reasons,
                                              turn=int(record.get("turn") or 1)))

    def ranked(groups: dict[str, WeakGroup]) -> list[WeakGroup]:
        return sorted((g for g in groups.values() if g.failed), key=lambda g: (-g.failed, -g.failure_rate, g.name))

    return WeakReport(sections=ranked(sections), pages=ranked(pages), samples=len(records),
                      failed=sum(1 for r in records if failure_reasons(r)), errors=sum(1 for r in records if not has_answer(r)))


def weak_page_rows(report: WeakReport) -> list[dict]:
    """weak_pages.jsonl: what a data pipeline needs to regenerate Q&A for a page."""
    return [{"image": g.image, "image_ref": g.image_ref, "section": g.section, "page": g.page or g.name, "kinds": g.kinds,
             "failed": g.failed, "n": g.n, "errors": g.errors, "failing_ids": [f.id for f in g.failures],
             "reasons": [{"id": f.id, "question": f.question, "reasons": f.reasons} for f in g.failures]}
            for g in report.pages]


def _printable(text: Any, limit: int = 100) -> str:
    # Terminal output: no control characters or newlines from the data or the model.
    flat = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_weak(report: WeakReport, out_path: str, top: int = 5) -> str:
    """The terminal view: where to look first, then the ranked sections and pages with their failing questions."""
    if not report.pages:
        head = [f"no failures among {report.samples} samples ({report.errors} without an answer)"
                + (": run `vlm3 generate` again for those" if report.errors else "")]
        return "\n".join(head + [f"wrote {out_path} (empty)"])
    worst_section, worst_page = report.sections[0], report.pages[0]
    lines = [
        f"look first at section {_printable(worst_section.name)} ({worst_section.failed} of {worst_section.n} failed) "
        f"and page {_printable(worst_page.name)} ({worst_page.failed} of {worst_page.n} failed, {_printable(worst_page.image_ref)})",
        f"{report.failed} failed of {report.samples} samples on {len(report.pages)} page(s)"
        + (f"; {report.errors} without an answer are counted apart" if report.errors else ""),
        f"wrote {out_path}: one line per weak page (image, section, page, failing ids, reasons) for regenerating Q&A",
        "",
        "sections by failures:",
    ]
    lines += [f"  {g.failed:>3} of {g.n:<3} {_printable(g.name, 60)}" for g in report.sections[:top]]
    if len(report.sections) > top:
        lines.append(f"  ... and {len(report.sections) - top} more")
    lines += ["", "pages by failures:"]
    for g in report.pages[:top]:
        lines.append(f"  {g.failed:>3} of {g.n:<3} page {_printable(g.name, 30)}  [{_printable(g.section or '-', 40)}]  {_printable(g.image_ref or '', 60)}")
        for failure in g.failures[:3]:
            lines.append(f"        {_printable(failure.id, 28)}  {_printable(failure.question, 80)}")
            lines.append(f"          why: {_printable('; '.join(failure.reasons), 110)}")
        if len(g.failures) > 3:
            lines.append(f"        ... and {len(g.failures) - 3} more")
    if len(report.pages) > top:
        lines.append(f"  ... and {len(report.pages) - top} more pages in {out_path}")
    return "\n".join(lines)


def write_weak_pages(eval_dir, records: list[dict]) -> tuple[WeakReport, Path]:
    """Write EVAL_DIR/weak_pages.jsonl (atomically) and return the ranking and the path."""

    from data_adapters.jsonio import write_jsonl

    report = find_weak(records)
    path = Path(eval_dir) / "weak_pages.jsonl"
    write_jsonl(path, weak_page_rows(report))
    return report, path
