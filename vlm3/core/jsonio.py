"""Atomic JSON, JSONL and text writes, and a per-folder writer lock.

Usage:
    write_json(run / "summary.json", summary)
    count = write_jsonl(out / "train.jsonl", rows)
    write_text_atomic(eval_dir / "report.html", html)
    with folder_lock(eval_dir, "scoring"):    # FolderBusy if another process holds it
        ...
    with open_no_follow(eval_dir / "predictions.jsonl", "a") as out:   # LinkedFile if it is a link

A crash leaves the old file or none, never half a file. Each write goes through its own
temporary file (a unique name next to the target), so two processes writing the same file
never collide on a shared `.tmp` name: the last complete write wins.
Nothing is written through a symbolic link: a link planted in a run or evaluation folder would
let vlm3 empty, cut or append to any file the user can write. Such a write is LinkedFile before
any byte is written, and the link's target is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

LOCK_NAME = ".vlm3.lock"


class FolderBusy(Exception):
    """Another process is writing this folder; str() says which and what to do."""


class LinkedFile(FolderBusy):
    """A file vlm3 would write is a symbolic link; str() names it and says what to do.
    A FolderBusy, so every verb that reports a busy folder reports this too, as a sentence."""


def link_refusal(path: Path) -> LinkedFile:
    return LinkedFile(f"{path} is a symbolic link; vlm3 never writes through links: replace it with a regular "
                      "file or use a new --out folder")


def refuse_link(path: Path) -> None:
    """LinkedFile when path is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise link_refusal(Path(path))


def open_fd_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open with O_NOFOLLOW: a link at path is LinkedFile, checked by the kernel at the open itself
    (no window between a check and the open for a link to appear in)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW gives for a link
            raise link_refusal(Path(path)) from None
        raise


def open_no_follow(path: Path, mode: str) -> Any:
    """A text ("a") or binary ("rb+") handle opened without following a link; UTF-8, "\\n" line ends."""
    flags = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "rb+": os.O_RDWR}[mode]
    fd = open_fd_no_follow(path, flags)
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8", newline="\n")


@contextlib.contextmanager
def _atomic_handle(path: Path) -> Iterator[Any]:
    path = Path(path)
    # os.replace would swap the link for a file and leave its target alone, but the user put the link
    # there for a reason: say so rather than silently replace it.
    refuse_link(path)
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
    fd = open_fd_no_follow(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # the lock is truncated: never a link's target
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
