"""Scores broken down by section, page and content type (validation rows) and by category (probes).

Usage:
    from harness.breakdown import breakdowns
    summary["breakdowns"] = breakdowns(score_records)
    # {"val": {"by_section": {...}, "by_page": {...}, "by_content_type": {...}},
    #  "probes": {"by_category": {...}}, "general": {"overall": {...}, "by_category": {...}} or None,
    #  "interval": "..."}

Probe categories and content types are different axes (a probe's category is what it tests, a
row's content type is what kind of page it is about), so probes and validation rows are kept
apart. Each group has n, pass rate with a 95% interval, spec score and judge means. A sample with
no answer (a failed request) is counted under `errors` and left out of every rate: a fault is not
a wrong answer. The pass-rate interval resamples pages (harness.bootstrap): questions about one
page are not independent; a group of one page resamples its questions and says so.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Any

from harness.bootstrap import cluster_bootstrap_ci, clusters_of
from data_adapters.samples import sample_pages

CI_LEVEL = 0.95
RESAMPLES = 1000  # per group; the interval's ends move by about 0.01 between seeds at this count
# What a score record carries from its sample besides the core fields (see harness.score.score_sample).
CARRIED = ("section", "page", "metadata", "turn", "turns", "row_ref")
INTERVAL_NOTE = (f"{CI_LEVEL:.0%} interval of the pass rate: bootstrap resampling pages (all questions of a page together); "
                 "a group of a single page resamples its questions. Samples without an answer are counted as errors, not failures.")


def carried_fields(sample: dict) -> dict[str, Any]:
    return {key: sample.get(key) for key in CARRIED}


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def judge_metrics(record: dict) -> dict[str, dict]:
    return _dict(_dict(record.get("judge")).get("metrics"))


def has_answer(record: dict) -> bool:
    return record.get("answer") is not None and not record.get("error")


def group_stats(records: list[dict], seed: int = 0) -> dict[str, Any]:
    """n, errors, pass rate and its interval, spec score, judge means of one group of score records."""
    answered = [r for r in records if has_answer(r)]
    checked = [r for r in answered if isinstance(r.get("passed"), bool)]
    passed = sum(1 for r in checked if r["passed"])
    stats: dict[str, Any] = {
        "n": len(records),
        "answered": len(answered),
        "errors": len(records) - len(answered),
        "checked": len(checked),
        "passed": passed,
        "failed": len(checked) - passed,
        "pass_rate": round(passed / len(checked), 4) if checked else None,
        "pass_rate_ci": None,
        "interval_unit": None,
        "pages": len(set(clusters_of(records))),  # resampling units: pages, samples sharing a page together
        "spec_score": None,
        "spec_n": 0,
        "judge": {},
    }
    if checked:
        values = [float(r["passed"]) for r in checked]
        pages = clusters_of(checked)
        by_page = len(set(pages)) > 1 and any(sample_pages(r) for r in checked)  # text-only samples: each its own draw
        clusters = pages if by_page else list(range(len(checked)))
        low, high = cluster_bootstrap_ci(values, clusters, RESAMPLES, seed, CI_LEVEL)
        stats.update(pass_rate_ci=[round(low, 4), round(high, 4)], interval_unit="pages" if by_page else "questions")
    specs = [_dict(_dict(r.get("checks")).get("spec")) for r in answered]
    spec_scores = [s["score"] for s in specs if s.get("applicable") and isinstance(s.get("score"), (int, float))]
    if spec_scores:
        stats.update(spec_score=round(fmean(spec_scores), 4), spec_n=len(spec_scores))
    judged: dict[str, list[float]] = defaultdict(list)
    unscored: dict[str, int] = defaultdict(int)
    for record in answered:
        for name, metric in judge_metrics(record).items():
            metric = _dict(metric)
            if metric.get("unscored") or not isinstance(metric.get("score"), (int, float)):
                unscored[name] += 1
            else:
                judged[name].append(float(metric["score"]))
    stats["judge"] = {name: {"mean": round(fmean(judged[name]), 4) if judged[name] else None, "n": len(judged[name]),
                             "unscored": unscored[name]} for name in sorted(set(judged) | set(unscored))}
    return stats


TEXT_ONLY = "text-only"  # the page group of samples that show no page


def group_by(records: list[dict], key: str, seed: int = 0) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        value = record.get(key)
        if value is None or value == "":
            value = TEXT_ONLY if key == "page" and not sample_pages(record) else "unknown"
        groups[str(value)].append(record)
    return {name: group_stats(rows, seed) for name, rows in sorted(groups.items())}


def breakdowns(records: list[dict], seed: int = 0) -> dict[str, Any]:
    val = [r for r in records if r.get("kind") == "val"]
    probes = [r for r in records if r.get("kind") == "probe"]
    general = [r for r in records if r.get("kind") == "general"]
    return {
        "val": {
            "by_section": group_by(val, "section", seed),
            "by_page": group_by(val, "page", seed),
            "by_content_type": group_by(val, "content_type", seed),
        },
        "probes": {"by_category": group_by(probes, "category", seed)},
        # vlm3's own general probes (reading, counting, transcribing): what a fine-tune must not forget.
        "general": {"overall": group_stats(general, seed), "by_category": group_by(general, "category", seed)} if general else None,
        "interval": INTERVAL_NOTE,
    }


def turn_counts(records: list[dict]) -> dict[str, int]:
    """How the validation rows' turns were asked: rows, multi-turn rows, samples, turns left out.

    A turn is left out when its row has other turns in the evaluation but not this one (e.g. cut
    by --max-samples); each is counted, never silently dropped."""
    rows: dict[str, dict] = {}
    for record in records:
        if record.get("kind") != "val":
            continue
        row = rows.setdefault(str(record.get("row_ref") or record.get("id")), {"turns": 1, "asked": 0})
        row["turns"] = max(row["turns"], int(record.get("turns") or 1))
        row["asked"] += 1
    return {
        "rows": len(rows),
        "multi_turn_rows": sum(1 for r in rows.values() if r["turns"] > 1),
        "samples": sum(r["asked"] for r in rows.values()),
        "later_turn_samples": sum(1 for r in records if r.get("kind") == "val" and (r.get("turn") or 1) > 1),
        "skipped_turns": sum(max(r["turns"] - r["asked"], 0) for r in rows.values()),
    }
