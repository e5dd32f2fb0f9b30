"""Build a tiny, randomly initialised Qwen2-VL that runs the whole pipeline on a CPU.

Usage (trainer environment):
    python -m vlm3.tiny_model .cache/tiny-qwen2-vl

The real architecture (Qwen2VLForConditionalGeneration) at toy size: 2 decoder layers of
width 128, a 2-block vision tower, a byte-level BPE tokenizer trained here on the sample
manual with Qwen2-VL's special tokens, Qwen2-VL's chat template (taken from Axolotl's
`qwen2_vl`, the template the trainer uses) and Qwen2-VL's image processor with small
pixel limits. Nothing is downloaded; the same seed gives the same weights.
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


def build_model(tokenizer):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
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


def build_tiny_model(out_dir: Path, force: bool = False) -> Path:
    """Write the tiny model to out_dir once; later calls reuse it."""
    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists() and not force:
        return out_dir
    staging = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    parameters = sum(p.numel() for p in model.parameters())
    (staging / MARKER).write_text(json.dumps({"seed": SEED, "parameters": parameters, **PIXEL_LIMITS}, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, force=args.force)
    info = json.loads((path / MARKER).read_text())
    print(f"tiny Qwen2-VL ({info['parameters']:,} parameters) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
