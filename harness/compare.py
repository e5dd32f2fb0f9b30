"""Paired comparison of two evaluations of the same samples (e.g. base vs fine-tuned), with bootstrap intervals.

Usage:
    from harness.compare import compare_scores, format_comparison, render_compare_html
    c = compare_scores(base_scores, tuned_scores, label_a="base", label_b="finetuned")
    print(format_comparison(c)); render_compare_html(c, Path("compare.html"))

Samples are paired by `id`; the n-th occurrence of an id in A pairs with the
n-th in B, and samples without an id are never paired. Each metric is compared
over the pairs where both sides have a value, as delta = B - A with a paired
percentile-bootstrap interval of the mean difference that resamples pages (every
question about one page image together, harness.bootstrap): questions sharing a
page are not independent. No interval and no star come from fewer than three pages
or from resamples that do not vary: the table says why instead (a decision, such as
--fail-if-worse, may still rest on every page moving alike: worse_reason). The same
deltas come per section and content type (validation rows) and per probe category;
flipped samples carry both answers, the reference and the page image.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any


from vlm3.core.charts import delta_whiskers
from vlm3.core.jsonio import write_text_atomic
from vlm3.core.templates import is_number, render, shorten
from harness.bootstrap import MIN_PAGES, NO_SPREAD, bootstrap_interval, clusters_of
from harness.identity import distinguishing_parts, identity_title
from harness.page_images import PageImages
from data_adapters.samples import sample_pages
from vlm3.core.visible import visible_controls

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
    ci_low: float | None  # None: no interval (no_interval says why)
    ci_high: float | None
    unscored: int = 0  # judge metrics: pairs left out because either side is unscored
    pages: int = 0  # distinct pages among the pairs (0: not recorded): the bootstrap's resampling units
    no_interval: str | None = None  # why there is no interval: too few pages, or resamples that do not vary

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None


@dataclass(frozen=True)
class Flip:
    id: str
    question: str
    category: str | None
    kind: str | None
    before: bool
    after: bool
    section: str | None = None
    page: str | None = None
    image: str | None = None  # the page image's path (as scored), for the comparison page
    image_ref: str | None = None
    expected: str | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    turn: int = 1
    images: list[str] = field(default_factory=list)  # every page the sample showed, in order; [] when text-only
    image_refs: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """The page(s) a flip is about, for the terminal: the page name, else the first page's file, else text-only."""
        if self.page or self.image_ref:
            return f"page {self.page or self.image_ref}"
        return "text-only" if not self.images else "page -"


@dataclass(frozen=True)
class GroupDelta:
    """One metric's delta within a group: axis is "section", "content_type" (validation rows) or "probe_category"."""

    axis: str
    name: str
    metric: MetricDelta


@dataclass(frozen=True)
class Side:
    """Which evaluation one side is: its label, and the run, model and family that answered (None: not known);
    with meta.json's identity (harness.identity), also the recipe, the data version and the weights served."""

    label: str
    run: str | None = None  # the run folder's name (meta.json's identity), or "<recipe>/<time>" read from the folder
    model: str | None = None  # the model name the requests asked for
    family: str | None = None  # "Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"
    base_model: str | None = None
    endpoint: str | None = None
    recipe: str | None = None
    data_version: str | None = None  # data_report.json's hash of the converted data
    served: str | None = None  # "finetuned", "base", "checkpoint-N" or "endpoint"

    def describe(self) -> str:
        return (f"{self.label}: run {self.run or '-'}, model {self.model or '-'}, family {self.family or '-'}"
                + (f" (base {self.base_model})" if self.base_model else ""))

    def identity(self) -> dict:
        """The side as harness.identity reads it; the label stands for the weights served when they were not recorded."""
        return {"run": self.run, "recipe": self.recipe, "family": self.family, "data_version": self.data_version,
                "served": self.served or self.label, "endpoint": self.endpoint, "model": self.model}

    @property
    def title(self) -> str:
        """'tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data 8e15ab3dfe · checkpoint-100'."""
        return identity_title(self.identity())


def describe_eval_dir(eval_dir: Path, read_run: Callable[[Path], tuple[str | None, str | None]] | None = None) -> Side:
    """The side an evaluation folder is: meta.json's label, model and endpoint, and its identity when eval recorded one
    (harness.identity); else the run, family and base model from meta.json's older keys, else from the run folder it
    sits in (RUN/eval/...: RUN/data/data_report.json, and read_run(RUN): the base model and family its recipe names)."""
    import json

    eval_dir = Path(eval_dir)
    try:
        meta = json.loads((eval_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    label = str(meta.get("label") or eval_dir.name)
    identity = meta.get("identity")
    if isinstance(identity, dict):
        return Side(label=label, run=identity.get("run"), model=meta.get("model"), family=identity.get("family"),
                    base_model=identity.get("base_model"), endpoint=meta.get("endpoint"), recipe=identity.get("recipe"),
                    data_version=identity.get("data_version"), served=identity.get("served"))
    run, family, base, data = meta.get("run"), meta.get("family"), meta.get("base_model"), None
    run_dir = next((p for p in eval_dir.resolve().parents if (p / "recipe.yaml").is_file()), None)
    if run_dir is not None:
        data = recorded_data_version(run_dir)
    if run_dir is not None and not (run and family and base):
        run = run or f"{run_dir.parent.name}/{run_dir.name}"
        if read_run is not None:  # an evaluation from before identities were recorded: its run's recipe says
            recipe_base, recipe_family = read_run(run_dir)
            base, family = base or recipe_base, family or recipe_family
    return Side(label=label, run=run, model=meta.get("model"), family=family, base_model=base,
                endpoint=meta.get("endpoint"), data_version=data)


def recorded_data_version(run_dir: Path) -> str | None:
    """RUN/data/data_report.json's data_version, or None."""
    import json

    try:
        version = json.loads((Path(run_dir) / "data" / "data_report.json").read_text(encoding="utf-8")).get("data_version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def side_labels(label_a: str, label_b: str, side_a: Side | None, side_b: Side | None) -> tuple[str, str]:
    """Two labels that tell the sides apart: their own when they differ; else what differs in their identities
    ('finetuned · run 20261205T… · Qwen2-VL' vs 'finetuned · run 20261206T… · Qwen3-VL'); "(A)"/"(B)" only when nothing does."""
    if label_a != label_b:
        return label_a, label_b
    if side_a and side_b:
        only_a, only_b = distinguishing_parts(side_a.identity(), side_b.identity())
        if only_a and only_b:
            return f"{label_a} · {only_a}", f"{label_b} · {only_b}"
    return f"{label_a} (A)", f"{label_b} (B)"


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
    groups: list[GroupDelta] = field(default_factory=list)
    pages: int = 0  # distinct page images among the pairs: the bootstrap's resampling unit
    general: dict | None = None  # vlm3's general probes: did B keep what A could do? (general_verdict)
    side_a: Side | None = None  # run, model and family of each side (describe_eval_dir), when compared from folders
    side_b: Side | None = None

    @property
    def title(self) -> str:
        """'vlm3 comparison: <A's title> vs <B's title>' (harness.identity), else the labels."""
        a = self.side_a.title if self.side_a else self.label_a
        b = self.side_b.title if self.side_b else self.label_b
        return f"vlm3 comparison: {a or self.label_a} vs {b or self.label_b}"

    def to_dict(self) -> dict:
        data = {"title": self.title, **asdict(self)}
        for name, side in (("side_a", self.side_a), ("side_b", self.side_b)):
            if side:
                data[name]["title"] = side.title
        return data


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
    pages = clusters_of([a for (a, b) in pairs if extract(a) is not None and extract(b) is not None])
    interval, no_interval = bootstrap_interval(diffs, pages, resamples, seed, CI_LEVEL)
    ci_low, ci_high = interval or (None, None)
    unscored = 0
    if name.startswith("judge:"):
        judge_name = name.split(":", 1)[1]
        unscored = sum(1 for a, b in pairs if _is_unscored(a, judge_name) or _is_unscored(b, judge_name))
    return MetricDelta(name=name, n=len(values), mean_a=fmean(va for va, _ in values),
                       mean_b=fmean(vb for _, vb in values), delta=fmean(diffs), ci_low=ci_low, ci_high=ci_high,
                       unscored=unscored, pages=len(set(pages)), no_interval=no_interval)


def _is_unscored(sample: dict, judge_name: str) -> bool:
    return bool(_dict(_dict(_dict(sample.get("judge")).get("metrics")).get(judge_name)).get("unscored"))


def _flip(a: dict, b: dict) -> Flip | None:
    before, after = a.get("passed"), b.get("passed")
    if not isinstance(before, bool) or not isinstance(after, bool) or before == after:
        return None
    pages = sample_pages(b) or sample_pages(a)
    return Flip(id=str(a.get("id")), question=str(a.get("question") or b.get("question") or ""),
                category=a.get("category") or b.get("category"), kind=a.get("kind") or b.get("kind"),
                before=before, after=after, section=a.get("section") or b.get("section"),
                page=a.get("page") or b.get("page"), image=b.get("image") or a.get("image"),
                image_ref=a.get("image_ref") or b.get("image_ref"), expected=a.get("expected") or b.get("expected"),
                answer_a=a.get("answer"), answer_b=b.get("answer"), turn=int(a.get("turn") or 1),
                images=[path for path, _ in pages if path], image_refs=[ref for _, ref in pages if ref])


def compare_scores(scores_a: list[dict], scores_b: list[dict], label_a: str = "a", label_b: str = "b",
                   resamples: int = 2000, seed: int = 0, side_a: Side | None = None, side_b: Side | None = None) -> Comparison:
    """Compare B against A on every metric both sides have; metrics with no usable pair are left out."""
    all_pairs = pair_by_id(scores_a, scores_b)
    pairs = [(a, b) for a, b in all_pairs if not a.get("error") and not b.get("error")]
    # Only a judge metric present on both sides of some pair can be compared.
    judge_names = _judge_metric_names([a for a, _ in pairs]) & _judge_metric_names([b for _, b in pairs])
    extractors = {**BASE_METRICS, **{f"judge:{name}": judge_score(name) for name in sorted(judge_names)}}
    metrics = [delta for name, extract in extractors.items()
               if (delta := _metric_delta(name, extract, pairs, resamples, seed)) is not None]
    flips = [flip for a, b in pairs if (flip := _flip(a, b)) is not None]
    groups = group_deltas(pairs, judge_names, resamples, seed)
    general = general_verdict(pairs, resamples, seed)
    return Comparison(label_a=label_a, label_b=label_b, paired=len(pairs), only_a=len(scores_a) - len(all_pairs),
                      only_b=len(scores_b) - len(all_pairs), metrics=metrics, flips=flips, errored=len(all_pairs) - len(pairs),
                      errors_a=sum(1 for a in scores_a if a.get("error")), errors_b=sum(1 for b in scores_b if b.get("error")),
                      groups=groups, pages=len(set(clusters_of([a for a, _ in pairs]))), general=general,
                      side_a=side_a, side_b=side_b)


def side_lines(c: Comparison) -> list[str]:
    """"A = label: run R, model M, family F" for each side that is known; a note when the families differ."""
    lines = [f"{name} = {_one_line(side.describe(), 160)}" for name, side in (("A", c.side_a), ("B", c.side_b)) if side]
    if c.side_a and c.side_b and c.side_a.data_version and c.side_b.data_version and c.side_a.data_version != c.side_b.data_version:
        lines.append(f"different data: {c.side_a.data_version} (A) vs {c.side_b.data_version} (B) (data_report.json's data_version)")
    if c.side_a and c.side_b and c.side_a.family and c.side_b.family and c.side_a.family != c.side_b.family:
        lines.append(f"different families: {c.side_a.family} (A) vs {c.side_b.family} (B); each side asked its own served model")
    return lines


def general_verdict(pairs: list[tuple[dict, dict]], resamples: int, seed: int) -> dict | None:
    """Whether B kept the general abilities A had (vlm3's general probes); None when neither side asked them.

    Lost when B's pass rate on them is lower with confidence (worse_reason); B failing probes
    that A passed is listed either way."""
    general = [(a, b) for a, b in pairs if a.get("kind") == "general"]
    if not general:
        return None
    delta = _metric_delta("pass_rate", passed_value, general, resamples, seed)
    lost = [str(a.get("id")) for a, b in general if a.get("passed") is True and b.get("passed") is False]
    return {"n": len(general), "a_passed": sum(1 for a, _ in general if a.get("passed") is True),
            "b_passed": sum(1 for _, b in general if b.get("passed") is True),
            "kept": not (delta is not None and worse_reason(delta)), "lost": lost,
            "lost_because": worse_reason(delta) if delta is not None else None,
            "delta": None if delta is None else asdict(delta)}


def format_general(c: Comparison) -> str | None:
    g = c.general
    if not g:
        return None
    verdict = "kept" if g["kept"] else f"LOST (lower pass rate: {g.get('lost_because') or 'the interval excludes zero'})"
    text = f"general ability (vlm3's reading, counting, transcribing probes): A {g['a_passed']}/{g['n']}, B {g['b_passed']}/{g['n']} passed -> {verdict}"
    # Probe ids come from the data: printed in a terminal, so controls and bidi characters only as escapes.
    return text + (f"; B fails what A passed: {', '.join(_one_line(i, 60) for i in g['lost'])}" if g["lost"] else "")


GROUP_AXES = (("section", "val", "section"), ("content_type", "val", "content_type"), ("probe_category", "probe", "category"),
             ("general", "general", "category"))
GROUP_METRICS = ("pass_rate", "spec_score")


def group_deltas(pairs: list[tuple[dict, dict]], judge_names: set[str], resamples: int, seed: int) -> list[GroupDelta]:
    """Pass rate, spec score and judge deltas per section and content type (validation) and per probe category."""
    extractors = {**{name: BASE_METRICS[name] for name in GROUP_METRICS},
                  **{f"judge:{name}": judge_score(name) for name in sorted(judge_names)}}
    out = []
    for axis, kind, key in GROUP_AXES:
        buckets: dict[str, list[tuple[dict, dict]]] = {}
        for a, b in pairs:
            if a.get("kind") == kind:
                buckets.setdefault(str(a.get(key) or b.get(key) or "unknown"), []).append((a, b))
        for name in sorted(buckets):
            for metric_name, extract in extractors.items():
                delta = _metric_delta(metric_name, extract, buckets[name], resamples, seed)
                if delta is not None:
                    out.append(GroupDelta(axis=axis, name=name, metric=delta))
    return out


class UnknownMetric(ValueError):
    """--fail-if-worse names a metric the comparison does not have."""


def worse_with_confidence(c: Comparison, metric: str) -> MetricDelta | None:
    """The metric's delta when B is worse than A with confidence (worse_reason), else None (every metric: higher is better)."""
    found = [m for m in c.metrics if m.name == metric]
    if not found:
        names = ", ".join(m.name for m in c.metrics) or "none"
        raise UnknownMetric(f"--fail-if-worse {metric}: no such metric in this comparison (it has: {names})")
    m = found[0]
    return m if worse_reason(m) else None


def format_value(name: str, value: float) -> str:
    return f"{value * 100:.1f}%" if name in RATE_METRICS else f"{value:.3f}"


def format_delta(name: str, value: float) -> str:
    return f"{value * 100:+.1f} pp" if name in RATE_METRICS else f"{value:+.3f}"


def format_ci(name: str, low: float, high: float) -> str:
    if name in RATE_METRICS:
        return f"[{low * 100:+.1f}, {high * 100:+.1f}] pp"
    return f"[{low:+.3f}, {high:+.3f}]"


def interval_text(m: MetricDelta) -> str:
    if m.has_interval:
        return format_ci(m.name, m.ci_low, m.ci_high)
    return f"– ({m.no_interval})" if m.no_interval else "–"


def excludes_zero(m: MetricDelta) -> bool:
    # Without an interval (too few pages, resamples that do not vary) there is no significance to claim.
    return m.has_interval and (m.ci_low > 0 or m.ci_high < 0)


def moved_alike(m: MetricDelta) -> bool:
    """Every one of at least MIN_PAGES pages moved by the same non-zero amount (e.g. B fails all A passed):
    no interval to show and no star, but a decision (--fail-if-worse, the general verdict) may rest on it."""
    return m.no_interval == NO_SPREAD and m.pages >= MIN_PAGES and m.delta != 0


def worse_reason(m: MetricDelta) -> str | None:
    """Why B is worse than A with confidence on this metric, or None when it is not."""
    if m.delta >= 0:
        return None
    if excludes_zero(m):
        return "the interval excludes zero"
    return f"worse by the same amount on every one of {m.pages} pages" if moved_alike(m) else None


def _metric_cells(c: Comparison) -> list[list[str]]:
    return [[m.name, f"{m.n} ({m.unscored} unscored)" if m.unscored else str(m.n), format_value(m.name, m.mean_a), format_value(m.name, m.mean_b),
             format_delta(m.name, m.delta), interval_text(m)] for m in c.metrics]


def _headers(c: Comparison) -> list[str]:
    return ["metric", "n", f"A: {c.label_a}", f"B: {c.label_b}", "delta (B-A)", f"{CI_LEVEL:.0%} CI"]


def _one_line(text: Any, limit: int = 90) -> str:
    # Terminal output: controls and bidi characters from the data shown escaped, other unprintables and newlines as spaces.
    printable = "".join(ch if ch.isprintable() else " " for ch in visible_controls(str(text)))
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
    titles = [f"{name}: {_one_line(side.title, 160)}" for name, side in (("A", c.side_a), ("B", c.side_b)) if side]
    lines = [*titles, f"A = {_one_line(c.label_a)}, B = {_one_line(c.label_b)}: {c.paired} paired samples "
             f"({c.only_a} only in A, {c.only_b} only in B"
             + (f"; {c.errored} left out: no answer on a side, run `vlm3 generate` again" if c.errored else "") + ")"
             + (f"; errors (no answer, not scored): A {c.errors_a}, B {c.errors_b}" if c.errors_a or c.errors_b else ""),
             f"intervals resample the {c.pages} page(s) (all questions about one page together); "
             f"none from fewer than {MIN_PAGES} pages or from resamples that do not vary"]
    lines += side_lines(c)
    if format_general(c):
        lines.append(format_general(c))
    lines.append("")
    rows = [[_one_line(cell) for cell in row] for row in _metric_cells(c)]
    for row, m in zip(rows, c.metrics):
        row[-1] += " *" if excludes_zero(m) else ""
    headers = ["metric", "n", "A", "B", *_headers(c)[4:]] if c.side_a and c.side_b else _headers(c)  # the titles are above
    lines += _text_table([_one_line(h) for h in headers], rows) if rows else ["no metric has a value on both sides"]
    if any(excludes_zero(m) for m in c.metrics):
        lines.append(f"* the {CI_LEVEL:.0%} interval excludes zero")
    group_rows = [[_one_line(cell) for cell in row] for row in _group_cells(c)]
    if group_rows:
        lines += ["", "by section, content type and probe category:"]
        lines += _text_table(["group", "metric", "n", "A", "B", "delta (B-A)", f"{CI_LEVEL:.0%} CI"], group_rows)
    for title, flips in (("fail -> pass", fail_to_pass(c)), ("pass -> fail", pass_to_fail(c))):
        lines += ["", f"{title}: {len(flips)}"]
        for f in flips[:TEXT_FLIP_LIMIT]:
            where = "/".join(_one_line(v, 24) for v in (f.kind or "-", f.section or f.category or "-", f.where))
            lines.append(f"  {_one_line(f.id, 24)}  [{where}]  {_one_line(f.question)}")
            lines.append(f"      reference: {_one_line(f.expected if f.expected is not None else '-', 100)}")
            lines.append(f"      A ({'pass' if f.before else 'fail'}): {_one_line(f.answer_a if f.answer_a is not None else '-', 100)}")
            lines.append(f"      B ({'pass' if f.after else 'fail'}): {_one_line(f.answer_b if f.answer_b is not None else '-', 100)}")
        if len(flips) > TEXT_FLIP_LIMIT:
            lines.append(f"  ... and {len(flips) - TEXT_FLIP_LIMIT} more")
    return "\n".join(lines)


AXIS_NAMES = {"section": "section", "content_type": "content type", "probe_category": "probe category", "general": "general"}


def _group_cells(c: Comparison) -> list[list[str]]:
    return [[f"{AXIS_NAMES.get(g.axis, g.axis)}: {g.name}", g.metric.name, str(g.metric.n), format_value(g.metric.name, g.metric.mean_a),
             format_value(g.metric.name, g.metric.mean_b), format_delta(g.metric.name, g.metric.delta)
             + (" *" if excludes_zero(g.metric) else ""), interval_text(g.metric)]
            for g in c.groups]


def comparison_file_stem(label_a: str, label_b: str) -> str:
    """compare-<A>-vs-<B>: the file says which two evaluations it compares (names made file-safe)."""
    def safe(label: str) -> str:
        cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label).strip("._") or "eval"
        return cleaned[:60]

    return f"compare-{safe(label_a)}-vs-{safe(label_b)}"


def render_compare_html(c: Comparison, out_path: Path) -> Path:
    """Write a self-contained comparison page (table, delta plot with CI whiskers, flip lists) and return its path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, render("comparison.html.j2", **comparison_page(c)))  # never a half-written comparison
    return out_path


def _num(text: str, class_: str = "num") -> dict:
    """A right-aligned table cell (_macros.html.j2's table)."""
    return {"num": text, "class": class_}


def _sign(m: MetricDelta) -> str:
    return ("num pos" if m.delta > 0 else "num neg") if excludes_zero(m) else "num"


def comparison_page(c: Comparison) -> dict:
    """The plain values comparison.html.j2 draws: the comparison's numbers as the terminal table formats them."""
    pages = PageImages()
    metric_rows = [[cells[0], *(_num(cell) for cell in cells[1:4]), _num(cells[4], _sign(m)), _num(cells[5])]
                   for cells, m in zip(_metric_cells(c), c.metrics)]
    group_rows = [[cells[0], cells[1], *(_num(cell) for cell in cells[2:5]), _num(cells[5], _sign(g.metric)), _num(cells[6])]
                  for cells, g in zip(_group_cells(c), c.groups)]
    whiskers = [(m.name, m.delta, m.ci_low, m.ci_high, f"{format_delta(m.name, m.delta)} {interval_text(m)}") for m in c.metrics]
    sides = [[name, side.label, side.recipe or "-", side.run or "-", side.family or "-", side.base_model or "-",
              side.data_version or "-", side.served or "-", side.model or "-"]
             for name, side in (("A", c.side_a), ("B", c.side_b)) if side]
    flip_sections = [{"title": title, "anchor": anchor, "cards": [_flip_card(f, pages) for f in flips]}
                     for title, anchor, flips in (("Fail → pass", "fail-to-pass", fail_to_pass(c)),
                                                  ("Pass → fail", "pass-to-fail", pass_to_fail(c)))]
    return {
        "title": c.title, "label_a": c.label_a, "label_b": c.label_b,
        "general": format_general(c), "general_lost": bool(c.general and not c.general["kept"]), "sides": sides,
        "summary": (f"A = {c.label_a}, B = {c.label_b}. {c.paired} paired samples, {c.only_a} only in A, "
                    f"{c.only_b} only in B, {c.errored} left out for a missing answer (errors, not scored: A {c.errors_a}, B {c.errors_b}). "
                    f"Delta is B − A; intervals are {CI_LEVEL:.0%} paired bootstrap resampling the {c.pages} page(s): "
                    f"all questions about one page together; none from fewer than {MIN_PAGES} pages or from resamples "
                    "that do not vary."),
        "metric_headers": _headers(c), "metric_rows": metric_rows,
        "whiskers": delta_whiskers(whiskers, "metric deltas with confidence intervals") if whiskers else None,
        "group_headers": ["group", "metric", "n", f"A: {c.label_a}", f"B: {c.label_b}", "delta (B-A)", f"{CI_LEVEL:.0%} CI"],
        "group_rows": group_rows, "flip_sections": flip_sections,
        "embedded_pages": pages.embedded_pages(),  # after every card's pages: each page image once
    }


def _flip_card(f: Flip, pages: PageImages) -> dict:
    heading = " · ".join(str(v) for v in (f.id, f.kind, f.section or f.category, f"page {f.page}" if f.page else None,
                                          f"turn {f.turn}" if f.turn > 1 else None) if v)
    shown = {"images": f.images, "image_refs": f.image_refs, "image": f.image, "image_ref": f.image_ref}
    return {"heading": heading, "question": f.question, "expected": f.expected, "before": f.before, "after": f.after,
            "answer_a": f.answer_a, "answer_b": f.answer_b, "pages": pages.shown(shown)}
