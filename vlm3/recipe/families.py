"""Model families: every fact vlm3 needs about Qwen2-VL, Qwen2.5-VL and Qwen3-VL, in one table.

Usage:
    from vlm3.recipe.families import family_of
    family = family_of("Qwen/Qwen3-VL-8B-Instruct")        # or a local folder with a config.json
    family.factor                                          # 32: pixels per visual-token side
    family.lora_regex(["q_proj", "v_proj"])                # PEFT full-match regex, language model only

The family is read from the model's config, never guessed from its name: a Hub id's published
config (`KNOWN_CONFIGS`, copied field by field from the Hub's config.json) or a local folder's
`config.json` (`model_type`). Everything that differs between the families lives in `FAMILIES`:

- the visual-token rule: an image is resized so both sides are multiples of patch x merge
  (28 px for Qwen2-VL and Qwen2.5-VL: 14-px patches merged 2x2; 32 px for Qwen3-VL: 16-px
  patches merged 2x2), its area inside [min_pixels, max_pixels]; one LLM token per merged patch;
- where LoRA goes: the language model's projections (`model.language_model.layers.N.…`), the
  same names in all three; the vision blocks' names differ (Qwen2-VL `mlp.fc1/fc2`, Qwen2.5-VL a
  gated `mlp.gate_proj/up_proj/down_proj`, Qwen3-VL `mlp.linear_fc1/linear_fc2`), which is why a
  bare `gate_proj` target, or Axolotl's `lora_target_linear`, would adapt Qwen2.5-VL's tower too;
- the chat template Axolotl trains with, and how it finds the assistant turns to train on;
- Axolotl 0.19's settings and limits for the family, vLLM 0.33's architecture name;
- the published shapes `vlm3 plan` prices (through `KNOWN_CONFIGS`).

What a family cannot do in the pinned versions is refused when the recipe is validated
(`recipe_problems`), with the reason, instead of on a GPU.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm3.core.hub import hub_cache_files

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LANGUAGE_MODEL_PROJECTIONS = ATTENTION + MLP
# Where transformers 5.16 puts the vision tower in every family's model (and its output head), as the
# bitsandbytes quantizer matches module names: a prefix followed by a dot, anchored at the start.
VISION_MODULE = "model.visual"
OUTPUT_HEAD = "lm_head"

# Axolotl 0.19 masks multimodal rows to the assistant turns only where it knows the turn markers: its
# `qwen2_vl` strategy has them built in; for any other template they are given as `role_boundaries`
# (axolotl/processing_strategies.py), else every token of the conversation is trained on. Axolotl 0.19 crashes on
# role_boundaries read from a YAML; vlm3.train.axolotl_plugin (always in the rendered plugins) makes them load.
CHATML_ROLE_BOUNDARIES = [{"role": role, "start": f"<|im_start|>{role}\n", "end": "<|im_end|>"}
                          for role in ("system", "user", "assistant")]


class FamilyError(ValueError):
    """model.base names no model vlm3 can read a family from; str() says what to do."""

    def __init__(self, message: str, missing_folder: bool = False):
        super().__init__(message)
        self.missing_folder = missing_folder  # a local folder not built yet: checked again where it is used


@dataclass(frozen=True)
class Family:
    name: str  # config.json model_type
    label: str
    architecture: str  # config.json architectures[0]: transformers' class and vLLM's registry name
    patch_size: int  # vision patch side, pixels
    merge_size: int  # patches merged per side into one LLM token
    vision_lora: str  # regex of the vision blocks' linear layers (only with include_vision_tower)
    # Axolotl's chat_template value: its qwen2_vl template is the one Qwen2-VL and Qwen2.5-VL ship (ChatML with a
    # default system prompt); Axolotl 0.19 has none for Qwen3-VL, which trains with the checkpoint's own (no default
    # system prompt; the one vLLM serves with) and its ChatML turn markers as role_boundaries.
    chat_template: str
    role_boundaries: list[dict] | None  # Axolotl cfg.role_boundaries when its strategy has none built in
    # Axolotl 0.19's fused LoRA kernels look the attention class up by model_type
    # (monkeypatch/lora_kernels.py): qwen3_vl is special-cased, qwen2_vl and qwen2_5_vl are not found.
    lora_kernels: bool
    liger: bool  # Liger 0.8.1 has an apply function for the model_type (Axolotl's Liger plugin calls it)
    vllm_lora: bool  # vLLM 0.33's model class takes LoRA adapters (serve.serve_adapter)
    # The system turn the chat template adds to a conversation that has none (counted in every row's tokens).
    default_system: str | None = None

    @property
    def factor(self) -> int:
        """Pixels per visual-token side: both sides of a resized image are multiples of it."""
        return self.patch_size * self.merge_size

    @property
    def pixels_per_token(self) -> int:
        return self.factor * self.factor

    def lora_regex(self, targets: list[str], include_vision_tower: bool = False) -> str:
        """A PEFT full-match regex over the language model's projections (and the vision tower's, if asked)."""
        unknown = [t for t in targets if t not in LANGUAGE_MODEL_PROJECTIONS]
        if unknown:
            raise ValueError(f"train.lora.target_modules: unknown module(s) {unknown}; use {list(LANGUAGE_MODEL_PROJECTIONS)}")
        attn = [t.removesuffix("_proj") for t in ATTENTION if t in targets]
        mlp = [t.removesuffix("_proj") for t in MLP if t in targets]
        branches = []
        if attn:
            branches.append(rf"self_attn\.({'|'.join(attn)})_proj")
        if mlp:
            branches.append(rf"mlp\.({'|'.join(mlp)})_proj")
        regex = rf"model\.language_model\.layers\.\d+\.({'|'.join(branches)})"
        if include_vision_tower:
            regex = rf"({regex}|{self.vision_lora})"
        re.compile(regex)
        return regex

    def axolotl_keys(self) -> dict[str, Any]:
        """The family's Axolotl 0.19 keys (multimodal settings that work; see the module docstring)."""
        keys: dict[str, Any] = {"processor_type": "AutoProcessor", "chat_template": self.chat_template}
        if self.role_boundaries:
            keys["role_boundaries"] = [dict(b) for b in self.role_boundaries]
        return keys


QWEN2_DEFAULT_SYSTEM = "You are a helpful assistant."  # Qwen2-VL's template (Axolotl's qwen2_vl) adds it

FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family(
        name="qwen2_vl", label="Qwen2-VL", architecture="Qwen2VLForConditionalGeneration",
        patch_size=14, merge_size=2,
        vision_lora=r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",
        chat_template="qwen2_vl", role_boundaries=None, default_system=QWEN2_DEFAULT_SYSTEM,
        lora_kernels=False, liger=True, vllm_lora=True,
    ),
    "qwen2_5_vl": Family(
        name="qwen2_5_vl", label="Qwen2.5-VL", architecture="Qwen2_5_VLForConditionalGeneration",
        patch_size=14, merge_size=2,
        vision_lora=r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)",
        chat_template="qwen2_vl", role_boundaries=None, default_system=QWEN2_DEFAULT_SYSTEM,
        lora_kernels=False, liger=True, vllm_lora=True,
    ),
    "qwen3_vl": Family(
        name="qwen3_vl", label="Qwen3-VL", architecture="Qwen3VLForConditionalGeneration",
        patch_size=16, merge_size=2,
        vision_lora=r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))",
        chat_template="tokenizer_default", role_boundaries=CHATML_ROLE_BOUNDARIES,
        lora_kernels=True, liger=True, vllm_lora=True,
    ),
}

_TOKEN_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653}

# Published config.json of the Hub models vlm3 knows (Hugging Face Hub, as released; the fields that
# set the family, the module tree and the shapes). A local folder's own config.json is read instead.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2-VL-7B-Instruct": {
        "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"], **_TOKEN_IDS,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                        "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
                        "max_position_embeddings": 32768, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16, "in_channels": 3,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "quick_gelu"},
    },
    "Qwen/Qwen2-VL-2B-Instruct": {
        "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"], **_TOKEN_IDS,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                        "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
                        "max_position_embeddings": 32768, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "mlp_ratio": 4, "num_heads": 16, "in_channels": 3,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "quick_gelu"},
    },
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"], **_TOKEN_IDS,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                        "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
                        "max_position_embeddings": 128000, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "out_hidden_size": 3584, "num_heads": 16,
                          "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                          "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                          "hidden_act": "silu"},
    },
    "Qwen/Qwen3-VL-8B-Instruct": {
        "model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"], **_TOKEN_IDS,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6,
                        "rope_theta": 5e6, "max_position_embeddings": 262144,
                        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True}},
        "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "out_hidden_size": 4096, "num_heads": 16,
                          "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                          "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24],
                          "hidden_act": "gelu_pytorch_tanh"},
    },
}


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_local(base: str) -> bool:
    """A local model folder (existing, or a path that cannot be a Hub id such as .cache/tiny-qwen2-vl)."""
    return base not in KNOWN_CONFIGS and (Path(base).exists() or base.startswith((".", "/", "~")) or not HUB_ID.match(base))


def read_config(base: str) -> dict[str, Any]:
    """The model's config: the published one of a known Hub id, else a local folder's (or the HF cache's) config.json."""
    if base in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[base]
    if is_local(base):
        folder = Path(base).expanduser()
        if not folder.is_dir():
            raise FamilyError(f"model.base {base!r}: no such model folder yet (build the tiny models with `make tiny-model`, "
                              "or point at a folder with a config.json)", missing_folder=True)
        path = folder / "config.json"
        if not path.is_file():
            raise FamilyError(f"model.base {base!r}: {path} is missing: a model folder holds config.json beside its weights")
    else:
        found = hub_cache_files(base, "config.json")
        path = found[-1] if found else None
        if path is None:
            known = ", ".join(KNOWN_CONFIGS)
            raise FamilyError(f"model.base {base!r}: not a Hub model vlm3 knows the config of ({known}); download its config "
                              "(`hf download <id> config.json`) or use a local folder with its config.json")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise FamilyError(f"model.base {base!r}: {path} is {path.stat().st_size:,} bytes, over {MAX_CONFIG_BYTES:,}: not a model config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FamilyError(f"model.base {base!r}: {path} is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise FamilyError(f"model.base {base!r}: {path} is not a JSON object")
    return config


MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few kB


@functools.lru_cache(maxsize=64)
def _family_of(base: str, resolved: str) -> Family:
    config = read_config(base)
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        names = ", ".join(f"{f.label} ({f.name})" for f in FAMILIES.values())
        raise FamilyError(f"model.base {base!r}: model_type {model_type!r} is not a family vlm3 trains; it trains {names}")
    return FAMILIES[model_type]


def family_of(base: str) -> Family:
    """The family of a Hub id or local folder (FamilyError says why when none can be read)."""
    return _family_of(base, str(Path(base).expanduser().resolve()) if is_local(base) else "")
