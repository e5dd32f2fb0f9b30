"""Page images in a self-contained HTML page: each embedded once, shown small, opened full size on click.

Usage:
    pages = PageImages()
    card = {"pages": pages.shown(sample), ...}      # every page of the sample, in order (plain dicts)
    render("evaluation.html.j2", ..., pages=pages.embedded_pages())   # after every shown() call

The markup is drawn by the macros page_thumbnails and page_overlays in vlm3/core/templates/_macros.html.j2.
Several questions share a page: the image is encoded once, as a CSS class whose background is
the data: URI, and every card that shows the page references that class. Clicking a thumbnail
opens the same image at full width in a CSS :target overlay (no script); clicking it closes it.
The embedded copy is at most FULL_WIDTH px wide: large enough to read a spec table.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image

from data_adapters.images import open_page
from data_adapters.samples import sample_pages

FULL_WIDTH = 1100  # px: a 850x1100 manual page is kept at its size; larger scans are scaled down
THUMB_WIDTH = 360  # px on screen
JPEG_QUALITY = 80


def encode_page(path: Path, width: int = FULL_WIDTH) -> tuple[str, int, int] | None:
    """(data URI of a JPEG at most `width` wide, width, height), or None if the image cannot be read."""
    try:
        image = open_page(path)  # upright (EXIF applied), 16-bit scaled, transparency on white: as the model saw it
        if image.width > width:
            image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        size = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), *size


class PageImages:
    """The pages of one HTML document: shown() and page() reference a page, embedded_pages() gives each once."""

    def __init__(self) -> None:
        self._pages: dict[str, tuple[str, str, int, int] | None] = {}  # path -> (css id, uri, w, h) or None

    def _entry(self, path: str) -> tuple[str, str, int, int] | None:
        if path not in self._pages:
            encoded = encode_page(Path(path))
            self._pages[path] = None if encoded is None else (f"pg{len(self._pages) + 1}", *encoded)
        return self._pages[path]

    def shown(self, sample: dict) -> list[dict[str, Any]]:
        """Every page of a sample (or score record), in order, as the page_thumbnails macro draws it:
        {"css_id", "name", "width", "height"}, or {"placeholder": text} for a page that cannot be shown
        and for a sample that shows none ("text-only")."""
        pages = sample_pages(sample)
        if not pages:
            return [{"placeholder": "text-only"}]
        return [self.page(path, name) for path, name in pages]

    def page(self, path: str | None, name: str | None = None) -> dict[str, Any]:
        name = name or path
        if not path:
            return {"placeholder": f"no page image {name or ''}".strip()}
        entry = self._entry(str(path))
        if entry is None:
            return {"placeholder": f"image unavailable: {name}"}
        css_id, _, width, height = entry
        return {"css_id": css_id, "name": name, "width": width, "height": height}

    @property
    def count(self) -> int:
        return sum(1 for entry in self._pages.values() if entry)

    def embedded_pages(self) -> list[dict[str, Any]]:
        """Each page shown so far, once: {"css_id", "uri", "width", "height"}, for the page_overlays macro."""
        return [{"css_id": css_id, "uri": uri, "width": width, "height": height}
                for css_id, uri, width, height in (e for e in self._pages.values() if e)]
