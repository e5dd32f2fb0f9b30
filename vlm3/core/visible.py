"""Text a model or server controls, made safe to show in a terminal or a page: controls as visible escapes.

Usage:
    from vlm3.core.visible import visible_controls, terminal_json
    print(visible_controls(server_text)); print(terminal_json(record))

Here, below the CLI, so that the harness's reports and the CLI's verbs share one rule (vlm3.core.console
re-exports it).
"""

from __future__ import annotations

import json
import re
from typing import Any

# The bidi embeddings, overrides, isolates and marks: they reorder what a terminal or browser shows,
# so "rtl\u202egnp.exe" reads as "rtlexe.png".
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Those, and every C0 and C1 control but tab and newline (ESC starts a sequence that retitles or clears
# the terminal; U+009B is a one-character CSI), and lone surrogates (JSON can carry them; stdout cannot encode them).
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def visible_controls(text: str, unsafe: re.Pattern = TERMINAL_CONTROLS) -> str:
    """Text a model or server controls, safe to show: each unsafe character as its visible escape ("\\u202e")."""
    return unsafe.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def terminal_json(value: Any) -> str:
    """json.dumps for a terminal: other scripts stay readable, controls and bidi characters go as \\u escapes.

    Raw characters sit only inside JSON strings, where a \\u escape is the same character to any parser."""
    return visible_controls(json.dumps(value, ensure_ascii=False))
