"""An evaluation directory: what was asked, what the model answered, how it scored.

Usage:
    stats = generate_into(eval_dir, samples, settings, label="finetuned", endpoint=url, judge=recipe.eval.judge)
    summary = score_eval_dir(eval_dir)          # re-scores saved predictions, no endpoint needed
    summary = score_eval_dir(eval_dir, judge=False)   # deterministic checks only (--no-judge)

Layout of eval/<label>/:
    meta.json          label, model, endpoint, weights identity, generation settings, judge spec (never an API key);
                       "identity": run, recipe, base model and family, data version, the weights served (harness.identity)
    samples.jsonl      the samples asked, each with the prompt hash its answer is keyed by
    predictions.jsonl  one record per answer, appended as answers arrive
    scores.jsonl       one score record per sample
    summary.json       metrics overall / by category / by content type, probes vs threshold;
                       breakdowns by section, page and content type (harness.breakdown)
    weak_pages.jsonl   pages with failures, worst first, for regenerating Q&A (harness.weak)
    weak_pages.html    the same pages and the ranked sections, to read
    report.html        tables, plots and the failure gallery
    judge_cache.sqlite the judge's validated replies: an unchanged re-score makes no judge calls
    .deepeval/         DeepEval's own files (`vlm3 deepeval`), telemetry off
    .vlm3.lock         held while a process generates or scores here: a second one stops with a message

Answers are read for the endpoint, model and weights in meta.json (the last generation's):
answers another endpoint gave, in the same file, are counted (`foreign_answers`) and never scored.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from vlm3.core.jsonio import folder_lock, write_json, write_jsonl
from harness.generate import GenerationSettings, GenerationStats, generate, prompt_hash
from harness.identity import identity_title
from harness.errors import EvalError  # noqa: F401  (re-exported: callers catch harness.evaluation.EvalError)
from data_adapters.samples import EvalSample
from harness.score import score_sample, summarize


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
    document: str | None = None,
    identity: dict | None = None,
) -> GenerationStats:
    """judge: the recipe's eval.judge (its values, its dict, or None for no judge), kept for `vlm3 score`;
    document: what the pages are from (the recipe's eval.document), kept for the judge's prompts;
    identity: what tells this evaluation from others (harness.identity), kept for the report and `vlm3 compare`.
    FolderBusy when another process is writing eval_dir."""
    settings_record = {k: v for k, v in asdict(settings).items() if k != "api_key"}  # secrets stay out of files
    meta = {"label": label, "model": settings.model, "endpoint": endpoint, "endpoint_id": settings.endpoint,
            "weights": settings.weights_id, "settings": settings_record,
            "probe_threshold": probe_threshold, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if judge is not _UNSET:
        from harness.judge import judge_dict

        meta["judge"] = judge_dict(judge)
    if document:
        meta["document"] = document
    if identity:
        meta["identity"] = {**identity, "title": identity_title(identity)}
    with folder_lock(eval_dir, "generating"):
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
    records, _ = score_records(meta, samples, eval_dir / "predictions.jsonl")
    return meta, samples, records


def eval_identity(meta: dict) -> tuple[str, str, str]:
    """(endpoint, model, weights) whose answers this directory scores; folders from before endpoints
    were recorded (no endpoint_id) read their answers as the old key did."""
    return meta.get("endpoint_id") or meta.get("endpoint") or "", meta["model"], meta.get("weights") or ""


def score_records(meta: dict, samples: list[dict], predictions: Path) -> tuple[list[dict], int]:
    """(one score record per sample, how many samples have saved answers only from another identity).

    A sample's latest record for this identity decides: an answer is scored; a failure after
    retries is an error record (passed None, never a wrong answer); nothing at all is missing."""
    from harness.generate import read_predictions

    endpoint, model, weights = eval_identity(meta)
    legacy = "endpoint_id" not in meta
    latest: dict[tuple[str, str], dict] = {}
    elsewhere: set[tuple[str, str]] = set()
    for record in read_predictions(predictions):
        key = (record["id"], record["prompt_hash"])
        mine = record["model"] == model and (legacy or ((record.get("endpoint") or "") == endpoint and (record.get("weights") or "") == weights))
        if not mine:
            if record.get("error") is None:
                elsewhere.add(key)
            continue
        # A success is never superseded by a later failure of the same sample (a re-run that failed).
        if record.get("error") is None or key not in latest or latest[key].get("error") is not None:
            latest[key] = record
    records = [score_sample(s, latest.get((s["id"], s["prompt_hash"]))) for s in samples]
    foreign = sum(1 for s in samples if (s["id"], s["prompt_hash"]) in elsewhere and (s["id"], s["prompt_hash"]) not in latest)
    return records, foreign


def judge_spec_of(meta: dict, judge_spec: Any = _UNSET):
    """The judge spec to score with: the one given, else meta.json's, else the recipe default."""
    from harness.judge import load_judge_spec

    if judge_spec is not _UNSET:
        return load_judge_spec(judge_spec)
    if "judge" in meta:
        return load_judge_spec(meta["judge"])
    from harness.judge import JudgeConfig

    return JudgeConfig()


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
    eval.judge.max_unscored_fraction allows; FolderBusy when another process is writing eval_dir."""
    with folder_lock(eval_dir, "scoring"):
        return _score_locked(eval_dir, title, judge, judge_spec, judge_settings, on_judge_progress, on_judge_estimate)


def _score_locked(eval_dir, title, judge, judge_spec, judge_settings, on_judge_progress, on_judge_estimate) -> dict:
    from harness.judge import JudgeError, JudgeOutcome, judge_records, judge_status, skipped_summary

    meta, samples, _ = read_eval_dir(eval_dir)
    records, foreign = score_records(meta, samples, eval_dir / "predictions.jsonl")
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
                                    probe_threshold=meta.get("probe_threshold", 0.85), document=meta.get("document"))
    summary = summarize(
        records,
        label=meta["label"],
        probe_threshold=meta.get("probe_threshold", 0.85),
        model=meta["model"],
        endpoint=meta["endpoint"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if isinstance(meta.get("identity"), dict):
        summary["identity"] = meta["identity"]
        summary["title"] = identity_title(meta["identity"]) or None
    summary["judge"] = outcome.summary
    summary["counts"]["foreign_answers"] = foreign
    if foreign:
        summary["notes"].append(f"{foreign} sample(s) have saved answers only from another endpoint, model or weights "
                                f"than {meta.get('endpoint')} ({meta['model']}): kept in predictions.jsonl, not scored here")
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
