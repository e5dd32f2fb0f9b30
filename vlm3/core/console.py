"""The terminal every vlm3 verb prints to, and the exit codes of user mistakes.

Usage:
    from vlm3.core.console import console, err_console, UserError, EXIT_DATA
    print(visible_controls(server_text)); print(terminal_json(record))

Kept apart from vlm3.cli.main so that the verb modules (train_cmds, eval_cmds, preflight_cmds, ...)
and the CLI that registers them do not import each other.
"""

from __future__ import annotations

from rich.console import Console

from vlm3.core.visible import BIDI_CONTROLS, TERMINAL_CONTROLS, terminal_json, visible_controls  # noqa: F401 - re-exported

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_DATA = 1  # bad data: fix the file and line named
EXIT_RECIPE = 2  # bad recipe: every problem at once


class UserError(Exception):
    """A mistake the user can fix; the message is printed as is."""
