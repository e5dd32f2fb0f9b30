"""The dataset card: one HTML page about a dataset and the problems found in it.

Usage:
    render_dataset_card(report, scan, Path("runs/x/preflight/dataset_card.html"))

card_values() turns the check's report and the scan into plain values; vlm3/core/templates/dataset_card.html.j2
draws them (autoescaped), the length plots from vlm3.core.charts.length_histogram.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from data_adapters.checks import DatasetScan
from vlm3.core.charts import length_histogram
from vlm3.core.jsonio import write_text_atomic
from vlm3.core.templates import render

SHOWN_ROWS = 500  # problems and normalised pages listed; the rest are in check.json


def _counts(counter: Counter) -> list[list]:
    return [[name, n] for name, n in counter.most_common()]


def _pages(pages: dict) -> dict | None:
    """Formats and modes once per image, and each page the normalisation changes (turned, scaled, flattened)."""
    if not pages:
        return None
    return {
        "formats": _counts(Counter(pages.get("formats", {}))),
        "modes": _counts(Counter(pages.get("modes", {}))),
        "rotated": pages.get("rotated", 0),
        "normalised_count": len(pages.get("normalised", [])),
        "normalised": [[p["image"], p["format"], p["mode"], "; ".join(p["notes"])] for p in pages.get("normalised", [])[:SHOWN_ROWS]],
    }


def card_values(report: dict, scan: DatasetScan) -> dict[str, Any]:
    """What dataset_card.html.j2 draws, as plain values."""
    rows = scan.rows
    counts = report["counts"]
    summary = [
        ["recipe", report["recipe"]],
        ["train rows", counts["train_rows"]],
        ["validation rows", counts["val_rows"]],
        ["images", counts["images"]],
        ["rows with several pages / text-only", f"{counts.get('multi_page_rows', 0)} (up to "
         f"{counts.get('max_images_per_row', 1)} pages) / {counts.get('text_only_rows', 0)}"],
        ["rows dropped as too long (data.long_rows: drop)", counts.get("dropped_long_rows", 0)],
        ["errors", counts["errors"]],
        ["warnings", counts["warnings"]],
        ["tokens per row (p50 / p95 / max)", f"{report['tokens']['p50']:,} / {report['tokens']['p95']:,} / {report['tokens']['max']:,}"],
        ["visual tokens per image (max_pixels {:,})".format(report["images"]["max_pixels"]), f"{report['tokens']['visual_mean']:.0f} on average"],
        ["answer words (mean / max)", f"{report['answers']['mean_words']:.1f} / {report['answers']['max_words']}"],
    ]
    return {
        "title": f"Dataset card: {report['recipe']}",
        "summary": summary,
        "lengths": [length_histogram([r.tokens for r in rows], "tokens per row (text + visual)", report["sequence_len"]),
                    length_histogram([r.answer_words for r in rows], "answer length in words")],
        "content_types": _counts(Counter(r.content_type for r in rows)),
        "sections": _counts(Counter(r.section for r in rows)),
        "pages": _pages(report.get("pages") or {}),
        "problem_count": len(report["problems"]),
        "problems": [[p["file"] + (f":{p['line']}" if p["line"] else ""), p["severity"], p["code"], p["message"]]
                     for p in report["problems"][:SHOWN_ROWS]],
    }


def render_dataset_card(report: dict, scan: DatasetScan, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, render("dataset_card.html.j2", **card_values(report, scan)))  # never half a card
    return out_path
