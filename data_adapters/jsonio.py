"""Atomic JSON, JSONL and text writes, and a per-folder writer lock.

Usage:
    write_json(run / "summary.json", summary)
    count = write_jsonl(out / "train.jsonl", rows)
    write_text_atomic(eval_dir / "report.html", html)
    with folder_lock(eval_dir, "scoring"):    # FolderBusy if another process holds it
        ...

A crash leaves the old file or none, never half a file. Each write goes through its own
temporary file (a unique name next to the target), so two processes writing the same file
never collide on a shared `.tmp` name: the last complete write wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

LOCK_NAME = ".vlm3.lock"


class FolderBusy(Exception):
    """Another process is writing this folder; str() says which and what to do."""


@contextlib.contextmanager
def _atomic_handle(path: Path) -> Iterator[Any]:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with _atomic_handle(path) as handle:
        handle.write(text)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """One object per line; returns how many were written."""
    count = 0
    with _atomic_handle(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


@contextlib.contextmanager
def folder_lock(folder: Path, doing: str) -> Iterator[None]:
    """An exclusive lock on folder/.vlm3.lock for as long as the block runs (released by the
    kernel when the process dies, even by kill -9). A second writer gets FolderBusy at once."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise FolderBusy(f"{folder} is being written by {holder}; wait for it to finish "
                             "(or stop it), then run this command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"vlm3 pid {os.getpid()} ({doing})".encode(), 0)
        yield
    finally:
        os.close(fd)
