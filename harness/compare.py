"""Paired comparison of two evaluations of the same samples (e.g. base vs fine-tuned), with bootstrap intervals.

Usage:
    from harness.compare import compare_scores, format_comparison, render_compare_html
    c = compare_scores(base_scores, tuned_scores, label_a="base", label_b="finetuned")
    print(format_comparison(c)); render_compare_html(c, Path("compare.html"))

Samples are paired by `id`; the n-th occurrence of an id in A pairs with the
n-th in B, and samples without an id are never paired. Each metric is compared
over the pairs where both sides have a value, as delta = B - A with a paired
percentile-bootstrap interval of the mean difference.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from data_adapters.jsonio import write_text_atomic
from harness.html import Html, document, is_number, num_cell, shorten, svg_delta_whiskers, table, tag

CI_LEVEL = 0.95
# Metrics whose values are 0/1 outcomes: shown as percentages, deltas in percentage points.
RATE_METRICS = {"pass_rate", "probe_pass_rate"}
TEXT_FLIP_LIMIT = 20


@dataclass(frozen=True)
class MetricDelta:
    name: str
    n: int
    mean_a: float
    mean_b: float
    delta: float  # mean of the paired differences b - a
    ci_low: float
    ci_high: float
    unscored: int = 0  # judge metrics: pairs left out because either side is unscored


@dataclass(frozen=True)
class Flip:
    id: str
    question: str
    category: str | None
    kind: str | None
    before: bool
    after: bool


@dataclass(frozen=True)
class Comparison:
    label_a: str
    label_b: str
    paired: int
    only_a: int
    only_b: int
    metrics: list[MetricDelta]
    flips: list[Flip]
    errored: int = 0  # pairs left out because a side has no answer (a failed request is not a wrong answer)
    errors_a: int = 0  # samples of A with no answer to score (failed after retries or never answered)
    errors_b: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def passed_value(sample: dict) -> float | None:
    passed = sample.get("passed")
    return float(passed) if isinstance(passed, bool) else None


def spec_score(sample: dict) -> float | None:
    spec = _dict(_dict(sample.get("checks")).get("spec"))
    return _number(spec.get("score")) if spec.get("applicable") else None


def keyword_recall(sample: dict) -> float | None:
    return _number(_dict(_dict(sample.get("checks")).get("keywords")).get("recall"))


def token_f1(sample: dict) -> float | None:
    return _number(_dict(sample.get("checks")).get("token_f1"))


def probe_passed_value(sample: dict) -> float | None:
    return passed_value(sample) if sample.get("kind") == "probe" else None


def judge_score(name: str) -> Callable[[dict], float | None]:
    def extract(sample: dict) -> float | None:
        metric = _dict(_dict(_dict(sample.get("judge")).get("metrics")).get(name))
        # An unscored metric may still carry a stale or placeholder score; it is not a measurement.
        return None if metric.get("unscored") else _number(metric.get("score"))
    return extract


BASE_METRICS: dict[str, Callable[[dict], float | None]] = {
    "pass_rate": passed_value,
    "probe_pass_rate": probe_passed_value,
    "spec_score": spec_score,
    "keyword_recall": keyword_recall,
    "token_f1": token_f1,
}


def _judge_metric_names(samples: list[dict]) -> set[str]:
    return {name for s in samples for name in _dict(_dict(s.get("judge")).get("metrics"))}


def pair_by_id(scores_a: list[dict], scores_b: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs in A's order; a repeated id pairs occurrence by occurrence."""
    def keyed(scores: list[dict]) -> dict[tuple[str, int], dict]:
        seen: Counter[str] = Counter()
        out = {}
        for sample in scores:
            sample_id = sample.get("id") if isinstance(sample, dict) else None
            if sample_id is None:
                continue
            out[(str(sample_id), seen[str(sample_id)])] = sample
            seen[str(sample_id)] += 1
        return out

    by_key_b = keyed(scores_b)
    return [(a, by_key_b[key]) for key, a in keyed(scores_a).items() if key in by_key_b]


def paired_bootstrap_ci(diffs: list[float], resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `diffs`, resampled with replacement; deterministic for a seed."""
    if not diffs:
        raise ValueError("paired_bootstrap_ci needs at least one difference")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if all(d == diffs[0] for d in diffs):
        # Every resample has the same mean; return it exactly rather than with summation rounding.
        return diffs[0], diffs[0]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return _quantile(means, tail), _quantile(means, 1 - tail)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _metric_delta(name: str, extract: Callable[[dict], float | None], pairs: list[tuple[dict, dict]],
                  resamples: int, seed: int) -> MetricDelta | None:
    values = [(va, vb) for va, vb in ((extract(a), extract(b)) for a, b in pairs) if va is not None and vb is not None]
    if not values:
        return None
    diffs = [vb - va for va, vb in values]
    ci_low, ci_high = paired_bootstrap_ci(diffs, resamples, seed, CI_LEVEL)
    unscored = 0
    if name.startswith("judge:"):
        judge_name = name.split(":", 1)[1]
        unscored = sum(1 for a, b in pairs if _is_unscored(a, judge_name) or _is_unscored(b, judge_name))
    return MetricDelta(name=name, n=len(values), mean_a=fmean(va for va, _ in values),
                       mean_b=fmean(vb for _, vb in values), delta=fmean(diffs), ci_low=ci_low, ci_high=ci_high,
                       unscored=unscored)


def _is_unscored(sample: dict, judge_name: str) -> bool:
    return bool(_dict(_dict(_dict(sample.get("judge")).get("metrics")).get(judge_name)).get("unscored"))


def _flip(a: dict, b: dict) -> Flip | None:
    before, after = a.get("passed"), b.get("passed")
    if not isinstance(before, bool) or not isinstance(after, bool) or before == after:
        return None
    return Flip(id=str(a.get("id")), question=str(a.get("question") or b.get("question") or ""),
                category=a.get("category") or b.get("category"), kind=a.get("kind") or b.get("kind"),
                before=before, after=after)


def compare_scores(scores_a: list[dict], scores_b: list[dict], label_a: str = "a", label_b: str = "b",
                   resamples: int = 2000, seed: int = 0) -> Comparison:
    """Compare B against A on every metric both sides have; metrics with no usable pair are left out."""
    all_pairs = pair_by_id(scores_a, scores_b)
    pairs = [(a, b) for a, b in all_pairs if not a.get("error") and not b.get("error")]
    # Only a judge metric present on both sides of some pair can be compared.
    judge_names = _judge_metric_names([a for a, _ in pairs]) & _judge_metric_names([b for _, b in pairs])
    extractors = {**BASE_METRICS, **{f"judge:{name}": judge_score(name) for name in sorted(judge_names)}}
    metrics = [delta for name, extract in extractors.items()
               if (delta := _metric_delta(name, extract, pairs, resamples, seed)) is not None]
    flips = [flip for a, b in pairs if (flip := _flip(a, b)) is not None]
    return Comparison(label_a=label_a, label_b=label_b, paired=len(pairs), only_a=len(scores_a) - len(all_pairs),
                      only_b=len(scores_b) - len(all_pairs), metrics=metrics, flips=flips, errored=len(all_pairs) - len(pairs),
                      errors_a=sum(1 for a in scores_a if a.get("error")), errors_b=sum(1 for b in scores_b if b.get("error")))


def format_value(name: str, value: float) -> str:
    return f"{value * 100:.1f}%" if name in RATE_METRICS else f"{value:.3f}"


def format_delta(name: str, value: float) -> str:
    return f"{value * 100:+.1f} pp" if name in RATE_METRICS else f"{value:+.3f}"


def format_ci(name: str, low: float, high: float) -> str:
    if name in RATE_METRICS:
        return f"[{low * 100:+.1f}, {high * 100:+.1f}] pp"
    return f"[{low:+.3f}, {high:+.3f}]"


def excludes_zero(m: MetricDelta) -> bool:
    return m.ci_low > 0 or m.ci_high < 0


def _metric_cells(c: Comparison) -> list[list[str]]:
    return [[m.name, f"{m.n} ({m.unscored} unscored)" if m.unscored else str(m.n), format_value(m.name, m.mean_a), format_value(m.name, m.mean_b),
             format_delta(m.name, m.delta), format_ci(m.name, m.ci_low, m.ci_high)] for m in c.metrics]


def _headers(c: Comparison) -> list[str]:
    return ["metric", "n", f"A: {c.label_a}", f"B: {c.label_b}", "delta (B-A)", f"{CI_LEVEL:.0%} CI"]


def _one_line(text: Any, limit: int = 90) -> str:
    # Terminal output: no newlines or control characters from the data.
    printable = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return shorten(printable, limit)


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        # The first column is a name, the others are numbers: right-align those.
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def fail_to_pass(c: Comparison) -> list[Flip]:
    return [f for f in c.flips if f.after]


def pass_to_fail(c: Comparison) -> list[Flip]:
    return [f for f in c.flips if not f.after]


def format_comparison(c: Comparison) -> str:
    """A plain-text table of the metric deltas, then the flipped samples (at most 20 per direction)."""
    lines = [f"A = {_one_line(c.label_a)}, B = {_one_line(c.label_b)}: {c.paired} paired samples "
             f"({c.only_a} only in A, {c.only_b} only in B"
             + (f"; {c.errored} left out: no answer on a side, run `vlm3 generate` again" if c.errored else "") + ")"
             + (f"; errors (no answer, not scored): A {c.errors_a}, B {c.errors_b}" if c.errors_a or c.errors_b else ""), ""]
    rows = [[_one_line(cell) for cell in row] for row in _metric_cells(c)]
    for row, m in zip(rows, c.metrics):
        row[-1] += " *" if excludes_zero(m) else ""
    lines += _text_table([_one_line(h) for h in _headers(c)], rows) if rows else ["no metric has a value on both sides"]
    if any(excludes_zero(m) for m in c.metrics):
        lines.append(f"* the {CI_LEVEL:.0%} interval excludes zero")
    for title, flips in (("fail -> pass", fail_to_pass(c)), ("pass -> fail", pass_to_fail(c))):
        lines += ["", f"{title}: {len(flips)}"]
        lines += [f"  {_one_line(f.id, 24)}  [{_one_line(f.kind or '-', 8)}/{_one_line(f.category or '-', 24)}]  "
                  f"{_one_line(f.question)}" for f in flips[:TEXT_FLIP_LIMIT]]
        if len(flips) > TEXT_FLIP_LIMIT:
            lines.append(f"  ... and {len(flips) - TEXT_FLIP_LIMIT} more")
    return "\n".join(lines)


def render_compare_html(c: Comparison, out_path: Path) -> Path:
    """Write a self-contained comparison page (table, delta plot with CI whiskers, flip lists) and return its path."""
    title = f"vlm3 comparison: {c.label_a} vs {c.label_b}"
    rows = []
    for cells, m in zip(_metric_cells(c), c.metrics):
        sign = ("num pos" if m.delta > 0 else "num neg") if excludes_zero(m) else "num"
        rows.append([cells[0], *(num_cell(cell) for cell in cells[1:4]), num_cell(cells[4], class_=sign), num_cell(cells[5])])
    whiskers = [(m.name, m.delta, m.ci_low, m.ci_high, f"{format_delta(m.name, m.delta)} {format_ci(m.name, m.ci_low, m.ci_high)}")
                for m in c.metrics]
    body = [
        tag("h1", title),
        tag("p", f"A = {c.label_a}, B = {c.label_b}. {c.paired} paired samples, {c.only_a} only in A, "
                 f"{c.only_b} only in B, {c.errored} left out for a missing answer (errors, not scored: A {c.errors_a}, B {c.errors_b}). Delta is B − A; intervals are {CI_LEVEL:.0%} paired bootstrap.", class_="muted"),
        tag("section", tag("h2", "Metrics"), table(_headers(c), rows) if rows else tag("p", "No metric has a value on both sides."),
            svg_delta_whiskers(whiskers, "metric deltas with confidence intervals") if whiskers else None, id="metrics"),
        _flip_section("Fail → pass", fail_to_pass(c), "fail-to-pass"),
        _flip_section("Pass → fail", pass_to_fail(c), "pass-to-fail"),
    ]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, document(title, body))  # never a half-written comparison
    return out_path


def _flip_section(title: str, flips: list[Flip], anchor: str) -> Html:
    content = (table(["id", "kind", "category", "question"], [[f.id, f.kind, f.category, f.question] for f in flips])
               if flips else tag("p", "none", class_="muted"))
    return tag("section", tag("h2", f"{title} ({len(flips)})"), content, id=anchor)
