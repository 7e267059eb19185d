"""An image preview fed by a stream of frames: at most one decode at a time, and only the newest frame waits.

A generation sends a preview frame per sampler step, faster than a slow terminal (or a busy machine) can decode
and draw them. Frames that arrive while one is being decoded replace each other, so when the decode finishes the
next one shown is the latest; stale frames are dropped without being decoded at all.
"""

from __future__ import annotations

from pathlib import Path

from textual.worker import Worker, WorkerState

from peropix_tui.widgets.image_preview import ImagePreview


class StreamPreview(ImagePreview):
    """`ImagePreview` whose `show` never queues more than one decode behind the running one."""

    def __init__(self, renderer: str, *, id: str | None = None) -> None:
        super().__init__(renderer, id=id)
        self._busy = False
        self._waiting: Path | bytes | None = None
        self.decoded = 0
        """Frames decoded so far; with `dropped`, tells how much of a stream was skipped."""
        self.dropped = 0

    def show_frame(self, source: Path | bytes) -> None:
        """Show `source` once the decode in progress (if any) is done, unless a newer frame comes first."""
        if self.renderer == "off":
            return
        if self._busy:
            if self._waiting is not None:
                self.dropped += 1
            self._waiting = source
            return
        self._busy = True
        self.decoded += 1
        self.show(source)

    def on_image_preview_loaded(self, event: ImagePreview.Loaded) -> None:
        # Runs before the base class displays the frame; the next decode starts after that, so the base
        # class still sees this frame as the latest request.
        if event.preview is self:
            self.call_later(self._next_frame)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A decode that ended without a Loaded message must not block the frames after it.
        if event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.call_later(self._next_frame)

    def _next_frame(self) -> None:
        self._busy = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self.show_frame(waiting)
