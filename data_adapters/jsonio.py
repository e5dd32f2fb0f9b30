"""Atomic JSON and JSONL writes: a crash leaves the old file or none, never half a file.

Usage:
    write_json(run / "summary.json", summary)
    count = write_jsonl(out / "train.jsonl", rows)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """One object per line; returns how many were written."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count
