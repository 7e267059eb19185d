"""Image previews over textual-image, with the renderer chosen in settings.

textual-image asks the terminal what it supports when it is first imported, and that query no longer works once
the app owns the terminal, so `terminal_probe.TerminalProbe` runs it before `App.run`. Decoding and thumbnailing
happen in a thread worker; the widget only receives a small, already-decoded image. A small stored thumbnail may be
shown at once while the full image decodes, so moving through a list never waits on a file.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Container
from textual.message import Message
from textual.widgets import Static

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from textual.widget import Widget

log = logging.getLogger(__name__)

RENDERERS = ("auto", "tgp", "sixel", "halfcell", "unicode", "off")
MAX_THUMBNAIL = (768, 768)
MAX_PIXELS = 80_000_000
INLINE_MAX_BYTES = 1 << 20
INLINE_MAX_PIXELS = 1024 * 1024
"""Limits for a placeholder thumbnail decoded on the UI thread; a bigger one is skipped, never decoded there."""


def detected_renderer() -> str:
    import textual_image.renderable as renderable

    return {
        "SixelImage": "sixel",
        "TGPImage": "tgp",
        "HalfcellImage": "halfcell",
        "UnicodeImage": "unicode",
    }.get(getattr(renderable.Image, "__name__", ""), "unicode")


def describe_capabilities(setting: str) -> str:
    """One line for the help/diagnostics view: what the terminal reported and what the setting picks."""
    from textual_image._terminal import get_cell_size

    cell = get_cell_size()
    detected = detected_renderer()
    chosen = detected if setting == "auto" else setting
    return f"setting {setting}, terminal supports {detected}, using {chosen}; cell {cell.width}×{cell.height} px"


def image_widget_class(setting: str) -> Callable[..., Widget] | None:
    """The textual-image widget class for a renderer setting (None when previews are off)."""
    if setting == "off":
        return None
    import textual_image.widget as w

    classes: dict[str, Any] = {
        "auto": w.Image,
        "tgp": w.TGPImage,
        "sixel": w.SixelImage,
        "halfcell": w.HalfcellImage,
        "unicode": w.UnicodeImage,
    }
    cls: Callable[..., Widget] = classes.get(setting, w.Image)
    return cls


@dataclass(frozen=True, slots=True)
class Thumbnail:
    image: PILImage.Image
    width: int
    height: int


def load_thumbnail(
    source: Path | bytes, max_size: tuple[int, int] = MAX_THUMBNAIL, *, max_pixels: int = MAX_PIXELS
) -> Thumbnail:
    """Decode an image file or bytes and shrink it for display; raises ValueError with a one-line reason."""
    # Pillow is imported here, in the decoding worker, so that start-up never waits for it.
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with PILImage.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise ValueError(f"image too large to preview ({im.width}×{im.height})")
            width, height = im.size
            im.draft("RGB", max_size)
            converted = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    except (OSError, UnidentifiedImageError, PILImage.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc
    converted.thumbnail(max_size)
    return Thumbnail(converted, width, height)


class ImagePreview(Container):
    """Shows one image; `show()` may be called as often as wanted, only the latest request is displayed."""

    DEFAULT_CSS = """
    ImagePreview { height: 1fr; width: 1fr; align: center middle; }
    ImagePreview > .preview-note { width: auto; height: auto; color: $text-muted; }
    ImagePreview > .preview-image { width: auto; height: 100%; }
    """

    class Loaded(Message):
        def __init__(self, preview: ImagePreview, request: int, thumb: Thumbnail | None, error: str | None) -> None:
            super().__init__()
            self.preview = preview
            self.request = request
            self.thumb = thumb
            self.error = error

    def __init__(self, renderer: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.renderer = renderer
        self._request = 0
        self._placeholder: int | None = None
        """The request whose stored thumbnail is on display."""

    def compose(self) -> ComposeResult:
        note = "previews are off (Settings → image renderer)" if self.renderer == "off" else "no image"
        yield Static(note, classes="preview-note")

    def clear(self, note: str = "no image") -> None:
        self._request += 1
        self._placeholder = None
        self.remove_children()
        self.mount(Static(note, classes="preview-note", markup=False))

    def show(self, source: Path | bytes, *, thumbnail: bytes | None = None, delay: float = 0.0) -> None:
        """Display `source`, decoded in a worker.

        `thumbnail`, a small encoded image, is shown at once meanwhile, and stays when `source` cannot be read.
        With `delay`, the decode starts only if no other image was asked for in that many seconds, so holding
        a cursor key decodes the image it stops on, not every one it passes.
        """
        if self.renderer == "off":
            return
        self._request += 1
        request = self._request
        self._placeholder = None
        if thumbnail is not None and len(thumbnail) <= INLINE_MAX_BYTES:
            try:
                small = load_thumbnail(thumbnail, max_pixels=INLINE_MAX_PIXELS)
            except ValueError as exc:
                log.info("stored thumbnail not shown: %s", exc)
            else:
                self._placeholder = request
                self._display(small)
        if delay > 0:
            self.set_timer(delay, partial(self._start, source, request))
        else:
            self._decode(source, request)

    def _start(self, source: Path | bytes, request: int) -> None:
        if request == self._request:
            self._decode(source, request)

    @work(thread=True, exclusive=True, group="image-preview", exit_on_error=False)
    def _decode(self, source: Path | bytes, request: int) -> None:
        try:
            thumb = load_thumbnail(source)
        except ValueError as exc:
            log.warning("preview: %s", exc)
            self.post_message(self.Loaded(self, request, None, str(exc)))
            return
        self.post_message(self.Loaded(self, request, thumb, None))

    def on_image_preview_loaded(self, event: ImagePreview.Loaded) -> None:
        event.stop()
        if event.preview is not self or event.request != self._request:
            return  # a newer image was requested meanwhile
        if event.thumb is None:
            if self._placeholder == event.request:
                return  # the stored thumbnail is better than an error note
            self.remove_children()
            self.mount(Static(event.error or "cannot show image", classes="preview-note", markup=False))
            return
        self._placeholder = None
        self._display(event.thumb)

    def _display(self, thumb: Thumbnail) -> None:
        cls = image_widget_class(self.renderer)
        if cls is None:
            return
        current = self.query_children(".preview-image")
        if len(current) == 1 and type(current.first()) is cls:
            current.first().image = thumb.image  # type: ignore[attr-defined]  # textual-image widgets
            return
        self.remove_children()
        self.mount(cls(thumb.image, classes="preview-image"))
