"""One self-contained HTML report of an evaluation: metrics, plots, judge scores and a failure gallery.

Usage:
    from harness.report import render_report
    render_report(json.loads(Path("summary.json").read_text()),
                  [json.loads(line) for line in Path("scores.jsonl").read_text().splitlines() if line.strip()],
                  Path("report.html"))

report_values() turns the summary and the score records into plain values; vlm3/core/templates/evaluation.html.j2
draws them (autoescaped: every string that came from the data or the model is escaped). The file has no external
references: CSS and SVG plots are inline, page images are embedded as base64 JPEGs. Any key of the summary or of
a sample may be missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm3.core import charts
from vlm3.core.jsonio import write_text_atomic
from vlm3.core.templates import fnum, is_number, pct, render

from harness.page_images import PageImages
from harness.report_sections import breakdown_section, spec_not_applicable_section, weak_section

THUMBNAIL_WIDTH = 360
DEFAULT_PROBE_THRESHOLD = 0.85
# A raw judge reply can be long; the gallery shows its start.
RAW_JUDGE_LIMIT = 600
TEXT_LIMIT = 4000  # characters of a question, answer or error shown per sample (~a page of text)


def render_report(summary: dict, scores: list[dict], out_path: Path, title: str | None = None,
                  max_gallery: int = 50) -> Path:
    """Write the report to out_path (parents created) and return the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    page = render("evaluation.html.j2", **report_values(summary, scores, title, max_gallery))
    write_text_atomic(out_path, page)  # a kill leaves the old report or the new one, never half
    return out_path


def report_values(summary: dict, scores: list[dict], title: str | None = None, max_gallery: int = 50) -> dict:
    """What evaluation.html.j2 draws, as plain values; a section that is None is left out."""
    summary = _dict(summary)
    scores = [s for s in scores or [] if isinstance(s, dict)]
    label = summary.get("label") or "evaluation"
    title = title or summary.get("title") or f"vlm3 evaluation: {label}"  # summary's title: the identity (harness.identity)
    pages = PageImages()  # each page image embedded once, referenced by every card that shows it
    gallery = _gallery(scores, max_gallery, pages)
    return {
        "title": title,
        "header": _header(summary),
        "notes": _notes(summary.get("notes")),
        "metrics": _metric_rows(summary),
        "probes": _probes(summary.get("probes")),
        "plots": _plots(summary, scores),
        "judge": _judge(summary.get("judge")),
        "breakdowns": breakdown_section(summary),
        "weak": weak_section(scores),
        "spec_not_applicable": spec_not_applicable_section(scores),
        "gallery": gallery,
        "pages": pages.embedded_pages(),  # after every card took its pages
    }


def _dict(value: Any) -> dict:
    # Defensive access: a key that holds null or the wrong type reads as empty.
    return value if isinstance(value, dict) else {}


def _shown(value: Any) -> Any:
    return "—" if value is None else value


def _header(summary: dict) -> dict:
    counts = _dict(summary.get("counts"))
    identity = _dict(summary.get("identity"))
    named = [("recipe", identity.get("recipe")), ("run", identity.get("run")), ("base model", identity.get("base_model")),
             ("family", identity.get("family")), ("data version", identity.get("data_version")),
             ("weights served", identity.get("served"))] if identity else []
    items = [
        *named,
        ("label", summary.get("label")),
        ("model", summary.get("model")),
        ("endpoint", summary.get("endpoint")),
        ("created", summary.get("created")),
        ("samples", counts.get("samples")),
        ("answered", counts.get("answered")),
        ("errors (not scored)", _errors_line(counts)),
        ("deterministic checks", counts.get("deterministic")),
    ]
    probes = _dict(summary.get("probes"))
    return {
        "items": [(key, _shown(value)) for key, value in items],
        "probes": _probe_line(probes) if probes else None,
        "judge": _judge_counts_line(_dict(summary.get("judge"))) or None,
        # The overall badge is the probes' verdict: with no probe there is none to show (not a FAIL).
        "verdict": _has_probes(probes),
        "passed": summary.get("passed"),
    }


def _errors_line(counts: dict) -> Any:
    """Failed requests and missing answers, apart: neither is in any rate."""
    if not is_number(counts.get("failed")) and not is_number(counts.get("missing")):
        return counts.get("errors")
    line = f"{counts.get('errors')}: {counts.get('failed') or 0} failed after retries, {counts.get('missing') or 0} never answered"
    if counts.get("foreign_answers"):
        line += f"; {counts['foreign_answers']} saved from another endpoint (kept, not used)"
    return line


def _capped(text: Any) -> Any:
    """A long text cut for the page (a browser chokes on megabytes); the full text stays in the data files."""
    if isinstance(text, str) and len(text) > TEXT_LIMIT:
        return f"{text[:TEXT_LIMIT]}\n[... {len(text) - TEXT_LIMIT:,} more characters; the full text is in predictions.jsonl / scores.jsonl]"
    return text


def _probe_threshold(probes: dict) -> float:
    threshold = probes.get("threshold")
    return threshold if is_number(threshold) else DEFAULT_PROBE_THRESHOLD


def _has_probes(probes: dict) -> bool:
    return is_number(probes.get("n")) and probes["n"] > 0


def _probe_line(probes: dict) -> dict:
    """{"text"} with no probes; else {"text", "passed"}: the sentence and its badge."""
    if not _has_probes(probes):
        return {"text": "no probes"}
    return {"text": f"{pct(probes.get('pass_rate'))} of {_shown(probes.get('n'))} probes passed, "
                    f"threshold {pct(_probe_threshold(probes))}", "passed": probes.get("passed")}


def _judge_counts_line(judge: dict) -> str:
    metrics = _dict(judge.get("metrics"))
    parts = [f"{name}: mean {fnum(_dict(m).get('mean'))}, scored {_shown(_dict(m).get('scored'))}, "
             f"unscored {_shown(_dict(m).get('unscored'))}" for name, m in metrics.items()]
    return "; ".join(parts)


def _notes(notes: Any) -> list | None:
    if not notes:
        return None
    return notes if isinstance(notes, list) else [notes]


def _metric_row(group: str, name: Any, stats: dict, n: Any = None) -> list:
    return [group, name, {"num": _shown(stats.get("n") if stats.get("n") is not None else n)},
            {"num": pct(stats.get("pass_rate"))}, {"num": pct(stats.get("spec_pass_rate"))},
            {"num": pct(stats.get("keyword_recall"))}, {"num": fnum(stats.get("token_f1"))}]


def _metric_rows(summary: dict) -> list[list]:
    rows = [_metric_row("overall", "all samples", _dict(summary.get("metrics")), _dict(summary.get("counts")).get("samples"))]
    for group_key, group in (("by_category", "category"), ("by_content_type", "content type"), ("by_kind", "kind")):
        for name, stats in _dict(summary.get(group_key)).items():
            rows.append(_metric_row(group, name, _dict(stats)))
    return rows


def _probes(probes: Any) -> dict | None:
    """None without a probes entry; {"line"} with no probes; else {"line", "chart"}."""
    probes = _dict(probes)
    if not probes:
        return None
    if not _has_probes(probes):
        return {"line": None}
    bars = [("all probes", probes.get("pass_rate"), _rate_annotation(probes))]
    bars += [(source, _dict(stats).get("pass_rate"), _rate_annotation(_dict(stats)))
             for source, stats in _dict(probes.get("by_source")).items()]
    return {"line": _probe_line(probes),
            "chart": charts.rate_bars(bars, "probe pass rate against the threshold", threshold=_probe_threshold(probes))}


def _rate_annotation(stats: dict) -> str:
    return f"{pct(stats.get('pass_rate'))} (n={_shown(stats.get('n'))})"


def _plots(summary: dict, scores: list[dict]) -> dict:
    token_f1 = [_dict(s.get("checks")).get("token_f1") for s in scores]
    spec_scores = [_spec_score(s) for s in scores]
    categories = [(name, _dict(stats).get("pass_rate"), _rate_annotation(_dict(stats)))
                  for name, stats in _dict(summary.get("by_category")).items()]
    return {
        "token_f1": charts.histogram([v for v in token_f1 if is_number(v)], "token F1"),
        "spec_score": charts.histogram([v for v in spec_scores if is_number(v)], "spec score", color="#8e5bb5"),
        "categories": charts.rate_bars(categories, "pass rate by category") if categories else None,
    }


def _spec_score(sample: dict) -> float | None:
    spec = _dict(_dict(sample.get("checks")).get("spec"))
    return spec.get("score") if spec.get("applicable") else None


def _judge(judge: Any) -> dict | None:
    judge = _dict(judge)
    metrics = _dict(judge.get("metrics"))
    if not metrics:
        return None
    rows = [[name, {"num": fnum(_dict(m).get("mean"))}, {"num": pct(_dict(m).get("pass_rate"))},
             {"num": _shown(_dict(m).get("scored"))}, {"num": _shown(_dict(m).get("unscored"))}]
            for name, m in metrics.items()]
    cost = judge.get("cost_usd")
    return {"rows": rows, "calls": _shown(judge.get("calls")), "cost": f"${cost:.4f}" if is_number(cost) else "—"}


def _is_failure(sample: dict) -> bool:
    return sample.get("passed") is False or bool(sample.get("error"))


def _gallery(scores: list[dict], max_gallery: int, pages: PageImages) -> dict:
    failures = [s for s in scores if _is_failure(s)]
    # Probes are the hand-written checks a reader looks at first; sorted() is stable, so order is kept otherwise.
    failures = sorted(failures, key=lambda s: s.get("kind") != "probe")
    shown = failures[: max(max_gallery, 0)]
    intro = f"{len(failures)} failed or errored samples" + (f", showing the first {len(shown)}" if len(shown) < len(failures) else "")
    return {"intro": intro, "cards": [_sample_card(sample, pages) for sample in shown]}


def _sample_card(sample: dict, pages: PageImages) -> dict:
    heading = " · ".join(str(v) for v in (sample.get("id"), sample.get("kind"), sample.get("category"),
                                          sample.get("content_type"), sample.get("source")) if v)
    where = " · ".join(str(v) for v in (sample.get("section"), f"page {sample['page']}" if sample.get("page") else None,
                                        f"turn {sample['turn']} of {sample.get('turns')}" if (sample.get("turns") or 1) > 1 else None) if v)
    texts = [("question", sample.get("question"), "text")]
    if sample.get("expected") is not None:
        texts.append(("expected", sample.get("expected"), "text"))
    keywords = sample.get("expected_keywords")
    if keywords:
        texts.append(("expected keywords", ", ".join(map(str, keywords)) if isinstance(keywords, list) else keywords, "text"))
    if sample.get("error"):
        texts.append(("generation error", sample.get("error"), "text error"))
    else:
        texts.append(("model answer", sample.get("answer"), "text"))
    finish_reason = sample.get("finish_reason")
    return {
        "heading": heading or "sample",
        "error": bool(sample.get("error")),
        "passed": sample.get("passed"),
        "where": where,
        "texts": [{"label": label, "text": "—" if text is None else _capped(text), "css": css} for label, text, css in texts],
        # A truncated answer ("length") explains many failures on its own.
        "finish_reason": None if finish_reason in (None, "stop") else finish_reason,
        "checks": _checks(_dict(sample.get("checks")), _dict(_dict(sample.get("judge")).get("metrics"))),
        # Every page the sample showed, in order: `images` are the paths the scorer read; `image_refs` only name them.
        "pages": pages.shown(sample),
    }


def _checks(checks: dict, judge_metrics: dict) -> list[dict]:
    """One row per check: {"check", "verdict": text, or None for the badge of "passed", "passed", "score", "details"}."""
    rows = []
    spec = checks.get("spec")
    if isinstance(spec, dict):
        rows.append(_check("spec", spec, fnum(spec.get("score")), spec.get("details")))
    keywords = checks.get("keywords")
    if isinstance(keywords, dict):
        details = [f"found: {', '.join(map(str, keywords.get('found') or [])) or '—'}",
                   f"missing: {', '.join(map(str, keywords.get('missing') or [])) or '—'}"]
        rows.append(_check("keywords", keywords, f"recall {pct(keywords.get('recall'))}", details))
    if checks.get("token_f1") is not None:
        rows.append({"check": "token F1", "verdict": "—", "score": fnum(checks.get("token_f1")), "details": []})
    for name, metric in judge_metrics.items():
        rows.append(_judge_row(name, _dict(metric)))
    return rows


def _check(name: str, check: dict, score: str, details: Any) -> dict:
    verdict = "not applicable" if check.get("applicable") is False else None
    return {"check": name, "verdict": verdict, "passed": check.get("passed"), "score": score, "details": _details(details)}


def _judge_row(name: str, metric: dict) -> dict:
    if metric.get("unscored") or metric.get("score") is None:
        raw = str(metric.get("raw") or "")
        raw = raw if len(raw) <= RAW_JUDGE_LIMIT else raw[:RAW_JUDGE_LIMIT] + "…"
        return {"check": f"judge: {name}", "verdict": "unscored", "score": "—", "details": [f"raw reply: {raw}"] if raw else []}
    return {"check": f"judge: {name}", "verdict": None, "passed": metric.get("passed"), "score": fnum(metric.get("score")),
            "details": _details([metric["reason"]] if metric.get("reason") else [])}


def _details(details: Any) -> list:
    if not details:
        return []
    return details if isinstance(details, list) else [details]


def thumbnail_data_uri(path: Path, width: int = THUMBNAIL_WIDTH) -> str | None:
    """A JPEG thumbnail at most `width` px wide as a data: URI, or None if the image cannot be read."""
    from harness.page_images import encode_page

    encoded = encode_page(Path(path), width)
    return encoded[0] if encoded else None
