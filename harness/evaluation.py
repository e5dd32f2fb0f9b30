"""An evaluation directory: what was asked, what the model answered, how it scored.

Usage:
    stats = generate_into(eval_dir, samples, settings, label="finetuned", endpoint=url, judge=recipe.eval.judge)
    summary = score_eval_dir(eval_dir)          # re-scores saved predictions, no endpoint needed
    summary = score_eval_dir(eval_dir, judge=False)   # deterministic checks only (--no-judge)

Layout of eval/<label>/:
    meta.json          label, model, endpoint, generation settings, judge spec (never an API key)
    samples.jsonl      the samples asked, each with the prompt hash its answer is keyed by
    predictions.jsonl  one record per answer, appended as answers arrive
    scores.jsonl       one score record per sample
    summary.json       metrics overall / by category / by content type, probes vs threshold;
                       breakdowns by section, page and content type (harness.breakdown)
    weak_pages.jsonl   pages with failures, worst first, for regenerating Q&A (harness.weak)
    report.html        tables, plots and the failure gallery
    judge_cache.sqlite the judge's validated replies: an unchanged re-score makes no judge calls
    .deepeval/         DeepEval's own files (`vlm3 deepeval`), telemetry off
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from data_adapters.jsonio import write_json, write_jsonl
from harness.generate import GenerationSettings, GenerationStats, generate, latest_answers, prompt_hash
from harness.samples import EvalSample
from harness.score import score_sample, summarize


class EvalError(Exception):
    """An evaluation directory that cannot be scored as asked."""


_UNSET: Any = object()  # "not given": meta.json without a judge key means the recipe default (eval.judge)


def generate_into(
    eval_dir: Path,
    samples: list[EvalSample],
    settings: GenerationSettings,
    label: str,
    endpoint: str,
    probe_threshold: float = 0.85,
    on_progress: Callable[[GenerationStats], None] | None = None,
    judge: Any = _UNSET,
) -> GenerationStats:
    """judge: the recipe's eval.judge (a JudgeSpec, its dict, or None for no judge), kept for `vlm3 score`."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    settings_record = {k: v for k, v in asdict(settings).items() if k != "api_key"}  # secrets stay out of files
    meta = {"label": label, "model": settings.model, "endpoint": endpoint, "settings": settings_record,
            "probe_threshold": probe_threshold, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if judge is not _UNSET:
        meta["judge"] = judge.model_dump() if hasattr(judge, "model_dump") else judge
    write_json(eval_dir / "meta.json", meta)
    write_jsonl(eval_dir / "samples.jsonl", ({**s.to_dict(), "prompt_hash": prompt_hash(s, settings)} for s in samples))
    return asyncio.run(generate(samples, settings, eval_dir / "predictions.jsonl", on_progress=on_progress))


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_eval_dir(eval_dir: Path) -> tuple[dict, list[dict], list[dict]]:
    """(meta, samples, score records without judge scores) of a generated evaluation directory."""
    for name in ("meta.json", "samples.jsonl"):
        if not (eval_dir / name).exists():
            raise EvalError(f"{eval_dir} has no {name}: it is not an evaluation directory (run `vlm3 generate` first)")
    meta = json.loads((eval_dir / "meta.json").read_text(encoding="utf-8"))
    samples = load_jsonl(eval_dir / "samples.jsonl")
    answers = latest_answers(eval_dir / "predictions.jsonl")
    records = [score_sample(s, answers.get((s["id"], meta["model"], s["prompt_hash"]))) for s in samples]
    return meta, samples, records


def judge_spec_of(meta: dict, judge_spec: Any = _UNSET):
    """The judge spec to score with: the one given, else meta.json's, else the recipe default."""
    from harness.judge import load_judge_spec

    if judge_spec is not _UNSET:
        return load_judge_spec(judge_spec)
    if "judge" in meta:
        return load_judge_spec(meta["judge"])
    from vlm3.recipe import JudgeSpec

    return JudgeSpec()


def estimate_judge(eval_dir: Path, judge_spec: Any = _UNSET):
    """What judging this directory would cost with a cold cache (calls, tokens, dollars); no call is made."""
    from harness.judge import estimate_judge_cost

    meta, samples, records = read_eval_dir(eval_dir)
    spec = judge_spec_of(meta, judge_spec)
    if spec is None:
        raise EvalError(f"{eval_dir}: the recipe has no judge (eval.judge), so there is nothing to estimate")
    return estimate_judge_cost(spec, samples, answers={r["id"]: r["answer"] for r in records})


def score_eval_dir(
    eval_dir: Path,
    title: str | None = None,
    judge: bool | None = None,
    judge_spec: Any = _UNSET,
    judge_settings=None,
    on_judge_progress: Callable[[int, int], None] | None = None,
    on_judge_estimate: Callable[[Any], None] | None = None,
) -> dict:
    """Score saved predictions and write scores.jsonl, summary.json and report.html.

    judge: None runs the judge when it can (a spec and a key), False never (--no-judge), True insists
    (JudgeError without a key). judge_spec overrides meta.json's; judge_settings (a JudgeSettings) says
    how to reach the judge, for tests and proxies. on_judge_estimate(estimate) comes before the first
    judge call (a JudgeEstimate: print it); on_judge_progress(done, total) after each.
    Raises JudgeError after everything is written when more samples are unscored than
    eval.judge.max_unscored_fraction allows."""
    from harness.judge import JudgeError, JudgeOutcome, judge_records, judge_status, skipped_summary

    meta, samples, records = read_eval_dir(eval_dir)
    spec = judge_spec_of(meta, judge_spec)
    cannot_run = None
    if judge is False:
        outcome = JudgeOutcome(skipped_summary(spec, "judge skipped: --no-judge"))
    else:
        cannot_run = None if judge_settings is not None else judge_status(spec)[1]
        if cannot_run:
            outcome = JudgeOutcome(skipped_summary(spec, cannot_run))
        else:
            outcome = judge_records(records, samples, spec, cache_dir=eval_dir, settings=judge_settings,
                                    on_progress=on_judge_progress, on_estimate=on_judge_estimate,
                                    probe_threshold=meta.get("probe_threshold", 0.85))
    summary = summarize(
        records,
        label=meta["label"],
        probe_threshold=meta.get("probe_threshold", 0.85),
        model=meta["model"],
        endpoint=meta["endpoint"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    summary["judge"] = outcome.summary
    if outcome.summary.get("skipped_reason"):
        summary["notes"].append(outcome.summary["skipped_reason"])
    write_jsonl(eval_dir / "scores.jsonl", records)
    write_json(eval_dir / "summary.json", summary)
    from harness.weak import write_weak_pages

    write_weak_pages(eval_dir, records)
    from harness.report import render_report

    render_report(summary, records, eval_dir / "report.html", title=title)
    if judge and cannot_run:
        raise JudgeError(f"the judge was asked for (--judge) but cannot run: {cannot_run.removeprefix('judge skipped: ')}")
    outcome.raise_if_too_many_unscored()
    return summary
