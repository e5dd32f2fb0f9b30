"""An evaluation directory: what was asked, what the model answered, how it scored.

Usage:
    stats = generate_into(eval_dir, samples, settings, label="finetuned", endpoint=url)
    summary = score_eval_dir(eval_dir)          # re-scores saved predictions, no endpoint needed

Layout of eval/<label>/:
    meta.json          label, model, endpoint, generation settings (never the API key)
    samples.jsonl      the samples asked, each with the prompt hash its answer is keyed by
    predictions.jsonl  one record per answer, appended as answers arrive
    scores.jsonl       one score record per sample
    summary.json       metrics overall / by category / by content type, probes vs threshold
    report.html        tables, plots and the failure gallery
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness.generate import GenerationSettings, GenerationStats, generate, latest_answers, prompt_hash
from harness.samples import EvalSample
from harness.score import score_sample, summarize


class EvalError(Exception):
    """An evaluation directory that cannot be scored as asked."""


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def generate_into(
    eval_dir: Path,
    samples: list[EvalSample],
    settings: GenerationSettings,
    label: str,
    endpoint: str,
    probe_threshold: float = 0.85,
    on_progress: Callable[[GenerationStats], None] | None = None,
) -> GenerationStats:
    eval_dir.mkdir(parents=True, exist_ok=True)
    settings_record = {k: v for k, v in asdict(settings).items() if k != "api_key"}  # secrets stay out of files
    write_json(
        eval_dir / "meta.json",
        {"label": label, "model": settings.model, "endpoint": endpoint, "settings": settings_record,
         "probe_threshold": probe_threshold, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    write_jsonl(eval_dir / "samples.jsonl", ({**s.to_dict(), "prompt_hash": prompt_hash(s, settings)} for s in samples))
    return asyncio.run(generate(samples, settings, eval_dir / "predictions.jsonl", on_progress=on_progress))


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_eval_dir(eval_dir: Path, title: str | None = None) -> dict:
    """Score saved predictions and write scores.jsonl, summary.json and report.html."""
    for name in ("meta.json", "samples.jsonl"):
        if not (eval_dir / name).exists():
            raise EvalError(f"{eval_dir} has no {name}: it is not an evaluation directory (run `vlm3 generate` first)")
    meta = json.loads((eval_dir / "meta.json").read_text(encoding="utf-8"))
    samples = load_jsonl(eval_dir / "samples.jsonl")
    answers = latest_answers(eval_dir / "predictions.jsonl")
    records = [score_sample(s, answers.get((s["id"], meta["model"], s["prompt_hash"]))) for s in samples]
    summary = summarize(
        records,
        label=meta["label"],
        probe_threshold=meta.get("probe_threshold", 0.85),
        model=meta["model"],
        endpoint=meta["endpoint"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_jsonl(eval_dir / "scores.jsonl", records)
    write_json(eval_dir / "summary.json", summary)
    from harness.report import render_report

    render_report(summary, records, eval_dir / "report.html", title=title)
    return summary
