"""One Jinja2 environment for every HTML report vlm3 writes (evaluation, comparison, training, dataset card, weak pages).

Usage:
    from vlm3.core.templates import render
    Path("report.html").write_text(render("evaluation.html.j2", **summary))   # a plain dict the JSON already holds

Templates live in vlm3/core/templates/: base.html.j2 (the page and its stylesheet), _macros.html.j2 (tables,
badges, definition lists) and _charts.html.j2 (inline SVG drawn from vlm3.core.charts' geometry). Autoescape is on
for every template and every value, attributes included; a value that is already markup must be Markup. Bidi
overrides and isolates are shown as visible escapes ("\\u202e"): raw, they reorder what the reader sees. An
undefined name is an error, never an empty string.
"""

from __future__ import annotations

import functools
import html
import math
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from vlm3.core.visible import BIDI_CONTROLS, visible_controls

PLACEHOLDER = "—"  # a missing number


def is_number(value: Any) -> bool:
    """A real, finite number (bool is not a number here, NaN is not a value)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(rate: Any, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage; a missing value as a dash."""
    return f"{rate * 100:.{digits}f}%" if is_number(rate) else PLACEHOLDER


def fnum(value: Any, digits: int = 3) -> str:
    """A score with fixed decimals (an int as it is); a missing value as a dash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}" if is_number(value) else PLACEHOLDER


def shorten(text: Any, limit: int) -> str:
    """Whitespace collapsed, cut to limit characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: Any) -> Any:
    """What an expression prints: None as nothing, text escaped (quotes as &quot;, as html.escape writes them) with
    its bidi controls made visible; Markup (a macro's output) as it is."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return Markup(visible_controls(html.escape(value, quote=True), BIDI_CONTROLS))
    return value


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("vlm3.core", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_shown,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(pct=pct, fnum=fnum, shorten=shorten)
    env.tests["number"] = is_number
    return env


def render(name: str, **values: Any) -> str:
    """A report page from its template and plain values."""
    return environment().get_template(name).render(**values)
