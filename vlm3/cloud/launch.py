"""`vlm3 modal train RECIPE`: check the recipe, the data and the Modal specifics here, then run the app.

Usage:
    vlm3 modal train recipes/e30m3_lora.yaml                      # check, then upload, train, merge, smoke-test
    vlm3 modal train recipes/e30m3_lora.yaml --max-samples 100    # a train-dev run
    vlm3 modal train recipes/e30m3_lora.yaml --detach             # goes on when this machine sleeps

`modal run modal_entry.py --recipe R` does the same work, but Modal creates every object of an
app, building every image, before its local entrypoint runs (modal/runner.py,
_create_all_objects): a bad recipe is reported after the builds. This command runs the same
checks (modal_entry.check_and_prepare: recipe, Modal specifics, data, rendered config) first,
and creates the app through Modal's Python API (`app.run()`) only when they pass.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def load_modal_entry() -> ModuleType:
    """modal_entry.py as `modal run` loads it: a file at the project root, not an installed package.

    Importing it declares the app, images, volumes and functions; declaring creates nothing on Modal.
    """
    if "modal_entry" in sys.modules:
        return sys.modules["modal_entry"]
    spec = importlib.util.spec_from_file_location("modal_entry", PROJECT_ROOT / "modal_entry.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["modal_entry"] = module
    spec.loader.exec_module(module)
    return module


def modal_token_problem() -> str | None:
    """Why Modal cannot be asked (no token configured here), or None. Read from Modal's own config
    (~/.modal.toml, MODAL_TOKEN_ID/MODAL_TOKEN_SECRET); nothing is sent."""
    from modal.config import config

    if config.get("token_id") and config.get("token_secret"):
        return None
    return ("Error: no Modal token on this machine: run `modal token new` (or set MODAL_TOKEN_ID and "
            "MODAL_TOKEN_SECRET), then run this command again. Nothing was written.")


def train_on_modal(recipe: str, max_samples: int = 0, detach: bool = False, runs_root: Path = Path("runs"), out=print) -> int:
    problem = modal_token_problem()  # before any run folder is written
    if problem:
        out(problem)
        return 1
    entry = load_modal_entry()
    code, prepared = entry.check_before_creating(recipe, max_samples, out, runs_root)
    if code:
        return code
    import modal

    out("checks passed; creating the app on Modal (the first build of the trainer image takes a few minutes)")
    from vlm3.cloud.support import APP_NAME

    # The train function prints the console's status line into the Modal logs (vlm3.train.trainer_env.status_printer).
    out("training prints a status line every few steps (step, loss, eval loss, lr, tok/s, ETA) into the Modal logs"
        + (f"; follow a detached run with `modal app logs {APP_NAME} | grep 'training: '`" if detach else ", shown here"))
    try:
        with modal.enable_output(), entry.app.run(detach=detach):
            return entry.launch(recipe=recipe, max_samples=max_samples, out=out, runs_root=runs_root, prepared=prepared)
    except (modal.exception.AuthError, modal.exception.ConnectionError, ConnectionError, TimeoutError) as exc:
        out(f"Error: Modal could not be reached or refused the token ({type(exc).__name__}: {exc}). The checked run "
            f"folder is kept here; run the same command again when Modal answers (`modal token new` if the token is wrong).")
        return 1
