"""Generate: prompt and negative prompt editors and the generation parameters."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header

from peropix_tui.core.lora_library import LoraScanner
from peropix_tui.core.vocabulary import Candidate, Vocabulary
from peropix_tui.widgets.prompt_editor import PromptEditor, PromptField


class GenerateScreen(Screen[None]):
    TITLE = "Generate"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "focus_prompt", "Prompt", id="generate_focus_prompt"),
        Binding("ctrl+e", "focus_negative", "Negative prompt", id="generate_focus_negative"),
    ]

    class VocabularyLoaded(Message):
        def __init__(self, vocabulary: Vocabulary) -> None:
            super().__init__()
            self.vocabulary = vocabulary

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="generate-editors"):
            yield PromptField("Prompt", id="prompt")
            yield PromptField("Negative prompt", id="negative")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt-editor", PromptEditor).focus()
        self._load_vocabulary([Path(p) for p in self.app.config.settings.paths.lora_dirs])  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="vocabulary", exit_on_error=False)
    def _load_vocabulary(self, folders: list[Path]) -> None:
        names: list[Candidate] = []
        for batch in LoraScanner(folders).batches():
            for entry in batch:
                if entry.error is None:
                    names.extend(Candidate(n, "lora") for n in {entry.stem, entry.tag_name})
        self.post_message(self.VocabularyLoaded(Vocabulary(names)))

    def on_generate_screen_vocabulary_loaded(self, event: GenerateScreen.VocabularyLoaded) -> None:
        for editor in self.query(PromptEditor):
            editor.vocabulary = event.vocabulary

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt-editor", PromptEditor).focus()

    def action_focus_negative(self) -> None:
        self.query_one("#negative-editor", PromptEditor).focus()
