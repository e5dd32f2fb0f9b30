"""`vlm3 modal train RECIPE` checks before it creates any Modal object.

The real CLI runs in a subprocess whose Modal client is pointed (MODAL_SERVER_URL, fake tokens)
at a TCP listener on loopback: creating the app, an image or a volume is an RPC, so any Modal
object would show up as a connection. A bad recipe makes none; a good one makes one within
seconds (which shows the listener sees what it is meant to see). No account, no network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEMO_RECIPE, ROOT, TINY_MODEL

CONTACT_WAIT_S = 120


class ModalListener:
    """Counts TCP connections to a loopback port and closes each at once."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.server.close()


def launch(listener: ModalListener, recipe: Path, runs_root: Path, home: Path) -> tuple[subprocess.Popen, str]:
    """`vlm3 modal train` until it exits or first contacts 'Modal'; returns the process and its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(MODAL_SERVER_URL=f"http://127.0.0.1:{listener.port}", MODAL_TOKEN_ID="ak-test", MODAL_TOKEN_SECRET="as-test",
               HOME=str(home), MODAL_CONFIG_PATH=str(home / "none.toml"))
    log = home / "out.txt"
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", "modal", "train", str(recipe), "--runs-root", str(runs_root)],
                                cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while proc.poll() is None and not listener.connections and time.monotonic() - started < CONTACT_WAIT_S:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc, log.read_text()


@pytest.fixture
def listener():
    server = ModalListener()
    yield server
    server.close()


def test_a_bad_recipe_creates_no_modal_object(listener, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntrain:\n  epochs: three\n  lora:\n    rank: 8\ncompute:\n  gpu: H1000\n")
    proc, out = launch(listener, bad, tmp_path / "runs", tmp_path)
    assert proc.returncode == 2, out
    assert "train.epochs" in out and "did you mean 'r'?" in out and "compute.gpu" in out and "Traceback" not in out
    assert listener.connections == 0
    assert not (tmp_path / "runs").exists()


def test_a_recipe_modal_cannot_run_creates_no_modal_object(listener, tmp_path, sample_dir):
    """Valid as a recipe, refused by the Modal checks (flash-attention on a B200, which its kernels lack)."""
    raw = yaml.safe_load(DEMO_RECIPE.read_text())
    raw["compute"] = {"gpu": "B200"}
    raw["train"]["flash_attention"] = True
    path = tmp_path / "b200.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc, out = launch(listener, path, tmp_path / "runs", tmp_path)
    assert proc.returncode == 2, out
    assert "sm_100" in out and "Nothing was uploaded or started" in out
    assert listener.connections == 0


@pytest.mark.skipif(not (TINY_MODEL / "tiny-qwen2-vl.json").exists(), reason="needs the tiny model (make tiny-model)")
def test_a_good_recipe_reaches_modal_after_its_checks(listener, tmp_path, sample_dir):
    proc, out = launch(listener, DEMO_RECIPE, tmp_path / "runs", tmp_path)
    assert listener.connections > 0, out
    assert "checks passed" in out and "rows checked and converted" in out
    assert (tmp_path / "runs" / "tiny-cpu-demo").is_dir(), "the run was prepared here before the app was created"
