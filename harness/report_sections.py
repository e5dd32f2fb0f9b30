"""Report sections of the iteration loop: breakdowns, weak pages, and the samples the spec check cannot grade.

Usage:
    from harness.report_sections import breakdown_section, weak_section, spec_not_applicable_section
    values = {"breakdowns": breakdown_section(summary), "weak": weak_section(score_records),
              "spec_not_applicable": spec_not_applicable_section(score_records)}

Each takes what summary.json and scores.jsonl hold, tolerates missing keys (an older summary has no
breakdowns: the section is None, left out) and returns plain values that
vlm3/core/templates/evaluation_sections.html.j2 draws.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from vlm3.core.templates import fnum, pct, shorten
from harness.score import spec_not_applicable_reason
from harness.weak import WeakGroup, find_weak, look_first

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


def _rows(groups: dict) -> list[list]:
    rows = []
    for name, stats in groups.items():
        stats = _dict(stats)
        rows.append([name, {"num": stats.get("n", "—")}, {"num": stats.get("errors", "—")},
                     {"num": f"{pct(stats.get('pass_rate'))} ({stats.get('passed', 0)}/{stats.get('checked', 0)})"},
                     {"num": _ci(stats)}, {"num": fnum(stats.get("spec_score"))}, _judge_text(stats)])
    return rows


def breakdown_section(summary: dict) -> dict | None:
    """{"interval", "turns" (a sentence or None), "tables": [{"title", "rows"}]}, or None with no breakdowns."""
    breakdowns = _dict(_dict(summary).get("breakdowns"))
    if not breakdowns:
        return None
    val, probes = _dict(breakdowns.get("val")), _dict(breakdowns.get("probes"))
    turns = _dict(summary.get("turns"))
    turns_line = (f"Validation: {turns.get('rows', 0)} rows, {turns.get('multi_turn_rows', 0)} with several turns; "
                  f"{turns.get('samples', 0)} turns asked ({turns.get('later_turn_samples', 0)} after the first, "
                  f"with the reference answers before them, as in training); "
                  f"{turns.get('skipped_turns', 0)} turn(s) not asked.") if turns else None
    tables = [{"title": title, "rows": _rows(_dict(groups))}
              for title, groups in (("Validation rows by section", val.get("by_section")), ("Validation rows by page", val.get("by_page")),
                                    ("Validation rows by content type", val.get("by_content_type")),
                                    ("Probes by category (a different axis from content type)", probes.get("by_category")))
              if _dict(groups)]
    return {"interval": breakdowns.get("interval") or "", "turns": turns_line, "tables": tables}


def _failure_list(group: WeakGroup) -> dict:
    return {"failures": [{"id": f.id, "question": f.question, "reasons": "; ".join(f.reasons)}
                         for f in group.failures[:FAILURES_PER_PAGE]],
            "more": max(len(group.failures) - FAILURES_PER_PAGE, 0)}


def weak_section(scores: list[dict]) -> dict:
    """{"empty": sentence} with no failure; else the intro, the sections and pages by failures, and the text-only samples."""
    weak = find_weak([s for s in scores if isinstance(s, dict)])
    if not weak.has_failures:
        return {"empty": f"No failures among {weak.samples} samples ({weak.errors} without an answer)."}
    text_only = f" and {weak.text_only.failed} text-only sample(s) (no page)" if weak.text_only else ""
    first = look_first(weak)
    intro = (f"{first[:1].upper()}{first[1:]}. "
             f"{weak.failed} failed of {weak.samples} samples on {len(weak.pages)} page(s){text_only}; a sample with several "
             f"pages counts on each. {weak.errors} without an answer are counted apart. "
             "`vlm3 weak EVAL_DIR` prints this and writes weak_pages.jsonl.")
    return {
        "intro": intro,
        "notes": list(weak.notes),
        "sections": [[g.name, {"num": g.failed}, {"num": g.n}, {"num": g.errors}, {"num": pct(g.failure_rate)}] for g in weak.sections],
        "pages": [{"name": g.name, "section": g.section or "—", "image": g.image_ref or "—", "failed": g.failed, "n": g.n,
                   "failing": _failure_list(g)} for g in weak.pages[:WEAK_PAGES_SHOWN]],
        "more_pages": max(len(weak.pages) - WEAK_PAGES_SHOWN, 0),
        "text_only": {"failed": weak.text_only.failed, "n": weak.text_only.n, "failing": _failure_list(weak.text_only)}
        if weak.text_only else None,
    }


def spec_not_applicable_section(scores: list[dict]) -> dict | None:
    """The samples the spec check cannot grade (no quantity it reads in the reference), each with its reason;
    None when there are none. They are in no spec rate: keywords or the judge grade them, or nothing does."""
    ungraded = [(s, reason) for s in scores if isinstance(s, dict) and (reason := spec_not_applicable_reason(s)) is not None]
    if not ungraded:
        return None
    return {
        "count": len(ungraded),
        "reasons": [[reason, {"num": count}] for reason, count in Counter(reason for _, reason in ungraded).most_common()],
        "samples": [[str(s.get("id") or "—"), shorten(str(s.get("question") or "—"), QUESTION_CHARS), reason]
                    for s, reason in ungraded[:NOT_APPLICABLE_SHOWN]],
        "more": max(len(ungraded) - NOT_APPLICABLE_SHOWN, 0),
    }
