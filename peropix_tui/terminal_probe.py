"""Asking the terminal which images it can show, while the app is still loading.

textual-image queries the terminal when it is first imported (Sixel through a device-attributes request, then the
kitty graphics protocol), and every query a terminal leaves unanswered costs a 0.1 s wait: 0.2 s in tmux. The
queries must be over before Textual starts reading stdin, but they need not hold up the rest of start-up. They
mostly wait on the terminal, so a thread runs them while the main thread imports Textual and the screens; the app
starts when both are done.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0
"""Seconds the app waits for the probe; a terminal that never answers is left behind rather than waited for."""


class TerminalProbe:
    """The terminal's image capabilities, queried in a background thread; `wait()` before the app starts."""

    def __init__(self, renderer: str) -> None:
        self._thread: threading.Thread | None = None
        if renderer != "off":  # with previews off, textual-image is never imported, so nothing is asked
            self._thread = threading.Thread(target=self._run, name="terminal-probe", daemon=True)

    def start(self) -> TerminalProbe:
        if self._thread is not None:
            self._thread.start()
        return self

    @staticmethod
    def _run() -> None:
        try:
            # Importing it is what asks the terminal; the widget module (Textual's side) is imported later.
            import textual_image.renderable  # noqa: F401
        except Exception:
            log.exception("asking the terminal for its image support failed; previews fall back to text")

    def wait(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            log.warning("the terminal did not answer the image-support queries within %.0f s", JOIN_TIMEOUT)
