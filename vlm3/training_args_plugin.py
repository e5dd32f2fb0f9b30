"""An Axolotl plugin that sets the two HF TrainingArguments Axolotl 0.19 has no config key for.

Usage (in a rendered Axolotl config; vlm3.render adds it to every config):
    plugins:
      - vlm3.training_args_plugin.TrainingArgsPlugin

- `use_cpu`: the HF Trainer refuses `bf16: true` without a CUDA device unless `use_cpu` is set
  (transformers 5.16 `TrainingArguments.__post_init__`). Set when Axolotl found no accelerator
  (`cfg.device == "cpu"`), so the same bf16 config trains on a GPU and, for the tests, on a CPU.
- `dataloader_persistent_workers`: Axolotl passes the Trainer's value to its DataLoader but never
  sets it (`axolotl/core/trainers/base.py`); without it the workers that decode and resize the
  pages are restarted at every epoch and after every evaluation. Only meaningful with workers.

Axolotl imports this module in the trainer environment (the project root is on PYTHONPATH);
it imports nothing heavy itself.
"""

from __future__ import annotations

from typing import Any

from axolotl.integrations.base import BasePlugin


def training_args_for(device: str, dataloader_workers: int) -> dict[str, Any]:
    """The extra TrainingArguments for a device ("cpu", "cuda:0", ...) and a worker count."""
    extra: dict[str, Any] = {}
    if device == "cpu":
        extra["use_cpu"] = True
    if dataloader_workers > 0:
        extra["dataloader_persistent_workers"] = True
    return extra


class TrainingArgsPlugin(BasePlugin):
    def get_training_args(self, cfg):
        return training_args_for(str(cfg.device or "cpu"), int(cfg.dataloader_num_workers or 0))
