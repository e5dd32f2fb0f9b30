"""Measure a Qwen2-VL LoRA training step: vision calls, FLOPs (FlopCounterMode) and saved activation bytes.

Usage (trainer environment, project root on PYTHONPATH; each prints one JSON object):
    .venv-train/bin/python -m bench.train_measure vision-calls --model .cache/tiny-qwen2-vl
    .venv-train/bin/python -m bench.train_measure flops --model 7b-widths --layers 2 --image 28x28 --text 64
    .venv-train/bin/python -m bench.train_measure activations --tokens 256

Models are built from a config with random (or uninitialised) weights; nothing is downloaded.
`7b-widths` is Qwen2-VL-7B-Instruct's published config.json with fewer layers (and vision blocks),
so every matrix has the 7B's shape. The same builders feed bench/bench_gpu_train.py.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

# Qwen2-VL-7B-Instruct's config.json (Hugging Face Hub, as published): the shapes the plan prices.
QWEN2_VL_7B = {
    "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
             "bos_token_id": 151643, "eos_token_id": 151645},
    "vision": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16, "in_channels": 3,
               "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "quick_gelu"},
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qwen2vl_config(model: str, layers: int | None = None, vision_depth: int | None = None, attn: str = "sdpa"):
    """The config of a local model folder, or of the 7B (`7b`, `7b-widths`), with layer counts overridden."""
    from transformers import Qwen2VLConfig

    if model in ("7b", "7b-widths"):
        text = dict(QWEN2_VL_7B["text"])
        vision = dict(QWEN2_VL_7B["vision"])
        if layers:
            text["num_hidden_layers"] = layers
        text["max_window_layers"] = text["num_hidden_layers"]
        if vision_depth:
            vision["depth"] = vision_depth
        ids = {k: v for k, v in QWEN2_VL_7B.items() if k.endswith("_id")}
        config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    else:
        config = Qwen2VLConfig.from_pretrained(model)
        if layers:
            config.text_config.num_hidden_layers = layers
        if vision_depth:
            config.vision_config.depth = vision_depth
    config._attn_implementation = attn
    config.text_config._attn_implementation = attn
    config.vision_config._attn_implementation = attn
    return config


def build_model(config, dtype=torch.bfloat16, device: str = "cpu", init: str = "random"):
    """Qwen2VLForConditionalGeneration from a config. init "empty" skips initialisation (FLOP and memory counts
    do not depend on the values; weights are zeroed so no NaN appears), "random" uses the model's own init."""
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    if init == "empty":
        with torch.device("meta"):
            model = Qwen2VLForConditionalGeneration(config).to(dtype)
        model = model.to_empty(device=device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.02)
                else:  # norm scales 1, biases 0: a finite loss, as from the model's own init
                    p.fill_(0.0 if name.endswith("bias") else 1.0)
    else:
        with torch.device(device):
            model = Qwen2VLForConditionalGeneration(config).to(dtype)
    # Buffers (rotary inverse frequencies) are computed in __init__; to_empty leaves them uninitialised,
    # so they are copied from a freshly built module of the same class.
    if init == "empty":
        for module in model.modules():
            kind = type(module).__name__
            if kind == "Qwen2VLRotaryEmbedding":
                fresh = type(module)(module.config)
            elif kind == "VisionRotaryEmbedding":
                fresh = type(module)(module.inv_freq.numel() * 2)
            else:
                continue
            for name, buffer in fresh.named_buffers():
                setattr(module, name, buffer.to(device))
    return model


def attach_lora(model, r: int = 64, alpha: int = 128, dropout: float = 0.0, targets=LORA_TARGETS):
    """PEFT LoRA on the language model's projections only, with the regex the recipe renders."""
    from peft import LoraConfig, get_peft_model

    from vlm3.render import lora_target_regex

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                            target_modules=lora_target_regex(list(targets)), task_type="CAUSAL_LM"))


def synthetic_batch(config, grids: list[tuple[int, int]], text_tokens: list[int], device: str = "cpu", seed: int = 0):
    """A padded batch of one image per row: grids are (height, width) in visual tokens, text lengths in tokens.

    Row i holds <|vision_start|>, h*w image tokens, <|vision_end|> and text_tokens[i] random text ids;
    rows are right-padded to the longest (attention mask 0, label -100), as Axolotl's collator pads.
    """
    gen = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    merge = vc.spatial_merge_size
    rows, pixels, thw = [], [], []
    # Text ids below every special token (Qwen2-VL puts them at the end of the vocabulary).
    specials = [config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id,
                config.text_config.bos_token_id, config.text_config.eos_token_id, config.text_config.pad_token_id]
    plain_ids = min([config.text_config.vocab_size] + [i for i in specials if i is not None])
    for (h, w), n_text in zip(grids, text_tokens):
        image = [config.vision_start_token_id] + [config.image_token_id] * (h * w) + [config.vision_end_token_id]
        text = torch.randint(0, plain_ids, (n_text,), generator=gen).tolist()
        rows.append(image + text)
        patches = (h * merge) * (w * merge)
        pixels.append(torch.randn(patches, vc.in_channels * vc.temporal_patch_size * vc.patch_size**2, generator=gen))
        thw.append([1, h * merge, w * merge])
    longest = max(len(r) for r in rows)
    pad = config.text_config.bos_token_id or 0
    input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    token_types = (input_ids == config.image_token_id).long()  # 1 marks image tokens, as the processor returns
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "mm_token_type_ids": token_types.to(device),
            "pixel_values": torch.cat(pixels).to(device), "image_grid_thw": torch.tensor(thw, device=device)}


def prepare_like_axolotl(model, gradient_checkpointing: bool, forward_only_vision: bool):
    """Today's training path: input-embedding hooks (Axolotl, PEFT, Trainer), checkpointing; plus the fix if asked."""
    from vlm3.axolotl_plugin import run_frozen_vision_forward_only

    model.enable_input_require_grads()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if forward_only_vision:
        run_frozen_vision_forward_only(model)
    model.train()
    return model


def count_vision_calls(model) -> dict:
    """Forward calls of the first vision block, and backward passes that reach the patch embeddings."""
    from vlm3.axolotl_plugin import vision_tower

    tower = vision_tower(model)
    counts = {"vision_block_forwards": 0, "vision_backwards": 0}

    def on_forward(module, args):
        counts["vision_block_forwards"] += 1

    def on_patch_embed(module, args, output):
        if output.requires_grad and torch.is_grad_enabled():
            output.register_hook(lambda grad: counts.__setitem__("vision_backwards", counts["vision_backwards"] + 1))

    tower.blocks[0].register_forward_pre_hook(on_forward)
    tower.patch_embed.register_forward_hook(on_patch_embed)
    return counts


def lora_gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def vision_calls(model_path: str, dtype: torch.dtype, gradient_checkpointing: bool) -> dict:
    """One training step today and with the fix: call counts, loss and LoRA gradients compared."""
    config = qwen2vl_config(model_path)
    batch = synthetic_batch(config, grids=[(4, 4), (3, 4)], text_tokens=[24, 30])
    result: dict = {"dtype": str(dtype).removeprefix("torch."), "gradient_checkpointing": gradient_checkpointing}
    runs = {}
    for fixed in (False, True):
        model = attach_lora(build_model(config, dtype=dtype))
        prepare_like_axolotl(model, gradient_checkpointing, forward_only_vision=fixed)
        counts = count_vision_calls(model)
        loss = model(**batch).loss
        loss.backward()
        runs[fixed] = (loss.detach().float(), lora_gradients(model))
        result["fixed" if fixed else "today"] = {**counts, "loss": loss.item(), "lora_tensors": len(runs[fixed][1])}
    (loss_a, grads_a), (loss_b, grads_b) = runs[False], runs[True]
    result["loss_equal"] = bool(torch.equal(loss_a, loss_b))
    result["same_gradient_names"] = sorted(grads_a) == sorted(grads_b)
    result["max_gradient_diff"] = max(((grads_a[n] - grads_b[n]).abs().max().item() for n in grads_a if n in grads_b), default=None)
    result["max_gradient"] = max((g.abs().max().item() for g in grads_a.values()), default=0.0)
    return result


def measured_flops(model_path: str, layers: int | None, vision_depth: int | None, grids, texts, gradient_checkpointing: bool,
                   forward_only_vision: bool = True, r: int = 64, dtype=torch.bfloat16) -> dict:
    """FlopCounterMode over one real training step (forward, backward, recompute), split by sub-model."""
    from torch.utils.flop_counter import FlopCounterMode

    # Eager attention: CPU's fused SDPA kernel has no FLOP formula; eager attention's matmuls are counted
    # and equal the formula FlopCounterMode uses for the fused kernels on a GPU.
    config = qwen2vl_config(model_path, layers, vision_depth, attn="eager")
    model = attach_lora(build_model(config, dtype=dtype, init="empty"), r=r)
    prepare_like_axolotl(model, gradient_checkpointing, forward_only_vision)
    batch = synthetic_batch(config, grids, texts)
    counter = FlopCounterMode(display=False)
    with counter:
        loss = model(**batch).loss
        loss.backward()
    by_module = counter.get_flop_counts()
    visual = next((sum(v.values()) for k, v in by_module.items() if k.endswith(".visual")), 0)
    total = counter.get_total_flops()
    return {"model": model_path, "layers": config.text_config.num_hidden_layers, "vision_depth": config.vision_config.depth,
            "grids": grids, "texts": texts, "gradient_checkpointing": gradient_checkpointing, "lora_r": r,
            "padded_length": int(batch["input_ids"].shape[1]), "flops": total, "vision_flops": visual,
            "config": config.to_dict()}


def saved_activation_bytes(tokens: int, r: int = 64, dropout: float = 0.0, dtype=torch.bfloat16, hidden: int | None = None,
                           intermediate: int | None = None) -> dict:
    """Bytes autograd saves for backward in one full-width decoder layer with LoRA on its 7 projections.

    Counted with saved_tensors_hooks, each storage once (views of one tensor share it); the layer's
    input requires grad, as it does inside the model, and its weights are frozen as under LoRA.
    """
    from peft import LoraConfig, get_peft_model
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLDecoderLayer, Qwen2VLRotaryEmbedding

    config = qwen2vl_config("7b-widths", layers=1).text_config
    if hidden:
        config.hidden_size = hidden
    if intermediate:
        config.intermediate_size = intermediate
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)

    class OneLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = Qwen2VLDecoderLayer(config, layer_idx=0)

        def forward(self, x, position_embeddings):
            return self.layer(x, attention_mask=None, position_embeddings=position_embeddings)

    block = OneLayer().to(dtype)
    peft = get_peft_model(block, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=LORA_TARGETS))
    peft.train()
    rotary = Qwen2VLRotaryEmbedding(config)
    x = torch.randn(1, tokens, config.hidden_size, dtype=dtype, requires_grad=True)
    position_ids = torch.arange(tokens).view(1, 1, -1).expand(3, 1, -1)
    cos, sin = rotary(x, position_ids)
    seen: dict[tuple, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen.setdefault((storage.data_ptr(), storage.nbytes()), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = peft(x, (cos, sin))
    out = out[0] if isinstance(out, tuple) else out
    # Rotary cos/sin are computed once per model and shared by every layer: not per-layer activations.
    # Weights (frozen and LoRA) are saved too, but they are parameters, counted by the plan's weight terms.
    shared = {cos.untyped_storage().data_ptr(), sin.untyped_storage().data_ptr()}
    shared |= {p.untyped_storage().data_ptr() for p in peft.parameters()}
    total = sum(n for (ptr, _), n in seen.items() if ptr not in shared)
    return {"tokens": tokens, "lora_r": r, "lora_dropout": dropout, "dtype": str(dtype).removeprefix("torch."), "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
            "saved_bytes": total, "bytes_per_token": total / tokens}


def parse_grid(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    calls = sub.add_parser("vision-calls")
    calls.add_argument("--model", default=".cache/tiny-qwen2-vl")
    calls.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    calls.add_argument("--no-checkpointing", action="store_true")
    flops = sub.add_parser("flops")
    flops.add_argument("--model", default=".cache/tiny-qwen2-vl")
    flops.add_argument("--layers", type=int)
    flops.add_argument("--vision-depth", type=int)
    flops.add_argument("--image", action="append", type=parse_grid, help="visual-token grid HxW, one per row")
    flops.add_argument("--text", action="append", type=int, help="text tokens, one per row")
    flops.add_argument("--checkpointing", action="store_true")
    flops.add_argument("--today", action="store_true", help="without the frozen-vision fix")
    flops.add_argument("--lora-r", type=int, default=64)
    acts = sub.add_parser("activations")
    acts.add_argument("--tokens", type=int, default=256)
    acts.add_argument("--lora-r", type=int, default=64)
    acts.add_argument("--lora-dropout", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if args.command == "vision-calls":
        result = vision_calls(args.model, getattr(torch, args.dtype), not args.no_checkpointing)
    elif args.command == "flops":
        grids = args.image or [(4, 4)]
        texts = args.text or [32] * len(grids)
        if len(texts) != len(grids):
            parser.error("give one --text per --image")
        result = measured_flops(args.model, args.layers, args.vision_depth, grids, texts, args.checkpointing,
                                forward_only_vision=not args.today, r=args.lora_r)
    else:
        result = saved_activation_bytes(args.tokens, args.lora_r, args.lora_dropout)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
