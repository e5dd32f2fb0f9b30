"""Bootstrap intervals that resample pages, not questions: questions about one page are not independent.

Usage:
    low, high = cluster_bootstrap_ci(values, clusters, resamples=2000, seed=0)
    # values: one number per sample (a 0/1 verdict, a score, or a paired difference B - A)
    # clusters: the page(s) each sample is about (clusters_of: samples sharing a page together), same length

Several questions share a page; a model that cannot read that page fails all of them together.
Resampling questions treats them as independent draws and gives intervals that are too narrow;
resampling whole pages (with all their questions) keeps that dependence. Each resample is the
mean over the questions of the drawn pages (a ratio estimator: pages with more questions weigh
more, as in the plain mean). With one question per page this is the ordinary bootstrap.

An interval is only as good as its pages: `bootstrap_interval` gives none from fewer than
MIN_PAGES pages (two pages resample into three outcomes at most) or when the resamples do not
vary (every one the same mean: a zero-width interval such as [-100, -100] says nothing), and
says why instead.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence

from data_adapters.samples import sample_pages

MIN_PAGES = 3  # fewer resampling units (pages; a text-only sample is one alone) than this give no interval
ZERO_WIDTH = 1e-12  # an interval narrower than this (in the values' unit) is a single point: the resamples did not vary
NO_SPREAD = "every resample gives the same value"


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence[Hashable], resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `values`, resampling whole clusters with replacement; deterministic for a seed."""
    if not values:
        raise ValueError("cluster_bootstrap_ci needs at least one value")
    if len(values) != len(clusters):
        raise ValueError(f"values and clusters differ in length ({len(values)} vs {len(clusters)})")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if all(v == values[0] for v in values):
        # Every resample has the same mean; return it exactly rather than with summation rounding.
        return float(values[0]), float(values[0])
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for value, cluster in zip(values, clusters):
        groups[cluster].append(float(value))
    # Per page: (sum, count); a resample's mean is sum of sums over sum of counts.
    totals = [(sum(group), len(group)) for group in groups.values()]
    rng = random.Random(seed)
    k = len(totals)
    means = []
    for _ in range(resamples):
        drawn = rng.choices(totals, k=k)
        means.append(sum(s for s, _ in drawn) / sum(n for _, n in drawn))
    means.sort()
    tail = (1 - level) / 2
    return quantile(means, tail), quantile(means, 1 - tail)


def bootstrap_interval(values: Sequence[float], clusters: Sequence[Hashable], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[tuple[float, float] | None, str | None]:
    """(low, high) and None, or None and why there is no interval: too few pages, or resamples that do not vary."""
    pages = len(set(clusters))
    if pages < MIN_PAGES:
        return None, f"{pages} page{'' if pages == 1 else 's'}: too few for an interval"
    low, high = cluster_bootstrap_ci(values, clusters, resamples, seed, level)
    if high - low < ZERO_WIDTH:
        return None, NO_SPREAD
    return (low, high), None


def page_refs(sample: dict) -> list[str]:
    """The pages a sample needs, as written in the data (else as scored), in order; [] when it names none."""
    return [str(ref or path) for path, ref in sample_pages(sample) if ref or path]


def page_of(sample: dict) -> str | None:
    """The page set a sample is about: its pages as written in the data (else as scored), one per line
    (one page is its path, as before); None when it names none (a text-only sample)."""
    pages = page_refs(sample)
    return "\n".join(pages) if pages else None


def clusters_of(samples: Sequence[dict]) -> list[Hashable]:
    """One cluster key per sample: samples that share any page are one cluster (a two-page question and a
    question about either page are not independent); a sample that names no page is a cluster alone."""
    parent: dict[str, str] = {}

    def root(page: str) -> str:
        while parent[page] != page:
            parent[page] = parent[parent[page]]
            page = parent[page]
        return page

    pages = [page_refs(s) for s in samples]
    for refs in pages:
        for ref in refs:
            parent.setdefault(ref, ref)
        for ref in refs[1:]:
            a, b = root(refs[0]), root(ref)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the smallest page names the cluster: the same keys every run
    return [root(refs[0]) if refs else ("sample", i) for i, refs in enumerate(pages)]
