"""The dataset card: one HTML page about a dataset and the problems found in it.

Usage:
    render_dataset_card(report, scan, Path("runs/x/preflight/dataset_card.html"))
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data_adapters.checks import DatasetScan
from vlm3.core.jsonio import write_text_atomic
from vlm3.core.html import document, svg, svg_text, table, tag


def svg_length_histogram(tokens: list[int], label: str, limit: int | None = None, bins: int = 24) -> str:
    """A histogram of lengths; a limit (the recipe's sequence length) is drawn as a red line."""
    width, height, left, bottom, top = 560, 220, 40, 30, 18
    plot_w, plot_h = width - left - 14, height - bottom - top
    high = max([limit or 1, *tokens]) * 1.05
    counts = [0] * bins
    for value in tokens:
        counts[min(int(value / high * bins), bins - 1)] += 1
    tallest = max(counts) or 1
    bar_w = plot_w / bins
    parts = [svg_text(left, 12, f"{label}, n={len(tokens)}")]
    for i, count in enumerate(counts):
        bar_h = plot_h * count / tallest
        x, y = left + i * bar_w, top + plot_h - bar_h
        parts.append(tag("rect", tag("title", f"{int(i * high / bins)}-{int((i + 1) * high / bins)}: {count}"),
                         x=f"{x + 1:.1f}", y=f"{y:.1f}", width=f"{bar_w - 2:.1f}", height=f"{bar_h:.1f}", fill="#4a78c2"))
    axis_y = top + plot_h
    parts.append(tag("line", x1=left, y1=axis_y, x2=left + plot_w, y2=axis_y, stroke="#1d2330"))
    for tick in (0, 0.5, 1.0):
        parts.append(svg_text(left + tick * plot_w, axis_y + 14, f"{int(tick * high):,}", anchor="middle"))
    if limit:
        limit_x = left + plot_w * limit / high
        parts.append(tag("line", x1=f"{limit_x:.1f}", y1=top, x2=f"{limit_x:.1f}", y2=axis_y, stroke="#c0392b", stroke_width=2, stroke_dasharray="4 3"))
        parts.append(svg_text(limit_x - 4, top + 10, f"sequence_len {limit:,}", anchor="end", fill="#c0392b"))
    return svg(width, height, label, parts)


def counts_table(title: str, counter: Counter, unit: str = "rows") -> str:
    return tag("section", tag("h3", title), table([title, unit], [[name, n] for name, n in counter.most_common()]))


def pages_section(pages: dict) -> list:
    """Formats and modes once per image, and each page the normalisation changes (turned, scaled, flattened)."""
    if not pages:
        return []
    changed = [[p["image"], p["format"], p["mode"], "; ".join(p["notes"])] for p in pages.get("normalised", [])[:500]]
    return [
        tag("h2", "Page images"),
        tag("div", counts_table("format", Counter(pages.get("formats", {})), "images"),
            counts_table("mode", Counter(pages.get("modes", {})), "images"),
            class_="plots"),
        tag("p", f"{pages.get('rotated', 0)} page(s) carry an EXIF rotation; {len(pages.get('normalised', []))} are trained, sent "
                 "and shown as upright 8-bit RGB (a lossless PNG of the same pixels everywhere):"),
        table(["image", "format", "mode", "what the normalisation does"], changed) if changed else tag("p", "None: every page is an "
                                                                                                         "upright 8-bit JPEG or PNG."),
    ]


def render_dataset_card(report: dict, scan: DatasetScan, out_path: Path) -> Path:
    rows = scan.rows
    summary = [
        ["recipe", report["recipe"]],
        ["train rows", report["counts"]["train_rows"]],
        ["validation rows", report["counts"]["val_rows"]],
        ["images", report["counts"]["images"]],
        ["rows with several pages / text-only", f"{report['counts'].get('multi_page_rows', 0)} (up to "
         f"{report['counts'].get('max_images_per_row', 1)} pages) / {report['counts'].get('text_only_rows', 0)}"],
        ["rows dropped as too long (data.long_rows: drop)", report["counts"].get("dropped_long_rows", 0)],
        ["errors", report["counts"]["errors"]],
        ["warnings", report["counts"]["warnings"]],
        ["tokens per row (p50 / p95 / max)", f"{report['tokens']['p50']:,} / {report['tokens']['p95']:,} / {report['tokens']['max']:,}"],
        ["visual tokens per image (max_pixels {:,})".format(report["images"]["max_pixels"]), f"{report['tokens']['visual_mean']:.0f} on average"],
        ["answer words (mean / max)", f"{report['answers']['mean_words']:.1f} / {report['answers']['max_words']}"],
    ]
    problems = [[p["file"] + (f":{p['line']}" if p["line"] else ""), p["severity"], p["code"], p["message"]] for p in report["problems"][:500]]
    body = [
        tag("h1", f"Dataset card: {report['recipe']}"),
        table(["", "value"], summary),
        tag("h2", "Lengths"),
        tag("div", svg_length_histogram([r.tokens for r in rows], "tokens per row (text + visual)", report["sequence_len"]),
            svg_length_histogram([r.answer_words for r in rows], "answer length in words"), class_="plots"),
        tag("h2", "Rows by content type and section"),
        tag("div", counts_table("content type", Counter(r.content_type for r in rows)),
            counts_table("section", Counter(r.section for r in rows)), class_="plots"),
        *pages_section(report.get("pages") or {}),
        tag("h2", f"Problems ({len(report['problems'])})"),
        table(["where", "severity", "check", "message"], problems) if problems else tag("p", "None found."),
    ]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, document(f"Dataset card: {report['recipe']}", *body))  # never half a card
    return out_path
