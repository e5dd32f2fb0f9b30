"""Scoring saved predictions: exact spec checks, keyword recall and token F1 (free, deterministic).

Usage:
    records = [score_sample(sample, prediction) for ...]
    summary = summarize(records, label="finetuned", probe_threshold=0.85)

A sample's `passed` is decided by the checks that apply to it: the spec check when the
reference states quantities with units, keyword recall for keyword probes. When neither
applies (a free-text answer with no numbers) `passed` is None: only the judge can grade it.
A reference with no quantity the spec check can read makes that check "not applicable": it is
never a pass or a fail, and summary.json counts such samples apart (counts.spec_not_applicable,
and how many for each reason in spec_not_applicable_reasons); the report lists them.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from statistics import mean
from typing import Any, Iterable

from harness.breakdown import breakdowns, carried_fields, turn_counts
from data_adapters.samples import sample_pages
from harness.keywords import keyword_recall, usable_keywords
from harness.specs import match

WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")
MEMORISATION_NOTE = (
    "Probes from training pages (source: train_page) measure memorisation of the training data, "
    "not generalisation; validation rows and val_page probes are unseen pages."
)


def tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


def token_f1(expected: str, actual: str) -> float:
    """SQuAD-style overlap of lower-cased word tokens: a soft signal, never a verdict on its own."""
    want, got = Counter(tokens(expected)), Counter(tokens(actual))
    common = sum((want & got).values())
    if not want or not got or not common:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def score_sample(sample: dict, prediction: dict | None) -> dict[str, Any]:
    """One score record: the sample, the model's answer, each check's verdict and the overall one."""
    record = {k: sample.get(k) for k in ("id", "kind", "category", "content_type", "source", "image", "image_ref", "question", "expected", "expected_keywords")}
    pages = sample_pages(sample)  # every page, in order ([] when text-only); `image`/`image_ref` stay the first for old readers
    record.update(images=[path for path, _ in pages if path], image_refs=[ref for _, ref in pages if ref])
    record.update(carried_fields(sample))
    answer = prediction.get("answer") if prediction else None
    error = None if prediction else "no prediction (run `vlm3 generate` again)"
    error_kind = None if prediction else "missing"
    if prediction and (prediction.get("error") or not isinstance(answer, str)):
        error = prediction.get("error") or "the saved record has no answer"
        error_kind, answer = "request", None
    record.update(answer=answer, error=error, error_kind=error_kind, judge=None, finish_reason=(prediction or {}).get("finish_reason"))
    checks: dict[str, Any] = {"spec": None, "keywords": None, "token_f1": None}
    if answer is None:
        # A failed request is not a wrong answer: no verdict, counted apart, left out of every rate.
        record.update(checks=checks, passed=None)
        return record

    verdicts: list[bool] = []
    expected = sample.get("expected")
    if isinstance(expected, str) and expected.strip():
        # The page's own text, when the row carries it, is evidence for a value the answer adds.
        spec = match(expected, answer, page_text=sample.get("page_text"))
        checks["spec"] = {"applicable": spec.applicable, "passed": spec.passed, "score": spec.score, "details": list(spec.details)}
        checks["token_f1"] = round(token_f1(expected, answer), 4)
        if spec.applicable:
            verdicts.append(spec.passed)
    # Blank keywords grade nothing (`vlm3 check` refuses them; a sample saved before that must not pass on them).
    keywords = usable_keywords(sample.get("expected_keywords"))
    if keywords:
        found = keyword_recall(keywords, answer)
        checks["keywords"] = {"recall": found.recall, "passed": found.passed, "found": list(found.found), "missing": list(found.missing)}
        verdicts.append(found.passed)
    record.update(checks=checks, passed=all(verdicts) if verdicts else None)
    return record


NOT_APPLICABLE = "not applicable: "


def spec_not_applicable_reason(record: dict) -> str | None:
    """Why the spec check could not grade this record (its first detail, without the prefix); None when it could
    or did not run."""
    checks = record.get("checks") if isinstance(record.get("checks"), dict) else {}
    spec = checks.get("spec") if isinstance(checks.get("spec"), dict) else {}
    if spec.get("applicable") is not False:
        return None
    details = spec.get("details") if isinstance(spec.get("details"), list) else []
    return str(details[0]).removeprefix(NOT_APPLICABLE) if details else "no reason given"


def rate(values: Iterable[bool | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def average(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(mean(known), 4) if known else None


def group_metrics(records: list[dict]) -> dict[str, Any]:
    spec = [r["checks"]["spec"] for r in records if r["checks"].get("spec") and r["checks"]["spec"]["applicable"]]
    return {
        "n": len(records),
        "pass_rate": rate(r["passed"] for r in records),
        "spec_pass_rate": rate(s["passed"] for s in spec),
        "spec_score": average(s["score"] for s in spec),
        "keyword_recall": average(r["checks"]["keywords"]["recall"] for r in records if r["checks"].get("keywords")),
        "token_f1": average(r["checks"].get("token_f1") for r in records),
        "errors": sum(1 for r in records if r["error"]),
    }


def grouped(records: list[dict], key: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[str(record.get(key) or "unknown")].append(record)
    return {name: group_metrics(rows) for name, rows in sorted(groups.items())}


def summarize(records: list[dict], label: str, probe_threshold: float = 0.85, **meta: Any) -> dict[str, Any]:
    """summary.json: metrics overall, by category, content type and kind; probes against the threshold."""
    probes = [r for r in records if r["kind"] == "probe"]
    probe_rate = rate(r["passed"] for r in probes)
    summary: dict[str, Any] = {
        "label": label,
        **meta,
        "counts": {
            "samples": len(records),
            "answered": sum(1 for r in records if r["answer"] is not None),
            "errors": sum(1 for r in records if r["error"]),  # no answer to score: failed + missing
            "failed": sum(1 for r in records if r["error"] and r.get("error_kind") != "missing"),  # asked, failed after retries
            "missing": sum(1 for r in records if r.get("error_kind") == "missing"),  # never answered (not asked yet)
            "deterministic": sum(1 for r in records if r["passed"] is not None),
            # Samples with a reference: graded by the spec check, or not applicable to it (no quantity it can
            # read; graded by keywords or the judge). Never counted as a spec pass or fail.
            "spec_checked": sum(1 for r in records if (r["checks"].get("spec") or {}).get("applicable") is True),
            "spec_not_applicable": sum(1 for r in records if (r["checks"].get("spec") or {}).get("applicable") is False),
        },
        "metrics": group_metrics(records),
        "by_category": grouped(records, "category"),
        "by_content_type": grouped(records, "content_type"),
        "by_kind": grouped(records, "kind"),
        "probes": {
            "n": len(probes),
            "pass_rate": probe_rate,
            "threshold": probe_threshold,
            "passed": None if probe_rate is None else probe_rate >= probe_threshold,  # None: no probe was graded
            "errors": sum(1 for r in probes if r["error"]),  # not in pass_rate: a failure is not a wrong answer
            "by_source": grouped(probes, "source"),
        },
        "spec_not_applicable_reasons": dict(Counter(
            reason for r in records if (reason := spec_not_applicable_reason(r)) is not None).most_common()),
        "thresholds": {"probe_pass_rate": probe_threshold},
        "judge": None,
        "notes": [MEMORISATION_NOTE] if any(r.get("source") == "train_page" for r in probes) else [],
    }
    # Rates and thresholds cover answered samples only; `complete` says whether that is all of them.
    summary["complete"] = summary["counts"]["errors"] == 0
    summary["breakdowns"] = breakdowns(records)
    summary["turns"] = turn_counts(records)
    # The verdict is the probes' against their threshold (eval.probe_pass_threshold). With no probe graded (none
    # in the recipe, or none answered) nothing was held to it: None, not a failure. The validation pass rate is a
    # measurement, not a gate: the probe threshold says nothing about it.
    summary["passed"] = summary["probes"]["passed"]
    return summary
