"""The streaming preview: one decode at a time, and of the frames that pile up meanwhile only the newest is decoded."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from PIL import Image
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from peropix_tui.widgets.stream_preview import StreamPreview


def frame(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 96), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


class PreviewApp(App[None]):
    def compose(self) -> ComposeResult:
        yield StreamPreview("halfcell", id="preview")


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def shown_colour(preview: StreamPreview) -> tuple[int, ...] | None:
    images = preview.query(".preview-image")
    if not images:
        return None
    image = images.first().image  # type: ignore[attr-defined]
    assert isinstance(image, Image.Image)
    pixel = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    assert isinstance(pixel, tuple)
    return pixel


def close(a: tuple[int, ...] | None, b: tuple[int, int, int]) -> bool:
    return a is not None and all(abs(x - y) <= 6 for x, y in zip(a, b, strict=True))


async def test_frames_arriving_during_a_decode_are_dropped_but_the_newest() -> None:
    colours = [(i * 8, 255 - i * 8, (i * 37) % 256) for i in range(30)]
    app = PreviewApp()
    async with app.run_test(size=(60, 30)) as pilot:
        preview = app.query_one(StreamPreview)
        for colour in colours:  # all in one go, faster than any decode
            preview.show_frame(frame(colour))
        assert (preview.decoded, preview.dropped) == (1, 28)
        await wait_until(pilot, lambda: close(shown_colour(preview), colours[-1]), "the newest frame")
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        assert (preview.decoded, preview.dropped) == (2, 28)
        assert close(shown_colour(preview), colours[-1])


async def test_a_frame_that_cannot_be_decoded_does_not_block_the_next() -> None:
    app = PreviewApp()
    async with app.run_test(size=(60, 30)) as pilot:
        preview = app.query_one(StreamPreview)
        preview.show_frame(b"not an image at all")
        preview.show_frame(frame((10, 200, 30)))
        await wait_until(pilot, lambda: close(shown_colour(preview), (10, 200, 30)), "the good frame")
        assert preview.decoded == 2


async def test_frames_one_by_one_are_all_shown() -> None:
    app = PreviewApp()
    async with app.run_test(size=(60, 30)) as pilot:
        preview = app.query_one(StreamPreview)
        for colour in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]:
            preview.show_frame(frame(colour))
            await wait_until(pilot, lambda c=colour: close(shown_colour(preview), c), f"frame {colour}")  # type: ignore[misc]
        assert (preview.decoded, preview.dropped) == (3, 0)
