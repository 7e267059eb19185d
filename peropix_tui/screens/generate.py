"""Generate: prompt and negative prompt editors and the generation parameters."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, TextArea


class GenerateScreen(Screen[None]):
    TITLE = "Generate"

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="generate-editors"):
            yield Label("Prompt")
            yield TextArea(id="prompt")
            yield Label("Negative prompt")
            yield TextArea(id="negative")
        yield Footer()
