"""Judge calls, tokens and list-price cost per sample: the DeepEval metric set versus the single-call rubric.

Usage:
    .venv/bin/python bench/bench_judge.py [--samples 32] [--json out.json]

The real anthropic SDK and the real DeepEval 4.3.1 metrics score the sample manual (validation rows and
probes, their page images, the reference answers given back as the model's answers) through
harness.judge.judge_records against tests/loopback_anthropic.py, a loopback server that speaks Claude's
Messages and Message Batches APIs. Calls are exact: they are DeepEval's own call pattern and the
rubric's. Tokens are the loopback's count: prompt characters / 4 plus Claude's image rule
(width * height / 750 per image), replies of typical judge length / 4; a real Claude tokenizer and its
structured-output system prompt will differ by some percent. Each configuration runs with a cold cache,
then once more unchanged (the second run must make zero calls). Costs per 1,000 samples are list prices
(harness/judge_client.py CLAUDE_MODELS), batch = 50%.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is not on sys.path otherwise

from harness.judge import CALL_PROFILE, estimate_judge_cost, judge_records  # noqa: E402
from harness.judge_client import JudgeSettings, cost_usd  # noqa: E402
from data_adapters.samples import load_probes, load_val_samples  # noqa: E402
from harness.score import score_sample  # noqa: E402
from tests.loopback_anthropic import LoopbackJudge  # noqa: E402
from vlm3.recipe.schema import JudgeSpec  # noqa: E402

MODELS = ("claude-sonnet-5-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-5")
CONFIGS = [
    ("DeepEval full set (4 metrics)", ["answer_relevancy", "faithfulness", "correctness", "hallucination"], False),
    ("DeepEval recipe default (3 metrics)", ["answer_relevancy", "faithfulness", "correctness"], False),
    ("rubric, Messages API", ["rubric"], False),
    ("rubric, Message Batches API", ["rubric"], True),
]
PER_METRIC = ["answer_relevancy", "faithfulness", "correctness", "hallucination", "rubric"]


def load_samples(limit: int) -> list[dict]:
    root = ROOT / "sample_data" / "training_data"
    if not (root / "vlm_val.jsonl").exists():
        from vlm3.demo.sample_manual import generate_sample_manual

        generate_sample_manual(ROOT / "sample_data", seed=0)
    vals, _ = load_val_samples(root / "vlm_val.jsonl", root)
    probes, _ = load_probes(ROOT / "sample_data" / "probes.jsonl", root)
    return [s.to_dict() for s in (vals + probes)[:limit]]


def answer(sample: dict) -> str:
    return sample["expected"] or "Check it cold: remove the cover, measure at the " + ", ".join(sample["expected_keywords"]) + "."


def run(samples: list[dict], metrics: list[str], batch: bool, cache: Path, server: LoopbackJudge) -> dict:
    records = [score_sample(s, {"answer": answer(s)}) for s in samples]
    spec = JudgeSpec(model="claude-sonnet-5-5", metrics=metrics, use_batch_api=batch, concurrency=8, max_unscored_fraction=0)
    settings = JudgeSettings.from_spec(spec, api_key="sk-bench", base_url=server.url, batch_poll_s=0.01, backoff_s=0.01)
    before = len(server.log)
    started = time.perf_counter()
    outcome = judge_records(records, samples, spec, cache, settings=settings)
    seconds = time.perf_counter() - started
    judge = outcome.summary
    assert judge["unscored"] == 0, judge
    return {**{k: judge[k] for k in ("calls", "cache_hits", "input_tokens", "output_tokens", "batches")},
            "http_requests": len(server.log) - before, "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples = load_samples(args.samples)
    n = len(samples)
    results: dict[str, dict] = {}
    with LoopbackJudge() as server, tempfile.TemporaryDirectory() as tmp:
        for label, metrics, batch in CONFIGS:
            cache = Path(tmp) / label.replace(" ", "_").replace(",", "")
            cold = run(samples, metrics, batch, cache, server)
            warm = run(samples, metrics, batch, cache, server)
            estimate = estimate_judge_cost(JudgeSpec(model="claude-sonnet-5-5", metrics=metrics, use_batch_api=batch), samples,
                                           answers={s["id"]: answer(s) for s in samples}).to_dict()
            results[label] = {"metrics": metrics, "batch": batch, "cold": cold, "rerun": warm, "estimate": estimate}
        per_metric = {name: run(samples, [name], False, Path(tmp) / f"metric-{name}", server) for name in PER_METRIC}

    print(f"{n} samples of the sample manual ({platform.python_version()}, deepeval 4.3.1); page images "
          f"{sorted({s['image'].rsplit('/', 1)[-1] for s in samples})[:2]}..., tokens per loopback rule\n")
    print("| configuration | judge calls / sample | input tokens / sample | output tokens / sample | calls on unchanged re-run | "
          + " | ".join(f"$ / 1,000 samples, {m}" for m in MODELS) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(MODELS))
    for label, r in results.items():
        cold = r["cold"]
        dollars = [cost_usd(m, cold["input_tokens"], cold["output_tokens"], batch=r["batch"]) * 1000 / n for m in MODELS]
        print(f"| {label} | {cold['calls'] / n:.2f} | {cold['input_tokens'] / n:,.0f} | {cold['output_tokens'] / n:,.0f} | "
              f"{r['rerun']['calls']} | " + " | ".join(f"{d:.2f}" for d in dollars) + " |")
    print("\nHTTP requests (cold / re-run): " + "; ".join(
        f"{label}: {r['cold']['http_requests']} / {r['rerun']['http_requests']}" for label, r in results.items()))
    print("estimate before the run vs measured (calls, input tokens): " + "; ".join(
        f"{label}: {r['estimate']['calls']} vs {r['cold']['calls'] + r['cold']['cache_hits']}, "
        f"{r['estimate']['input_tokens']:,} vs {r['cold']['input_tokens']:,}" for label, r in results.items()))
    print("\nper metric (cold, per sample): | metric | calls | input tokens | output tokens | CALL_PROFILE calls |")
    for name, r in per_metric.items():
        print(f"| {name} | {r['calls'] / n:.2f} | {r['input_tokens'] / n:,.0f} | {r['output_tokens'] / n:,.0f} | {CALL_PROFILE[name][0]} |")
    for label, r in results.items():
        assert r["rerun"]["calls"] == 0 and r["rerun"]["http_requests"] == 0, f"{label}: an unchanged re-run made calls"
    rubric = results["rubric, Messages API"]["cold"]
    assert rubric["calls"] <= n, "the rubric grader made more than one call per sample"
    if args.json:
        args.json.write_text(json.dumps({"samples": n, "results": results, "per_metric": per_metric}, indent=2))


if __name__ == "__main__":
    main()
