"""Generate: prompt and negative prompt editors and the generation parameters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.vocabulary import Candidate, Vocabulary
from peropix_tui.widgets.parameter_form import ParameterForm
from peropix_tui.widgets.prompt_editor import PromptEditor, PromptField

if TYPE_CHECKING:
    from peropix_tui.core.danbooru import TagStyle
    from peropix_tui.engine.types import GenerationRequest


class GenerateScreen(Screen[None]):
    TITLE = "Generate"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "focus_prompt", "Prompt", id="generate_focus_prompt"),
        Binding("ctrl+g", "focus_negative", "Negative prompt", id="generate_focus_negative"),
        Binding("ctrl+o", "focus_parameters", "Parameters", id="generate_focus_parameters"),
        Binding("ctrl+b", "check", "Check settings", id="generate_check"),
    ]

    class VocabularyLoaded(Message):
        def __init__(self, vocabulary: Vocabulary) -> None:
            super().__init__()
            self.vocabulary = vocabulary

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="generate-body"):
            with Vertical(id="generate-editors"):
                yield PromptField("Prompt", id="prompt")
                yield PromptField("Negative prompt", id="negative")
            yield ParameterForm(id="generate-params")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt-editor", PromptEditor).focus()
        settings = self.app.config.settings  # type: ignore[attr-defined]
        style: TagStyle = "underscores" if settings.ui.underscores == "underscores" else "spaces"
        self._load_vocabulary([Path(p) for p in settings.paths.lora_dirs], style)

    @work(thread=True, exclusive=True, group="vocabulary", exit_on_error=False)
    def _load_vocabulary(self, folders: list[Path], style: TagStyle) -> None:
        from peropix_tui.core.danbooru import danbooru_vocabulary
        from peropix_tui.core.lora_library import LoraScanner

        names: list[Candidate] = []
        for batch in LoraScanner(folders).batches():
            for entry in batch:
                if entry.error is None:
                    names.extend(Candidate(n, "lora", detail="LoRA file") for n in {entry.stem, entry.tag_name})
        loras = Vocabulary(names)
        self.post_message(self.VocabularyLoaded(loras))  # LoRA names first: they are quick to read
        self.post_message(self.VocabularyLoaded(loras.merged(danbooru_vocabulary(style))))

    def on_generate_screen_vocabulary_loaded(self, event: GenerateScreen.VocabularyLoaded) -> None:
        for editor in self.query(PromptEditor):
            editor.vocabulary = event.vocabulary

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt-editor", PromptEditor).focus()

    def action_focus_negative(self) -> None:
        self.query_one("#negative-editor", PromptEditor).focus()

    def action_focus_parameters(self) -> None:
        self.query_one("#param-model").focus()

    def current_request(self) -> GenerationRequest:
        """The editors and the form as one validated request (raises PeropixError naming the field)."""
        prompt = self.query_one("#prompt-editor", PromptEditor).text
        negative = self.query_one("#negative-editor", PromptEditor).text
        return self.query_one(ParameterForm).request(prompt, negative)

    def action_check(self) -> None:
        try:
            request = self.current_request()
        except PeropixError as exc:
            self.notify(str(exc), title="Settings not valid", severity="error", markup=False)
            return
        seed = "random seed" if request.seed is None else f"seed {request.seed}"
        self.notify(
            f"{request.model}, {request.width}×{request.height}, {request.steps} steps, {seed}, "
            f"{request.n} image{'s' if request.n > 1 else ''}",
            title="Settings are valid",
            markup=False,
        )
