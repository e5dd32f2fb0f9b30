"""Faults that must end in one sentence, not a traceback: odd images for `vlm3 ask`, a full disk."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlm3.cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


def test_ask_refuses_a_decompression_bomb_in_one_sentence(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # 400 megapixels in a few kB
    proc = run_cli("ask", "http://127.0.0.1:9/v1", str(bomb), "What is the torque?")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "megapixel" in proc.stderr or "decompression bomb" in proc.stderr


def test_ask_refuses_a_nul_byte_in_the_image_path():
    # argv cannot carry a NUL byte; the path arrives through ask's own function (examples, notebooks, tests).
    from vlm3.serve.ask import AskError, image_url_for

    with pytest.raises(AskError, match="NUL"):
        image_url_for("page\x00.png")


def test_a_full_disk_is_one_sentence_that_says_nothing_was_lost(monkeypatch, capsys):
    from vlm3.cli import main as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/eval/finetuned/predictions.jsonl")

    parser = cli.build_parser()
    args = parser.parse_args(["check", "recipes/tiny_cpu_demo.yaml"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(args, "func", full, raising=False)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    assert cli.main([]) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and "predictions.jsonl" in err and "kept" in err


def test_any_other_os_error_is_still_a_bug_that_tracebacks(monkeypatch):
    from vlm3.cli import main as cli

    parser = cli.build_parser()
    args = parser.parse_args(["check", "recipes/tiny_cpu_demo.yaml"])
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)

    def broken(args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(args, "func", broken, raising=False)
    with pytest.raises(OSError):
        cli.main([])
