"""The CLI verbs that serve, generate, score and compare (registered by vlm3.cli.main).

Usage:
    vlm3 serve runs/tiny-cpu-demo/latest [--base] [--port 8000] [--engine auto|vllm|transformers]
    vlm3 eval runs/tiny-cpu-demo/latest [--endpoint URL --api-key KEY --model NAME] [--label L]

A run without --endpoint is served locally for the call (vlm3.serve.local: vLLM with the Modal app's command
line when it is installed, else transformers serve), under the recipe's served name; meta.json records
which engine served it (its "server").
    vlm3 generate ... / vlm3 score EVAL_DIR / vlm3 compare EVAL_A EVAL_B
    vlm3 demo recipes/tiny_cpu_demo.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit
from typing import Iterator

from vlm3.recipe.schema import Recipe, load_recipe
from vlm3.recipe.runs import RunDir, RunError
from vlm3.serve.local import add_engine_arg, model_dir_for

DEMO_MARGIN = 0.5  # fine-tuned minus base pass rate on memorised probes that the demo must reach


def console():
    from vlm3.core.console import console as shared

    return shared


def resolve_target(target: str) -> tuple[Recipe, RunDir | None]:
    """A run directory (its resolved recipe) or a recipe file (no run: an external endpoint)."""
    path = Path(target)
    if path.is_dir():
        run = RunDir.open(path)
        return run.recipe(), run
    return load_recipe(path), None


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    model: str
    endpoint_id: str  # what answers belong to: the base URL, or local_endpoint_id's for a local server (its port changes)
    weights_id: str | None = None
    server: dict | None = None  # a local server: its engine and command (meta.json's "server")


def local_endpoint_id(engine: str, model_dir: Path) -> str:
    """"local:<model dir>" for transformers serve (as before vLLM served locally), "local-vllm:<model dir>" for vLLM:
    the two engines' answers differ (vLLM serves in the recipe's bfloat16), so neither resumes from the other's."""
    from vlm3.serve.local import VLLM

    return f"local{'-vllm' if engine == VLLM else ''}:{Path(model_dir).resolve()}"


def server_record(server, plan) -> dict:
    """What served an evaluation, for meta.json: the engine, the served name, what it loaded and its command line."""
    record = {"engine": server.engine, "served_name": server.model, "model_dir": str(Path(plan.model_dir).resolve()),
              "command": list(server.command)}
    if plan.install is not None:
        record.update(vllm=plan.install.describe(), cpu_build=plan.install.cpu_build)
    if plan.base_model:
        record["base_model"] = plan.base_model
    return record


@contextlib.contextmanager
def endpoint_for(args: argparse.Namespace, recipe: Recipe, run: RunDir | None, label: str) -> Iterator[Endpoint]:
    """The given endpoint, or a local server for the run (vLLM when installed, else transformers serve)."""
    if args.endpoint:
        # Only the endpoint's own key: a general OPENAI_API_KEY must never be sent to a third-party endpoint.
        api_key = args.api_key or os.environ.get("VLM3_API_KEY") or "EMPTY"
        given = args.endpoint.rstrip("/")
        model = args.model or default_model_name(given, api_key, recipe, run, args.base, checkpoint_of(args))
        # The generation settings are written to meta.json, base URL included: credentials in the URL stay out
        # of them, and so out of the requests. The key travels as --api-key / $VLM3_API_KEY (a Bearer header).
        base_url = recorded_endpoint(given)
        if base_url != given.partition("#")[0]:
            console().print(f"the credentials in the endpoint URL are not sent or saved; using {base_url} "
                            "(pass the key with $VLM3_API_KEY or --api-key)", markup=False)
        yield Endpoint(base_url, api_key, model, base_url)
        return
    if run is None:
        raise RunError("pass --endpoint URL (and --api-key) to evaluate a recipe without a local run")
    from vlm3.serve.local import plan_serving, run_server, weights_identity

    plan = plan_serving(run, recipe, args.base, getattr(args, "engine", None), checkpoint_of(args))
    console().print(f"serving {plan.describe()} locally for {label} ...", markup=False)
    with run_server(plan, run, log_file=run.logs_dir / f"serve-{label}.log") as server:
        yield Endpoint(server.base_url, "EMPTY", server.model, local_endpoint_id(server.engine, plan.model_dir),
                       weights_identity(plan.model_dir), server_record(server, plan))


CREDENTIAL_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential", re.IGNORECASE)  # query names that carry one


def recorded_endpoint(base_url: str) -> str:
    """The endpoint URL as it may be written and shown: no user:password@, no query parameter named like a key.

    `https://me:pw@host/v1?api-key=K&api-version=1` becomes `https://host/v1?api-version=1`. Generation
    requests use this URL too (their settings are saved in meta.json); only /models is asked with the URL as given."""
    parsed = urlsplit(base_url.rstrip("/"))
    netloc = parsed.netloc.rpartition("@")[2]
    query = "&".join(pair for pair in parsed.query.split("&") if pair and not CREDENTIAL_PARAM.search(unquote(pair.split("=", 1)[0])))
    return urlunsplit((parsed.scheme, netloc, parsed.path.rstrip("/"), query, ""))


def endpoint_folder(base_url: str) -> str:
    """A folder name per endpoint, readable and unique: host, port and path, then a hash of the whole
    recorded URL (credentials are neither in the name nor hashed into it)."""
    base_url = recorded_endpoint(base_url)
    parsed = urlsplit(base_url)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{parsed.netloc}{parsed.path}").strip("-.")[:60] or "endpoint"
    return f"{readable}-{hashlib.sha256(base_url.rstrip('/').encode()).hexdigest()[:8]}"


def listed_models(base_url: str, api_key: str, timeout_s: float = 10.0) -> list[str] | None:
    """The ids an OpenAI-compatible endpoint lists at /models; None when it does not answer."""
    import httpx

    try:
        response = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s)
        data = response.json().get("data") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else None


def default_model_name(base_url: str, api_key: str, recipe: Recipe, run: RunDir | None, base: bool,
                       checkpoint: int | None = None) -> str:
    """The model to request without --model: the one the endpoint serves.

    One listed model (vLLM with --served-model-name): that one. Several: the recipe's served name if
    listed. `transformers serve` lists only its hub cache, and serves a folder by its path: for a run,
    the folder `vlm3 serve RUN` serves. Else the recipe's served_model_name."""
    listed = listed_models(base_url, api_key) or []
    if len(listed) == 1:
        return listed[0]
    if recipe.served_name in listed:
        return recipe.served_name
    if run is not None:
        with contextlib.suppress(RunError):
            return str(model_dir_for(run, recipe, base, checkpoint).resolve())
    return recipe.served_name


def eval_dir_for(args: argparse.Namespace, recipe: Recipe, run: RunDir | None, label: str) -> Path:
    """--out, else one folder per endpoint: answers from two endpoints never share a default folder."""
    if getattr(args, "out", None):
        return Path(args.out)
    if args.endpoint:
        root = run.eval_root if run is not None else Path("evals") / recipe.name
        return root / endpoint_folder(args.endpoint) / label
    return run.eval_dir(label)


def checkpoint_of(args: argparse.Namespace) -> int | None:
    return getattr(args, "checkpoint", None)


def default_label(args: argparse.Namespace) -> str:
    if args.label:
        return args.label
    if args.base:
        return "base"
    if args.endpoint:
        return "endpoint"
    return "finetuned" if checkpoint_of(args) is None else f"checkpoint-{checkpoint_of(args)}"


def served_weights(args: argparse.Namespace) -> str:
    """Which weights answer: "finetuned", "base", "checkpoint-N" for a run served here; "endpoint" for a given one."""
    if args.endpoint:
        return "endpoint"
    if args.base:
        return "base"
    return "finetuned" if checkpoint_of(args) is None else f"checkpoint-{checkpoint_of(args)}"


def evaluation_identity(recipe: Recipe, run: RunDir | None, served: str, endpoint: str | None = None,
                        model: str | None = None) -> dict:
    """What tells this evaluation from others, as plain data for meta.json (harness.identity): the run's name, recipe,
    base model, family and data version (vlm3.train.report.run_identity), the weights served, and for a given
    endpoint its URL and the model asked for. A recipe evaluated without a run has no run or data version."""
    from vlm3.train.report import run_identity

    if run is not None:
        identity = run_identity(run.path)
    else:
        identity = {"run": None, "recipe": recipe.name, "base_model": recipe.model.base, "family": None, "data_version": None}
        with contextlib.suppress(Exception):  # a Hub model whose config is not on this machine: named without its family
            identity["family"] = recipe.family.label
    identity["served"] = served
    if served == "endpoint":
        identity.update(endpoint=endpoint, model=model)
    return identity


def run_generation(args: argparse.Namespace) -> tuple[Path, Recipe, RunDir | None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.evaluation import generate_into
    from harness.generate import GenerationSettings
    from harness.general_probes import load_general_probes
    from data_adapters.samples import load_eval_samples

    from vlm3.serve.local import plan_serving

    recipe, run = resolve_target(args.target)
    if run is not None and not args.endpoint:
        plan_serving(run, recipe, args.base, getattr(args, "engine", None), checkpoint_of(args))  # an unchecked merge, a missing engine: refused before anything is written
    label = default_label(args)
    eval_dir = eval_dir_for(args, recipe, run, label)
    # vlm3's general probes (reading, counting, transcribing) are drawn into the evaluation directory.
    general = load_general_probes(eval_dir / "general_probes") if args.only != "val" else []
    samples = load_eval_samples(recipe, only=args.only, max_samples=args.max_samples, general=general)
    with endpoint_for(args, recipe, run, label) as endpoint:
        base_url = endpoint.base_url
        settings = GenerationSettings(
            base_url=base_url, api_key=endpoint.api_key, model=endpoint.model,
            endpoint_id=endpoint.endpoint_id, weights_id=endpoint.weights_id,
            max_tokens=recipe.eval.max_tokens, concurrency=args.concurrency or recipe.eval.concurrency,
            timeout_s=recipe.eval.request_timeout_s, max_retries=recipe.eval.max_retries,
            system_prompt=recipe.data.system_prompt,
        )
        with Progress(TextColumn(f"generating ({label})"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                      TimeElapsedColumn(), console=console(), transient=True) as bar:
            task = bar.add_task("gen", total=len(samples), note="")

            def show(stats) -> None:
                bar.update(task, completed=stats.skipped + stats.answered + stats.failed, note=f"{stats.failed} failed" if stats.failed else "")

            stats = generate_into(eval_dir, samples, settings, label=label, endpoint=endpoint.endpoint_id,
                                  probe_threshold=recipe.eval.probe_pass_threshold, on_progress=show, judge=recipe.eval.judge,
                                  document=recipe.eval.document,
                                  identity=evaluation_identity(recipe, run, served_weights(args), endpoint.endpoint_id, endpoint.model))
        if endpoint.server:
            record_server(eval_dir, endpoint.server)
    console().print(
        f"{label}: {stats.answered} answered, {stats.skipped} already saved, {stats.failed} failed "
        f"in {stats.seconds:.1f} s -> {eval_dir / 'predictions.jsonl'}"
    )
    if stats.foreign:
        console().print(f"  {stats.foreign} saved answers belong to another endpoint, model or weights: kept, not reused")
    if stats.reasked:
        console().print(f"  {stats.reasked} saved answers came from another server-reported model: asked again")
    for line in stats.errors[:5]:
        console().print(f"  {strip_controls(line)}", markup=False)
    return eval_dir, recipe, run


def record_server(eval_dir: Path, server: dict) -> None:
    """meta.json's "server": which engine answered (generate_into rewrites meta.json on every run, so it is never stale)."""
    from vlm3.core.jsonio import folder_lock, write_json

    with folder_lock(eval_dir, "recording the server"):
        meta = json.loads((eval_dir / "meta.json").read_text(encoding="utf-8"))
        write_json(eval_dir / "meta.json", {**meta, "server": server})


def strip_controls(text: str) -> str:
    from harness.generate import strip_controls as strip

    return strip(text)


def print_summary(summary: dict, eval_dir: Path) -> None:
    m, probes = summary["metrics"], summary["probes"]

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    def verdict(passed: bool | None) -> str:
        return "no verdict" if passed is None else "PASS" if passed else "FAIL"

    console().print(
        f"{summary['label']}: pass {pct(m['pass_rate'])}, specs {pct(m['spec_pass_rate'])}, keywords {pct(m['keyword_recall'])}, "
        f"token F1 {'-' if m['token_f1'] is None else format(m['token_f1'], '.3f')}; "
        + (f"probes {pct(probes['pass_rate'])} (threshold {pct(probes['threshold'])}: {verdict(probes['passed'])}); " if probes["n"] else "no probes; ")
        + f"errors {summary['counts']['errors']} (not scored"
        + (f": {summary['counts']['failed']} failed, {summary['counts']['missing']} never answered" if "failed" in summary["counts"] else "")
        + ")",
        markup=False,
    )
    from harness.judge import format_judge_line

    line = format_judge_line(summary.get("judge"))
    if line:
        console().print(line, markup=False)
    ungraded = summary["counts"].get("spec_not_applicable") or 0
    if ungraded:
        console().print(f"{ungraded} sample{'s' if ungraded != 1 else ''} not graded by the spec check (see report)", markup=False)
    console().print(f"report: {eval_dir / 'report.html'}")


def score_with_judge(eval_dir: Path, judge: bool | None, title: str | None = None) -> dict:
    """Score, with the LLM judge when asked (default: when a key or judge endpoint is configured)."""
    from harness.evaluation import score_eval_dir

    return score_eval_dir(eval_dir, title=title, judge=judge, on_judge_estimate=lambda e: console().print(str(e), markup=False))


def cmd_generate(args: argparse.Namespace) -> int:
    from harness.generate import latest_answers

    eval_dir, _, _ = run_generation(args)
    asked = sum(1 for line in (eval_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    missing = asked - len(latest_answers(eval_dir / "predictions.jsonl"))
    if missing > 0:
        console().print(f"{missing} sample(s) have no answer yet; run the same command again to ask only for those")
        return 1
    console().print(f"next: vlm3 score {eval_dir}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    eval_dir = Path(args.eval_dir)
    if args.cancel_batches:
        from vlm3.core.jsonio import folder_lock
        from harness.evaluation import judge_spec_of, read_eval_dir
        from harness.judge import cancel_saved_batches

        with folder_lock(eval_dir, "cancelling judge batches"):
            meta = read_eval_dir(eval_dir)[0]
            cancelled = cancel_saved_batches(judge_spec_of(meta), eval_dir)
        console().print(f"cancelled {len(cancelled)} message batch(es): {', '.join(cancelled) or 'none was saved'}")
        console().print(f"next: vlm3 score {eval_dir}")
        return 0
    summary = score_with_judge(eval_dir, args.judge)
    print_summary(summary, eval_dir)
    if summary["counts"]["errors"]:
        console().print(f"{summary['counts']['errors']} sample(s) have no answer and are not scored; "
                        f"`vlm3 generate` with the same arguments asks for them, then `vlm3 score {eval_dir}`")
        return 1
    console().print(f"next: vlm3 compare <other eval dir> {eval_dir}")
    return 0


def require_judge_before_generating(args: argparse.Namespace) -> None:
    """--judge: a judge that cannot run (no key) is said before any answer is generated, not after."""
    if args.judge is not True:
        return
    from harness.judge import JudgeError, judge_status

    recipe, _ = resolve_target(args.target)
    reason = judge_status(recipe.eval.judge)[1]
    if reason:
        raise JudgeError(f"the judge was asked for (--judge) but cannot run: {reason.removeprefix('judge skipped: ')}. "
                         "Nothing was generated; set the key (or drop --judge) and run again.")


def probes_below(summary: dict, fail_under: float | None) -> str | None:
    """Why the probes fail the --fail-under / --strict gate, or None when they pass it (or there are none)."""
    probes = summary.get("probes") or {}
    if fail_under is None or not probes.get("n"):
        return None
    rate = probes.get("pass_rate")
    if rate is None or rate < fail_under:
        shown = "no verdict" if rate is None else f"{100 * rate:.1f}%"
        return f"probes passed {shown} of {probes['n']}, below {100 * fail_under:.1f}%"
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    require_judge_before_generating(args)
    eval_dir, recipe, _ = run_generation(args)
    summary = score_with_judge(eval_dir, args.judge)
    print_summary(summary, eval_dir)
    code = finish_generation(summary, eval_dir, f"vlm3 compare <other eval dir> {eval_dir}")
    fail_under = args.fail_under if args.fail_under is not None else (recipe.eval.probe_pass_threshold if args.strict else None)
    below = probes_below(summary, fail_under)
    if below:
        console().print(f"FAIL: {below} (--{'fail-under' if args.fail_under is not None else 'strict'})", markup=False)
        return 1
    return code


def finish_generation(summary: dict, eval_dir: Path, next_command: str) -> int:
    """Exit 1 when answers are missing: scripts must not take a half-answered evaluation for a result."""
    errors = summary["counts"]["errors"]
    if errors:
        console().print(f"{errors} sample(s) have no answer (failed requests are in predictions.jsonl and the report; "
                        "they are not scored); run the same command again to ask only for those")
        return 1
    console().print(f"next: {next_command}")
    return 0


def compare_dirs(dir_a: Path, dir_b: Path, out: Path | None = None):
    from harness.compare import (comparison_file_stem, compare_scores, describe_eval_dir, format_comparison, render_compare_html,
                                 side_labels)
    from harness.evaluation import EvalError, load_jsonl

    for d in (dir_a, dir_b):
        if not (d / "scores.jsonl").exists() or not (d / "summary.json").exists():
            raise EvalError(f"{d} has no scores.jsonl / summary.json; run `vlm3 score {d}` first")
    label_a = json.loads((dir_a / "summary.json").read_text())["label"]
    label_b = json.loads((dir_b / "summary.json").read_text())["label"]
    from vlm3.recipe.runs import run_model

    side_a, side_b = describe_eval_dir(dir_a, run_model), describe_eval_dir(dir_b, run_model)  # run, recipe, family, data version, weights served
    label_a, label_b = side_labels(label_a, label_b, side_a, side_b)  # never "finetuned" twice: what differs names them
    comparison = compare_scores(load_jsonl(dir_a / "scores.jsonl"), load_jsonl(dir_b / "scores.jsonl"), label_a, label_b,
                                side_a=side_a, side_b=side_b)
    # The name says which two evaluations it compares; it sits beside them (RUN/eval/).
    out = out or dir_b.parent / f"{comparison_file_stem(label_a, label_b)}.html"
    render_compare_html(comparison, out)
    from vlm3.core.jsonio import write_json

    write_json(out.with_suffix(".json"), comparison.to_dict())
    console().print(format_comparison(comparison), markup=False)
    console().print(f"comparison: {out} (and {out.with_suffix('.json').name})")
    return comparison, out


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import format_delta, interval_text, worse_reason, worse_with_confidence
    from harness.evaluation import EvalError

    comparison, _ = compare_dirs(Path(args.eval_a), Path(args.eval_b), Path(args.out) if args.out else None)
    if args.fail_if_worse:
        from harness.compare import UnknownMetric

        try:
            worse = worse_with_confidence(comparison, args.fail_if_worse)
        except UnknownMetric as exc:
            raise EvalError(str(exc)) from None
        if worse is not None:
            console().print(f"FAIL: B is worse on {worse.name}: {format_delta(worse.name, worse.delta)} "
                            f"{interval_text(worse)} ({worse_reason(worse)})", markup=False)
            return 1
        console().print(f"--fail-if-worse {args.fail_if_worse}: B is not worse with confidence", markup=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vlm3.serve.local import plan_serving, run_server

    run = RunDir.open(args.run)
    recipe = run.recipe()
    plan = plan_serving(run, recipe, args.base, args.engine, args.checkpoint)
    api_key = args.api_key or os.environ.get("VLM3_API_KEY") or None
    console().print(f"starting {plan.describe()} (log {run.logs_dir / 'serve.log'}) ...", markup=False)
    with run_server(plan, run, log_file=run.logs_dir / "serve.log", port=args.port, api_key=api_key) as server:
        console().print(f"serving {plan.model_dir}\n  engine:   {server.engine}\n  base URL: {server.base_url}\n  model:    {server.model}"
                        + ("\n  key:      required (every route but /health answers 401 without it)" if api_key else ""), markup=False)
        key_hint = "VLM3_API_KEY=<the key> " if api_key else ""
        console().print(f"next (another terminal): {key_hint}vlm3 eval {args.run} --endpoint {server.base_url}", markup=False)
        console().print(f'  or: {key_hint}vlm3 ask {server.base_url} page.jpg "your question"', markup=False)
        console().print("Ctrl-C stops the server")
        try:
            while server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console().print("stopping")
            return 0
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on the tiny model: train, merge, serve base and fine-tuned, generate, score, compare."""
    from vlm3.core.jsonio import write_json, write_text_atomic
    from vlm3.cli.train import train_recipe

    recipe = load_recipe(args.recipe)
    run, result = train_recipe(recipe, Path(args.runs_root), merge=True)
    metrics = result.log.to_dict()

    summaries = {}
    for label, base in (("base", True), ("finetuned", False)):
        ns = argparse.Namespace(target=str(run.path), endpoint=None, api_key=None, model=None, label=label, base=base,
                                only="all", max_samples=None, concurrency=None, out=None)
        eval_dir, _, _ = run_generation(ns)
        summaries[label] = score_with_judge(eval_dir, None)  # titled by the run's identity (meta.json)
        print_summary(summaries[label], eval_dir)
    comparison, compare_html = compare_dirs(run.eval_dir("base"), run.eval_dir("finetuned"), run.path / "compare.html")

    final = dict(summaries["finetuned"])
    memorised = {label: s["probes"]["by_source"].get("train_page", {}).get("pass_rate") for label, s in summaries.items()}
    final["demo"] = {
        "memorised_probe_pass_rate": memorised,
        "margin": DEMO_MARGIN,
        "finetuned_beats_base": (memorised["finetuned"] or 0) - (memorised["base"] or 0) >= DEMO_MARGIN,
        "base_summary": str(run.eval_dir("base") / "summary.json"),
        "compare": comparison.to_dict(),
        "train": {"first_loss": metrics["first_loss"], "final_loss": metrics["final_loss"], "steps": metrics["steps"]},
    }
    write_json(run.path / "summary.json", final)
    write_text_atomic(run.path / "report.html", (run.eval_dir("finetuned") / "report.html").read_text(encoding="utf-8"))
    console().print(
        f"memorised probes (training pages): base {memorised['base']}, fine-tuned {memorised['finetuned']} "
        f"-> {'fine-tuned beats base' if final['demo']['finetuned_beats_base'] else 'NO CLEAR GAIN'}"
    )
    console().print(f"wrote {run.path / 'summary.json'}, {run.path / 'report.html'}, {compare_html}")
    return 0 if final["demo"]["finetuned_beats_base"] else 1


def cmd_judge_estimate(args: argparse.Namespace) -> int:
    from harness.evaluation import estimate_judge

    console().print(str(estimate_judge(Path(args.eval_dir))), markup=False)
    return 0


def cmd_deepeval(args: argparse.Namespace) -> int:
    """DeepEval's own test runner over saved predictions (its -k, -c, -n, -i flags pass through)."""
    import subprocess

    from harness.judge import deepeval_command

    from harness.evaluation import EvalError

    if not (Path(args.eval_dir) / "meta.json").exists() or not (Path(args.eval_dir) / "samples.jsonl").exists():
        raise EvalError(f"{args.eval_dir} is not an evaluation directory (no meta.json / samples.jsonl); run `vlm3 generate` first")
    from harness.evaluation import judge_spec_of
    from harness.judge import judge_status

    eval_dir = Path(args.eval_dir)
    reason = judge_status(judge_spec_of(json.loads((eval_dir / "meta.json").read_text(encoding="utf-8"))))[1]
    if reason:
        # Every test would be skipped: a run with no test is not a pass.
        raise EvalError(f"no DeepEval test would run: {reason.removeprefix('judge skipped: ')}. Nothing was run.")
    extra = args.deepeval_args[1:] if args.deepeval_args[:1] == ["--"] else args.deepeval_args
    junit = eval_dir.resolve() / ".deepeval" / "junit.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    argv, env = deepeval_command(eval_dir, [*extra, f"--junitxml={junit}"], args.max_samples)
    code = subprocess.run(argv, cwd=args.eval_dir, env={**os.environ, **env}).returncode
    ran = tests_that_ran(junit)
    if code == 0 and ran == 0:
        console().print("no DeepEval test ran (all skipped or none selected): exit 1", markup=False)
        return 1
    return code


def tests_that_ran(junit: Path) -> int | None:
    """Tests run minus skipped, from pytest's JUnit XML; None when the file is missing or unreadable."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)


def add_judge_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None,
                   help="run the LLM judge (default: when ANTHROPIC_API_KEY or a judge endpoint is configured)")


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a run directory (serves its model locally) or a recipe (with --endpoint)")
    p.add_argument("--endpoint", help="an OpenAI-compatible base URL, e.g. https://x--serve.modal.run/v1")
    p.add_argument("--api-key", help="the endpoint's key (default: $VLM3_API_KEY; prefer the variable: a flag lands in shell history)")
    p.add_argument("--model", help="model name to request (default: the recipe's served_model_name)")
    p.add_argument("--label", help="name of this evaluation (default: finetuned / base / endpoint)")
    p.add_argument("--base", action="store_true", help="serve the base model instead of the merged one")
    add_checkpoint_arg(p)
    p.add_argument("--only", choices=["all", "val", "probes", "general"], default="all",
                   help="probes: the recipe's probes and vlm3's general ones; general: those only")
    p.add_argument("--max-samples", type=int, help="first N validation samples only (probes are always all)")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--out", help="evaluation directory (default: RUN/eval/LABEL)")
    add_engine_arg(p)


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=int, metavar="N", help="serve saved checkpoint N's checked merge (`vlm3 merge RUN "
                   "--checkpoint N` first) instead of the run's weights; its evaluation folder is checkpoint-N")


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a run locally under its served name (vLLM when installed, else transformers serve)")
    p.add_argument("run")
    p.add_argument("--base", action="store_true", help="serve the base model, as <served name>-base")
    add_checkpoint_arg(p)
    add_engine_arg(p)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this key (Authorization: Bearer) on every route but /health "
                   "(default: $VLM3_API_KEY if set; prefer the variable: a flag lands in shell history)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("generate", help="ask the validation set and probes; save predictions (resumable)")
    add_endpoint_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="generate, then score and write the report")
    add_endpoint_args(p)
    add_judge_flag(p)
    p.add_argument("--fail-under", type=float, metavar="RATE", help="exit 1 when the probe pass rate is below RATE (0-1): a CI gate")
    p.add_argument("--strict", action="store_true", help="exit 1 when the probes are below eval.probe_pass_threshold")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="re-score saved predictions (no endpoint needed)")
    p.add_argument("eval_dir")
    add_judge_flag(p)
    p.add_argument("--cancel-batches", action="store_true",
                   help="cancel the judge's message batches an interrupted score left running (instead of collecting them)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("judge-estimate", help="judge calls, tokens and dollars for an evaluation, before paying")
    p.add_argument("eval_dir")
    p.set_defaults(func=cmd_judge_estimate)

    p = sub.add_parser("deepeval", help="`deepeval test run` over saved predictions: vlm3 deepeval EVAL_DIR -- -k procedure -n 4")
    p.add_argument("eval_dir")
    p.add_argument("--max-samples", type=int)
    p.add_argument("deepeval_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_deepeval)

    p = sub.add_parser("compare", help="paired comparison of two evaluations (bootstrap 95%% CI)")
    p.add_argument("eval_a")
    p.add_argument("eval_b")
    p.add_argument("--out", help="HTML file (default: compare-<A>-vs-<B>.html beside EVAL_B; a .json beside it)")
    p.add_argument("--fail-if-worse", metavar="METRIC",
                   help="exit 1 when B is worse than A on METRIC (e.g. pass_rate, spec_score, judge:correctness) "
                        "and the 95%% interval excludes zero: a CI gate")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="the whole pipeline on the tiny CPU model")
    p.add_argument("recipe", nargs="?", default="recipes/tiny_cpu_demo.yaml")
    p.add_argument("--runs-root", default="runs")
    p.set_defaults(func=cmd_demo)
