"""Benchmark the reference LoRA training step of Qwen2-VL-7B on one GPU: tokens/s, samples/s, MFU, memory, data wait.

Usage (trainer environment, project root on PYTHONPATH; nothing is downloaded):
    .venv-train/bin/python -m bench.bench_gpu_train --steps 30                       # plain torch + transformers + peft
    .venv-train/bin/python -m bench.bench_gpu_train --steps 30 --no-gradient-checkpointing --liger
    .venv-train/bin/python -m bench.bench_gpu_train --steps 30 --today               # without the frozen-vision fix
    .venv-train/bin/python -m bench.bench_gpu_train --engine axolotl --steps 30      # through `axolotl train`
    .venv-train/bin/python -m bench.bench_gpu_train --model .cache/tiny-qwen2-vl --device cpu --steps 2   # smoke test
    .venv-train/bin/python -m bench.bench_gpu_train --model 7b-shape --device cpu --steps 1 --workers 0   # no folder at all
    bash bench/gpu_check.sh                                                            # the prepared GPU check (all stages)

Qwen2-VL-7B is built from its published config (bench/train_measure.py) with random weights;
rows are synthetic ~1 MP pages: 1,240 visual tokens (a 31 x 40 grid of merged patches, 4,960
patches) and 60-360 text tokens, the LoRA recipe's settings (r 64, alpha 128, dropout 0.05, the
language model's 7 projections, bf16, AdamW fused, lr 2e-4). The first --warmup steps are not
timed. MFU = the plan's FLOPs (vlm3.plan.estimate.batch_flops, the count tests check against
FlopCounterMode) of the timed steps / (time x the card's bf16 peak). Data wait is the time the
training loop spends fetching batches from its DataLoader (plain engine: the synthetic rows are
built by DataLoader workers, as Axolotl's collator builds real pages). The frozen vision tower's
share is measured (its forward calls, timed with CUDA events: with the fix that is all the tower
does; on the --today path its backward and recomputation are not in it) and planned (its FLOPs /
the step's). `--model 7b-shape` is vlm3.demo.tiny_model's toy Qwen2-VL with the 7B's ratios, built from
its config alone (a CPU smoke run that needs no model folder). Prints one JSON object and writes
it to --out.

Runs offline on a machine with torch, transformers and peft (and pydantic, which vlm3.plan.estimate's
import of vlm3.recipe.schema needs) but without Axolotl: vlm3.train.axolotl_plugin imports Axolotl's plugin base
class at its top; where Axolotl is absent a stand-in for that one class is put in its place (the
plain engine uses only the plugin's frozen-vision function, which needs nothing from Axolotl).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import train_measure as tm

ROOT = Path(__file__).resolve().parent.parent
PAGE_GRID = (31, 40)  # merged-patch grid of a 1700x2200 page at 1280*28*28: 1,240 visual tokens
TEXT_TOKENS = (60, 360)
PEAK_TFLOPS = {"H100": 989, "H200": 989, "A100": 312, "L40S": 362, "B200": 2250}  # dense bf16, vendor data sheets


def card_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


class SyntheticPages(torch.utils.data.Dataset):
    """Row i: one page (grid of visual tokens) and a seeded random text length; built on access."""

    def __init__(self, config, rows: int, grid: tuple[int, int], seed: int = 0):
        self.config, self.grid = config, grid
        rng = random.Random(seed)
        self.texts = [rng.randint(*TEXT_TOKENS) for _ in range(rows)]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> dict:
        return tm.synthetic_batch(self.config, [self.grid] * len(indices), [self.texts[i] for i in indices], seed=indices[0])

    def lengths(self) -> list[int]:
        return [self.grid[0] * self.grid[1] + 2 + t for t in self.texts]


def frozen_vision_function():
    """vlm3.train.axolotl_plugin.run_frozen_vision_forward_only, importable without Axolotl (see the module docstring)."""
    try:
        from vlm3.train.axolotl_plugin import run_frozen_vision_forward_only
    except ModuleNotFoundError as exc:
        if not (exc.name or "").split(".")[0] == "axolotl":
            raise
        import types

        for name in ("axolotl", "axolotl.integrations", "axolotl.integrations.base"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["axolotl.integrations.base"].BasePlugin = type("BasePlugin", (), {})  # stand-in: Vlm3Plugin's base only
        try:
            from vlm3.train.axolotl_plugin import run_frozen_vision_forward_only
        finally:
            for name in ("axolotl.integrations.base", "axolotl.integrations", "axolotl"):
                sys.modules.pop(name, None)
        AXOLOTL_STAND_IN.append(True)
    return run_frozen_vision_forward_only


AXOLOTL_STAND_IN: list[bool] = []  # non-empty when the plugin was imported with the stand-in base class


def bench_config(args):
    """The transformers config: a model vlm3 knows or a local folder (bench.train_measure), or `7b-shape`."""
    if args.model == "7b-shape":
        from vlm3.demo.tiny_model import SPECIAL_TOKENS, VOCAB_SIZE, seven_b_shape_config

        ids = {token: VOCAB_SIZE + i for i, token in enumerate(SPECIAL_TOKENS)}  # as the tiny tokenizer numbers them
        config = seven_b_shape_config(ids, VOCAB_SIZE + len(SPECIAL_TOKENS))
        if args.layers:
            config.text_config.num_hidden_layers = config.text_config.max_window_layers = args.layers
        if args.vision_depth:
            config.vision_config.depth = args.vision_depth
        for c in (config, config.text_config, config.vision_config):
            c._attn_implementation = "sdpa"
        return config
    return tm.family_config(args.model, args.layers, args.vision_depth, attn="sdpa")


def default_grid(model: str) -> tuple[int, int]:
    """~1 MP pages for the full-size models; 4x4 visual tokens for a local folder or the toy 7b-shape."""
    known = model in tm.ALIASES or "/" in model and not Path(model).exists()
    return PAGE_GRID if known and model != "7b-shape" else (4, 4)


class TowerTimer:
    """Time spent in the vision tower's forward calls: CUDA events on a GPU (no synchronisation per call),
    wall time on a CPU (where the calls are synchronous)."""

    def __init__(self, tower, device: str):
        self.cuda = device == "cuda"
        self.pairs: list = []
        self.seconds = 0.0
        self.calls = 0
        self._start = None
        tower.register_forward_pre_hook(self._before)
        tower.register_forward_hook(self._after)

    def _before(self, module, args):
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def _after(self, module, args, output):
        self.calls += 1
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pairs.append((self._start, end))
        else:
            self.seconds += time.perf_counter() - self._start

    def reset(self):
        self.pairs, self.seconds, self.calls = [], 0.0, 0

    def total(self) -> float:
        """Seconds (call after a synchronisation)."""
        return self.seconds + sum(a.elapsed_time(b) for a, b in self.pairs) / 1000


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("torch", "transformers", "peft", "liger-kernel", "pydantic", "axolotl"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def length_grouped_order(lengths: list[int], group: int, seed: int = 0) -> list[int]:
    from vlm3.plan.estimate import micro_batches

    return [i for batch in micro_batches(lengths, 1, True, group, seed) for i in batch]


def run_plain(args) -> dict:
    """LoRA training with transformers + peft and our own loop (the step Axolotl's Trainer runs)."""
    from vlm3.plan.estimate import Training, batch_flops, shape_from_config

    device = args.device
    built = time.perf_counter()
    config = bench_config(args)
    if args.liger:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2_vl

        apply_liger_kernel_to_qwen2_vl(rope=True, rms_norm=True, layer_norm=True, swiglu=True, fused_linear_cross_entropy=True)
    dtype = torch.bfloat16
    model = tm.build_model(config, dtype=dtype, device=device, init="empty")
    model = tm.attach_lora(model, r=64, alpha=128, dropout=0.05)
    model.enable_input_require_grads()  # as Axolotl and PEFT do: the path the fix corrects
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    run_frozen_vision_forward_only = frozen_vision_function()
    if not args.today:
        run_frozen_vision_forward_only(model)
    from vlm3.train.axolotl_plugin import vision_tower

    tower_timer = TowerTimer(vision_tower(model), device)
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if device == "cuda":
        torch.cuda.synchronize()
    build_seconds = time.perf_counter() - built
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, fused=device == "cuda")

    grid = tuple(args.grid) if args.grid else default_grid(args.model)
    micro, accum = args.micro_batch_size, args.gradient_accumulation_steps
    total_steps = args.warmup + args.steps
    dataset = SyntheticPages(config, micro * accum * total_steps, grid)
    order = length_grouped_order(dataset.lengths(), micro * accum)
    loader = torch.utils.data.DataLoader(dataset, batch_size=micro, sampler=order, collate_fn=dataset.collate,
                                         num_workers=args.workers, pin_memory=device == "cuda", persistent_workers=args.workers > 0)
    shape = shape_from_config(config.to_dict())
    training = Training(lora_r=64, lora_dropout=0.05, gradient_checkpointing=args.gradient_checkpointing,
                        vision_forward_only=not args.today, fused_cross_entropy=args.liger)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    batches = iter(loader)
    wait = flops = vision_plan = 0.0
    tokens = positions = samples = 0
    start = None
    step_seconds: list[float] = []
    for step in range(total_steps):
        if step == args.warmup:
            sync()
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start, wait, flops, vision_plan, tokens, positions, samples = time.perf_counter(), 0.0, 0.0, 0.0, 0, 0, 0
            tower_timer.reset()
        step_started = time.perf_counter()
        for _ in range(accum):
            fetched = time.perf_counter()
            batch = next(batches)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            wait += time.perf_counter() - fetched
            loss = model(**batch).loss / accum
            loss.backward()
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            work = batch_flops(shape, lengths, [grid[0] * grid[1]] * len(lengths), training)
            flops += work.total
            vision_plan += work.vision_forward + work.vision_backward + work.vision_recompute
            tokens += sum(lengths)
            positions += batch["attention_mask"].numel()
            samples += len(lengths)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup and args.step_times:
            sync()  # per-step times only when asked: the synchronisation itself costs a little
            step_seconds.append(time.perf_counter() - step_started)
    sync()
    seconds = time.perf_counter() - start
    vision_seconds = tower_timer.total()
    peak = card_peak_tflops()
    final_loss = loss.item() * accum
    return {
        "engine": "plain", "model": args.model, "device": torch.cuda.get_device_name() if device == "cuda" else device,
        "gradient_checkpointing": args.gradient_checkpointing, "vision_fix": not args.today, "liger": args.liger,
        "layers": config.text_config.num_hidden_layers, "vision_depth": config.vision_config.depth,
        "hidden_size": config.text_config.hidden_size, "parameters": parameters, "trainable_parameters": trainable,
        "grid": list(grid), "visual_tokens_per_page": grid[0] * grid[1],
        "micro_batch_size": micro, "gradient_accumulation_steps": accum, "warmup_steps": args.warmup,
        "timed_steps": args.steps, "seconds": seconds, "build_seconds": build_seconds,
        "step_seconds": step_seconds or None,
        "samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds, "padding": 1 - tokens / positions,
        "plan_flops": flops, "achieved_tflops": flops / seconds / 1e12,
        "peak_tflops": peak, "mfu": flops / seconds / (peak * 1e12) if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if device == "cuda" else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if device == "cuda" else None,
        "vision_forward_calls": tower_timer.calls, "vision_forward_s": vision_seconds,
        "vision_time_share": vision_seconds / seconds, "vision_plan_flops_share": vision_plan / flops if flops else None,
        "data_wait_s": wait, "data_wait_fraction": wait / seconds,
        "final_loss": final_loss, "loss_finite": final_loss == final_loss and abs(final_loss) != float("inf"),
        "axolotl_stand_in": bool(AXOLOTL_STAND_IN), "versions": versions(),
    }


def run_axolotl(args) -> dict:
    """The same model written to a folder, synthetic page JPEGs, the project's rendered config, `axolotl train`."""
    from PIL import Image

    from vlm3.recipe.schema import load_recipe
    from vlm3.train.render import render_axolotl_config
    from vlm3.train.trainer_env import TrainerEnv, TrainingLog

    import yaml

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vlm3-bench-gpu-"))
    model_dir = work / "model"
    tiny = ROOT / ".cache" / "tiny-qwen2-vl"
    if not (model_dir / "config.json").exists():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(tiny)  # a local tokenizer with Qwen2-VL's special tokens
        processor.image_processor.min_pixels, processor.image_processor.max_pixels = 3136, 1003520
        processor.image_processor.size = {"shortest_edge": 3136, "longest_edge": 1003520}
        config = tm.family_config(args.model, args.layers, args.vision_depth)
        tok = processor.tokenizer
        for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
            setattr(config, key, tok.convert_tokens_to_ids(token))
        model = tm.build_model(config, dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu", init="empty")
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        del model
    run = work / "run"
    (run / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    rows = args.micro_batch_size * args.gradient_accumulation_steps * (args.steps + args.warmup)
    images = work / "images"
    images.mkdir(exist_ok=True)
    with (run / "data" / "train.jsonl").open("w") as out:
        for i in range(rows):
            page = images / f"{i % 50:02d}.jpg"
            if not page.exists():
                Image.effect_noise((1700, 2200), 64).convert("RGB").save(page, quality=80)
            answer = " ".join(rng.choice(["torque", "12", "Nm", "valve", "clearance", "0.25", "mm"]) for _ in range(rng.randint(30, 200)))
            messages = [{"role": "user", "content": [{"type": "image", "path": str(page)}, {"type": "text", "text": "What does the page say?"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
            out.write(json.dumps({"id": str(i), "messages": messages, "length": 1240 + 40 + len(answer) // 3}) + "\n")
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml", overrides={
        "train.max_steps": args.steps + args.warmup, "train.gradient_checkpointing": args.gradient_checkpointing,
        "train.liger": args.liger, "train.micro_batch_size": args.micro_batch_size,
        "train.gradient_accumulation_steps": args.gradient_accumulation_steps, "train.logging_steps": 1,
        "train.save_steps": 10_000})
    config = render_axolotl_config(recipe, base_model=str(model_dir), has_val=False)
    if args.today:
        config["plugins"] = [p for p in config["plugins"] if not p.startswith("vlm3.")]
    (run / "axolotl.yaml").write_text(yaml.safe_dump(config))
    env = TrainerEnv.current()
    log = TrainingLog()
    started = time.perf_counter()
    code = env.run_logged([env.axolotl, "train", "axolotl.yaml", "--launcher", "python"], run / "train.log", cwd=run, on_output=log.feed)
    text = (run / "train.log").read_text(errors="replace")
    rates = [float(v) for v in re.findall(r"'tokens/train_per_sec_per_gpu': '?([\d.]+)", text)]
    memory = [float(v) for v in re.findall(r"'memory/max_allocated \(GiB\)': '?([\d.]+)", text)]
    padding = json.loads((run / "output" / "padding.json").read_text()) if (run / "output" / "padding.json").exists() else None
    return {"engine": "axolotl", "exit_code": code, "wall_s": time.perf_counter() - started, "trainer": log.summary,
            "tokens_per_s_logged": rates[args.warmup:] if len(rates) > args.warmup else rates,
            "peak_memory_gib": max(memory) if memory else None, "padding": padding, "log": str(run / "train.log"),
            "gradient_checkpointing": args.gradient_checkpointing, "vision_fix": not args.today, "liger": args.liger}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["auto", "plain", "axolotl"], default="plain",
                        help="auto: axolotl where it is installed, else plain")
    parser.add_argument("--model", default="7b", help="7b, qwen2.5-vl-7b, qwen3-vl-8b or a Hub id vlm3 knows (built from its published config), "
                        "a local model folder, or 7b-shape (the toy Qwen2-VL with the 7B's ratios, vlm3.demo.tiny_model)")
    parser.add_argument("--layers", type=int, help="fewer decoder layers (a short check)")
    parser.add_argument("--vision-depth", type=int)
    parser.add_argument("--grid", type=int, nargs=2, help="visual-token grid per page (default 31 40: ~1 MP)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=8)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--today", action="store_true", help="leave the frozen vision tower hooked (no fix)")
    parser.add_argument("--liger", action="store_true", help="Liger kernels (GPU only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--step-times", action="store_true", help="record each timed step's seconds (synchronises per step)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (a CPU smoke run on a shared box)")
    parser.add_argument("--workdir", help="axolotl engine: where the model folder, pages and run go")
    parser.add_argument("--out", type=Path, default=Path("bench_gpu_train.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch sees no CUDA device")
    engine = args.engine
    if engine == "auto":
        try:
            import axolotl  # noqa: F401

            engine = "axolotl"
        except ImportError:
            engine = "plain"
    result = run_axolotl(args) if engine == "axolotl" else run_plain(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    print(f"wrote {args.out}; next: record the numbers and this command in BENCHMARKS.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
