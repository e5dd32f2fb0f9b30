"""Price a training run before any GPU starts: tokens, FLOPs, hours, dollars and memory.

Usage:
    plan = plan_run(recipe, dataset_tokens)          # pure arithmetic over counted tokens
    print(format_plan(plan))

FLOPs per trained token: 2N forward + 2N for activation gradients; full fine-tuning adds 2N
for weight gradients; gradient checkpointing adds another forward (2N). So LoRA is ~4N
without checkpointing and ~6N with it (the weight gradients of the adapters are negligible).
The frozen vision tower runs forward only: 2 x its parameters per vision patch (4 patches
make one visual token). Hours = FLOPs / (peak x MFU) for an efficiency band of MFU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlm3.recipe import Recipe

GIB = 1024**3

# One table for the hardware: peak dense bf16 TFLOP/s (vendor data sheets), memory (GB) and
# Modal's list price per GPU-hour (third-party snapshots, mid-2026; None where not recorded).
GPUS: dict[str, dict] = {
    "H100": {"tflops": 989, "memory_gb": 80, "usd_per_hour": 3.95},
    "H200": {"tflops": 989, "memory_gb": 141, "usd_per_hour": None},
    "B200": {"tflops": 2250, "memory_gb": 180, "usd_per_hour": None},
    "A100-80GB": {"tflops": 312, "memory_gb": 80, "usd_per_hour": 2.50},
    "A100-40GB": {"tflops": 312, "memory_gb": 40, "usd_per_hour": None},
    "L40S": {"tflops": 362, "memory_gb": 48, "usd_per_hour": 1.95},
    "A10G": {"tflops": 70, "memory_gb": 24, "usd_per_hour": 1.10},
    "L4": {"tflops": 121, "memory_gb": 24, "usd_per_hour": 0.80},
    "T4": {"tflops": 65, "memory_gb": 16, "usd_per_hour": None},
}
PRICES_AS_OF = "mid-2026 list prices (third-party snapshots of modal.com/pricing)"
MFU_BAND = (0.25, 0.45)  # model FLOPs utilisation: a pessimistic and a good run of LoRA on Hopper/Ampere

# Shapes of the models we know; a local model's shape is read from its config.json instead.
MODELS: dict[str, dict] = {
    "Qwen/Qwen2-VL-7B-Instruct": {
        "lm_params": 7.07e9, "vision_params": 0.675e9, "hidden": 3584, "layers": 28,
        "intermediate": 18944, "heads": 28, "kv_heads": 4, "vocab": 152064,
    },
    "Qwen/Qwen2-VL-2B-Instruct": {
        "lm_params": 1.54e9, "vision_params": 0.675e9, "hidden": 1536, "layers": 28,
        "intermediate": 8960, "heads": 12, "kv_heads": 2, "vocab": 151936,
    },
}
PATCHES_PER_VISUAL_TOKEN = 4  # 2x2 merge


@dataclass(frozen=True)
class DatasetTokens:
    """Counted once from the data (see data_adapters.checks)."""

    samples: int
    text_tokens: int
    visual_tokens: int
    max_row_tokens: int = 0

    @property
    def total(self) -> int:
        return self.text_tokens + self.visual_tokens


@dataclass
class GpuEstimate:
    gpu: str
    count: int
    hours: tuple[float, float]  # at the high and the low end of the MFU band
    usd: tuple[float, float] | None
    memory_gb: float
    fits: bool


@dataclass
class Plan:
    recipe: str
    method: str
    epochs: int
    samples_per_epoch: int
    tokens_per_epoch: int
    visual_tokens_per_epoch: int
    steps: int
    flops: float
    flops_per_token: float
    memory_gb: float
    gpus: list[GpuEstimate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def model_shape(recipe: Recipe) -> dict:
    if recipe.model.base in MODELS:
        return MODELS[recipe.model.base]
    from pathlib import Path

    config_file = Path(recipe.model.base) / "config.json"
    if config_file.exists():
        import json

        config = json.loads(config_file.read_text())
        text = config.get("text_config", config)
        vision = config.get("vision_config", {})
        hidden, layers, inter = text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]
        heads, kv = text["num_attention_heads"], text.get("num_key_value_heads") or text["num_attention_heads"]
        head_dim = hidden // heads
        per_layer = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * inter
        vocab = text["vocab_size"]
        embed = vision.get("embed_dim", 0)
        vision_params = vision.get("depth", 0) * 12 * embed * embed
        return {"lm_params": layers * per_layer + 2 * vocab * hidden, "vision_params": vision_params, "hidden": hidden,
                "layers": layers, "intermediate": inter, "heads": heads, "kv_heads": kv, "vocab": vocab}
    return MODELS["Qwen/Qwen2-VL-7B-Instruct"]  # unknown Hub id: assume the 7B shape (said in the output)


def lora_params(shape: dict, recipe: Recipe) -> float:
    """r x (in + out) per adapted projection, per layer."""
    hidden, inter = shape["hidden"], shape["intermediate"]
    head_dim = hidden // shape["heads"]
    kv = shape["kv_heads"] * head_dim
    dims = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
    r = recipe.train.lora.r
    return shape["layers"] * sum(r * (dims[m][0] + dims[m][1]) for m in recipe.train.lora.target_modules if m in dims)


def flops_per_token(recipe: Recipe, lm_params: float) -> float:
    factor = 4.0 if recipe.train.method != "full" else 6.0
    if recipe.train.gradient_checkpointing:
        factor += 2.0
    return factor * lm_params


def memory_gb(recipe: Recipe, shape: dict, max_row_tokens: int, gpu_count: int) -> float:
    """Weights + trainable state + activations of one micro-batch, per GPU (a planning figure, +-30%)."""
    total_params = shape["lm_params"] + shape["vision_params"]
    method = recipe.train.method
    weights = total_params * (0.55 if method == "qlora" else 2.0)  # nf4 with its scales vs bf16
    if method == "full":
        # bf16 weights + fp32 grads, master weights and two Adam moments: 2 + 4 + 4 + 8 bytes
        state = total_params * 16.0
        if recipe.train.deepspeed == "zero3":
            weights, state = weights / gpu_count, state / gpu_count
        elif recipe.train.deepspeed in ("zero1", "zero2"):
            state = total_params * 2 + total_params * 14.0 / gpu_count
    else:
        state = lora_params(shape, recipe) * 16.0
    seq = min(max_row_tokens or recipe.train.sequence_len, recipe.train.sequence_len)
    tokens = recipe.train.micro_batch_size * seq
    hidden, layers = shape["hidden"], shape["layers"]
    if recipe.train.gradient_checkpointing:
        activations = tokens * hidden * 2 * layers + tokens * hidden * 34  # layer inputs + one layer's working set
    else:
        activations = tokens * hidden * 34 * layers  # ~34 bf16 values per token and layer (attention with flash kernels)
    logits = tokens * shape["vocab"] * 4  # fp32 logits for the loss
    overhead = 1.5 * GIB  # CUDA context and allocator slack
    return (weights + state + activations + logits + overhead) / GIB


def plan_run(recipe: Recipe, data: DatasetTokens, gpus: list[str] | None = None) -> Plan:
    shape = model_shape(recipe)
    samples = min(data.samples, recipe.data.max_samples or data.samples)
    scale = samples / data.samples if data.samples else 0.0
    tokens_epoch = int(data.total * scale)
    visual_epoch = int(data.visual_tokens * scale)
    per_token = flops_per_token(recipe, shape["lm_params"])
    vision_flops = 2 * shape["vision_params"] * PATCHES_PER_VISUAL_TOKEN * visual_epoch
    flops = recipe.train.epochs * (per_token * tokens_epoch + vision_flops)
    count = max(recipe.compute.gpu_count, 1)
    batch = recipe.train.micro_batch_size * recipe.train.gradient_accumulation_steps * count
    steps = recipe.train.epochs * -(-samples // batch) if samples else 0
    if recipe.train.max_steps:
        steps = min(steps, recipe.train.max_steps)
    memory = memory_gb(recipe, shape, data.max_row_tokens, count)
    plan = Plan(recipe.name, recipe.train.method, recipe.train.epochs, samples, tokens_epoch, visual_epoch, steps, flops, per_token, memory)
    if recipe.model.base not in MODELS and not recipe.model.base.startswith((".", "/")):
        plan.warnings.append(f"{recipe.model.base} is not in the shape table: figures assume Qwen2-VL-7B")
    names = gpus or [recipe.compute.gpu_type] + [g for g in ("H100", "A100-80GB", "L40S") if g != recipe.compute.gpu_type]
    for name in names:
        spec = GPUS.get(name)
        if spec is None:
            continue
        peak = spec["tflops"] * 1e12 * count
        hours = tuple(flops / (peak * mfu) / 3600 for mfu in reversed(MFU_BAND))
        usd = tuple(h * spec["usd_per_hour"] * count for h in hours) if spec["usd_per_hour"] else None
        fits = memory <= spec["memory_gb"] * 0.95
        plan.gpus.append(GpuEstimate(name, count, hours, usd, memory, fits))
        if name == recipe.compute.gpu_type:
            if not fits:
                plan.warnings.append(
                    f"~{memory:.0f} GB per GPU will not fit a {spec['memory_gb']} GB {name}: lower micro_batch_size or "
                    "images.max_pixels, enable gradient checkpointing, or use QLoRA"
                )
            if recipe.train.method == "qlora" and spec["memory_gb"] >= 80:
                plan.warnings.append(f"QLoRA on an {spec['memory_gb']} GB {name} is ~1.8x slower than bf16 LoRA, which fits: use method lora")
    return plan


def format_plan(plan: Plan) -> str:
    epochs = max(plan.epochs, 1)
    text = plan.tokens_per_epoch - plan.visual_tokens_per_epoch
    lines = [
        f"{plan.recipe}: {plan.method}, {plan.steps:,} optimizer steps; {plan.flops_per_token:.3g} FLOPs per token; memory ~{plan.memory_gb:.1f} GB per GPU",
        f"  {'':<16} {'per epoch':>14} {'total (' + str(epochs) + ' epochs)':>20}",
        f"  {'samples':<16} {plan.samples_per_epoch:>14,} {plan.samples_per_epoch * epochs:>20,}",
        f"  {'text tokens':<16} {text:>14,} {text * epochs:>20,}",
        f"  {'visual tokens':<16} {plan.visual_tokens_per_epoch:>14,} {plan.visual_tokens_per_epoch * epochs:>20,}",
        f"  {'training FLOPs':<16} {plan.flops / epochs:>14.3g} {plan.flops:>20.3g}",
        f"  {'GPU':<12} {'hours/epoch':>13} {'hours total':>15} {'dollars total':>19}  fits   (MFU {MFU_BAND[0]:.0%}-{MFU_BAND[1]:.0%}; {PRICES_AS_OF})",
    ]
    for est in plan.gpus:
        gpu = f"{est.gpu}:{est.count}" if est.count > 1 else est.gpu
        usd = f"${est.usd[0]:,.2f}-{est.usd[1]:,.2f}" if est.usd else "-"
        per_epoch = f"{est.hours[0] / epochs:.2f}-{est.hours[1] / epochs:.2f}"
        lines.append(f"  {gpu:<12} {per_epoch:>13} {est.hours[0]:>7.2f}-{est.hours[1]:<7.2f} {usd:>19}  {'yes' if est.fits else 'NO'}")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
