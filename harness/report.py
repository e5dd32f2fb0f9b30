"""One self-contained HTML report of an evaluation: metrics, plots, judge scores and a failure gallery.

Usage:
    from harness.report import render_report
    render_report(json.loads(Path("summary.json").read_text()),
                  [json.loads(line) for line in Path("scores.jsonl").read_text().splitlines() if line.strip()],
                  Path("report.html"))

The file has no external references: CSS and SVG plots are inline, page images
are embedded as base64 JPEG thumbnails. Every string that came from the data or
the model is escaped. Any key of the summary or of a sample may be missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from vlm3.core.jsonio import write_text_atomic
from vlm3.core.html import (
    Html,
    badge,
    definition_list,
    document,
    fnum,
    fragment,
    is_number,
    num_cell,
    pct,
    svg_histogram,
    svg_rate_bars,
    table,
    tag,
)

from harness.page_images import PageImages
from harness.report_sections import breakdown_section, spec_not_applicable_section, weak_section

THUMBNAIL_WIDTH = 360
DEFAULT_PROBE_THRESHOLD = 0.85
# A raw judge reply can be long; the gallery shows its start.
RAW_JUDGE_LIMIT = 600
TEXT_LIMIT = 4000  # characters of a question, answer or error shown per sample (~a page of text)
METRIC_COLUMNS = ["n", "pass rate", "spec pass rate", "keyword recall", "token F1"]


def render_report(summary: dict, scores: list[dict], out_path: Path, title: str | None = None,
                  max_gallery: int = 50) -> Path:
    """Write the report to out_path (parents created) and return the path."""
    summary = _dict(summary)
    scores = [s for s in scores or [] if isinstance(s, dict)]
    label = summary.get("label") or "evaluation"
    title = title or summary.get("title") or f"vlm3 evaluation: {label}"  # summary's title: the identity (harness.identity)
    pages = PageImages()  # each page image embedded once, referenced by every card that shows it
    body = [
        _header(summary, title),
        _notes(summary.get("notes")),
        _metrics_section(summary),
        _probes_section(summary.get("probes")),
        _plots_section(summary, scores),
        _judge_section(summary.get("judge")),
        breakdown_section(summary),
        weak_section(scores),
        spec_not_applicable_section(scores),
        _gallery_section(scores, max_gallery, pages),
        pages.embedded(),
    ]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, document(title, body))  # a kill leaves the old report or the new one, never half
    return out_path


def _dict(value: Any) -> dict:
    # Defensive access: a key that holds null or the wrong type reads as empty.
    return value if isinstance(value, dict) else {}


def _header(summary: dict, title: str) -> Html:
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
    if probes:
        items.append(("probes vs threshold", _probe_line(probes)))
    judge_counts = _judge_counts_line(_dict(summary.get("judge")))
    if judge_counts:
        items.append(("judge", judge_counts))
    # The overall badge is the probes' verdict: with no probe there is none to show (not a FAIL).
    verdict = badge(summary.get("passed")) if _has_probes(probes) else None
    return tag("header", tag("h1", title, " ", verdict),
               definition_list((key, "—" if value is None else value) for key, value in items))


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


def _probe_line(probes: dict) -> Html | str:
    if not _has_probes(probes):
        return "no probes"
    threshold = _probe_threshold(probes)
    return fragment(f"{pct(probes.get('pass_rate'))} of {_shown(probes.get('n'))} probes passed, threshold {pct(threshold)} ",
                    badge(probes.get("passed")))


def _judge_counts_line(judge: dict) -> str:
    metrics = _dict(judge.get("metrics"))
    parts = [f"{name}: mean {fnum(_dict(m).get('mean'))}, scored {_shown(_dict(m).get('scored'))}, "
             f"unscored {_shown(_dict(m).get('unscored'))}" for name, m in metrics.items()]
    return "; ".join(parts)


def _notes(notes: Any) -> Html | None:
    if not notes:
        return None
    notes = notes if isinstance(notes, list) else [notes]
    return tag("section", tag("h2", "Notes"), tag("ul", [tag("li", note) for note in notes]), class_="notes", id="notes")


def _shown(value: Any) -> Any:
    return "—" if value is None else value


def _metric_row(group: str, name: Any, stats: dict, n: Any = None) -> list:
    return [group, name, num_cell(_shown(stats.get("n") if stats.get("n") is not None else n)),
            num_cell(pct(stats.get("pass_rate"))), num_cell(pct(stats.get("spec_pass_rate"))),
            num_cell(pct(stats.get("keyword_recall"))), num_cell(fnum(stats.get("token_f1")))]


def _metrics_section(summary: dict) -> Html:
    rows = [_metric_row("overall", "all samples", _dict(summary.get("metrics")), _dict(summary.get("counts")).get("samples"))]
    for group_key, group in (("by_category", "category"), ("by_content_type", "content type"), ("by_kind", "kind")):
        for name, stats in _dict(summary.get(group_key)).items():
            rows.append(_metric_row(group, name, _dict(stats)))
    return tag("section", tag("h2", "Metrics"), table(["group", "name", *METRIC_COLUMNS], rows), id="metrics")


def _probes_section(probes: Any) -> Html | None:
    probes = _dict(probes)
    if not probes:
        return None
    if not _has_probes(probes):
        return tag("section", tag("h2", "Probes"), tag("p", "No probes: nothing was held to the probe threshold "
                                                          "(name a probes file in the recipe's data.probes).", class_="muted"), id="probes")
    bars = [("all probes", probes.get("pass_rate"), _rate_annotation(probes))]
    bars += [(source, _dict(stats).get("pass_rate"), _rate_annotation(_dict(stats)))
             for source, stats in _dict(probes.get("by_source")).items()]
    return tag("section", tag("h2", "Probes"), tag("p", _probe_line(probes)),
               svg_rate_bars(bars, "probe pass rate against the threshold", threshold=_probe_threshold(probes)), id="probes")


def _rate_annotation(stats: dict) -> str:
    return f"{pct(stats.get('pass_rate'))} (n={_shown(stats.get('n'))})"


def _plots_section(summary: dict, scores: list[dict]) -> Html:
    token_f1 = [_dict(s.get("checks")).get("token_f1") for s in scores]
    spec_scores = [_spec_score(s) for s in scores]
    categories = [(name, _dict(stats).get("pass_rate"), _rate_annotation(_dict(stats)))
                  for name, stats in _dict(summary.get("by_category")).items()]
    figures = [
        _figure(svg_histogram([v for v in token_f1 if is_number(v)], "token F1"), "Distribution of token F1, 10 bins over 0–1"),
        _figure(svg_histogram([v for v in spec_scores if is_number(v)], "spec score", color="#8e5bb5"),
                "Distribution of spec scores (applicable checks only), 10 bins over 0–1"),
    ]
    if categories:
        figures.append(_figure(svg_rate_bars(categories, "pass rate by category"), "Pass rate by category"))
    return tag("section", tag("h2", "Plots"), tag("div", figures, class_="plots"), id="plots")


def _figure(image: Html, caption: str) -> Html:
    return tag("figure", image, tag("figcaption", caption))


def _spec_score(sample: dict) -> float | None:
    spec = _dict(_dict(sample.get("checks")).get("spec"))
    return spec.get("score") if spec.get("applicable") else None


def _judge_section(judge: Any) -> Html | None:
    judge = _dict(judge)
    metrics = _dict(judge.get("metrics"))
    if not metrics:
        return None
    rows = [[name, num_cell(fnum(_dict(m).get("mean"))), num_cell(pct(_dict(m).get("pass_rate"))),
             num_cell(_shown(_dict(m).get("scored"))), num_cell(_shown(_dict(m).get("unscored")))]
            for name, m in metrics.items()]
    cost = judge.get("cost_usd")
    footer = f"{_shown(judge.get('calls'))} judge calls, cost {'$' + format(cost, '.4f') if is_number(cost) else '—'}"
    return tag("section", tag("h2", "Judge"), table(["metric", "mean", "pass rate", "scored", "unscored"], rows),
               tag("p", footer, class_="muted"), id="judge")


def _is_failure(sample: dict) -> bool:
    return sample.get("passed") is False or bool(sample.get("error"))


def _gallery_section(scores: list[dict], max_gallery: int, pages: PageImages) -> Html:
    failures = [s for s in scores if _is_failure(s)]
    # Probes are the hand-written checks a reader looks at first; sorted() is stable, so order is kept otherwise.
    failures = sorted(failures, key=lambda s: s.get("kind") != "probe")
    shown = failures[: max(max_gallery, 0)]
    intro = f"{len(failures)} failed or errored samples" + (f", showing the first {len(shown)}" if len(shown) < len(failures) else "")
    cards = [_sample_card(sample, pages) for sample in shown]
    return tag("section", tag("h2", "Failure gallery"), tag("p", intro, class_="muted"), cards, id="gallery")


def _sample_card(sample: dict, pages: PageImages) -> Html:
    heading = " · ".join(str(v) for v in (sample.get("id"), sample.get("kind"), sample.get("category"),
                                          sample.get("content_type"), sample.get("source")) if v)
    where = " · ".join(str(v) for v in (sample.get("section"), f"page {sample['page']}" if sample.get("page") else None,
                                        f"turn {sample['turn']} of {sample.get('turns')}" if (sample.get("turns") or 1) > 1 else None) if v)
    verdict = badge(False, no="ERROR") if sample.get("error") else badge(sample.get("passed"), unknown="NO CHECK")
    parts = [tag("h3", heading or "sample", " ", verdict)]
    if where:
        parts.append(tag("p", where, class_="muted where"))
    parts.append(_labelled("question", sample.get("question")))
    if sample.get("expected") is not None:
        parts.append(_labelled("expected", sample.get("expected")))
    keywords = sample.get("expected_keywords")
    if keywords:
        parts.append(_labelled("expected keywords", ", ".join(map(str, keywords)) if isinstance(keywords, list) else keywords))
    if sample.get("error"):
        parts.append(_labelled("generation error", sample.get("error"), css="text error"))
    else:
        parts.append(_labelled("model answer", sample.get("answer")))
    if sample.get("finish_reason") not in (None, "stop"):
        # A truncated answer ("length") explains many failures on its own.
        parts.append(tag("p", f"finish reason: {sample['finish_reason']}", class_="muted"))
    parts.append(tag("div", "checks", class_="label"))
    parts.append(_checks(_dict(sample.get("checks")), _dict(_dict(sample.get("judge")).get("metrics"))))
    # Every page the sample showed, in order: `images` are the paths the scorer read; `image_refs` only name them.
    return tag("article", tag("div", pages.thumbnails(sample)), tag("div", parts), class_="sample")


def _labelled(label: str, text: Any, css: str = "text") -> Html:
    return fragment(tag("div", label, class_="label"), tag("pre", "—" if text is None else _capped(text), class_=css))


def _checks(checks: dict, judge_metrics: dict) -> Html:
    rows = []
    spec = checks.get("spec")
    if isinstance(spec, dict):
        rows.append(["spec", _verdict(spec), fnum(spec.get("score")), _details(spec.get("details"))])
    keywords = checks.get("keywords")
    if isinstance(keywords, dict):
        details = [f"found: {', '.join(map(str, keywords.get('found') or [])) or '—'}",
                   f"missing: {', '.join(map(str, keywords.get('missing') or [])) or '—'}"]
        rows.append(["keywords", _verdict(keywords), f"recall {pct(keywords.get('recall'))}", _details(details)])
    if checks.get("token_f1") is not None:
        rows.append(["token F1", "—", fnum(checks.get("token_f1")), None])
    for name, metric in judge_metrics.items():
        rows.append(_judge_row(name, _dict(metric)))
    if not rows:
        return tag("p", "no checks ran", class_="muted")
    return table(["check", "verdict", "score", "details"], rows)


def _verdict(check: dict) -> Html | str:
    if check.get("applicable") is False:
        return "not applicable"
    return badge(check.get("passed"))


def _judge_row(name: str, metric: dict) -> list:
    if metric.get("unscored") or metric.get("score") is None:
        raw = str(metric.get("raw") or "")
        raw = raw if len(raw) <= RAW_JUDGE_LIMIT else raw[:RAW_JUDGE_LIMIT] + "…"
        return [f"judge: {name}", "unscored", "—", _details([f"raw reply: {raw}"] if raw else [])]
    return [f"judge: {name}", badge(metric.get("passed")), fnum(metric.get("score")),
            _details([metric["reason"]] if metric.get("reason") else [])]


def _details(details: Any) -> Html | None:
    if not details:
        return None
    details = details if isinstance(details, list) else [details]
    return tag("ul", [tag("li", d) for d in details], class_="details")


def thumbnail_data_uri(path: Path, width: int = THUMBNAIL_WIDTH) -> str | None:
    """A JPEG thumbnail at most `width` px wide as a data: URI, or None if the image cannot be read."""
    from harness.page_images import encode_page

    encoded = encode_page(Path(path), width)
    return encoded[0] if encoded else None
