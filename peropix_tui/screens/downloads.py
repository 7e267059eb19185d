"""Downloads: CivitAI collection runs and their logs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header


class DownloadsScreen(Screen[None]):
    TITLE = "Downloads"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Footer()
