"""Page images in a self-contained HTML page: each embedded once, shown small, opened full size on click.

Usage:
    pages = PageImages()
    card = tag("article", pages.thumbnails(sample), ...)     # every page of the sample, in order
    Path("r.html").write_text(document(title, *body, pages.embedded()))   # after every thumbnail() call

Several questions share a page: the image is encoded once, as a CSS class whose background is
the data: URI, and every card that shows the page references that class. Clicking a thumbnail
opens the same image at full width in a CSS :target overlay (no script); clicking it closes it.
The embedded copy is at most FULL_WIDTH px wide: large enough to read a spec table.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from data_adapters.images import open_page
from vlm3.core.html import Html, fragment, tag
from data_adapters.samples import sample_pages

FULL_WIDTH = 1100  # px: a 850x1100 manual page is kept at its size; larger scans are scaled down
THUMB_WIDTH = 360  # px on screen
JPEG_QUALITY = 80

CSS = """
.page-thumb { display: block; width: 360px; background-size: contain; background-repeat: no-repeat; border: 1px solid #d8dde6; }
a + a > .page-thumb { margin-top: .4rem; }
.lightbox { display: none; position: fixed; inset: 0; background: rgba(20, 24, 32, .85); z-index: 10; overflow: auto; padding: 2rem; box-sizing: border-box; }
.lightbox:target { display: block; }
.lightbox .page-full { display: block; margin: 0 auto; max-width: 100%; background-size: contain; background-repeat: no-repeat; background-color: #fff; }
.lightbox .caption { color: #fff; text-align: center; margin: .4rem 0; }
"""


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
    """The pages of one HTML document: thumbnail() references a page, embedded() writes each once."""

    def __init__(self) -> None:
        self._pages: dict[str, tuple[str, str, int, int] | None] = {}  # path -> (css id, uri, w, h) or None

    def _entry(self, path: str) -> tuple[str, str, int, int] | None:
        if path not in self._pages:
            encoded = encode_page(Path(path))
            self._pages[path] = None if encoded is None else (f"pg{len(self._pages) + 1}", *encoded)
        return self._pages[path]

    def thumbnails(self, sample: dict) -> Html:
        """Every page of a sample (or score record), in order; "text-only" for a sample that shows none."""
        pages = sample_pages(sample)
        if not pages:
            return tag("div", "text-only", class_="placeholder")
        return fragment(*[self.thumbnail(path, name) for path, name in pages])

    def thumbnail(self, path: str | None, name: str | None = None) -> Html:
        name = name or path
        if not path:
            return tag("div", f"no page image {name or ''}".strip(), class_="placeholder")
        entry = self._entry(str(path))
        if entry is None:
            return tag("div", f"image unavailable: {name}", class_="placeholder")
        css_id, _, width, height = entry
        return tag("a", tag("span", class_=f"page-thumb {css_id}", role="img", aria_label=f"page {name}",
                            style=f"aspect-ratio: {width} / {height}"),
                   href=f"#full-{css_id}", title=f"open page {name} full size")

    @property
    def count(self) -> int:
        return sum(1 for entry in self._pages.values() if entry)

    def embedded(self) -> Html | None:
        """The <style> with each page's data once, and the full-size overlays; None when no page was shown."""
        entries = [e for e in self._pages.values() if e]
        if not entries:
            return None
        # base64 has no characters that end a <style> element or a CSS string.
        rules = "\n".join(f'.{css_id} {{ background-image: url("{uri}"); }}' for css_id, uri, _, _ in entries)
        style = Html(f"<style>{CSS}\n{rules}</style>")
        overlays = [tag("div", tag("a", tag("span", class_=f"page-full {css_id}", role="img", aria_label="page, full size",
                                            style=f"width: {width}px; aspect-ratio: {width} / {height}"),
                                   tag("p", "click to close", class_="caption"), href="#_"),
                        id=f"full-{css_id}", class_="lightbox")
                    for css_id, _, width, height in entries]
        return fragment(style, *overlays)
