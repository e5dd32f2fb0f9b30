"""Report sections of the iteration loop: breakdowns, weak pages, and the samples the spec check cannot grade.

Usage:
    from harness.report_sections import breakdown_section, weak_section, spec_not_applicable_section
    body += [breakdown_section(summary), weak_section(score_records), spec_not_applicable_section(score_records)]

Each takes what summary.json and scores.jsonl hold and tolerates missing keys (an older summary
has no breakdowns: the section is left out).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from vlm3.core.html import Html, fnum, num_cell, pct, shorten, table, tag
from harness.score import spec_not_applicable_reason
from harness.weak import find_weak, look_first

WEAK_PAGES_SHOWN = 10
FAILURES_PER_PAGE = 5
NOT_APPLICABLE_SHOWN = 100  # rows; the rest are in scores.jsonl (checks.spec.details)
QUESTION_CHARS = 300


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _ci(stats: dict) -> str:
    ci = stats.get("pass_rate_ci")
    if not isinstance(ci, list) or len(ci) != 2:
        return "—"
    unit = " (questions)" if stats.get("interval_unit") == "questions" else ""
    return f"{pct(ci[0])}–{pct(ci[1])}{unit}"


def _judge_text(stats: dict) -> str:
    judge = _dict(stats.get("judge"))
    parts = [f"{name} {fnum(_dict(m).get('mean'))} (n={_dict(m).get('n')}"
             + (f", {_dict(m).get('unscored')} unscored" if _dict(m).get("unscored") else "") + ")"
             for name, m in judge.items()]
    return "; ".join(parts) or "—"


HEADERS = ["name", "n", "errors", "pass rate", "95% interval", "spec score", "judge"]


def _rows(groups: dict) -> list[list]:
    rows = []
    for name, stats in groups.items():
        stats = _dict(stats)
        rows.append([name, num_cell(stats.get("n", "—")), num_cell(stats.get("errors", "—")),
                     num_cell(f"{pct(stats.get('pass_rate'))} ({stats.get('passed', 0)}/{stats.get('checked', 0)})"),
                     num_cell(_ci(stats)), num_cell(fnum(stats.get("spec_score"))), _judge_text(stats)])
    return rows


def breakdown_section(summary: dict) -> Html | None:
    breakdowns = _dict(_dict(summary).get("breakdowns"))
    if not breakdowns:
        return None
    val, probes = _dict(breakdowns.get("val")), _dict(breakdowns.get("probes"))
    parts: list[Any] = [tag("h2", "Breakdowns"), tag("p", breakdowns.get("interval") or "", class_="muted")]
    turns = _dict(summary.get("turns"))
    if turns:
        parts.append(tag("p", f"Validation: {turns.get('rows', 0)} rows, {turns.get('multi_turn_rows', 0)} with several turns; "
                              f"{turns.get('samples', 0)} turns asked ({turns.get('later_turn_samples', 0)} after the first, "
                              f"with the reference answers before them, as in training); "
                              f"{turns.get('skipped_turns', 0)} turn(s) not asked.",
                         class_="turns"))
    for title, groups in (("Validation rows by section", val.get("by_section")), ("Validation rows by page", val.get("by_page")),
                          ("Validation rows by content type", val.get("by_content_type")),
                          ("Probes by category (a different axis from content type)", probes.get("by_category"))):
        groups = _dict(groups)
        if groups:
            parts += [tag("h3", title), table(HEADERS, _rows(groups))]
    return tag("section", parts, id="breakdowns")


def _failure_list(group) -> Html:
    failures = [tag("li", f"{f.id}: {f.question}", tag("br"), tag("span", "; ".join(f.reasons), class_="muted"))
                for f in group.failures[:FAILURES_PER_PAGE]]
    if len(group.failures) > FAILURES_PER_PAGE:
        failures.append(tag("li", f"… and {len(group.failures) - FAILURES_PER_PAGE} more", class_="muted"))
    return tag("ul", failures, class_="details")


def weak_section(scores: list[dict]) -> Html:
    weak = find_weak([s for s in scores if isinstance(s, dict)])
    if not weak.has_failures:
        return tag("section", tag("h2", "Weak sections and pages"),
                   tag("p", f"No failures among {weak.samples} samples ({weak.errors} without an answer).", class_="muted"), id="weak")
    text_only = f" and {weak.text_only.failed} text-only sample(s) (no page)" if weak.text_only else ""
    first = look_first(weak)
    intro = (f"{first[:1].upper()}{first[1:]}. "
             f"{weak.failed} failed of {weak.samples} samples on {len(weak.pages)} page(s){text_only}; a sample with several "
             f"pages counts on each. {weak.errors} without an answer are counted apart. "
             "`vlm3 weak EVAL_DIR` prints this and writes weak_pages.jsonl.")
    section_rows = [[g.name, num_cell(g.failed), num_cell(g.n), num_cell(g.errors), num_cell(pct(g.failure_rate))] for g in weak.sections]
    page_rows = [[g.name, g.section or "—", g.image_ref or "—", num_cell(g.failed), num_cell(g.n), _failure_list(g)]
                 for g in weak.pages[:WEAK_PAGES_SHOWN]]
    more = (tag("p", f"… and {len(weak.pages) - WEAK_PAGES_SHOWN} more pages in weak_pages.jsonl", class_="muted")
            if len(weak.pages) > WEAK_PAGES_SHOWN else None)
    pages = [tag("h3", "Pages by failures"), table(["page", "section", "image", "failed", "n", "failing questions and why"], page_rows),
             more] if page_rows else []
    text = ([tag("h3", "Text-only samples (no page)"),
             tag("p", f"{weak.text_only.failed} of {weak.text_only.n} failed; not counted on any page.", class_="muted"),
             _failure_list(weak.text_only)] if weak.text_only else [])
    return tag("section", tag("h2", "Weak sections and pages"), tag("p", intro),
               [tag("p", note, class_="notes") for note in weak.notes],
               tag("h3", "Sections by failures"), table(["section", "failed", "n", "errors", "failure rate"], section_rows),
               pages, text, id="weak")


def spec_not_applicable_section(scores: list[dict]) -> Html | None:
    """The samples the spec check cannot grade (no quantity it reads in the reference), each with its reason;
    None when there are none. They are in no spec rate: keywords or the judge grade them, or nothing does."""
    ungraded = [(s, reason) for s in scores if isinstance(s, dict) and (reason := spec_not_applicable_reason(s)) is not None]
    if not ungraded:
        return None
    reasons = Counter(reason for _, reason in ungraded).most_common()
    rows = [[str(s.get("id") or "—"), shorten(str(s.get("question") or "—"), QUESTION_CHARS), reason]
            for s, reason in ungraded[:NOT_APPLICABLE_SHOWN]]
    more = (tag("p", f"… and {len(ungraded) - NOT_APPLICABLE_SHOWN} more in scores.jsonl (checks.spec.details)", class_="muted")
            if len(ungraded) > NOT_APPLICABLE_SHOWN else None)
    return tag("section", tag("h2", f"Not graded by the spec check ({len(ungraded)})"),
               tag("p", "The reference states no quantity the spec check reads, so it gives no verdict: these samples "
                        "are in no spec rate, and only keywords or the judge grade them.", class_="muted"),
               table(["reason", "samples"], [[reason, num_cell(count)] for reason, count in reasons]),
               table(["id", "question", "reason"], rows), more, id="spec-not-applicable")
