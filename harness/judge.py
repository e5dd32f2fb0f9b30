"""The LLM judge over saved answers: DeepEval metrics and the rubric grader, with Claude (or an OpenAI-compatible
model) as the judge; scores into score records and summary.json, cost counted, unscored samples never hidden.

Usage:
    outcome = judge_records(records, samples, spec, cache_dir=eval_dir)   # fills record["judge"]
    summary["judge"] = outcome.summary
    outcome.raise_if_too_many_unscored()                                   # JudgeError, after you saved the scores
    print(estimate_judge_cost(spec, samples))                              # before a run: calls, tokens, dollars

A record's judge entry:
    {"metrics": {name: {"score": 0-1 | None, "passed": bool | None, "reason": str | None,
                        "unscored": bool, "raw": str | None, "error": str (unscored only)}},
     "passed": bool | None}        # every metric scored and passed; None if any is unscored
summary["judge"]: model, provider, metrics {name: mean, pass_rate, scored, unscored, threshold}, calls,
cache_hits, input_tokens, output_tokens, cost_usd, prices, estimate, skipped_reason (and more, below).

When it runs: the recipe's eval.judge is set with at least one metric, and the judge can be reached:
ANTHROPIC_API_KEY for provider anthropic, judge.base_url for provider openai (key: VLM3_JUDGE_API_KEY,
else none). Otherwise it is skipped with one line, e.g. "judge skipped: no ANTHROPIC_API_KEY", and
everything else still runs. The key is read from the environment and never printed or written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Mapping

from harness.errors import EvalError
from harness.judge_client import (
    BATCH_DISCOUNT,
    PRICE_SOURCE,
    BatchWaitStopped,
    PRICES_AS_OF,
    JudgeCache,
    JudgeClient,
    JudgeSettings,
    claude_model,
    cost_usd,
    page_image,
)
from data_adapters.samples import sample_pages

CACHE_FILE = "judge_cache.sqlite"
DEEPEVAL_DIR = ".deepeval"  # DeepEval's own files, inside the evaluation directory

# Judge calls and tokens per sample with a cold cache, fitted to bench/bench_judge.py on the sample manual
# (DeepEval 4.3.1 prompt templates; loopback token rule: characters / 4, images width * height / 750).
# Per metric: (calls, template input tokens, calls that carry the page image, calls that carry the
# sample's texts, output tokens). Output allows a little more than the benchmark's synthetic replies and
# does not include thinking tokens (Claude Sonnet 5 and later think adaptively by default).
CALL_PROFILE: dict[str, tuple[int, int, int, int, int]] = {
    "answer_relevancy": (3, 850, 0, 3, 200),
    "faithfulness": (4, 1_300, 1, 4, 260),
    "correctness": (1, 400, 0, 1, 60),
    "hallucination": (2, 800, 1, 1, 130),
    "rubric": (1, 280, 1, 1, 90),
}
ANSWER_TOKENS_GUESS = 60  # for an estimate before any answer exists
TYPICAL_TEXT_TOKENS = 100  # question + answer + reference + page text: the sample manual's mean is 95
TYPICAL_PAGE_TOKENS = 1_533  # a scanned page at Claude's size limits: 1.15 MP / 750 pixels per token
CHARS_PER_TOKEN = 4


class JudgeError(EvalError):
    """The judge left more samples unscored than the recipe allows (eval.judge.max_unscored_fraction),
    or was required and could not run. str() is the whole message for the user; as an EvalError the
    CLI prints it and exits 1 without a traceback."""


@dataclass
class JudgeOutcome:
    summary: dict[str, Any]
    too_many_unscored: list[str] = field(default_factory=list)  # one line per metric over the limit

    def raise_if_too_many_unscored(self) -> None:
        if self.too_many_unscored:
            raise JudgeError(
                "the judge left too many samples unscored:\n"
                + "\n".join(f"  {line}" for line in self.too_many_unscored)
                + "\nThe raw replies are kept in scores.jsonl (judge.metrics.<name>.raw). Scores and summary were "
                "written; run the same score command again to retry only the unscored samples (scored ones come "
                "from the cache)."
            )


@dataclass(frozen=True)
class JudgeConfig:
    """The judge a scoring run uses, as values: the recipe's eval.judge (checked there, vlm3.recipe.schema.JudgeSpec,
    whose defaults these are) or the copy in meta.json. The harness takes values, never the recipe's schema."""

    provider: str = "anthropic"
    model: str = "claude-sonnet-5-5"
    base_url: str | None = None
    metrics: tuple[str, ...] = ("answer_relevancy", "faithfulness", "correctness")
    threshold: float = 0.7
    max_unscored_fraction: float = 0.05
    concurrency: int = 4
    use_batch_api: bool = False

    def to_dict(self) -> dict:
        return {**asdict(self), "metrics": list(self.metrics)}


def load_judge_spec(value: Any) -> JudgeConfig | None:
    """The judge from a recipe value (anything with model_dump), a meta.json dict, a JudgeConfig or None (no judge)."""
    if value is None or isinstance(value, JudgeConfig):
        return value
    values = value.model_dump() if hasattr(value, "model_dump") else value
    if not isinstance(values, dict):
        raise EvalError(f"the judge must be a mapping of eval.judge's keys, got {type(values).__name__}")
    known = {f.name for f in fields(JudgeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EvalError(f"the judge has keys eval.judge does not: {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
    if "metrics" in values:
        values = {**values, "metrics": tuple(values["metrics"])}
    return JudgeConfig(**values)


def judge_dict(value: Any) -> dict | None:
    """The judge as meta.json keeps it (None: no judge)."""
    spec = load_judge_spec(value)
    return None if spec is None else spec.to_dict()


def judge_status(spec, environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(api_key, None) when the judge can run; (None, the one line that says why not) otherwise."""
    environ = os.environ if environ is None else environ
    if spec is None or not spec.metrics:
        return None, "judge skipped: no judge in the recipe (eval.judge)"
    if spec.provider == "openai":
        if not (spec.base_url or environ.get("VLM3_JUDGE_BASE_URL")):
            return None, "judge skipped: eval.judge.provider is openai but eval.judge.base_url is not set"
        return environ.get("VLM3_JUDGE_API_KEY") or "EMPTY", None
    key = environ.get("ANTHROPIC_API_KEY")
    if not key:
        return None, "judge skipped: no ANTHROPIC_API_KEY"
    return key, None


def skipped_summary(spec, reason: str) -> dict[str, Any]:
    return {
        "model": getattr(spec, "model", None), "provider": getattr(spec, "provider", None), "metrics": {},
        "calls": 0, "cache_hits": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
        "skipped_reason": reason,
    }


def judge_settings_for(spec, api_key: str, **overrides: Any) -> JudgeSettings:
    """Runtime settings from the recipe's judge (JudgeConfig); VLM3_JUDGE_BASE_URL redirects the calls (a proxy or a test server)."""
    overrides.setdefault("base_url", os.environ.get("VLM3_JUDGE_BASE_URL") or None)
    return JudgeSettings.from_spec(spec, api_key=api_key, **overrides)


def run_coroutine(coroutine):
    """asyncio.run, also from code that already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class JudgeInterrupted(KeyboardInterrupt):
    """Ctrl-C while message batches were running; str() says how to collect or cancel them."""


def print_batch_line(line: str) -> None:
    """A Message Batch's progress (submitted, resumed, lost) on stderr: minutes can pass between lines."""
    print(line, file=sys.stderr, flush=True)


def cancel_saved_batches(spec, cache_dir: Path, settings: JudgeSettings | None = None,
                         client_factory: Callable[[JudgeSettings], Any] | None = None) -> list[str]:
    """Cancel the batches an interrupted `vlm3 score` left running (asked for with --cancel-batches)."""
    from harness.judge_client import make_transport

    spec = load_judge_spec(spec)
    if settings is None:
        api_key, reason = judge_status(spec)
        if reason:
            raise JudgeError(f"cannot cancel batches: {reason.removeprefix('judge skipped: ')}")
        settings = judge_settings_for(spec, api_key)
    client = JudgeClient(settings, JudgeCache(Path(cache_dir) / CACHE_FILE),
                         make_transport(settings, client_factory(settings) if client_factory else None))
    try:
        return client.cancel_saved_batches(on_skip=print_batch_line)
    finally:
        client.close()
        client.cache.close()


def judge_records(
    records: list[dict],
    samples: list[dict],
    spec,
    cache_dir: Path,
    settings: JudgeSettings | None = None,
    client_factory: Callable[[JudgeSettings], Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_estimate: Callable[["JudgeEstimate"], None] | None = None,
    probe_threshold: float = 0.85,
    document: str | None = None,
) -> JudgeOutcome:
    """Judge every answered record with the spec's metrics; fill record["judge"]; return summary["judge"].

    settings: how to reach the judge (default: from spec and the environment; skipped without a key).
    client_factory: settings -> an SDK client (anthropic.Anthropic or openai.OpenAI); default: the official
    SDK with its own retries off. The cache lives in cache_dir/judge_cache.sqlite.
    on_estimate(estimate) is called before the first judge call; on_progress(done, total) after each
    metric of each sample. document: what the pages are from, as the judge's prompts name it (the recipe's
    eval.document; the settings' neutral default when None)."""
    spec = load_judge_spec(spec)
    reason = None
    if spec is None or not spec.metrics:
        reason = judge_status(spec)[1]  # "no judge in the recipe"
    elif settings is None:
        api_key, reason = judge_status(spec)
        settings = None if reason else judge_settings_for(spec, api_key)
    if reason:
        for record in records:
            record["judge"] = None
        return JudgeOutcome(skipped_summary(spec, reason))
    if document:
        settings = settings.replace(document=document)

    cache_dir = Path(cache_dir)
    from harness.judge_metrics import configure_deepeval

    configure_deepeval(cache_dir / DEEPEVAL_DIR)
    from harness.judge_client import make_transport

    transport = make_transport(settings, client_factory(settings) if client_factory else None)
    client = JudgeClient(settings, JudgeCache(cache_dir / CACHE_FILE), transport)
    estimate = estimate_judge_cost(spec, samples, answers={r["id"]: r.get("answer") for r in records},
                                   images=settings.images)
    if on_estimate:
        on_estimate(estimate)
    try:
        run_coroutine(_judge_all(records, samples, spec, client, on_progress))
    except (KeyboardInterrupt, BatchWaitStopped):
        client.stop_waiting()
        if client.waiting_on:
            raise JudgeInterrupted(
                f"stopped waiting for message batch(es) {', '.join(client.waiting_on)}: they keep running at the "
                f"provider and are saved in {cache_dir / CACHE_FILE}. Run `vlm3 score {cache_dir}` again to collect "
                f"them (nothing is submitted or paid twice), or `vlm3 score {cache_dir} --cancel-batches` to cancel them"
            ) from None
        raise
    finally:
        client.close()
        client.cache.close()
    summary = summarize_judge(records, spec, settings, client.usage.to_dict(), estimate.to_dict(), probe_threshold)
    return JudgeOutcome(summary, unscored_over_limit(summary, spec))


async def _judge_all(records, samples, spec, client: JudgeClient, on_progress) -> None:
    from harness.judge_metrics import JudgeCase, make_metric, measure, rubric_request, to_test_case

    by_id = {s["id"]: s for s in samples}
    images: dict[str, Any] = {}
    test_cases: dict[str, Any] = {}
    for record in records:
        sample = by_id.get(record["id"], record)
        if record.get("answer") is None:
            record["judge"] = {"metrics": {}, "passed": None, "skipped": "no answer to judge"}
            continue
        if not record["answer"].strip():
            continue  # scored 0 below
        case = JudgeCase.from_sample(sample, record["answer"])
        pages = []
        if client.sees_images:
            for path in case.images:  # every page of the sample, in order; none for a text-only sample
                if path not in images:
                    try:
                        images[path] = page_image(path)
                    except (OSError, ValueError):
                        images[path] = None  # judged without this page; the context says so by its absence
                if images[path] is not None:
                    pages.append(images[path])
        test_cases[record["id"]] = to_test_case(case, pages)

    if "rubric" in spec.metrics and spec.use_batch_api and client.settings.provider == "anthropic":
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, client.prefill_batch, [rubric_request(tc, client.settings.document) for tc in test_cases.values()],
                print_batch_line,
            )
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task; the polling thread must stop too
            client.stop_waiting()
            raise

    total = len(test_cases) * len(spec.metrics)
    done = 0
    results: dict[str, dict[str, dict]] = defaultdict(dict)

    async def judge_one(record_id: str, name: str) -> None:
        nonlocal done
        metric = make_metric(name, spec.threshold, client)
        results[record_id][name] = await measure(metric, test_cases[record_id])
        done += 1
        if on_progress:
            on_progress(done, total)

    await asyncio.gather(*(judge_one(rid, name) for rid in test_cases for name in spec.metrics))
    for record in records:
        if record.get("answer") is not None and not record["answer"].strip():
            # DeepEval scores an answer with no statements as fully relevant and faithful (1.0); an empty
            # answer fails every metric instead, without asking the judge.
            metrics = {name: {"score": 0.0, "passed": False, "reason": "the answer is empty", "unscored": False, "raw": None}
                       for name in spec.metrics}
            record["judge"] = {"metrics": metrics, "passed": False}
        elif record["id"] in test_cases:
            metrics = {name: results[record["id"]][name] for name in spec.metrics}
            verdicts = [m["passed"] for m in metrics.values()]
            record["judge"] = {"metrics": metrics, "passed": None if None in verdicts else all(verdicts)}


def _metric_stats(entries: list[dict], threshold: float) -> dict[str, Any]:
    scored = [e for e in entries if not e.get("unscored")]
    return {
        "mean": round(mean(e["score"] for e in scored), 4) if scored else None,
        "pass_rate": round(sum(bool(e["passed"]) for e in scored) / len(scored), 4) if scored else None,
        "scored": len(scored),
        "unscored": len(entries) - len(scored),
        "threshold": threshold,
    }


def summarize_judge(records: list[dict], spec, settings: JudgeSettings, usage: dict, estimate: dict | None = None,
                    probe_threshold: float = 0.85) -> dict[str, Any]:
    """summary["judge"]: per metric mean, pass rate, scored and unscored; the probes' judge pass rate against
    the probe threshold (a probe passes when every metric scored it at or above eval.judge.threshold);
    cost; and the metrics by category."""
    judged = [r for r in records if (r.get("judge") or {}).get("metrics")]
    metrics = {name: _metric_stats([r["judge"]["metrics"][name] for r in judged], spec.threshold) for name in spec.metrics}
    by_category: dict[str, dict] = {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in judged:
        groups[str(record.get("category") or "unknown")].append(record)
    for category, rows in sorted(groups.items()):
        by_category[category] = {name: _metric_stats([r["judge"]["metrics"][name] for r in rows], spec.threshold) for name in spec.metrics}
    verdicts = [r["judge"]["passed"] for r in judged]
    probe_verdicts = [r["judge"]["passed"] for r in judged if r.get("kind") == "probe"]
    probe_scored = [v for v in probe_verdicts if v is not None]
    probe_rate = round(sum(probe_scored) / len(probe_scored), 4) if probe_scored else None
    card = claude_model(settings.model) if settings.provider == "anthropic" else None
    return {
        "model": settings.model,
        "provider": settings.provider,
        "metrics": metrics,
        "samples": len(judged),
        "not_judged": sum(1 for r in records if r.get("answer") is None),
        "pass_rate": round(sum(1 for v in verdicts if v) / len(verdicts), 4) if verdicts else None,
        "probes": {"n": len(probe_verdicts), "scored": len(probe_scored), "unscored": len(probe_verdicts) - len(probe_scored),
                   "pass_rate": probe_rate, "threshold": probe_threshold,
                   "passed": probe_rate is not None and probe_rate >= probe_threshold},
        "unscored": sum(m["unscored"] for m in metrics.values()),
        "max_unscored_fraction": spec.max_unscored_fraction,
        "by_category": by_category,
        **usage,
        "use_batch_api": bool(spec.use_batch_api and "rubric" in spec.metrics and settings.provider == "anthropic"),
        "images": settings.images,
        "prices": {
            "input_usd_per_mtok": card.input_usd_per_mtok, "output_usd_per_mtok": card.output_usd_per_mtok,
            "batch_discount": BATCH_DISCOUNT, "as_of": PRICES_AS_OF, "source": PRICE_SOURCE,
        } if card else None,
        "cost_note": None if card else f"no list price on file for {settings.model}: cost not counted",
        "estimate": estimate,
        "skipped_reason": None,
    }


def unscored_over_limit(summary: dict, spec) -> list[str]:
    lines = []
    for name, stats in summary["metrics"].items():
        total = stats["scored"] + stats["unscored"]
        if total and stats["unscored"] / total > spec.max_unscored_fraction:
            lines.append(f"{name}: {stats['unscored']} of {total} unscored ({stats['unscored'] / total:.0%}), "
                         f"more than eval.judge.max_unscored_fraction {spec.max_unscored_fraction:.0%}")
    return lines


def _tokens(text: str | None) -> int:
    return math.ceil(len(text or "") / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class JudgeEstimate:
    """What a judge run will cost with a cold cache; str() is the line to print before the run."""

    samples: int
    metrics: list[str]
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    batch: bool
    assumes: str = "a cold cache; a re-run of unchanged samples makes no calls"

    @property
    def cost_per_1000_samples_usd(self) -> float | None:
        return None if self.cost_usd is None or not self.samples else round(self.cost_usd * 1000 / self.samples, 2)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cost_per_1000_samples_usd": self.cost_per_1000_samples_usd}

    def __str__(self) -> str:
        cost = "no list price on file" if self.cost_usd is None else f"~${self.cost_usd:.2f}"
        return (f"judge estimate ({self.model}, {', '.join(self.metrics)}): {self.samples} samples, ~{self.calls} calls, "
                f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens, {cost}"
                f"{' (rubric by batch, half price)' if self.batch else ''}; {self.assumes}")


def estimate_judge_cost(spec, samples: list[dict] | int, answers: Mapping[str, str | None] | None = None,
                        images: bool | None = None) -> JudgeEstimate:
    """Calls, tokens and list-price dollars of judging `samples` with a cold cache, before any call is made.

    samples: the sample dicts (samples.jsonl), or just how many (typical sizes are assumed: a recipe before
    any data is read). answers: id -> answer; a sample without one is not judged; without `answers`, each
    counts ANSWER_TOKENS_GUESS tokens. images: whether the judge gets page images (default: Claude does)."""
    spec = load_judge_spec(spec)
    images = spec.provider == "anthropic" if images is None else images
    batch_rubric = bool(spec.use_batch_api and spec.provider == "anthropic")
    if isinstance(samples, int):
        sizes = [(TYPICAL_TEXT_TOKENS, TYPICAL_PAGE_TOKENS if images else 0)] * samples
    else:
        sizes = _sample_sizes(samples, answers, images)
    calls = input_tokens = output_tokens = 0
    dollars: float | None = 0.0
    for texts, page in sizes:
        for name in spec.metrics:
            n_calls, template, image_calls, text_calls, out = CALL_PROFILE[name]
            tokens_in = template + text_calls * texts + image_calls * page
            calls, input_tokens, output_tokens = calls + n_calls, input_tokens + tokens_in, output_tokens + out
            cost = cost_usd(spec.model, tokens_in, out, batch=name == "rubric" and batch_rubric) if spec.provider == "anthropic" else None
            dollars = None if cost is None or dollars is None else dollars + cost
    return JudgeEstimate(samples=len(sizes), metrics=list(spec.metrics), model=spec.model, calls=calls,
                         input_tokens=input_tokens, output_tokens=output_tokens,
                         cost_usd=None if dollars is None else round(dollars, 4),
                         batch=batch_rubric and "rubric" in spec.metrics)


def _sample_sizes(samples: list[dict], answers: Mapping[str, str | None] | None, images: bool) -> list[tuple[int, int]]:
    """(text tokens, page image tokens summed over the sample's pages) of each sample that will be judged."""
    page_tokens: dict[str, int] = {}
    sizes = []
    for sample in samples:
        answer = (answers or {}).get(sample["id"])
        if answers is not None and answer is None:
            continue  # not answered: not judged
        texts = (_tokens(sample.get("question")) + (_tokens(answer) if answer else ANSWER_TOKENS_GUESS)
                 + _tokens(sample.get("expected") or " ".join(sample.get("expected_keywords") or []))
                 + _tokens(sample.get("page_text")))
        page = 0
        for path in [path for path, _ in sample_pages(sample) if path] if images else []:
            if path not in page_tokens:
                try:
                    page_tokens[path] = page_image(path).tokens
                except (OSError, ValueError):
                    page_tokens[path] = 0
            page += page_tokens[path]
        sizes.append((texts, page))
    return sizes


def format_estimate(estimate: JudgeEstimate | dict) -> str:
    return str(estimate if isinstance(estimate, JudgeEstimate) else JudgeEstimate(
        **{k: v for k, v in estimate.items() if k != "cost_per_1000_samples_usd"}))


def format_judge_line(judge: dict | None) -> str | None:
    """One line for the terminal: the skip reason, or each metric's mean with its unscored count, and the cost."""
    if not judge:
        return None
    if judge.get("skipped_reason"):
        return judge["skipped_reason"]
    parts = [f"{name} {'-' if m['mean'] is None else format(m['mean'], '.2f')} "
             f"(pass {'-' if m['pass_rate'] is None else format(m['pass_rate'], '.0%')}, unscored {m['unscored']})"
             for name, m in judge["metrics"].items()]
    cost = "cost not counted" if judge.get("cost_usd") is None else f"${judge['cost_usd']:.4f}"
    return (f"judge {judge['model']}: " + "; ".join(parts)
            + f"; {judge['calls']} calls, {judge['cache_hits']} cached, {cost}")


def deepeval_command(eval_dir: Path, pytest_args: list[str], max_samples: int | None = None,
                     python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment for `deepeval test run` over a saved evaluation (run it with cwd=eval_dir):
    DeepEval's files land in EVAL_DIR/.deepeval, telemetry is off unless the user turned it on."""
    eval_dir = Path(eval_dir).resolve()
    module = Path(__file__).resolve().parent / "deepeval_suite.py"
    argv = [python or sys.executable, "-m", "deepeval.cli.main", "test", "run", str(module), *pytest_args]
    env = {
        "VLM3_EVAL_DIR": str(eval_dir),
        "DEEPEVAL_TELEMETRY_OPT_OUT": os.environ.get("DEEPEVAL_TELEMETRY_OPT_OUT", "1"),
        "DEEPEVAL_CACHE_FOLDER": str(eval_dir / DEEPEVAL_DIR),
        "DEEPEVAL_RESULTS_FOLDER": str(eval_dir / DEEPEVAL_DIR / "results"),
        "DEEPEVAL_HOME": str(eval_dir / DEEPEVAL_DIR / "home"),
    }
    if max_samples:
        env["VLM3_MAX_SAMPLES"] = str(max_samples)
    return argv, env
