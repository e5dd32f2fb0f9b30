"""Build a tiny, randomly initialised Qwen2-VL that runs the whole pipeline on a CPU.

Usage (trainer environment):
    python -m vlm3.tiny_model .cache/tiny-qwen2-vl
    python -m vlm3.tiny_model .cache/tiny-qwen2-vl-7b-shape --shape 7b   # bf16, the 7B's structure (real-regime tests)

The real architecture (Qwen2VLForConditionalGeneration) at toy size: 2 decoder layers of
width 128, a 2-block vision tower, a byte-level BPE tokenizer trained here on the sample
manual with Qwen2-VL's special tokens, Qwen2-VL's chat template (taken from Axolotl's
`qwen2_vl`, the template the trainer uses) and Qwen2-VL's image processor with small
pixel limits. Nothing is downloaded; the same seed gives the same weights.

`--shape 7b` keeps what makes Qwen2-VL-7B-Instruct behave as it does in training and merging,
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

MARKER = "tiny-qwen2-vl.json"  # written last: a folder without it is an interrupted build


def tokenizer_corpus() -> list[str]:
    """Text the BPE merges are learned from: the sample manual (seed 0) and chat scaffolding."""
    from vlm3.sample_manual import generate_sample_manual

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


def build_processor(tokenizer):
    from axolotl.utils.chat_templates import get_chat_template
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    template = get_chat_template("qwen2_vl")
    tokenizer.chat_template = template
    return Qwen2VLProcessor(
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


def build_model(tokenizer, shape: str = "toy"):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    if shape == "7b":
        torch.manual_seed(SEED)
        model = Qwen2VLForConditionalGeneration(seven_b_shape_config(ids, len(tokenizer))).to(torch.bfloat16)
        model.generation_config.eos_token_id = ids["<|im_end|>"]
        model.generation_config.pad_token_id = ids["<|endoftext|>"]
        model.generation_config.do_sample = False
        return model
    head_dim = HIDDEN // 4
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "max_window_layers": 2,
            # mrope splits head_dim/2 rotary frequencies over (time, height, width)
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": HIDDEN,  # the merger projects visual tokens to the LM width
            "num_heads": 2,
            "mlp_ratio": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    return model


def build_tiny_model(out_dir: Path, force: bool = False, shape: str = "toy") -> Path:
    """Write the tiny model to out_dir once; later calls reuse it (a folder of another shape is rebuilt)."""
    out_dir = Path(out_dir)
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: one of {SHAPES}")
    marker = out_dir / MARKER
    if marker.exists() and not force and json.loads(marker.read_text()).get("shape", "toy") == shape:
        return out_dir
    staging = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, shape)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    parameters = sum(p.numel() for p in model.parameters())
    (staging / MARKER).write_text(json.dumps({"seed": SEED, "shape": shape, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                                                 "parameters": parameters, **PIXEL_LIMITS}, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    parser.add_argument("--shape", choices=SHAPES, default="toy", help="7b: bf16 with the 7B's structure (real-regime tests)")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, force=args.force, shape=args.shape)
    info = json.loads((path / MARKER).read_text())
    print(f"tiny Qwen2-VL ({info['parameters']:,} parameters, {info['dtype']}, {info['shape']} shape) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
