"""Axolotl plugin: a frozen vision tower runs its forward pass only, the run records its padding,
the two HF TrainingArguments Axolotl 0.19 has no config key for are set, and `role_boundaries` reach
the multimodal collator.

Usage (the rendered Axolotl config names it; the trainer runs with the project root on PYTHONPATH):
    plugins:
      - vlm3.train.axolotl_plugin.Vlm3Plugin

Why: transformers' `enable_input_require_grads` (called by Axolotl's adapter loader, by PEFT and
by `gradient_checkpointing_enable` at the start of `Trainer.train`) hooks every sub-model's input
embedding, and for Qwen2-VL's vision tower that is `patch_embed`. The patch embeddings then require
grad, so autograd records the whole frozen tower, re-runs its checkpointed blocks and backpropagates
through it, although no weight there is trained and the language model's gradients do not depend
on it. Running a tower with no trainable parameter under `torch.no_grad()` removes that work; the
hooks are re-added at train start, so the tower's forward is wrapped rather than the hooks removed.

`use_cpu`: the HF Trainer refuses `bf16: true` without a CUDA device unless `use_cpu` is set
(transformers 5.16 `TrainingArguments.__post_init__`); it is set when Axolotl found no accelerator
(`cfg.device == "cpu"`), so the same bf16 config trains on a GPU and, for the tests, on a CPU.
`dataloader_persistent_workers`: Axolotl passes the Trainer's value to its DataLoader but never
sets it (`axolotl/core/trainers/base.py`); without it the workers that decode and resize the
pages are restarted at every epoch and after every evaluation. Only meaningful with workers.

`role_boundaries` (the turn markers that confine training to the assistant turns for a template
Axolotl has no strategy for: Qwen3-VL's, see vlm3.recipe.families) crash Axolotl 0.19 as it loads them
from the YAML: its config is a DictDefault, whose entries answer every attribute (None for a
missing one), so `_resolve_role_boundary_override` takes them for pydantic models and calls
`spec.model_dump()`, which is None (`TypeError: 'NoneType' object is not callable`,
axolotl/processing_strategies.py). Before the model loads, the plugin turns each entry into
Axolotl's own `RoleBoundarySpec`, the model that check expects; nothing else changes.

The padding meter counts real and padded positions of every training batch (from the attention
mask the collator made) and writes `padding.json` in the output folder at the end of training.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback
from typing import Any

PADDING_FILE = "padding.json"


def vision_tower(model):
    """The vision tower (`model.visual`: Qwen2-VL's, Qwen2.5-VL's and Qwen3-VL's have patch_embed and blocks)
    under any PEFT or wrapper layers, or None."""
    for name, module in model.named_modules():
        if name.endswith("visual") and hasattr(module, "patch_embed") and hasattr(module, "blocks"):
            return module
    return None


def run_frozen_vision_forward_only(model) -> bool:
    """Wrap the vision tower's forward in no_grad whenever none of its parameters trains.

    Checked on every call, not once: a recipe that adds LoRA to the tower, or unfreezes it later,
    keeps its gradients. Returns False when the model has no vision tower (nothing to do).
    """
    import torch

    tower = vision_tower(model)
    if tower is None or getattr(tower, "_vlm3_forward_only", False):
        return tower is not None
    forward = tower.forward

    @functools.wraps(forward)
    def forward_frozen_without_grad(*args, **kwargs):
        if torch.is_grad_enabled() and not any(p.requires_grad for p in tower.parameters()):
            with torch.no_grad():
                return forward(*args, **kwargs)
        return forward(*args, **kwargs)

    tower.forward = forward_frozen_without_grad
    tower._vlm3_forward_only = True
    return True


class PaddingMeter:
    """Real and padded token positions of the training batches a model saw (a forward pre-hook)."""

    def __init__(self):
        self.real = 0
        self.positions = 0
        self.batches = 0

    def attach(self, model) -> None:
        model.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None and mask.dim() == 2:
            self.real += int(mask.sum())
            self.positions += mask.numel()
            self.batches += 1

    def to_dict(self) -> dict:
        padded = self.positions - self.real
        return {"batches": self.batches, "positions": self.positions, "real_tokens": self.real, "padded_positions": padded,
                "padding_fraction": padded / self.positions if self.positions else None}


class WritePadding(TrainerCallback):
    def __init__(self, meter: PaddingMeter, output_dir: str):
        self.meter = meter
        self.output_dir = output_dir

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(self.output_dir) / PADDING_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.meter.to_dict(), indent=2) + "\n", encoding="utf-8")


def training_args_for(device: str, dataloader_workers: int) -> dict[str, Any]:
    """The extra TrainingArguments for a device ("cpu", "cuda:0", ...) and a worker count."""
    extra: dict[str, Any] = {}
    if device == "cpu":
        extra["use_cpu"] = True
    if dataloader_workers > 0:
        extra["dataloader_persistent_workers"] = True
    return extra


def role_boundary_specs(cfg) -> bool:
    """cfg.role_boundaries as Axolotl's RoleBoundarySpec models (see the module docstring); False when there are none."""
    from axolotl.utils.schemas.multimodal import RoleBoundarySpec

    if not cfg.role_boundaries:
        return False
    cfg.role_boundaries = [spec if isinstance(spec, RoleBoundarySpec) else RoleBoundarySpec(**dict(spec))
                           for spec in cfg.role_boundaries]
    return True


# Families whose RMSNorm Liger 0.8.1 patches under a name transformers 5.16 no longer uses: its apply functions
# replace `modeling_qwen2_vl.Qwen2RMSNorm` (and Qwen2.5-VL's), but the layers are built from `Qwen2VLRMSNorm`
# and `Qwen2_5_VLRMSNorm`, so Axolotl's `liger_rms_norm: true` changes nothing there. The same apply function
# given the built model patches the modules themselves (liger_kernel/transformers/monkey_patch.py).
LIGER_RMS_NORM_BY_INSTANCE = {"qwen2_vl": "apply_liger_kernel_to_qwen2_vl", "qwen2_5_vl": "apply_liger_kernel_to_qwen2_5_vl"}


def patch_liger_rms_norm(model) -> bool:
    """Liger's RMSNorm on the built model's norms, for the families in LIGER_RMS_NORM_BY_INSTANCE; False for others.

    Only the RMSNorm: the other kernels Axolotl's Liger plugin asked for are patched by class and work."""
    import inspect

    from liger_kernel.transformers import monkey_patch

    name = LIGER_RMS_NORM_BY_INSTANCE.get(getattr(model.config, "model_type", None))
    if name is None:
        return False
    apply = getattr(monkey_patch, name)
    flags = {"rope": False, "cross_entropy": False, "fused_linear_cross_entropy": False, "layer_norm": False, "swiglu": False}
    parameters = inspect.signature(apply).parameters
    apply(rms_norm=True, model=model, **{key: value for key, value in flags.items() if key in parameters})
    return True


class Vlm3Plugin(BasePlugin):
    """Frozen vision tower forward-only, a padding count per run, the TrainingArguments above, role_boundaries that load,
    and Liger's RMSNorm where Liger's own patch misses it."""

    def __init__(self):
        super().__init__()
        self.meter = PaddingMeter()

    def pre_model_load(self, cfg):
        role_boundary_specs(cfg)

    def post_model_build(self, cfg, model):
        if cfg.liger_rms_norm:  # before the adapter wraps the model: Liger's patch expects the bare model classes
            patch_liger_rms_norm(model)

    def post_model_load(self, cfg, model):
        run_frozen_vision_forward_only(model)
        self.meter.attach(model)

    def add_callbacks_post_trainer(self, cfg, trainer):
        return [WritePadding(self.meter, trainer.args.output_dir)]

    def get_training_args(self, cfg):
        return training_args_for(str(cfg.device or "cpu"), int(cfg.dataloader_num_workers or 0))
