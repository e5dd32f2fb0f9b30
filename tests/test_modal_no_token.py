"""`vlm3 modal train` without a Modal token, or with Modal out of reach: one sentence, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from vlm3.cloud import launch as modal_launch


def test_no_token_is_one_sentence_and_writes_no_run(monkeypatch, tmp_path):
    import modal.config

    monkeypatch.setattr(modal.config.config, "get", lambda key, **kw: None)
    said: list[str] = []
    code = modal_launch.train_on_modal(str(ROOT / "recipes" / "tiny_cpu_demo.yaml"), runs_root=tmp_path / "runs",
                                       out=said.append)
    assert code == 1
    assert "modal token new" in said[-1] and "Nothing was written" in said[-1]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("error", ["ConnectionError", "AuthError"])
def test_modal_out_of_reach_is_one_sentence(monkeypatch, tmp_path, error):
    import modal.config
    import modal.exception

    monkeypatch.setattr(modal.config.config, "get", lambda key, **kw: "set")
    entry = modal_launch.load_modal_entry()
    monkeypatch.setattr(entry, "check_before_creating", lambda *a, **k: (0, None))

    class Unreachable:
        def __enter__(self):
            raise getattr(modal.exception, error)("could not connect to api.modal.com")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(entry.app, "run", lambda **kw: Unreachable())
    said: list[str] = []
    code = modal_launch.train_on_modal(str(ROOT / "recipes" / "tiny_cpu_demo.yaml"), runs_root=tmp_path / "runs",
                                       out=said.append)
    assert code == 1
    assert said[-1].startswith("Error: Modal could not be reached") and "run the same command again" in said[-1]
