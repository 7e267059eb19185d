"""Prompt tools: LoRA library, word filters, vocabulary."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header


class PromptToolsScreen(Screen[None]):
    TITLE = "Prompt tools"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Footer()
