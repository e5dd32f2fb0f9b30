"""Build a tiny, randomly initialised Qwen-VL model of each family that runs the whole pipeline on a CPU.

Usage (trainer environment):
    python -m vlm3.demo.tiny_model .cache/tiny-qwen2-vl
    python -m vlm3.demo.tiny_model .cache/tiny-qwen2.5-vl --family qwen2_5_vl
    python -m vlm3.demo.tiny_model .cache/tiny-qwen3-vl --family qwen3_vl
    python -m vlm3.demo.tiny_model .cache/tiny-qwen2-vl-7b-shape --shape 7b   # bf16, the 7B's structure (real-regime tests)

Each is the family's real architecture (transformers' Qwen2VL-, Qwen2_5_VL- or
Qwen3VLForConditionalGeneration) at toy size: 2 decoder layers of width 128, a small vision tower,
a byte-level BPE tokenizer trained here on the sample manual with the Qwen-VL special tokens, the
family's processor with small pixel limits and a chat template. Nothing is downloaded; the same
seed gives the same weights.

What makes each family itself is kept at toy size:
- Qwen2-VL: 14-px patches, a quick-GELU vision MLP (fc1/fc2), Axolotl's `qwen2_vl` template
  (the released one, with its default system prompt).
- Qwen2.5-VL: 14-px patches, a gated SiLU vision MLP (gate/up/down_proj), window attention in the
  vision blocks with full attention only in `fullatt_block_indexes` (windows of 2x2 merged tokens,
  so a 112x112 page has four), `Qwen2_5_VLProcessor`, the same `qwen2_vl` template.
- Qwen3-VL: 16-px patches (32 px per visual token), learned position embeddings resampled to each
  image's grid (`num_position_embeddings`), DeepStack (`deepstack_visual_indexes`: features of
  early vision blocks added to the first decoder layers), RMS-normed queries and keys, interleaved
  mRoPE (the 8B's 24:20:20 split of 64 frequencies, here 6:5:5 of 16), `Qwen3VLProcessor` with
  `Qwen2VLImageProcessor(patch_size=16)` and `Qwen3VLVideoProcessor`, and a ChatML template like
  the released Qwen3-VL Instruct one (`vlm3/recipe/chat_templates/qwen3_vl.jinja`: no default system prompt).

`--shape 7b` (Qwen2-VL only) keeps what makes Qwen2-VL-7B-Instruct behave as it does in training and merging,
at toy width: its grouped-query ratio (7 query heads per key/value head), its mRoPE split of
the rotary frequencies (16:24:24 of 64, here 2:3:3 of 8), its MLP ratio, its vision tower
(patch 14, temporal patch 2, 2x2 merger projecting to the LM width, MLP ratio 4), untied input
and output embeddings, and bfloat16 weights, the dtype the 7B checkpoint is published in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

SEED = 1234
VOCAB_SIZE = 2048  # byte-level BPE: any text still tokenizes, numbers and units become few tokens
HIDDEN = 128
PIXEL_LIMITS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}  # at most 16 visual tokens per image

# Qwen2-VL's special tokens, in the order of the released tokenizer (ids follow the BPE vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen/Qwen2-VL-7B-Instruct's config.json (the values the 7B shape keeps in proportion).
QWEN2_VL_7B = {
    "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4,
    "head_dim": 128, "mrope_section": [16, 24, 24], "rms_norm_eps": 1e-6, "rope_theta": 1e6,
    "tie_word_embeddings": False, "dtype": "bfloat16",
    "vision": {"embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14, "temporal_patch_size": 2,
               "spatial_merge_size": 2, "hidden_act": "quick_gelu"},
}
SEVEN_B_HEAD_DIM = 16  # 7B: 128; the rotary split scales by 16/128
SEVEN_B_KV_HEADS = 1
SEVEN_B_HEADS = SEVEN_B_KV_HEADS * QWEN2_VL_7B["num_attention_heads"] // QWEN2_VL_7B["num_key_value_heads"]  # 7 per kv head
SEVEN_B_HIDDEN = SEVEN_B_HEADS * SEVEN_B_HEAD_DIM  # 112
SHAPES = ("toy", "7b")

# Where `vlm3 tiny-model` and the tests keep each family's tiny model.
FOLDERS = {"qwen2_vl": ".cache/tiny-qwen2-vl", "qwen2_5_vl": ".cache/tiny-qwen2.5-vl", "qwen3_vl": ".cache/tiny-qwen3-vl"}
FAMILY_NAMES = tuple(FOLDERS)
QWEN3_VL_TEMPLATE = Path(__file__).resolve().parents[1] / "recipe" / "chat_templates" / "qwen3_vl.jinja"

def marker_name(family: str) -> str:
    """The file written last into a tiny model's folder (a folder without it is an interrupted build); it records
    the family, shape and seed. Qwen2-VL's, tiny-qwen2-vl.json, is in the 7B-shaped folder too."""
    return Path(FOLDERS[family]).name + ".json"


def tokenizer_corpus() -> list[str]:
    """Text the BPE merges are learned from: the sample manual (seed 0) and chat scaffolding."""
    from vlm3.demo.sample_manual import generate_sample_manual

    lines = ["You are a helpful assistant.", "system", "user", "assistant"]
    with tempfile.TemporaryDirectory() as tmp:
        generate_sample_manual(Path(tmp), seed=0)
        for name in ("vlm_train.jsonl", "vlm_val.jsonl"):
            for line in (Path(tmp) / "training_data" / name).read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                lines.extend(turn["content"] for turn in row["conversations"])
                lines.append(str(row["metadata"].get("page_text", "")))
        lines.extend(Path(tmp, "probes.jsonl").read_text(encoding="utf-8").splitlines())
    return lines


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    bpe.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def chat_template(family: str) -> str:
    """Axolotl's qwen2_vl template for Qwen2-VL and Qwen2.5-VL; ours, like the released one, for Qwen3-VL."""
    if family == "qwen3_vl":
        return QWEN3_VL_TEMPLATE.read_text(encoding="utf-8")
    from axolotl.utils.chat_templates import get_chat_template

    return get_chat_template("qwen2_vl")


def build_processor(tokenizer, family: str = "qwen2_vl"):
    from transformers import Qwen2VLImageProcessor

    template = chat_template(family)
    tokenizer.chat_template = template
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        # The released Qwen3-VL preprocessor: 16-px patches merged 2x2, mean and std 0.5.
        norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2}
        size = {"shortest_edge": PIXEL_LIMITS["min_pixels"], "longest_edge": PIXEL_LIMITS["max_pixels"]}
        return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**PIXEL_LIMITS, **norm), tokenizer=tokenizer,
                                video_processor=Qwen3VLVideoProcessor(size=size, **norm), chat_template=template)
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    processor_class = Qwen2_5_VLProcessor if family == "qwen2_5_vl" else Qwen2VLProcessor
    return processor_class(
        image_processor=Qwen2VLImageProcessor(**PIXEL_LIMITS),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**PIXEL_LIMITS),
        chat_template=template,
    )


def seven_b_shape_config(ids: dict[str, int], vocab_size: int):
    """The 7B's config with widths scaled down and every ratio that shapes the computation kept."""
    from transformers import Qwen2VLConfig

    big = QWEN2_VL_7B
    scale = SEVEN_B_HEAD_DIM / big["head_dim"]
    mrope = [int(part * scale) for part in big["mrope_section"]]
    assert sum(mrope) == SEVEN_B_HEAD_DIM // 2, mrope  # every rotary frequency belongs to one of t, h, w
    vision = big["vision"]
    return Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": SEVEN_B_HIDDEN,
            "intermediate_size": round(SEVEN_B_HIDDEN * big["intermediate_size"] / big["hidden_size"]),  # 592
            "num_hidden_layers": 2,
            "num_attention_heads": SEVEN_B_HEADS,
            "num_key_value_heads": SEVEN_B_KV_HEADS,
            "max_position_embeddings": 32768,
            "max_window_layers": 2,
            "use_sliding_window": False,
            "rms_norm_eps": big["rms_norm_eps"],
            "rope_parameters": {"rope_type": "default", "rope_theta": big["rope_theta"], "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "dtype": big["dtype"],
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,  # 2 heads of 16, as the 7B's 16 heads of 80 keep head_dim even for the 2D rotary
            "num_heads": 2,
            "hidden_size": SEVEN_B_HIDDEN,  # the merger projects to the LM width, as in the 7B
            **{k: vision[k] for k in ("mlp_ratio", "patch_size", "temporal_patch_size", "spatial_merge_size", "hidden_act")},
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=big["tie_word_embeddings"],
        dtype=big["dtype"],
    )


def toy_text_config(ids: dict[str, int], vocab_size: int) -> dict:
    """The decoder all three toy models share: 2 layers of width 128, 4 query heads over 2 key/value heads."""
    head_dim = HIDDEN // 4
    return {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # mrope splits head_dim/2 rotary frequencies over (time, height, width): Qwen2(.5)-VL's 16:24:24 of 64
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                            "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def toy_config(family: str, ids: dict[str, int], vocab_size: int):
    """The family's transformers config at toy size (see the module docstring for what each keeps)."""
    text = toy_text_config(ids, vocab_size)
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
              "tie_word_embeddings": False}
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = {"depth": 2, "embed_dim": 32, "hidden_size": HIDDEN, "num_heads": 2, "mlp_ratio": 2}  # merger -> LM width
        return Qwen2VLConfig(text_config={**text, "max_window_layers": 2}, vision_config=vision, **tokens)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = {
            "depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": HIDDEN,
            "hidden_act": "silu", "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            # 7B: windows of 112 px (4x4 merged tokens), full attention in blocks 7, 15, 23, 31 of 32.
            "window_size": 56, "fullatt_block_indexes": [1, 3], "tokens_per_second": 2,
        }
        return Qwen2_5_VLConfig(text_config={**text, "max_window_layers": 2}, vision_config=vision, **tokens)
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        head_dim = HIDDEN // 4
        scale = head_dim // 2 / 64  # the 8B: 64 rotary frequencies split 24:20:20, interleaved t,h,w
        text = {**text, "head_dim": head_dim, "attention_bias": False,
                "rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_interleaved": True,
                                    "mrope_section": [round(24 * scale), round(20 * scale), round(20 * scale)]}}
        assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
        vision = {
            "depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": HIDDEN,
            "hidden_act": "gelu_pytorch_tanh", "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
            # 8B: a 48x48 learned grid (2304), DeepStack from blocks 8, 16, 24 of 27 into decoder layers 0-2.
            "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 1],
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
    raise ValueError(f"family {family!r}: one of {FAMILY_NAMES}")


MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                 "qwen3_vl": "Qwen3VLForConditionalGeneration"}


def build_model(tokenizer, shape: str = "toy", family: str = "qwen2_vl"):
    import torch
    import transformers

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    torch.manual_seed(SEED)
    if shape == "7b":
        model = transformers.Qwen2VLForConditionalGeneration(seven_b_shape_config(ids, len(tokenizer))).to(torch.bfloat16)
    else:
        model = getattr(transformers, MODEL_CLASSES[family])(toy_config(family, ids, len(tokenizer)))
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    return model


def build_tiny_model(out_dir: Path, force: bool = False, shape: str = "toy", family: str = "qwen2_vl") -> Path:
    """Write the tiny model to out_dir once; later calls reuse it (a folder of another shape or family is rebuilt)."""
    out_dir = Path(out_dir)
    if family not in FAMILY_NAMES:
        raise ValueError(f"family {family!r}: one of {FAMILY_NAMES}")
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: one of {SHAPES}")
    if shape != "toy" and family != "qwen2_vl":
        raise ValueError(f"shape {shape!r} is Qwen2-VL-7B's structure: use it with family qwen2_vl, not {family}")
    marker = out_dir / marker_name(family)
    if marker.exists() and not force:
        info = json.loads(marker.read_text())
        if info.get("shape", "toy") == shape and info.get("family") == family:  # a marker without a family predates them: rebuilt
            return out_dir
    staging = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, family)
    model = build_model(tokenizer, shape, family)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    parameters = sum(p.numel() for p in model.parameters())
    info = {"family": family, "architecture": type(model).__name__, "seed": SEED, "shape": shape,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "parameters": parameters, **PIXEL_LIMITS}
    (staging / marker_name(family)).write_text(json.dumps(info, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--family", choices=FAMILY_NAMES, default="qwen2_vl", help="the model family (config.json model_type)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    parser.add_argument("--shape", choices=SHAPES, default="toy", help="7b: bf16 with Qwen2-VL-7B's structure (real-regime tests)")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(args.out_dir, force=args.force, shape=args.shape, family=args.family)
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    info = json.loads((path / marker_name(args.family)).read_text())
    print(f"tiny {info['architecture']} ({info['parameters']:,} parameters, {info['dtype']}, {info['shape']} shape) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
