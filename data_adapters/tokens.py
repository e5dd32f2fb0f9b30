"""Token counts that match the Qwen-VL processors: visual tokens from the image size, text tokens estimated.

Usage:
    visual_tokens(1700, 2200, min_pixels=56 * 56, max_pixels=1280 * 28 * 28)             # Qwen2-VL -> 1240
    visual_tokens(1700, 2200, min_pixels=56 * 56, max_pixels=1280 * 32 * 32, factor=32)  # Qwen3-VL -> 1240

The processor cuts an image into patches and merges 2x2 of them into one LLM token, after
resizing it so both sides are multiples of `factor` (patch x merge: 28 for Qwen2-VL and
Qwen2.5-VL, 32 for Qwen3-VL; `vlm3.recipe.families`) and the area lies within [min_pixels,
max_pixels] (the rule of transformers' `smart_resize`, which all three families use).
"""

from __future__ import annotations

import math
from pathlib import Path

from vlm3.core.hub import hub_cache_files

QWEN2_VL_FACTOR = 14 * 2  # Qwen2-VL: 14-px patches, 2x2 merged; a family's own is vlm3.recipe.families.Family.factor
MAX_ASPECT_RATIO = 200  # the Qwen-VL processors refuse anything more elongated
CHARS_PER_TOKEN = 3.2  # English technical text with numbers, Qwen2 BPE; used when no tokenizer is at hand
# <|im_start|>role\n ... <|im_end|>\n around every turn (the system turn too: the recipe's system_prompt,
# or the family's default one, which Qwen2-VL's and Qwen2.5-VL's template adds and Qwen3-VL's does not).
TOKENS_PER_TURN = 5
VISION_MARKERS = 2  # <|vision_start|> and <|vision_end|> around each page


def resized_size(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = QWEN2_VL_FACTOR) -> tuple[int, int]:
    """Height and width after the processor's resize: multiples of factor, area within the limits."""
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} is over {MAX_ASPECT_RATIO}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


def visual_tokens(width: int, height: int, min_pixels: int, max_pixels: int, factor: int = QWEN2_VL_FACTOR) -> int:
    """LLM tokens one image becomes (plus <|vision_start|> and <|vision_end|>, counted by text_tokens)."""
    h, w = resized_size(height, width, min_pixels, max_pixels, factor)
    return (h // factor) * (w // factor)


def load_tokenizer(model: str):
    """The model's own tokenizer.json when it is on this machine (a local folder or the HF cache), else None."""
    candidates = [Path(model) / "tokenizer.json", *hub_cache_files(model, "tokenizer.json")]
    for path in candidates:
        if path.is_file():
            try:
                from tokenizers import Tokenizer
            except ImportError:
                return None
            return Tokenizer.from_file(str(path))
    return None


def estimate_text_tokens(texts: list[str], tokenizer=None, images: int = 1, system: str | None = None) -> int:
    """Tokens of a conversation's turns and chat template, and each page's <|vision_start|> and
    <|vision_end|>; exact with the model's tokenizer, else ~chars/3.2. `system` is the system turn
    the template adds to a row that has none (the recipe's system_prompt, or the family's default)."""
    turns = [*texts, system] if system else list(texts)
    if tokenizer is not None:
        body = sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in turns)
    else:
        body = sum(math.ceil(len(t) / CHARS_PER_TOKEN) for t in turns)
    return body + TOKENS_PER_TURN * len(turns) + VISION_MARKERS * images
