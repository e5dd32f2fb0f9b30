"""Price a training run before any GPU starts: FLOPs, hours, dollars and memory, from first principles.

Usage:
    plan = plan_run(recipe, dataset_tokens)          # pure arithmetic over the data's counted rows
    print(format_plan(plan))
    shape = shape_of("Qwen/Qwen3-VL-8B-Instruct")    # or a model folder: total_params, kv_bytes_per_token, lora_trainable(r, targets)

FLOPs are counted the way torch.utils.flop_counter.FlopCounterMode counts a real step (tests
compare the two): 2 per multiply-add of every matmul, attention as 4·S²·width per layer
(QKᵀ and AV over the padded length S, no causal discount). Per micro-batch of B rows padded
to S tokens the language model does, for T = B·S positions:
  forward    L·(2T·P_layer + LoRA + attention) + 2T·width·vocab (lm_head)
  backward   frozen weights: gradients of inputs only (1× their forward), LoRA 2×, attention 2×;
             full fine-tuning: 2× everything
  recompute  one more forward of the decoder layers when gradient checkpointing is on
The vision tower runs per image over P = merge²·visual tokens patches (4 in all three families):
patch embedding, per block 2·P·(4d² + MLP) (qkv, proj, and fc1/fc2 or Qwen2.5-VL's gated
gate/up/down) + 4·P²·d of attention inside the page, except that Qwen2.5-VL's windowed blocks
(all but fullatt_block_indexes) attend inside windows of 112 px (64 patches); then the 2×2 merger,
and Qwen3-VL's deepstack mergers (one per deepstack_visual_indexes entry, the merger's size).
Frozen (the default), it runs forward only: vlm3/train/axolotl_plugin.py runs it under no_grad
(without it, Axolotl's and PEFT's input-embedding hooks re-run and backpropagate it).
Padding comes from simulating the trainer's batches over the data's own row lengths, with
the length-grouped sampler when `group_by_length` is on; evaluation adds forward passes over
the validation rows every eval_steps.
The shapes come from the model's config.json (`shape_of`: vlm3.recipe.families' published configs or a
local folder's), for Qwen2-VL, Qwen2.5-VL and Qwen3-VL alike.

Memory: weights (every parameter, counted as transformers builds the model), trainable state,
activations per token per layer (enumerated from what autograd saves in the family's decoder
layer; a test counts them with saved-tensor hooks on one full-width layer of each family),
logits and loss, vision working set, CUDA context.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from vlm3.recipe.families import FAMILIES, FamilyError, is_local, read_config
from vlm3.recipe.schema import Recipe

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
# Model FLOPs utilisation band. Not measured here (no GPU yet): 25% is a data-bound or badly padded
# LoRA run, 45% a well-fed bf16 LoRA on Hopper/Ampere with flash attention. bench/bench_gpu_train.py
# measures the real figure; replace the band with it once it has run on the recipe's card.
MFU_BAND = (0.25, 0.45)
MFU_SOURCE = "assumed, not yet measured: run bench/bench_gpu_train.py on the card to replace it"
# A CPU recipe (compute.gpu: cpu) trains locally on this machine's cores, in fp32: priced in hours of CPU time,
# not dollars. Effective training FLOP/s per core: the tiny demo (recipes/tiny_cpu_demo.yaml, ~1e9 FLOPs per
# step) measured 0.3-1.4 GFLOP/s per core on this project's shared 2-core Xeon box (busy and idle stretches of
# one run); its recipe's "about a minute" is ~4. A toy model's step is mostly overhead, so this is a rough band.
CPU_GFLOPS_PER_CORE = (0.3, 4.0)
CPU_SOURCE = "measured for the tiny demo on a shared 2-core Xeon (busy to idle), not on this machine"

# Fixed costs of a Modal run, outside the training FLOPs, in minutes and where they run: "train" the recipe's
# card, "serve" the serving card, "cpu" a CPU container (MERGE_GPU = None in vlm3/cloud/support.py). The project
# has no CPU price on file, so CPU-container minutes are named but left out of the dollars. Assumed from the
# model's size (16.6 GB of bf16 weights), not measured on Modal yet: replace with a train-dev run's stage
# timings (status.json). vlm3.plan.estimate.fixed_costs keeps the ones the recipe's choices incur.
START_MINUTES = 4.0  # container start, model load and data preparation
DOWNLOAD_MINUTES = 3.0  # a Hub model's first download into the vlm3-hf-cache volume
MERGE_MINUTES = 15.0  # Axolotl's merge and the fp32 merge check on 8 CPU cores (modal_support.MERGE_CPU: "its 10-20 minutes")
SMOKE_MINUTES = 5.0  # vLLM start and one request on the serving card
FIRST_IMAGE_BUILD = ("the first trainer image build compiles flash-attention (train.flash_attention; ~90 min of CPU, "
                     "once; Modal caches the image)")

BF16, FP32 = 2, 4  # bytes
# bitsandbytes NF4 with double quantization: 4 bits, an 8-bit absmax per 64 weights, an fp32 scale per 256 absmaxes.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
LOGIT_BYTES_PER_VOCAB_ENTRY = 10  # bf16 logits (2), the fp32 log-softmax the loss saves (4), its fp32 gradient (4)
CUDA_CONTEXT_GIB = 1.5  # CUDA context, cuBLAS workspace and allocator slack
FIT_FRACTION = 0.95  # of a card's memory a plan may fill


@dataclass(frozen=True)
class ModelShape:
    """The widths that set FLOPs and memory, read from a config.json (`shape_from_config`).

    The defaults are Qwen2-VL's vision tower; Qwen2.5-VL and Qwen3-VL differ in the fields after `vision_depth`.
    """

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    explicit_head_dim: int | None = None  # text_config.head_dim where given (Qwen3-VL); else hidden // heads
    qkv_bias: bool = True  # Qwen2-VL and Qwen2.5-VL decoder q/k/v carry biases; Qwen3-VL's do not
    qk_norm: bool = False  # Qwen3-VL: an RMSNorm over each head of q and k
    tied_embeddings: bool = False  # lm_head shares the input embedding (the 2B models)
    vision_dim: int = 1280
    vision_depth: int = 32
    vision_intermediate: int = 5120  # Qwen2-VL: embed_dim x mlp_ratio 4
    vision_gated_mlp: bool = False  # Qwen2.5-VL: SiLU-gated gate/up/down; the others fc1/fc2
    vision_layer_norm: bool = True  # LayerNorm (weight and bias) in blocks and merger; Qwen2.5-VL: RMSNorm
    vision_out: int = 0  # the merger's output width (0: the LM's hidden size)
    patch_inputs: int = 3 * 2 * 14 * 14  # channels x temporal patch x patch x patch pixels
    patch_bias: bool = False  # Qwen3-VL's patch embedding has a bias
    merge: int = 2
    window_patches: int = 0  # Qwen2.5-VL: patches per attention window, (window_size / patch)^2; 0: full attention
    full_attention_blocks: tuple[int, ...] = ()  # blocks that attend over the whole image when windows are on
    position_embeddings: int = 0  # Qwen3-VL's learned position table (rows of vision_dim)
    deepstack_mergers: int = 0  # Qwen3-VL: mergers on intermediate blocks, their outputs added to the first LM layers

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each decoder-layer projection."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        """Matmul weights of one decoder layer (what its FLOPs are counted from)."""
        return sum(a * b for a, b in self.projections.values())

    @property
    def lm_params(self) -> int:
        """N of the 4N-per-token convention: decoder projections and lm_head, not the input embedding."""
        return self.layers * self.layer_params + self.vocab * self.hidden

    @property
    def text_params(self) -> int:
        """Every parameter of the language model: embedding, layers with their biases and norms, final norm, lm_head."""
        per_layer = self.layer_params + 2 * self.hidden  # input and post-attention RMSNorm
        per_layer += (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        per_layer += 2 * self.head_dim if self.qk_norm else 0
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * per_layer + self.hidden + head

    @property
    def patches_per_token(self) -> int:
        return self.merge**2

    @property
    def merger_width(self) -> int:
        """A merger's input: merge x merge neighbouring patches concatenated."""
        return self.patches_per_token * self.vision_dim

    @property
    def merger_out(self) -> int:
        return self.vision_out or self.hidden

    @property
    def vision_mlp_matrices(self) -> int:
        return 3 if self.vision_gated_mlp else 2

    @property
    def vision_block_matmul_params(self) -> int:
        d = self.vision_dim
        return 4 * d * d + self.vision_mlp_matrices * d * self.vision_intermediate  # qkv, proj, MLP

    @property
    def merger_matmul_params(self) -> int:
        m = self.merger_width
        return m * m + m * self.merger_out

    @property
    def vision_params(self) -> int:
        """Every parameter of the vision tower: patch embedding, position table, blocks, merger(s)."""
        d, i, m = self.vision_dim, self.vision_intermediate, self.merger_width
        norm = 2 if self.vision_layer_norm else 1  # parameters per normalised feature
        block = self.vision_block_matmul_params + 2 * norm * d + 3 * d + d  # norms, qkv and proj biases
        block += (self.vision_mlp_matrices - 1) * i + d  # MLP biases (gate and up, or fc1; down or fc2)
        merger = self.merger_matmul_params + m + self.merger_out  # its two linears' biases
        embed = self.patch_inputs * d + (d if self.patch_bias else 0) + self.position_embeddings * d
        # The merger normalises each patch (width d) before concatenating; a deepstack merger after (width m).
        return (embed + self.vision_depth * block + merger + norm * d
                + self.deepstack_mergers * (merger + norm * m))

    @property
    def total_params(self) -> int:
        return self.text_params + self.vision_params

    @property
    def kv_bytes_per_token(self) -> int:
        """bf16 KV cache per token in serving: k and v, every layer, every kv head."""
        return 2 * self.layers * self.kv_dim * BF16

    def lora_trainable(self, r: int, targets: tuple[str, ...] | list[str]) -> int:
        """Trainable parameters of an LM-only LoRA of rank r on the named projections (r x (in + out) each)."""
        unknown = [t for t in targets if t not in self.projections]
        if unknown:
            raise ValueError(f"LoRA targets {unknown} are not decoder projections; use {list(self.projections)}")
        return self.layers * sum(r * (i + o) for m, (i, o) in self.projections.items() if m in targets)


def shape_from_config(config: dict) -> ModelShape:
    """The shape of a Qwen2-VL, Qwen2.5-VL or Qwen3-VL config.json (as a dict; text fields nested or flat)."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        names = ", ".join(FAMILIES)
        raise FamilyError(f"config.json model_type {model_type!r} is not a family vlm3 can price ({names})")
    text = config.get("text_config") or config
    vision = config.get("vision_config") or {}
    heads = text["num_attention_heads"]
    common = dict(
        hidden=text["hidden_size"], layers=text["num_hidden_layers"], intermediate=text["intermediate_size"], heads=heads,
        kv_heads=text.get("num_key_value_heads") or heads, vocab=text["vocab_size"],
        explicit_head_dim=text.get("head_dim"),
        tied_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        vision_depth=vision.get("depth", 32), merge=vision.get("spatial_merge_size", 2),
    )
    patch = vision.get("patch_size", 16 if model_type == "qwen3_vl" else 14)
    patch_inputs = vision.get("in_channels", vision.get("in_chans", 3)) * vision.get("temporal_patch_size", 2) * patch**2
    if model_type == "qwen2_vl":
        dim = vision.get("embed_dim", 1280)
        return ModelShape(**common, vision_dim=dim, vision_intermediate=int(dim * vision.get("mlp_ratio", 4)),
                          vision_out=vision.get("hidden_size", common["hidden"]), patch_inputs=patch_inputs)
    if model_type == "qwen2_5_vl":
        # transformers' Qwen2_5_VLVisionConfig defaults where a config leaves them out
        window = vision.get("window_size", 112) // patch  # window side in patches (112 px / 14 = 8)
        return ModelShape(**common, vision_dim=vision.get("hidden_size", 1280), vision_intermediate=vision.get("intermediate_size", 3420),
                          vision_gated_mlp=True, vision_layer_norm=False, vision_out=vision.get("out_hidden_size", common["hidden"]),
                          patch_inputs=patch_inputs, window_patches=window * window,
                          full_attention_blocks=tuple(vision.get("fullatt_block_indexes", (7, 15, 23, 31))))
    return ModelShape(**{**common, "qkv_bias": bool(text.get("attention_bias", False))}, qk_norm=True,
                      vision_dim=vision.get("hidden_size", 1152), vision_intermediate=vision.get("intermediate_size", 4304),
                      vision_out=vision.get("out_hidden_size", common["hidden"]), patch_inputs=patch_inputs, patch_bias=True,
                      position_embeddings=vision.get("num_position_embeddings", 2304),
                      deepstack_mergers=len(vision.get("deepstack_visual_indexes", (8, 16, 24))))


def shape_of(base: str) -> ModelShape:
    """The shape of a Hub id vlm3 knows (vlm3.recipe.families.KNOWN_CONFIGS) or a local model folder (its config.json).

    FamilyError (one sentence) for anything else: vlm3 does not price a model it cannot read."""
    return shape_from_config(read_config(base))


def model_shape(recipe: Recipe) -> ModelShape:
    return shape_of(recipe.model.base)


@dataclass(frozen=True)
class Training:
    """What of the recipe sets the work per step."""

    method: str = "lora"  # lora | qlora | full
    lora_r: int = 64
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = True
    vision_trained: bool = False  # full fine-tuning or LoRA on the tower
    vision_forward_only: bool = True  # our plugin; False prices today's Axolotl path (hooked tower)
    fused_cross_entropy: bool = False  # Liger's fused linear cross-entropy: no full logits in memory

    @classmethod
    def of(cls, recipe: Recipe, **changes) -> "Training":
        train = recipe.train
        values = dict(
            method=train.method, lora_r=train.lora.r, lora_targets=tuple(train.lora.target_modules),
            lora_dropout=train.lora.dropout, gradient_checkpointing=train.gradient_checkpointing and not recipe.on_cpu,
            vision_trained=train.method == "full" or train.lora.include_vision_tower,
            fused_cross_entropy=train.liger and not recipe.on_cpu,
        )
        values.update(changes)
        return cls(**values)


@dataclass
class Flops:
    """FLOPs of some work, by part."""

    lm_forward: float = 0.0
    lm_backward: float = 0.0
    lm_recompute: float = 0.0
    vision_forward: float = 0.0
    vision_backward: float = 0.0
    vision_recompute: float = 0.0

    @property
    def total(self) -> float:
        return (self.lm_forward + self.lm_backward + self.lm_recompute
                + self.vision_forward + self.vision_backward + self.vision_recompute)

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(*(getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__))

    def scaled(self, factor: float) -> "Flops":
        return Flops(*(getattr(self, k) * factor for k in self.__dataclass_fields__))


def lora_params_per_layer(shape: ModelShape, training: Training) -> int:
    """r x (in + out) per adapted projection."""
    if training.method == "full":
        return 0
    return sum(training.lora_r * (i + o) for m, (i, o) in shape.projections.items() if m in training.lora_targets)


def lora_params(shape: ModelShape, recipe: Recipe) -> int:
    """The recipe's trainable LoRA parameters (0 for full fine-tuning)."""
    return 0 if recipe.train.method == "full" else shape.lora_trainable(recipe.train.lora.r, recipe.train.lora.target_modules)


def window_pairs(shape: ModelShape, grid: tuple[int, int]) -> int:
    """Sum over one image's attention windows of (patches in the window)^2: the query-key pairs of a windowed block.

    Qwen2.5-VL tiles the merged-token grid (h x w) into squares of window side / merge tokens from the top left;
    the windows on the bottom and right edges are cut short."""
    side = int(round(shape.window_patches**0.5)) // shape.merge  # merged tokens per window side (8 patches / 2 = 4)
    h, w = grid

    def squares(n: int) -> int:  # sum of squared window extents along one axis
        return (n // side) * side * side + (n % side) ** 2

    return shape.patches_per_token**2 * squares(h) * squares(w)


def attention_pairs(shape: ModelShape, visual_tokens: int, grid: tuple[int, int] | None = None) -> float:
    """Query-key pairs per image summed over the vision blocks (full attention: P^2 in each block).

    Without the grid a windowed block is priced as full windows, P x window_patches (an upper bound)."""
    p = shape.patches_per_token * visual_tokens
    if not shape.window_patches:
        return shape.vision_depth * float(p * p)
    full = sum(1 for b in shape.full_attention_blocks if b < shape.vision_depth)
    windowed = window_pairs(shape, grid) if grid else p * min(p, shape.window_patches)
    return full * float(p * p) + (shape.vision_depth - full) * float(windowed)


def image_flops(shape: ModelShape, visual_tokens: int, grid: tuple[int, int] | None = None) -> tuple[float, float, float]:
    """Forward FLOPs of one image through the vision tower: (patch embedding, blocks, merger and deepstack mergers)."""
    p = shape.patches_per_token * visual_tokens
    d = shape.vision_dim
    embed = 2.0 * p * shape.patch_inputs * d
    blocks = shape.vision_depth * 2.0 * p * shape.vision_block_matmul_params + 4.0 * attention_pairs(shape, visual_tokens, grid) * d
    merger = (1 + shape.deepstack_mergers) * 2.0 * visual_tokens * shape.merger_matmul_params
    return embed, blocks, merger


def vision_flops(shape: ModelShape, visual: list[int], training: Training, train_step: bool = True) -> Flops:
    out = Flops()
    for v in visual:
        if v <= 0:
            continue
        embed, blocks, merger = image_flops(shape, v)
        out.vision_forward += embed + blocks + merger
        if not train_step:
            continue
        attention = 4.0 * attention_pairs(shape, v) * shape.vision_dim
        linear = blocks - attention
        if training.vision_trained:
            out.vision_backward += 2 * (linear + attention + merger) + embed
        elif not training.vision_forward_only:
            # The hooked patch embeddings require grad: input gradients through every block (FlopCounterMode
            # on the tiny Qwen2-VL counts no backward matmul in the merger on this path).
            out.vision_backward += linear + 2 * attention
        else:
            continue
        if training.gradient_checkpointing:
            out.vision_recompute += blocks
    return out


def batch_flops(shape: ModelShape, lengths: list[int], visual: list[int], training: Training, train_step: bool = True) -> Flops:
    """One micro-batch: rows of `lengths` tokens (visual + text) padded to the longest, `visual` tokens per image."""
    if not lengths:
        return Flops()
    rows, seq = len(lengths), max(lengths)
    positions = rows * seq
    linear = 2.0 * positions * shape.layer_params
    lora = 2.0 * positions * lora_params_per_layer(shape, training)
    attention = 4.0 * rows * seq * seq * shape.q_dim  # QK^T and AV over every head
    head = 2.0 * positions * shape.hidden * shape.vocab
    layers = shape.layers
    out = Flops(lm_forward=layers * (linear + lora + attention) + head)
    if train_step:
        if training.method == "full":
            out.lm_backward = layers * (2 * linear + 2 * attention) + 2 * head
        else:
            out.lm_backward = layers * (linear + 2 * lora + 2 * attention) + head
        if training.gradient_checkpointing:
            out.lm_recompute = layers * (linear + lora + attention)
    return out + vision_flops(shape, visual, training, train_step)


def floor_flops(shape: ModelShape, lengths: list[int], visual: list[int], gradient_checkpointing: bool,
                full: bool = False, vision_trained: bool = False) -> float:
    """The convention's floor: 4N per real token (frozen weights: forward and input gradients), 6N for a full
    fine-tune (weight gradients too), 2N more with checkpointing; plus the vision tower's forward, and when the
    tower trains (full fine-tune, or LoRA on it) its backward (2x) and recompute (1x, with checkpointing)."""
    per_token = ((6.0 if full else 4.0) + (2.0 if gradient_checkpointing else 0.0)) * shape.lm_params
    tower = vision_flops(shape, visual, Training(vision_forward_only=True), train_step=False).vision_forward
    if vision_trained:
        tower *= 3.0 + (1.0 if gradient_checkpointing else 0.0)
    return per_token * sum(lengths) + tower


def floor_wording(training: Training) -> str:
    """What the floor counts, in words, for the recipe's method (format_plan's padding line)."""
    lm = "6N" if training.method == "full" else "4N"
    lm += f" (+2N recompute)" if training.gradient_checkpointing else ""
    tower = ("the vision tower's forward and backward (it trains)" if training.vision_trained
             else "the frozen vision tower's forward")
    return f"{lm} per real token + {tower}"


def micro_batches(lengths: list[int], micro_batch: int, grouped: bool, group_batch: int, seed: int = 0) -> list[list[int]]:
    """Row indices of each micro-batch as the trainer draws them: a random order, or HF's length-grouped one
    (random mega-batches of up to 50 x group_batch rows, each sorted longest first)."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    if grouped and order:
        mult = max(1, min(len(lengths) // (group_batch * 4), 50))
        size = mult * group_batch
        order = [i for start in range(0, len(order), size)
                 for i in sorted(order[start:start + size], key=lambda i: lengths[i], reverse=True)]
    return [order[i:i + micro_batch] for i in range(0, len(order), micro_batch)]


@dataclass(frozen=True)
class Rows:
    """Per-row token counts of one split: total (visual + text) and visual (summed over the row's pages);
    `pages` gives each row's pages apart (the vision tower attends within one page), else one page a row."""

    lengths: tuple[int, ...]
    visual: tuple[int, ...]
    pages: tuple[tuple[int, ...], ...] = ()

    def images(self, rows) -> list[int]:
        """Visual tokens of each page of the given rows, in order (what the vision tower runs on)."""
        if self.pages:
            return [v for i in rows for v in self.pages[i]]
        return [self.visual[i] for i in rows]

    def head(self, n: int) -> "Rows":
        return Rows(self.lengths[:n], self.visual[:n], self.pages[:n])


@dataclass(frozen=True)
class DatasetTokens:
    """Counted once from the data (see data_adapters.checks). `train`/`val` hold per-row counts;
    without them every row is taken to have the mean length (no padding can be estimated)."""

    samples: int
    text_tokens: int
    visual_tokens: int
    max_row_tokens: int = 0
    train: Rows | None = None
    val: Rows | None = None

    @property
    def total(self) -> int:
        return self.text_tokens + self.visual_tokens

    def train_rows(self) -> Rows:
        if self.train is not None:
            return self.train
        n = max(self.samples, 1)
        return Rows(tuple([self.total // n] * self.samples), tuple([self.visual_tokens // n] * self.samples))


@dataclass
class EpochWork:
    flops: Flops
    real_tokens: int
    positions: int
    micro_batches: int

    @property
    def padding(self) -> float:
        return 1 - self.real_tokens / self.positions if self.positions else 0.0


def epoch_work(shape: ModelShape, rows: Rows, micro_batch: int, grouped: bool, group_batch: int, training: Training,
               train_step: bool = True, seed: int = 0) -> EpochWork:
    total, real, positions = Flops(), 0, 0
    batches = micro_batches(list(rows.lengths), micro_batch, grouped, group_batch, seed)
    for batch in batches:
        lengths = [rows.lengths[i] for i in batch]
        total = total + batch_flops(shape, lengths, rows.images(batch), training, train_step)
        real += sum(lengths)
        positions += len(lengths) * max(lengths)
    return EpochWork(total, real, positions, len(batches))


def layer_activation_bytes(shape: ModelShape, training: Training, dropout_mask_bytes: int = 1) -> float:
    """Bytes autograd keeps per token for one decoder layer's backward (bf16 compute).

    Enumerated from the Qwen-VL decoder layer as run by PEFT (LoRA weights are fp32, so each adapted
    projection keeps an fp32 copy of its input); frozen base projections keep nothing (an input
    gradient needs only the weight). q is heads x head_dim wide (= h in all three families' 7B/8B):
      RMSNorm x2        fp32 input, 4·h each
      q/k RMSNorm       Qwen3-VL only: fp32 inputs, 4·(q + kv)
      attention (SDPA)  q, k, v, output in bf16: 2·(2q + 2·kv)
      SwiGLU            gate and up outputs and silu(gate), bf16: 3 · 2·I
      LoRA per module   fp32 input 4·in, fp32 A-output 4·r, and with dropout > 0 its mask: CUDA's fused
                        dropout keeps 1 byte per element, the CPU kernel an fp32 noise tensor (4; measured)
    Full fine-tuning keeps the bf16 inputs of the projections instead of the LoRA terms.
    """
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    base = 2 * FP32 * h + BF16 * (2 * q + 2 * kv) + 3 * BF16 * i + (FP32 * (q + kv) if shape.qk_norm else 0)
    if training.method == "full":
        return base + BF16 * (h + q + h + i)  # q/k/v input, o input, gate/up input, down input
    extra = 0.0
    for module, (inputs, _) in shape.projections.items():
        if module in training.lora_targets:
            extra += FP32 * inputs + FP32 * training.lora_r + (dropout_mask_bytes * inputs if training.lora_dropout > 0 else 0)
    return base + extra


@dataclass
class Memory:
    weights: float
    trainable_state: float
    activations: float
    logits: float
    vision: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.trainable_state + self.activations + self.logits + self.vision + self.overhead


def memory_bytes(shape: ModelShape, recipe: Recipe, training: Training, longest_row: int, longest_visual: int, gpu_count: int) -> Memory:
    """Peak bytes per GPU for the longest micro-batch (the length-grouped sampler puts it first)."""
    method = training.method
    total_params = shape.total_params
    precision = recipe.train.precision if recipe.train.precision != "auto" else ("fp32" if recipe.on_cpu else "bf16")
    weights = total_params * (FP32 if precision == "fp32" else BF16)  # vlm3.train.render.precision_keys: "auto" is fp32 on a CPU
    if method == "qlora":  # the decoder's projections in NF4 (vlm3.train.render.qlora_keys); embeddings, head, norms, tower in bf16
        quantized = shape.layers * shape.layer_params
        weights = quantized * NF4_BYTES + (total_params - quantized) * BF16
    if method == "full":
        # bf16 weights + fp32 grads, master weights and two Adam moments: 2 + 4 + 4 + 8 bytes
        state = total_params * 16.0
        if recipe.train.deepspeed == "zero3":
            weights, state = weights / gpu_count, state / gpu_count
        elif recipe.train.deepspeed in ("zero1", "zero2"):
            state = total_params * 2 + total_params * 14.0 / gpu_count
    else:
        state = shape.layers * lora_params_per_layer(shape, training) * 16.0  # fp32 weight, grad, two Adam moments
    seq = min(longest_row or recipe.train.sequence_len, recipe.train.sequence_len)
    tokens = recipe.train.micro_batch_size * seq
    per_layer = layer_activation_bytes(shape, training)
    if training.gradient_checkpointing:
        activations = tokens * (shape.layers * BF16 * shape.hidden + per_layer)  # layer inputs + one layer recomputed
    else:
        activations = tokens * shape.layers * per_layer
    logits = 0.0 if training.fused_cross_entropy else tokens * shape.vocab * LOGIT_BYTES_PER_VOCAB_ENTRY
    images = recipe.train.micro_batch_size * longest_visual
    patches = images * shape.patches_per_token
    d, mlp = shape.vision_dim, shape.vision_mlp_matrices * shape.vision_intermediate
    # fp32 pixel values, and one block's bf16 working set (qkv, attention output, MLP hidden) at a time;
    # Qwen3-VL's deepstack features wait for the LM layers they are added to.
    vision = patches * (FP32 * shape.patch_inputs + BF16 * (3 * d + d + mlp)) + images * shape.deepstack_mergers * BF16 * shape.merger_out
    if not training.vision_forward_only or training.vision_trained:
        vision += patches * shape.vision_depth * BF16 * (d if training.gradient_checkpointing else 6 * d + mlp)
    return Memory(weights, state, activations, logits, vision, 0.0 if recipe.on_cpu else CUDA_CONTEXT_GIB * GIB)


@dataclass
class GpuEstimate:
    gpu: str
    count: int
    hours: tuple[float, float]  # training only, at the high and the low end of the MFU band
    usd: tuple[float, float] | None  # training plus fixed costs
    memory_gb: float
    fits: bool
    usd_per_hour: float | None = None
    fixed_usd: float | None = None


@dataclass
class CpuEstimate:
    """A CPU recipe's training time: FLOPs over CPU_GFLOPS_PER_CORE on this machine's cores (an estimate)."""

    cores: int
    hours: tuple[float, float]  # at the fast and the slow end of the band


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
    flops_per_token: float  # executed training FLOPs per real token
    memory_gb: float
    gpus: list[GpuEstimate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    breakdown: Flops = field(default_factory=Flops)
    eval_flops: float = 0.0
    padding: float = 0.0
    grouped: bool = True
    floor_ratio: float = 0.0
    memory: Memory | None = None
    memory_other_checkpointing_gb: float = 0.0
    fixed: list[tuple[str, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cpu: CpuEstimate | None = None  # set for a CPU recipe, whose table has no GPU rows
    floor: str = ""  # what the floor counts, for the recipe's method (floor_wording)
    flash_attention_build: bool = False  # train.flash_attention on a GPU: the first trainer image compiles flash-attn


def usd_per_hour(gpu: str) -> float | None:
    spec = GPUS.get(gpu)
    return spec["usd_per_hour"] if spec else None


def fixed_costs(recipe: Recipe) -> list[tuple[str, float, str]]:
    """The fixed costs this recipe's Modal run incurs: (what, minutes, where it runs), as the comment above START_MINUTES says."""
    if recipe.on_cpu:
        return []  # trains here, on this machine's cores: no container to start, nothing to rent
    costs = [("container start, model load and data preparation", START_MINUTES, "train")]
    if not is_local(recipe.model.base):
        costs.append(("base-model download (first run only; cached in the vlm3-hf-cache volume)", DOWNLOAD_MINUTES, "train"))
    costs += [("merge and its check (in a CPU container)", MERGE_MINUTES, "cpu"),
              ("smoke test (vLLM start and one request on the serving card)", SMOKE_MINUTES, "serve")]
    return costs


def fixed_cost_usd(recipe: Recipe, train_gpu: str, count: int) -> float | None:
    """Dollars of the priced fixed costs (CPU-container minutes have no price here); None when a card has no price."""
    total = 0.0
    for _, minutes, where in fixed_costs(recipe):
        if where == "cpu":
            continue
        gpu, cards = {"train": (train_gpu, count), "serve": (recipe.serve.gpu.partition(":")[0], 1)}[where]
        price = usd_per_hour(gpu)
        if price is None:
            return None
        total += minutes / 60 * price * cards
    return total


def on_card(recipe: Recipe, gpu: str) -> Recipe:
    """The recipe with compute.gpu set to `gpu` ("A10G", "A100-80GB:4", "cpu"), validated as a recipe file would be."""
    from vlm3.recipe.schema import check_gpu_name, parse_recipe

    check_gpu_name(gpu)  # ValueError: an unknown card, or a count outside 1-8
    raw = recipe.model_dump(exclude_unset=True)
    raw["compute"] = {**raw.get("compute", {}), "gpu": gpu}
    return parse_recipe(raw, f"{recipe.name} on {gpu}")  # RecipeError: e.g. QLoRA on a CPU, DeepSpeed on one card


def step_warnings(recipe: Recipe, steps: int, evaluates: bool) -> list[str]:
    """eval_steps or save_steps the run never reaches: no evaluation loss, no checkpoint before the end."""
    train, warnings = recipe.train, []
    if evaluates and steps and train.eval_steps > steps:
        warnings.append(f"train.eval_steps {train.eval_steps} is more than the run's {steps:,} optimizer steps: no evaluation "
                        f"loss would be logged; set it to at most {steps} (e.g. {max(1, steps // 4)})")
    if steps and train.save_steps > steps:
        warnings.append(f"train.save_steps {train.save_steps} is more than the run's {steps:,} optimizer steps: no checkpoint "
                        f"would be saved before the end, so a crash or preemption restarts from step 0; set it to at most "
                        f"{steps}" + (" (a multiple of eval_steps)" if evaluates else ""))
    return warnings


def plan_run(recipe: Recipe, data: DatasetTokens, gpus: list[str] | None = None) -> Plan:
    """The run's work, time and money. `gpus`: the cards to price ("A10G", "A100-80GB:4"; any in GPUS), by default
    the recipe's and H100, A100-80GB, L40S. A card with a count other than the recipe's is priced as that
    recipe (another global batch); a CPU recipe gets CPU hours and no GPU rows unless cards are named."""
    shape = model_shape(recipe)
    training = Training.of(recipe)
    train = data.train_rows()
    samples = min(len(train.lengths), recipe.data.max_samples or len(train.lengths))
    train = train.head(samples)
    count = max(recipe.compute.gpu_count, 1)
    micro = recipe.train.micro_batch_size
    grouped = bool(recipe.axolotl.get("group_by_length", True))
    group_batch = micro * recipe.train.gradient_accumulation_steps * count
    # Each card draws micro-batches of its own; the plan counts them all (same FLOPs in total).
    epoch = epoch_work(shape, train, micro, grouped, group_batch, training)
    batch = micro * recipe.train.gradient_accumulation_steps * count
    steps_per_epoch = -(-samples // batch) if samples else 0
    steps = recipe.train.epochs * steps_per_epoch
    fraction = 1.0
    if recipe.train.max_steps and steps and recipe.train.max_steps < steps:
        fraction = recipe.train.max_steps / steps
        steps = recipe.train.max_steps
    epochs_done = recipe.train.epochs * fraction
    train_flops = epoch.flops.scaled(epochs_done)

    eval_flops = 0.0
    evaluates = data.val is not None and bool(data.val.lengths)
    if evaluates:
        val = data.val
        if recipe.data.max_val_samples:
            val = val.head(recipe.data.max_val_samples)
        per_eval = epoch_work(shape, val, micro, grouped, micro, training, train_step=False).flops.total
        eval_flops = (steps // recipe.train.eval_steps) * per_eval

    flops = train_flops.total + eval_flops
    real_tokens = epoch.real_tokens * epochs_done
    floor = floor_flops(shape, list(train.lengths), train.images(range(len(train.lengths))), training.gradient_checkpointing,
                        full=training.method == "full", vision_trained=training.vision_trained) * epochs_done
    longest = max(train.lengths, default=0) or data.max_row_tokens
    longest_visual = max(train.visual, default=0)
    memory = memory_bytes(shape, recipe, training, longest, longest_visual, count)
    other = memory_bytes(shape, recipe, Training.of(recipe, gradient_checkpointing=not training.gradient_checkpointing),
                         longest, longest_visual, count)
    visual_epoch = sum(train.visual)
    plan = Plan(recipe.name, recipe.train.method, recipe.train.epochs, samples, sum(train.lengths), visual_epoch, steps, flops,
                train_flops.total / real_tokens if real_tokens else 0.0, memory.total / GIB, breakdown=train_flops,
                eval_flops=eval_flops, padding=epoch.padding, grouped=grouped, floor_ratio=train_flops.total / floor if floor else 0.0,
                memory=memory, memory_other_checkpointing_gb=other.total / GIB, fixed=fixed_costs(recipe), floor=floor_wording(training),
                flash_attention_build=recipe.train.flash_attention and not recipe.on_cpu)
    if data.train is None:
        plan.notes.append("no per-row lengths given: padding is not estimated")
    plan.warnings += step_warnings(recipe, steps, evaluates)
    if recipe.on_cpu:
        cores = os.cpu_count() or 1
        plan.cpu = CpuEstimate(cores, tuple(flops / (rate * 1e9 * cores) / 3600 for rate in reversed(CPU_GFLOPS_PER_CORE)))
    if gpus is None:
        others = [g + (f":{count}" if count > 1 else "") for g in ("H100", "A100-80GB", "L40S") if g != recipe.compute.gpu_type]
        gpus = [] if recipe.on_cpu else [recipe.compute.gpu] + others
    for card in gpus:
        name, _, cards = card.partition(":")  # as compute.gpu reads it: no count is one card
        spec = GPUS.get(name)
        if spec is None:
            continue
        if recipe.on_cpu or int(cards or 1) != count:
            other_plan = plan_run(on_card(recipe, card), data, gpus=[card])
            plan.gpus += other_plan.gpus
            continue
        peak = spec["tflops"] * 1e12 * count
        hours = tuple(flops / (peak * mfu) / 3600 for mfu in reversed(MFU_BAND))
        price = spec["usd_per_hour"]
        fixed = fixed_cost_usd(recipe, name, count)
        usd = None
        if price and fixed is not None:
            usd = tuple(h * price * count + fixed for h in hours)
        fits = plan.memory_gb <= spec["memory_gb"] * FIT_FRACTION
        plan.gpus.append(GpuEstimate(name, count, hours, usd, plan.memory_gb, fits, price, fixed))
        if name == recipe.compute.gpu_type:
            budget = spec["memory_gb"] * FIT_FRACTION
            if not fits:
                plan.warnings.append(
                    f"~{plan.memory_gb:.0f} GB per GPU will not fit a {spec['memory_gb']} GB {name}: lower micro_batch_size or "
                    "images.max_pixels" + (", enable gradient checkpointing" if not training.gradient_checkpointing else "")
                    + (", or use QLoRA" if recipe.train.method != "qlora" else "")
                )
            if training.gradient_checkpointing:
                verdict = "fits" if plan.memory_other_checkpointing_gb <= budget else "does not fit"
                plan.notes.append(f"gradient checkpointing off: ~{plan.memory_other_checkpointing_gb:.0f} GB per GPU, {verdict} "
                                  f"a {spec['memory_gb']} GB {name} at micro_batch_size {micro}"
                                  + (" (turn it off: ~25% fewer FLOPs)" if verdict == "fits" else ""))
            else:
                verdict = "fits" if fits else "does not fit"
                plan.notes.append(f"gradient checkpointing is off: ~{plan.memory_gb:.0f} GB per GPU, {verdict} a {spec['memory_gb']} GB {name}")
            if recipe.train.method == "qlora" and spec["memory_gb"] >= 80:
                plan.warnings.append(f"QLoRA on an {spec['memory_gb']} GB {name} is ~1.8x slower than bf16 LoRA, which fits: use method lora")
    return plan


def size_text(nbytes: float) -> str:
    """'1.5 GB' from a GiB up, '12 MB' below (a tiny model's parts)."""
    return f"{nbytes / GIB:.1f} GB" if nbytes >= 0.95 * GIB else f"{nbytes / 1024**2:.0f} MB"


def format_plan(plan: Plan) -> str:
    epochs = max(plan.epochs, 1)
    text = plan.tokens_per_epoch - plan.visual_tokens_per_epoch
    b = plan.breakdown
    where = "of RAM (fp32 on the CPU)" if plan.cpu else "per GPU"
    lines = [
        f"{plan.recipe}: {plan.method}, {plan.steps:,} optimizer steps; {plan.flops_per_token:.3g} training FLOPs per real token; "
        f"memory ~{size_text(plan.memory_gb * GIB)} {where}",
        f"  {'':<16} {'per epoch':>14} {'total (' + str(epochs) + ' epochs)':>20}",
        f"  {'samples':<16} {plan.samples_per_epoch:>14,} {plan.samples_per_epoch * epochs:>20,}",
        f"  {'text tokens':<16} {text:>14,} {text * epochs:>20,}",
        f"  {'visual tokens':<16} {plan.visual_tokens_per_epoch:>14,} {plan.visual_tokens_per_epoch * epochs:>20,}",
        f"  {'FLOPs (all)':<16} {plan.flops / epochs:>14.3g} {plan.flops:>20.3g}",
        f"  FLOPs: LM forward {b.lm_forward:.3g}, backward {b.lm_backward:.3g}, recompute {b.lm_recompute:.3g}; "
        f"vision forward {b.vision_forward:.3g}, backward {b.vision_backward:.3g}, recompute {b.vision_recompute:.3g}; "
        f"evaluation {plan.eval_flops:.3g}",
        f"  padding {plan.padding:.1%} of positions ({'length-grouped' if plan.grouped else 'random'} micro-batches); "
        f"training FLOPs are {plan.floor_ratio:.2f}x the floor ({plan.floor or '4N or 6N per real token + the frozen tower forward'})",
    ]
    if plan.memory:
        m = plan.memory
        if plan.cpu:  # a CPU recipe's model is small enough to train here: megabytes
            lines.append(f"  memory: weights {size_text(m.weights)}, trainable state {size_text(m.trainable_state)}, "
                         f"activations {size_text(m.activations)}, logits+loss {size_text(m.logits)}, vision {size_text(m.vision)}, "
                         "plus the Python process itself")
        else:
            lines.append(f"  memory (GB): weights {m.weights / GIB:.1f}, trainable state {m.trainable_state / GIB:.1f}, "
                         f"activations {m.activations / GIB:.1f}, logits+loss {m.logits / GIB:.1f}, vision {m.vision / GIB:.1f}, "
                         f"CUDA context {m.overhead / GIB:.1f}")
    if plan.cpu:
        fast, slow = plan.cpu.hours
        lo, hi = CPU_GFLOPS_PER_CORE
        lines.append(f"  CPU time (an estimate, not a measurement): {fast:.2g}-{slow:.2g} hours ({fast * 60:.2g}-{slow * 60:.2g} min) "
                     f"on this machine's {plan.cpu.cores} cores; FLOPs / ({lo:g}-{hi:g} GFLOP/s per core, {CPU_SOURCE}); "
                     f"no GPU and no dollars: it trains here with `vlm3 train` (`--gpu NAME` prices a card)")
    if plan.gpus:
        lines.append(f"  {'GPU':<12} {'$/hour':>7} {'hours/epoch':>13} {'hours total':>15} {'dollars total':>19}  fits")
    for est in plan.gpus:
        gpu = f"{est.gpu}:{est.count}" if est.count > 1 else est.gpu
        usd = f"${est.usd[0]:,.2f}-{est.usd[1]:,.2f}" if est.usd else "-"
        rate = f"${est.usd_per_hour * est.count:.2f}" if est.usd_per_hour else "-"
        per_epoch = f"{est.hours[0] / epochs:.2f}-{est.hours[1] / epochs:.2f}"
        lines.append(f"  {gpu:<12} {rate:>7} {per_epoch:>13} {est.hours[0]:>7.2f}-{est.hours[1]:<7.2f} {usd:>19}  {'yes' if est.fits else 'NO'}")
    if plan.gpus:
        lines.append(f"  hours: FLOPs / (peak bf16 x MFU {MFU_BAND[0]:.0%}-{MFU_BAND[1]:.0%}); the MFU band is {MFU_SOURCE}")
    fixed = next((e.fixed_usd for e in plan.gpus if e.fixed_usd is not None), None)
    if plan.fixed and plan.gpus:
        priced = "; ".join(f"{what} {minutes:g} min" for what, minutes, where in plan.fixed if where != "cpu")
        unpriced = "; ".join(f"{what} ~{minutes:g} min" for what, minutes, where in plan.fixed if where == "cpu")
        lines.append(f"  dollars include fixed costs{f' (~${fixed:.2f} on the first GPU)' if fixed is not None else ''}: {priced} "
                     f"(assumed, not measured); not in the dollars: {unpriced} (no CPU price on file)"
                     + (f"; {FIRST_IMAGE_BUILD}" if plan.flash_attention_build else "") + f"; prices: {PRICES_AS_OF}")
    lines += [f"  note: {n}" for n in plan.notes]
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
