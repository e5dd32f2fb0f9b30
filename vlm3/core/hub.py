"""Files of a Hugging Face Hub model in this machine's cache, found without the Hub library (no network, no torch)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_files(model_id: str, filename: str) -> list[Path]:
    """A Hub model's file in the local Hugging Face cache, one per downloaded snapshot (none if never downloaded)."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    return sorted((hub / f"models--{model_id.replace('/', '--')}" / "snapshots").glob(f"*/{filename}"))
