"""History: the images in the outputs folder, newest first, with their metadata."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header


class HistoryScreen(Screen[None]):
    TITLE = "History"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Footer()
