"""Which sections and pages to regenerate Q&A for: failures ranked, with the questions and why they failed.

Usage:
    vlm3 weak runs/x/latest/eval/finetuned          # prints the ranking, writes weak_pages.jsonl and weak_pages.html
    from harness.weak import find_weak, weak_page_rows
    weak = find_weak(score_records)                 # pure: score records in, ranking out

A sample fails when a deterministic check (spec values, keywords) fails or a judge metric is
below its threshold. A sample without an answer is an error: counted apart, never a failure.
A sample that shows several pages counts against each of them (any of them may be the one the model
misread); a text-only sample (no page) is grouped apart, as text-only. Sections are ranked by failures,
except "unknown section" (samples whose metadata names no section), which comes after every named
section with a note saying how to map the pipeline's section key (`data.metadata` in the recipe).
weak_pages.jsonl has one line per page with at least one failure, worst first:
    {"image": "/abs/images/11-07.jpg", "image_ref": "images/11-07.jpg", "section": "11 Engine",
     "page": "11-07", "kinds": ["val"], "failed": 3, "n": 5, "failing_ids": [...], "reasons": [...]}
then, when text-only samples failed, one line for them: {"text_only": true, "image": null, "page": null, ...}.
weak_pages.html shows the same pages and the ranked sections to read (vlm3/core/templates/weak_pages.html.j2).
Validation pages are held out from training: regenerate training Q&A for the weak sections'
training pages (or move a page into training deliberately), never train on the validation rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.breakdown import TEXT_ONLY, has_answer, judge_metrics
from data_adapters.samples import sample_pages
from vlm3.core.visible import visible_controls

REASON_LIMIT = 300  # characters of one reason kept: a judge's explanation can be long
UNKNOWN_SECTION = "unknown section"


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
    sections: list[WeakGroup]  # worst first, "unknown section" after every named one; only groups with a failure
    pages: list[WeakGroup]  # a sample with several pages counts on each
    samples: int
    failed: int
    errors: int
    text_only: WeakGroup | None = None  # samples that show no page, when one of them failed
    notes: list[str] = field(default_factory=list)  # why a ranking reads as it does (e.g. samples with no section)

    @property
    def has_failures(self) -> bool:
        return bool(self.pages or self.text_only)

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
    return str(record.get("section") or UNKNOWN_SECTION)


def _page_group(pages: dict[str, WeakGroup], record: dict, path: str | None, ref: str | None, section: str) -> WeakGroup:
    """The group of one page, keyed by the page as written in the data (else as scored)."""
    key = str(ref or path)
    alone = len(sample_pages(record)) == 1  # the sample's page name describes this page only when it shows one
    name = record.get("page") if alone and record.get("page") else Path(key).stem
    group = pages.get(key)
    if group is None:
        group = pages[key] = WeakGroup(name=str(name), section=section, image=path, image_ref=ref,
                                       page=record.get("page") if alone else None)
    elif group.page is None and alone and record.get("page"):
        # A sample about this page alone names it best, and places it: a two-page sample's section is its first page's.
        group.name, group.page, group.section = str(record["page"]), record["page"], section
    return group


def find_weak(records: list[dict]) -> WeakReport:
    """Sections and pages ranked by failures (most first, then failure rate), each with its failing questions."""
    sections: dict[str, WeakGroup] = {}
    pages: dict[str, WeakGroup] = {}
    text_only = WeakGroup(name=TEXT_ONLY)
    # vlm3's general probes are not pages of the manual: nothing to regenerate there (`vlm3 compare` reports them).
    records = [r for r in records if r.get("kind") != "general"]
    for record in records:
        section = _section_of(record)
        shown = list(dict.fromkeys(sample_pages(record)))  # a page listed twice in one sample counts once
        page_groups = [_page_group(pages, record, path, ref, section) for path, ref in shown] or [text_only]
        groups = (sections.setdefault(section, WeakGroup(name=section, section=section)), *page_groups)
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

    def ranked(groups: dict[str, WeakGroup], last: str | None = None) -> list[WeakGroup]:
        return sorted((g for g in groups.values() if g.failed), key=lambda g: (g.name == last, -g.failed, -g.failure_rate, g.name))

    notes = []
    unnamed = sections.get(UNKNOWN_SECTION)
    if unnamed is not None and unnamed.failed:
        notes.append(f"{unnamed.n} sample(s) carry no section and are ranked last as \"{UNKNOWN_SECTION}\": "
                     "map the pipeline's section key with data.metadata in the recipe (e.g. section: section_title)")
    # A section nobody named is not a place to look first: it goes after the named ones.
    return WeakReport(sections=ranked(sections, last=UNKNOWN_SECTION), pages=ranked(pages), samples=len(records),
                      failed=sum(1 for r in records if failure_reasons(r)), errors=sum(1 for r in records if not has_answer(r)),
                      text_only=text_only if text_only.failed else None, notes=notes)


def weak_page_rows(report: WeakReport) -> list[dict]:
    """weak_pages.jsonl: what a data pipeline needs to regenerate Q&A for a page."""
    def row(g: WeakGroup, **fields) -> dict:
        return {"image": g.image, "image_ref": g.image_ref, "section": g.section, "page": g.page or g.name, **fields, "kinds": g.kinds,
                "failed": g.failed, "n": g.n, "errors": g.errors, "failing_ids": [f.id for f in g.failures],
                "reasons": [{"id": f.id, "question": f.question, "reasons": f.reasons} for f in g.failures]}

    rows = [row(g) for g in report.pages]
    if report.text_only is not None:
        rows.append(row(report.text_only, text_only=True) | {"page": None})
    return rows


def _printable(text: Any, limit: int = 100) -> str:
    # Terminal output: controls and bidi characters from the data or the model shown escaped, newlines as spaces.
    flat = "".join(ch if ch.isprintable() else " " for ch in visible_controls(str(text)))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_weak(report: WeakReport, out_path: str, top: int = 5) -> str:
    """The terminal view: where to look first, then the ranked sections and pages with their failing questions."""
    if not report.has_failures:
        head = [f"no failures among {report.samples} samples ({report.errors} without an answer)"
                + (": run `vlm3 generate` again for those" if report.errors else "")]
        return "\n".join(head + [f"wrote {out_path} (empty)"])
    lines = [
        look_first(report),
        f"{report.failed} failed of {report.samples} samples on {len(report.pages)} page(s)"
        + (f" and {report.text_only.failed} text-only sample(s) (no page)" if report.text_only else "")
        + (f"; {report.errors} without an answer are counted apart" if report.errors else ""),
        f"wrote {out_path}: one line per weak page (image, section, page, failing ids, reasons) for regenerating Q&A; "
        f"{Path(out_path).with_suffix('.html').name} beside it to read",
        *(f"note: {_printable(note, 300)}" for note in report.notes),
        "",
        "sections by failures:",
    ]
    lines += [f"  {g.failed:>3} of {g.n:<3} {_printable(g.name, 60)}" for g in report.sections[:top]]
    if len(report.sections) > top:
        lines.append(f"  ... and {len(report.sections) - top} more")
    lines += ["", "pages by failures (a sample with several pages counts on each):"] if report.pages else []
    for g in report.pages[:top]:
        lines.append(f"  {g.failed:>3} of {g.n:<3} page {_printable(g.name, 30)}  [{_printable(g.section or '-', 40)}]  {_printable(g.image_ref or '', 60)}")
        lines += _failure_lines(g)
    if len(report.pages) > top:
        lines.append(f"  ... and {len(report.pages) - top} more pages in {out_path}")
    if report.text_only is not None:
        lines += ["", f"text-only samples (no page, not counted on any page): {report.text_only.failed} of {report.text_only.n} failed"]
        lines += _failure_lines(report.text_only)
    return "\n".join(lines)


def _failure_lines(group: WeakGroup, shown: int = 3) -> list[str]:
    lines = []
    for failure in group.failures[:shown]:
        lines.append(f"        {_printable(failure.id, 28)}  {_printable(failure.question, 80)}")
        lines.append(f"          why: {_printable('; '.join(failure.reasons), 110)}")
    if len(group.failures) > shown:
        lines.append(f"        ... and {len(group.failures) - shown} more")
    return lines


def look_first(report: WeakReport) -> str:
    """Where to look first: the worst named section and the worst page; never "unknown section" without saying why."""
    parts = []
    worst = report.sections[0] if report.sections else None
    if worst is not None and worst.name != UNKNOWN_SECTION:
        parts.append(f"section {_printable(worst.name)} ({worst.failed} of {worst.n} failed)")
    if report.pages:
        page = report.pages[0]
        parts.append(f"page {_printable(page.name)} ({page.failed} of {page.n} failed, {_printable(page.image_ref)})")
    elif report.text_only is not None:
        parts.append(f"the text-only samples ({report.text_only.failed} of {report.text_only.n} failed)")
    line = "look first at " + " and ".join(parts)
    if worst is not None and worst.name == UNKNOWN_SECTION:
        line += " (no section to rank: the failing samples carry no section in their metadata)"
    return line


def weak_pages_page(report: WeakReport, title: str) -> dict:
    """The plain values weak_pages.html.j2 draws: the ranked sections, and the pages as weak_pages.jsonl holds them."""
    return {"title": title, "look_first": look_first(report) if report.has_failures else None, "samples": report.samples,
            "failed": report.failed, "errors": report.errors, "notes": report.notes, "pages": weak_page_rows(report),
            "sections": [{"name": g.name, "n": g.n, "failed": g.failed, "errors": g.errors, "failure_rate": g.failure_rate}
                         for g in report.sections]}


def write_weak_pages(eval_dir, records: list[dict]) -> tuple[WeakReport, Path]:
    """Write EVAL_DIR/weak_pages.jsonl and, to read, weak_pages.html beside it (each atomically); return the ranking
    and the JSONL's path."""

    from vlm3.core.jsonio import write_jsonl, write_text_atomic
    from vlm3.core.templates import render

    report = find_weak(records)
    path = Path(eval_dir) / "weak_pages.jsonl"
    write_jsonl(path, weak_page_rows(report))
    title = f"vlm3 weak pages: {Path(eval_dir).resolve().name}"
    write_text_atomic(path.with_suffix(".html"), render("weak_pages.html.j2", **weak_pages_page(report, title)))
    return report, path
