"""Chart geometry for the reports' inline SVG: numbers in, shapes out (plain dicts), drawn by
vlm3/core/templates/_charts.html.j2. No markup here, so nothing here needs escaping."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vlm3.core.templates import is_number, pct, shorten

MIN_BAR_PX = 3  # px: the smallest drawn histogram bar for a non-empty bin


def px(value: float) -> str:
    return f"{value:.1f}"


def histogram_counts(values: Iterable[float], bins: int = 10, low: float = 0.0, high: float = 1.0) -> list[int]:
    """Counts in equal bins over [low, high]; the top edge belongs to the last bin, values outside are clamped."""
    counts = [0] * bins
    width = (high - low) / bins
    for value in values:
        if not is_number(value):
            continue
        index = int((value - low) // width)
        counts[min(max(index, 0), bins - 1)] += 1
    return counts


def histogram(values: Sequence[float], label: str, bins: int = 10, color: str = "#4a78c2") -> dict[str, Any]:
    """A histogram of scores in [0, 1]: bar heights are counts, each bar labelled with its count."""
    counts = histogram_counts(values, bins)
    # top leaves room for the title (baseline 13 px) and the count above the tallest bar (13 px more).
    width, height, left, bottom, top = 340, 200, 30, 28, 32
    plot_w, plot_h = width - left - 10, height - bottom - top
    tallest = max(counts) or 1
    bar_w = plot_w / bins
    bars = []
    for i, count in enumerate(counts):
        # A non-empty bin stays visible next to one outlier bin of many (its count is printed above it).
        bar_h = max(plot_h * count / tallest, MIN_BAR_PX) if count else 0.0
        x, y = left + i * bar_w, top + plot_h - bar_h
        bars.append({"x": px(x + 1), "y": px(y), "width": px(bar_w - 2), "height": px(bar_h), "count": count,
                     "title": f"{i / bins:.1f}–{(i + 1) / bins:.1f}: {count}", "label_x": px(x + bar_w / 2), "label_y": px(y - 3)})
    axis_y = top + plot_h
    return {"width": width, "height": height, "label": label, "title": f"{label} (n={sum(counts)})", "title_x": px(left),
            "color": color, "bars": bars, "axis": {"x1": left, "x2": left + plot_w, "y": px(axis_y)},
            "ticks": [{"x": px(left + t * plot_w), "y": px(axis_y + 14), "text": f"{t:g}"} for t in (0.0, 0.5, 1.0)]}


def rate_bars(rows: Sequence[tuple[str, float | None, str]], label: str, threshold: float | None = None) -> dict[str, Any]:
    """Horizontal bars of rates in [0, 1], one per (name, rate, annotation); a dashed line marks a threshold."""
    label_w, bar_w, row_h, top = 190, 300, 22, 8
    bottom = top + row_h * max(len(rows), 1)
    drawn = []
    for i, (name, rate, annotation) in enumerate(rows):
        y = top + i * row_h
        bar = None
        if is_number(rate):
            bar = {"filled": px(bar_w * min(max(rate, 0.0), 1.0)), "title": f"{name}: {pct(rate)}"}
        drawn.append({"name": shorten(name, 30), "name_x": px(label_w - 6), "text_y": px(y + 14), "bar_y": y + 3, "bar": bar,
                      "annotation": annotation, "annotation_x": px(label_w + bar_w + 6)})
    line = None
    if threshold is not None:
        x = label_w + bar_w * threshold
        line = {"x": px(x), "top": top, "bottom": bottom, "text_y": px(bottom + 13), "text": f"threshold {pct(threshold, 0)}"}
    return {"width": label_w + bar_w + 110, "height": bottom + (18 if threshold is not None else 6), "label": label,
            "bar_x": label_w, "bar_w": bar_w, "bar_h": row_h - 6, "rows": drawn, "threshold": line}


def delta_whiskers(rows: Sequence[tuple[str, float, float | None, float | None, str]], label: str) -> dict[str, Any]:
    """One bar per (name, delta, ci_low, ci_high, annotation), drawn from zero, with the interval as a whisker
    (none where ci_low or ci_high is None: no interval)."""
    label_w, plot_w, row_h, top = 170, 360, 26, 8
    extent = max([abs(v) for _, delta, lo, hi, _ in rows for v in (delta, lo, hi) if v is not None] + [0.05])
    zero_x = label_w + plot_w / 2

    def x_of(value: float) -> float:
        return zero_x + value / extent * (plot_w / 2)

    drawn = []
    for i, (name, delta, lo, hi, annotation) in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        left, right = sorted((zero_x, x_of(delta)))
        interval = lo is not None and hi is not None
        color = "#1f8a4c" if interval and lo > 0 else "#c0392b" if interval and hi < 0 else "#8fa3c7"
        whisker = [(x_of(lo), mid, x_of(hi), mid), (x_of(lo), mid - 6, x_of(lo), mid + 6),
                   (x_of(hi), mid - 6, x_of(hi), mid + 6)] if interval else []
        drawn.append({"name": shorten(name, 26), "name_x": px(label_w - 6), "text_y": px(mid + 4), "title": f"{name}: {annotation}",
                      "x": px(left), "y": px(y + 6), "width": px(max(right - left, 1)), "height": row_h - 12, "color": color,
                      "whisker": [{"x1": px(a), "y1": px(b), "x2": px(c), "y2": px(d)} for a, b, c, d in whisker],
                      "annotation": annotation, "annotation_x": px(label_w + plot_w + 8)})
    axis_bottom = top + row_h * max(len(rows), 1)
    return {"width": label_w + plot_w + 170, "height": axis_bottom + 22, "label": label, "rows": drawn,
            "axis": {"x": px(zero_x), "top": top, "bottom": axis_bottom},
            "ticks": [{"x": px(x_of(v)), "y": px(axis_bottom + 15), "text": f"{v:+.2f}" if v else "0"} for v in (-extent, 0.0, extent)]}


# ---- the dataset card (harness.dataset_card) ----

def length_histogram(lengths: Sequence[int], label: str, limit: int | None = None, bins: int = 24) -> dict[str, Any]:
    """A histogram of lengths (tokens, words) from 0 to a little past the longest or the limit; a limit (the
    recipe's sequence length) is marked by a dashed red line."""
    width, height, left, bottom, top = 560, 220, 40, 30, 18
    plot_w, plot_h = width - left - 14, height - bottom - top
    high = max([limit or 1, *lengths]) * 1.05
    counts = [0] * bins
    for value in lengths:
        counts[min(int(value / high * bins), bins - 1)] += 1
    tallest = max(counts) or 1
    bar_w = plot_w / bins
    bars = []
    for i, count in enumerate(counts):
        bar_h = plot_h * count / tallest
        x, y = left + i * bar_w, top + plot_h - bar_h
        bars.append({"x": px(x + 1), "y": px(y), "width": px(bar_w - 2), "height": px(bar_h),
                     "title": f"{int(i * high / bins)}-{int((i + 1) * high / bins)}: {count}"})
    axis_y = top + plot_h
    line = None
    if limit:
        x = left + plot_w * limit / high
        line = {"x": px(x), "top": top, "bottom": axis_y, "text_x": px(x - 4), "text_y": px(top + 10), "text": f"sequence_len {limit:,}"}
    return {"width": width, "height": height, "label": label, "title": f"{label}, n={len(lengths)}", "title_x": px(left),
            "bars": bars, "axis": {"x1": left, "x2": left + plot_w, "y": axis_y},
            "ticks": [{"x": px(left + t * plot_w), "y": px(axis_y + 14), "text": f"{int(t * high):,}"} for t in (0, 0.5, 1.0)],
            "limit": line}


# --- training curves (vlm3.train.report) ---

# One colour per curve: the line, its points and its legend mark.
CURVE_COLORS = {"train loss": "#4a78c2", "eval loss": "#c0392b", "learning rate": "#2e8b57", "grad norm": "#8e44ad"}


def curves(title: str, series: Sequence[tuple[str, Sequence[tuple[int, float]]]], steps_known: bool = True,
           width: int = 640, height: int = 300, empty: str = "nothing was logged") -> dict[str, Any]:
    """Curves against step, with axes, ticks and a legend on the title line (never over the curves or labels).
    Each legend entry is a short line in its curve's colour before its name; "empty" is the text when nothing was logged."""
    left, right, top, bottom = 64, 16, 40, 42  # px; the title sits above `top`, the x label below the ticks
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [point for _, values in series for point in values]
    chart: dict[str, Any] = {"width": width, "height": height, "label": title, "title_x": px(left),
                             "title": title if steps_known else f"{title} in log order (steps unknown)",
                             "empty": None, "legend": [], "lines": []}
    if not points:
        return chart | {"empty": {"x": px(width / 2), "y": px(height / 2), "text": empty}}
    x_max = max(max(s for s, _ in points), 1)
    y_low, y_high = min(v for _, v in points), max(v for _, v in points)
    if y_high - y_low < 1e-12 * max(abs(y_high), 1e-30):
        pad = abs(y_high) * 0.1 or 0.5
        y_low, y_high = y_low - pad, y_high + pad

    def xy(step: float, value: float) -> tuple[float, float]:
        return left + plot_w * step / x_max, top + plot_h * (1 - (value - y_low) / (y_high - y_low))

    legend_x = width - right
    for name, values in reversed([(n, v) for n, v in series if v]):  # right-aligned: the last series ends the line
        text_x = legend_x
        legend_x -= 7 * len(name) + 4  # px: about 7 per character at the report's 11-px font
        chart["legend"].append({"name": name, "color": CURVE_COLORS.get(name, "#1d2330"), "text_x": px(text_x),
                                "x1": px(legend_x - 18), "x2": px(legend_x)})
        legend_x -= 18 + 14
    for name, values in series:
        if values:
            coords = [xy(s, v) for s, v in values]
            chart["lines"].append({"color": CURVE_COLORS.get(name, "#1d2330"), "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
                                   "dots": [{"cx": px(x), "cy": px(y), "title": f"{name} at step {s}: {v:.4g}"}
                                            for (x, y), (s, v) in zip(coords, values)]})
    axis_y = top + plot_h
    return chart | {"axis": {"left": left, "right": left + plot_w, "top": top, "y": px(axis_y)},
                    "ticks": [({"x": px(left + plot_w * f), "y": px(axis_y + 14), "text": f"{round(x_max * f)}"},
                               {"x": px(left - 6), "y": px(top + plot_h * (1 - f) + 4), "text": f"{y_low + (y_high - y_low) * f:.3g}"})
                              for f in (0.0, 0.5, 1.0)],
                    "x_label": {"x": px(left + plot_w / 2), "y": px(height - 6), "text": "step" if steps_known else "logged value number"}}
