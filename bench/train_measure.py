"""Measure a Qwen-VL LoRA training step: vision calls, FLOPs (FlopCounterMode) and saved activation bytes.

Usage (trainer environment, project root on PYTHONPATH; each prints one JSON object):
    .venv-train/bin/python -m bench.train_measure vision-calls --model .cache/tiny-qwen2-vl
    .venv-train/bin/python -m bench.train_measure flops --model 7b-widths --layers 2 --image 28x28 --text 64
    .venv-train/bin/python -m bench.train_measure flops --model qwen3-vl-8b --layers 2 --vision-depth 2 --deepstack-blocks 0
    .venv-train/bin/python -m bench.train_measure vision-flops --model qwen2.5-vl-7b --vision-depth 2 --image 10x14
    .venv-train/bin/python -m bench.train_measure activations --model qwen3-vl-8b --tokens 256
    .venv-train/bin/python -m bench.train_measure params --model Qwen/Qwen2.5-VL-7B-Instruct

Models are built from a config with random (or uninitialised) weights; nothing is downloaded.
A Hub id vlm3 knows (or its alias: `7b-widths` is Qwen2-VL-7B-Instruct) is its published config.json
(vlm3.recipe.families.KNOWN_CONFIGS) with fewer layers (and vision blocks), so every matrix has the
full model's shape; any of the three families. The same builders feed bench/bench_gpu_train.py.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Short names for the published configs (vlm3.recipe.families.KNOWN_CONFIGS): `7b-widths` keeps its old meaning.
ALIASES = {"7b": "Qwen/Qwen2-VL-7B-Instruct", "7b-widths": "Qwen/Qwen2-VL-7B-Instruct",
           "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct", "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
           "qwen3-vl-8b": "Qwen/Qwen3-VL-8B-Instruct"}
# transformers' config, model and vision-tower classes of each family (model_type).
CLASSES = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VisionTransformerPretrainedModel"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VisionTransformerPretrainedModel"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLVisionModel"),
}


def family_config(model: str, layers: int | None = None, vision_depth: int | None = None, attn: str = "sdpa",
                  full_attention_blocks: list[int] | None = None, deepstack_blocks: list[int] | None = None):
    """The transformers config of a local model folder or a published one (a Hub id vlm3 knows, or an alias),
    with the layer counts overridden.

    A shallower vision tower keeps the published block indexes that still exist (Qwen2.5-VL's full-attention
    blocks, Qwen3-VL's deepstack blocks), else the last block; or the indexes given."""
    import transformers

    from vlm3.recipe.families import read_config

    raw = read_config(ALIASES.get(model, model))
    config_class = getattr(transformers, CLASSES[raw["model_type"]][0])
    config = config_class.from_dict(dict(raw))
    text, vision = config.text_config, config.vision_config
    if layers:
        text.num_hidden_layers = layers
        if hasattr(text, "max_window_layers"):
            text.max_window_layers = layers
        if getattr(text, "layer_types", None):
            text.layer_types = text.layer_types[:layers]
    if vision_depth:
        vision.depth = vision_depth
    for key, given in (("fullatt_block_indexes", full_attention_blocks), ("deepstack_visual_indexes", deepstack_blocks)):
        if hasattr(vision, key):
            kept = [i for i in getattr(vision, key) if i < vision.depth]
            setattr(vision, key, list(given) if given is not None else kept or [vision.depth - 1])
    for c in (config, text, vision):
        c._attn_implementation = attn
    return config


def model_class(config, part: int = 1):
    import importlib

    module = importlib.import_module(f"transformers.models.{config.model_type}.modeling_{config.model_type}")
    return getattr(module, CLASSES[config.model_type][part])


def build_model(config, dtype=torch.bfloat16, device: str = "cpu", init: str = "random", part: int = 1):
    """The family's ForConditionalGeneration (or, part 2, its vision tower alone) from a config. init "empty" skips
    initialisation (FLOP and memory counts do not depend on the values; weights are drawn so no NaN appears),
    "random" uses the model's own init."""
    cls = model_class(config, part)
    if part == 2:
        config = config.vision_config
    torch.manual_seed(0)
    if init == "empty":
        with torch.device("meta"):
            model = cls(config).to(dtype)
        model = model.to_empty(device=device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.02)
                else:  # norm scales 1, biases 0: a finite loss, as from the model's own init
                    p.fill_(0.0 if name.endswith("bias") else 1.0)
        # Buffers (rotary inverse frequencies) are computed in __init__; to_empty leaves them uninitialised,
        # so they are copied from a freshly built module of the same class.
        for module in model.modules():
            if "RotaryEmbedding" not in type(module).__name__ or not hasattr(module, "inv_freq"):
                continue
            if hasattr(module, "config"):
                fresh = type(module)(module.config)
            else:  # the vision rotary: built from its dimension
                fresh = type(module)(module.inv_freq.numel() * 2)
            for name, buffer in fresh.named_buffers():
                setattr(module, name, buffer.to(device))
    else:
        with torch.device(device):
            model = cls(config).to(dtype)
    return model


def attach_lora(model, r: int = 64, alpha: int = 128, dropout: float = 0.0, targets=LORA_TARGETS):
    """PEFT LoRA on the language model's projections only, with the regex the recipe renders."""
    from peft import LoraConfig, get_peft_model

    from vlm3.recipe.families import FAMILIES

    regex = FAMILIES[model.config.model_type].lora_regex(list(targets))
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=regex, task_type="CAUSAL_LM"))


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
                *(getattr(config.text_config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id"))]
    plain_ids = min([config.text_config.vocab_size] + [i for i in specials if i is not None])
    for (h, w), n_text in zip(grids, text_tokens):
        image = [config.vision_start_token_id] + [config.image_token_id] * (h * w) + [config.vision_end_token_id]
        text = torch.randint(0, plain_ids, (n_text,), generator=gen).tolist()
        rows.append(image + text)
        patches = (h * merge) * (w * merge)
        pixels.append(torch.randn(patches, vc.in_channels * vc.temporal_patch_size * vc.patch_size**2, generator=gen))
        thw.append([1, h * merge, w * merge])
    longest = max(len(r) for r in rows)
    pad = getattr(config.text_config, "bos_token_id", None) or 0
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
    from vlm3.train.axolotl_plugin import run_frozen_vision_forward_only

    model.enable_input_require_grads()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if forward_only_vision:
        run_frozen_vision_forward_only(model)
    model.train()
    return model


def count_vision_calls(model) -> dict:
    """Forward calls of the first vision block, and backward passes that reach the patch embeddings."""
    from vlm3.train.axolotl_plugin import vision_tower

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
    config = family_config(model_path)
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
                   forward_only_vision: bool = True, r: int = 64, dtype=torch.bfloat16, full_attention_blocks=None,
                   deepstack_blocks=None) -> dict:
    """FlopCounterMode over one real training step (forward, backward, recompute), split by sub-model."""
    from torch.utils.flop_counter import FlopCounterMode

    # Eager attention: CPU's fused SDPA kernel has no FLOP formula; eager attention's matmuls are counted
    # and equal the formula FlopCounterMode uses for the fused kernels on a GPU.
    config = family_config(model_path, layers, vision_depth, attn="eager", full_attention_blocks=full_attention_blocks,
                           deepstack_blocks=deepstack_blocks)
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
            "loss": loss.item(), "config": config.to_dict()}


def measured_vision_flops(model_path: str, vision_depth: int | None, grids, dtype=torch.float32, full_attention_blocks=None,
                          deepstack_blocks=None) -> dict:
    """FlopCounterMode over the vision tower's forward alone (built without the language model) on images of `grids`."""
    from torch.utils.flop_counter import FlopCounterMode

    config = family_config(model_path, 1, vision_depth, attn="eager", full_attention_blocks=full_attention_blocks,
                           deepstack_blocks=deepstack_blocks)
    tower = build_model(config, dtype=dtype, init="empty", part=2).eval()
    batch = synthetic_batch(config, grids, [1] * len(grids))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = tower(batch["pixel_values"].to(dtype), grid_thw=batch["image_grid_thw"])
    merged = out.pooler_output if hasattr(out, "pooler_output") else out
    return {"model": model_path, "vision_depth": config.vision_config.depth, "grids": grids, "flops": counter.get_total_flops(),
            "merged_tokens": int(merged.shape[0]), "config": config.to_dict()}


def saved_activation_bytes(tokens: int, r: int = 64, dropout: float = 0.0, dtype=torch.bfloat16, hidden: int | None = None,
                           intermediate: int | None = None, model: str = "7b-widths") -> dict:
    """Bytes autograd saves for backward in one full-width decoder layer of the model's family with LoRA on its 7 projections.

    Counted with saved_tensors_hooks, each storage once (views of one tensor share it); the layer's
    input requires grad, as it does inside the model, and its weights are frozen as under LoRA.
    """
    from peft import LoraConfig, get_peft_model
    full = family_config(model, layers=1, vision_depth=1)
    with torch.device("meta"):  # the family's decoder layer and rotary classes, read off a model built without memory
        language_model = model_class(full)(full).model.language_model
    decoder_layer, rotary_embedding = type(language_model.layers[0]), type(language_model.rotary_emb)
    config = full.text_config
    if hidden:
        config.hidden_size = hidden
    if intermediate:
        config.intermediate_size = intermediate
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)

    class OneLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = decoder_layer(config, layer_idx=0)

        def forward(self, x, position_embeddings):
            return self.layer(x, attention_mask=None, position_embeddings=position_embeddings)

    block = OneLayer().to(dtype)
    peft = get_peft_model(block, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=LORA_TARGETS))
    peft.train()
    rotary = rotary_embedding(config)
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
    return {"model": model, "tokens": tokens, "lora_r": r, "lora_dropout": dropout, "dtype": str(dtype).removeprefix("torch."), "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
            "saved_bytes": total, "bytes_per_token": total / tokens}


def parameter_counts(model_path: str, r: int = 64) -> dict:
    """Parameters of the full-size model as transformers builds it (on the meta device: no memory), and PEFT's
    trainable count for the LM-only LoRA of rank r on all 7 projections."""
    from peft import LoraConfig, get_peft_model

    from vlm3.recipe.families import FAMILIES

    config = family_config(model_path)
    with torch.device("meta"):
        model = model_class(config)(config)
        total = sum(p.numel() for p in model.parameters())
        vision = sum(p.numel() for p in model.model.visual.parameters())
        regex = FAMILIES[config.model_type].lora_regex(LORA_TARGETS)
        peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=regex, task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        adapted = sum(1 for name, _ in peft.named_modules() if name.endswith(".lora_A"))
    return {"model": model_path, "total": total, "vision": vision, "lora_r": r, "lora_trainable": trainable,
            "lora_modules": adapted, "config": config.to_dict()}


def parse_indexes(text: str) -> list[int]:
    return [int(i) for i in text.split(",") if i.strip()]


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
    vision = sub.add_parser("vision-flops")
    for p in (flops, vision):
        p.add_argument("--model", default=".cache/tiny-qwen2-vl", help="a model folder, a Hub id vlm3 knows, or " + ", ".join(ALIASES))
        p.add_argument("--vision-depth", type=int)
        p.add_argument("--image", action="append", type=parse_grid, help="visual-token grid HxW, one per image")
        p.add_argument("--full-attention-blocks", type=parse_indexes, help="Qwen2.5-VL: e.g. 1 or 0,3")
        p.add_argument("--deepstack-blocks", type=parse_indexes, help="Qwen3-VL: e.g. 0")
    flops.add_argument("--layers", type=int)
    flops.add_argument("--text", action="append", type=int, help="text tokens, one per row")
    flops.add_argument("--checkpointing", action="store_true")
    flops.add_argument("--today", action="store_true", help="without the frozen-vision fix")
    flops.add_argument("--lora-r", type=int, default=64)
    params = sub.add_parser("params")
    params.add_argument("--model", default="7b", help="a model folder, a Hub id vlm3 knows, or " + ", ".join(ALIASES))
    params.add_argument("--lora-r", type=int, default=64)
    acts = sub.add_parser("activations")
    acts.add_argument("--model", default="7b-widths", help="whose decoder layer: " + ", ".join(ALIASES))
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
                                forward_only_vision=not args.today, r=args.lora_r, full_attention_blocks=args.full_attention_blocks,
                                deepstack_blocks=args.deepstack_blocks)
    elif args.command == "vision-flops":
        result = measured_vision_flops(args.model, args.vision_depth, args.image or [(4, 4)], full_attention_blocks=args.full_attention_blocks,
                                       deepstack_blocks=args.deepstack_blocks)
    elif args.command == "params":
        result = parameter_counts(args.model, args.lora_r)
    else:
        result = saved_activation_bytes(args.tokens, args.lora_r, args.lora_dropout, model=args.model)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
