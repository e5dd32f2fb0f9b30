"""HTML and inline-SVG building blocks shared by the evaluation report and the comparison page.

Usage:
    from vlm3.core.html import document, tag, table, pct
    Path("out.html").write_text(document("Run", tag("h1", label), table(["metric", "value"], [["pass rate", pct(0.4)]])))

Escaping is the default: `tag`, `table` and the SVG helpers escape every child
and attribute value unless it is already `Html` (built by these helpers), so
text from data or a model cannot inject markup as long as it is passed as a
plain string. Bidi overrides and isolates are shown as visible escapes ("\\u202e"):
raw, they reorder what the reader sees.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from vlm3.core.visible import BIDI_CONTROLS, visible_controls

# Elements that HTML forbids a closing tag on.
VOID_ELEMENTS = {"area", "br", "col", "hr", "img", "input", "meta", "wbr"}

PLACEHOLDER = "—"
MIN_BAR_PX = 3  # px: the smallest drawn histogram bar for a non-empty bin

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; margin: 0 auto; max-width: 1180px; padding: 1.5rem; }
h1 { margin: 0 0 .4rem; font-size: 1.6rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #d8dde6; padding-bottom: .25rem; font-size: 1.2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { border: 1px solid #d8dde6; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #f1f3f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dl.meta dt { color: #5a6375; }
dl.meta dd { margin: 0; }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: .8rem; font-weight: 700; font-size: .85rem; color: #fff; }
.badge.pass { background: #1f8a4c; }
.badge.fail { background: #c0392b; }
.badge.none { background: #7a8190; }
.notes { background: #fff7e0; border: 1px solid #e8c65a; border-radius: 6px; padding: .6rem 1rem; }
.notes li { margin: .2rem 0; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.plots figure { margin: 0; }
.plots figcaption { color: #5a6375; font-size: .85rem; }
.sample { display: grid; grid-template-columns: 370px 1fr; gap: 1rem; border: 1px solid #d8dde6; border-radius: 6px; padding: .8rem; margin: .8rem 0; }
.sample img { max-width: 360px; border: 1px solid #d8dde6; }
.placeholder { width: 360px; min-height: 120px; display: flex; align-items: center; justify-content: center; background: #f1f3f7; color: #7a8190; text-align: center; padding: .5rem; box-sizing: border-box; word-break: break-all; }
.label { color: #5a6375; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; margin-top: .5rem; }
pre.text { white-space: pre-wrap; word-break: break-word; background: #f7f8fa; border: 1px solid #e3e7ee; padding: .4rem .6rem; margin: .2rem 0; font: 13px/1.4 ui-monospace, Menlo, Consolas, monospace; }
pre.error { background: #fdecea; border-color: #f5c2bc; }
ul.details { margin: .2rem 0 .4rem; padding-left: 1.2rem; }
.muted { color: #7a8190; }
.pos { color: #1f8a4c; font-weight: 600; }
.neg { color: #c0392b; font-weight: 600; }
svg text { font: 11px system-ui, sans-serif; fill: #1d2330; }
"""


class Html(str):
    """Text already safe to place in HTML; anything that is not Html gets escaped."""


class Cell(Html):
    """A finished <td>, which `table` places as it is."""


def esc(value: Any) -> Html:
    """Escape a value for HTML text or an attribute; None becomes empty, Html passes through."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("")
    return Html(_escape(value))


def _escape(value: Any) -> str:
    return visible_controls(html.escape(str(value), quote=True), BIDI_CONTROLS)


def _attr_name(key: str) -> str:
    # Python keywords and dashes: class_ -> class, text_anchor -> text-anchor.
    return key.rstrip("_").replace("_", "-")


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if isinstance(child, (list, tuple)) or hasattr(child, "__next__"):
            yield from _flatten(child)
        elif child is not None:
            yield child


def fragment(*children: Any) -> Html:
    """Concatenate children, escaping each that is not Html."""
    return Html("".join(esc(child) for child in _flatten(children)))


def tag(name: str, /, *children: Any, **attrs: Any) -> Html:
    """One element; attribute values are always escaped, None or False drops an attribute."""
    attr_text = "".join(
        f' {_attr_name(key)}="{_escape(value)}"'
        for key, value in attrs.items()
        if value is not None and value is not False
    )
    if name in VOID_ELEMENTS:
        return Html(f"<{name}{attr_text}>")
    return Html(f"<{name}{attr_text}>{fragment(*children)}</{name}>")


def document(title: str, *body: Any) -> str:
    """A complete, self-contained HTML page with the shared stylesheet."""
    head = fragment(
        tag("meta", charset="utf-8"),
        tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
        tag("title", title),
        tag("style", Html(CSS)),
    )
    return "<!DOCTYPE html>\n" + tag("html", tag("head", head), tag("body", *body), lang="en") + "\n"


def is_number(value: Any) -> bool:
    """A real, finite number (bool is not a number here, NaN is not a value)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(rate: Any, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage; a missing value as a dash."""
    return f"{rate * 100:.{digits}f}%" if is_number(rate) else PLACEHOLDER


def fnum(value: Any, digits: int = 3) -> str:
    """A score with fixed decimals; a missing value as a dash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}" if is_number(value) else PLACEHOLDER


def badge(passed: bool | None, yes: str = "PASS", no: str = "FAIL", unknown: str = "NO VERDICT") -> Html:
    if passed is True:
        return tag("span", yes, class_="badge pass")
    if passed is False:
        return tag("span", no, class_="badge fail")
    return tag("span", unknown, class_="badge none")


def num_cell(text: Any, class_: str = "num") -> Cell:
    """A right-aligned table cell (pass the result of pct/fnum as text)."""
    return Cell(tag("td", text, class_=class_))


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Html:
    """A table; a Cell (from num_cell) is kept, anything else is wrapped in <td> and escaped."""
    head = tag("tr", [tag("th", header) for header in headers])
    body = [tag("tr", [_cell(value) for value in row]) for row in rows]
    return tag("table", tag("thead", head), tag("tbody", body))


def _cell(value: Any) -> Html:
    if isinstance(value, Cell):
        return value
    return tag("td", PLACEHOLDER if value is None else value)


def definition_list(items: Iterable[tuple[Any, Any]]) -> Html:
    return tag("dl", [(tag("dt", key), tag("dd", value)) for key, value in items], class_="meta")


def shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def svg(width: int, height: int, label: str, *children: Any) -> Html:
    return tag("svg", *children, xmlns="http://www.w3.org/2000/svg", width=width, height=height,
               viewBox=f"0 0 {width} {height}", role="img", aria_label=label)


def svg_text(x: float, y: float, text: Any, anchor: str = "start", **attrs: Any) -> Html:
    return tag("text", text, x=f"{x:.1f}", y=f"{y:.1f}", text_anchor=anchor, **attrs)


def svg_histogram(values: Sequence[float], label: str, bins: int = 10, color: str = "#4a78c2") -> Html:
    """A histogram of scores in [0, 1]: bar heights are counts, each bar labelled with its count."""
    counts = histogram_counts(values, bins)
    # top leaves room for the title (baseline 13 px) and the count above the tallest bar (13 px more).
    width, height, left, bottom, top = 340, 200, 30, 28, 32
    plot_w, plot_h = width - left - 10, height - bottom - top
    tallest = max(counts) or 1
    bar_w = plot_w / bins
    parts: list[Html] = [svg_text(left, 13, f"{label} (n={sum(counts)})")]
    for i, count in enumerate(counts):
        # A non-empty bin stays visible next to one outlier bin of many (its count is printed above it).
        bar_h = max(plot_h * count / tallest, MIN_BAR_PX) if count else 0.0
        x = left + i * bar_w
        y = top + plot_h - bar_h
        parts.append(tag("rect", tag("title", f"{i / bins:.1f}–{(i + 1) / bins:.1f}: {count}"),
                         x=f"{x + 1:.1f}", y=f"{y:.1f}", width=f"{bar_w - 2:.1f}", height=f"{bar_h:.1f}", fill=color))
        if count:
            parts.append(svg_text(x + bar_w / 2, y - 3, count, anchor="middle"))
    axis_y = top + plot_h
    parts.append(tag("line", x1=left, y1=f"{axis_y:.1f}", x2=left + plot_w, y2=f"{axis_y:.1f}", stroke="#1d2330"))
    for tick in (0.0, 0.5, 1.0):
        parts.append(svg_text(left + tick * plot_w, axis_y + 14, f"{tick:g}", anchor="middle"))
    return svg(width, height, label, parts)


def svg_rate_bars(rows: Sequence[tuple[str, float | None, str]], label: str, threshold: float | None = None) -> Html:
    """Horizontal bars of rates in [0, 1], one per (name, rate, annotation); a dashed line marks a threshold."""
    label_w, bar_w, row_h, top = 190, 300, 22, 8
    width = label_w + bar_w + 110
    height = top + row_h * max(len(rows), 1) + (18 if threshold is not None else 6)
    parts: list[Html] = []
    for i, (name, rate, annotation) in enumerate(rows):
        y = top + i * row_h
        parts.append(svg_text(label_w - 6, y + 14, shorten(name, 30), anchor="end"))
        if is_number(rate):
            filled = bar_w * min(max(rate, 0.0), 1.0)
            parts.append(tag("rect", x=label_w, y=y + 3, width=bar_w, height=row_h - 6, fill="#eef1f6"))
            parts.append(tag("rect", tag("title", f"{name}: {pct(rate)}"),
                             x=label_w, y=y + 3, width=f"{filled:.1f}", height=row_h - 6, fill="#4a78c2"))
        parts.append(svg_text(label_w + bar_w + 6, y + 14, annotation))
    if threshold is not None:
        x = label_w + bar_w * threshold
        bottom = top + row_h * max(len(rows), 1)
        parts.append(tag("line", x1=f"{x:.1f}", y1=top, x2=f"{x:.1f}", y2=bottom, stroke="#c0392b",
                         stroke_width=2, stroke_dasharray="4 3"))
        parts.append(svg_text(x, bottom + 13, f"threshold {pct(threshold, 0)}", anchor="middle", fill="#c0392b"))
    return svg(width, height, label, parts)


def svg_delta_whiskers(rows: Sequence[tuple[str, float, float | None, float | None, str]], label: str) -> Html:
    """One bar per (name, delta, ci_low, ci_high, annotation), drawn from zero, with the interval as a whisker
    (none where ci_low or ci_high is None: no interval)."""
    label_w, plot_w, row_h, top = 170, 360, 26, 8
    width = label_w + plot_w + 170
    height = top + row_h * max(len(rows), 1) + 22
    extent = max([abs(v) for _, delta, lo, hi, _ in rows for v in (delta, lo, hi) if v is not None] + [0.05])
    zero_x = label_w + plot_w / 2

    def x_of(value: float) -> float:
        return zero_x + value / extent * (plot_w / 2)

    parts: list[Html] = []
    for i, (name, delta, lo, hi, annotation) in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        left, right = sorted((zero_x, x_of(delta)))
        interval = lo is not None and hi is not None
        color = "#1f8a4c" if interval and lo > 0 else "#c0392b" if interval and hi < 0 else "#8fa3c7"
        parts.append(svg_text(label_w - 6, mid + 4, shorten(name, 26), anchor="end"))
        parts.append(tag("rect", tag("title", f"{name}: {annotation}"), x=f"{left:.1f}", y=f"{y + 6:.1f}",
                         width=f"{max(right - left, 1):.1f}", height=row_h - 12, fill=color))
        whisker = ((x_of(lo), mid, x_of(hi), mid), (x_of(lo), mid - 6, x_of(lo), mid + 6),
                   (x_of(hi), mid - 6, x_of(hi), mid + 6)) if interval else ()
        for x1, y1, x2, y2 in whisker:
            parts.append(tag("line", x1=f"{x1:.1f}", y1=f"{y1:.1f}", x2=f"{x2:.1f}", y2=f"{y2:.1f}",
                             stroke="#1d2330", stroke_width=1.5))
        parts.append(svg_text(label_w + plot_w + 8, mid + 4, annotation))
    axis_bottom = top + row_h * max(len(rows), 1)
    parts.append(tag("line", x1=f"{zero_x:.1f}", y1=top, x2=f"{zero_x:.1f}", y2=axis_bottom, stroke="#1d2330"))
    for value in (-extent, 0.0, extent):
        parts.append(svg_text(x_of(value), axis_bottom + 15, f"{value:+.2f}" if value else "0", anchor="middle"))
    return svg(width, height, label, parts)
