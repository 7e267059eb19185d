"""The prompt editor: a TextArea highlighted by the core prompt tokenizer, with live token counts and completion.

Highlighting comes from `core.prompt.tokenize`, the same tokenizer the payload builders and filters use, so what
the editor colours is what the generator reads, wildcards and picks included. Token counting needs the CLIP
vocabulary (built once, off the UI thread) and runs on a short debounce; completion shows the best candidate as
ghost text that Tab accepts (tags, `<lora:` names, and wildcard file names after `__`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Label, TextArea
from textual.widgets.text_area import TextAreaTheme

from peropix_tui.core.prompt import Dialect, SpanKind, TokenizedPrompt, line_highlights, tokenize, weighted_chunks
from peropix_tui.core.vocabulary import Candidate, Vocabulary, fold

NAI_TOKEN_BUDGET = 512
CLIP_CHUNK = 75
BRACKET_LEVELS = 4
THEME_NAME = "peropix-prompt"

_BRACKET_COLOURS = ("#e5c07b", "#61afef", "#c678dd", "#56b6c2")
SYNTAX_STYLES: dict[str, Style] = {
    SpanKind.COMMA.value: Style(dim=True),
    SpanKind.PIPE.value: Style(color="#d19a66", bold=True),
    SpanKind.BREAK.value: Style(color="#d19a66", bold=True),
    SpanKind.WEIGHT_PREFIX.value: Style(color="#98c379", bold=True),
    "weight.prefix.negative": Style(color="#e06c75", bold=True),
    SpanKind.SECTION_CLOSE.value: Style(color="#98c379", bold=True),
    SpanKind.WEIGHT_SUFFIX.value: Style(color="#98c379", bold=True),
    SpanKind.PART_WEIGHT.value: Style(color="#98c379"),
    SpanKind.ESCAPE.value: Style(italic=True, dim=True),
    SpanKind.LORA_OPEN.value: Style(color="#c678dd"),
    SpanKind.LORA_KEYWORD.value: Style(color="#c678dd"),
    SpanKind.LORA_SEP.value: Style(color="#c678dd"),
    SpanKind.LORA_CLOSE.value: Style(color="#c678dd"),
    SpanKind.LORA_NAME.value: Style(color="#c678dd", bold=True, underline=True),
    SpanKind.LORA_WEIGHT.value: Style(color="#e5c07b", bold=True),
    SpanKind.WILDCARD.value: Style(color="#4ec9b0", bold=True, italic=True),
    SpanKind.PICK_OPEN.value: Style(color="#4ec9b0"),
    SpanKind.PICK_SEP.value: Style(color="#4ec9b0", bold=True),
    SpanKind.PICK_CLOSE.value: Style(color="#4ec9b0"),
    SpanKind.PICK_ESCAPE.value: Style(color="#4ec9b0", italic=True, dim=True),
    SpanKind.ERROR.value: Style(color="white", bgcolor="#be3a3a", bold=True),
    **{
        f"{kind}.{level}": Style(color=colour, bold=True)
        for level, colour in enumerate(_BRACKET_COLOURS)
        for kind in (SpanKind.OPEN.value, SpanKind.CLOSE.value)
    },
}
PROMPT_THEME = TextAreaTheme(name=THEME_NAME, syntax_styles=SYNTAX_STYLES)

_LORA_PREFIX = re.compile(r"<(?:lora|lyco):([^:<>]*)$", re.IGNORECASE)
_WILDCARD_PREFIX = re.compile(r"(?<!\w)__([\w./-]*)$")
_TAG_BOUNDARY = re.compile(r"(?:<(?i:pick):|[,|{}\[\]()<>]|::|-?\d+(?:\.\d+)?::)\s*")


@dataclass(frozen=True, slots=True)
class TokenStats:
    clip_tokens: int
    chunks: int
    nai_tokens: int

    def describe(self) -> str:
        over = " over!" if self.nai_tokens > NAI_TOKEN_BUDGET else ""
        return (
            f"CLIP {self.clip_tokens} tok · {self.chunks}×{CLIP_CHUNK}"
            f" │ NovelAI ≈{self.nai_tokens}/{NAI_TOKEN_BUDGET}{over}"
        )


def completion_context(before_cursor: str) -> tuple[str, str] | None:
    """(kind, prefix) to complete from the text of the line up to the cursor, or None."""
    lora = _LORA_PREFIX.search(before_cursor)
    if lora:
        return "lora", lora.group(1)
    wildcard = _WILDCARD_PREFIX.search(before_cursor)
    if wildcard and "__" not in wildcard.group(1):
        return "wildcard", wildcard.group(1)
    tail = _TAG_BOUNDARY.split(before_cursor)[-1].lstrip()
    if len(tail) < 2 or tail.endswith(" "):
        return None
    return "tag", tail


class PromptEditor(TextArea):
    """Multi-line prompt input; `dialect` picks NovelAI or A1111 emphasis rules."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "accept_completion", "Complete / next field", show=False),
        Binding("ctrl+n", "next_completion", "Next completion", show=False),
    ]

    dialect: reactive[Dialect] = reactive(Dialect.NAI)

    class CompletionChanged(Message):
        """The candidate Tab would insert now (None when there is none)."""

        def __init__(self, editor: PromptEditor, candidate: Candidate | None) -> None:
            super().__init__()
            self.editor = editor
            self.candidate = candidate

    class Analysed(Message):
        """Posted after every rebuild so a screen can show diagnostics."""

        def __init__(self, editor: PromptEditor, tokenized: TokenizedPrompt) -> None:
            super().__init__()
            self.editor = editor
            self.tokenized = tokenized

    def __init__(self, text: str = "", *, vocabulary: Vocabulary | None = None, id: str | None = None) -> None:
        super().__init__(text, id=id, soft_wrap=True, tab_behavior="focus", theme="css")
        self.vocabulary = vocabulary or Vocabulary()
        self.tokenized: TokenizedPrompt = tokenize(text, self.dialect)
        self._candidates: list[Candidate] = []
        self._candidate_index = 0
        self._prefix = ""

    def on_mount(self) -> None:
        self.register_theme(PROMPT_THEME)
        self.theme = THEME_NAME
        self.cursor_blink = False

    def watch_dialect(self) -> None:
        self._build_highlight_map()
        self.refresh()

    def _build_highlight_map(self) -> None:
        self._line_cache.clear()
        highlights = self._highlights
        highlights.clear()
        tokenized = tokenize(self.text, self.dialect)
        self.tokenized = tokenized
        document = self.document
        for row, start, end, name in line_highlights(tokenized, bracket_levels=BRACKET_LEVELS):
            if name == SpanKind.WEIGHT_PREFIX and document.get_line(row).encode()[start:end].startswith(b"-"):
                name = "weight.prefix.negative"
            highlights[row].append((start, end, name))
        self.post_message(self.Analysed(self, tokenized))

    # Completion --------------------------------------------------------------------------------------------

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area is self:
            self._refresh_completion()

    def on_text_area_selection_changed(self, event: TextArea.SelectionChanged) -> None:
        if event.text_area is self and not self.selection.is_empty:
            self.suggestion = ""

    def _refresh_completion(self) -> None:
        row, column = self.cursor_location
        line = self.document.get_line(row)
        after = line[column:]
        context = completion_context(line[:column]) if not after[:1].isalnum() else None
        self._candidates = []
        self._candidate_index = 0
        if context is not None:
            kind, prefix = context
            self._prefix = prefix
            self._candidates = [
                c for c in self.vocabulary.complete(prefix, kind=kind, limit=8) if fold(c.text) != fold(prefix)
            ]
        self._show_candidate()

    @property
    def candidate(self) -> Candidate | None:
        if not self._candidates:
            return None
        return self._candidates[self._candidate_index % len(self._candidates)]

    def _show_candidate(self) -> None:
        candidate = self.candidate
        # Ghost text only when the candidate continues what was typed; an alias (`boobs` → `breasts`) is offered
        # in the status line instead, and Tab replaces the typed word.
        if candidate is not None and fold(candidate.text).startswith(fold(self._prefix)):
            self.suggestion = candidate.text[len(self._prefix) :]
        else:
            self.suggestion = ""
        self.post_message(self.CompletionChanged(self, candidate))

    def action_next_completion(self) -> None:
        if self._candidates:
            self._candidate_index += 1
            self._show_candidate()

    def action_accept_completion(self) -> None:
        candidate = self.candidate
        if candidate is None:
            self.screen.focus_next()
            return
        row, column = self.cursor_location
        insert = candidate.text
        after = self.document.get_line(row)[column:]
        if candidate.kind == "lora" and not after.lstrip().startswith((":", ">")):
            insert += ":1>"
        elif candidate.kind == "wildcard" and not after.startswith("__"):
            insert += "__"
        self.replace(insert, (row, column - len(self._prefix)), (row, column))
        self._candidates = []
        self.suggestion = ""
        self.post_message(self.CompletionChanged(self, None))


class PromptField(Vertical):
    """Title, editor and a live status line (token counts and the first syntax problem)."""

    DEFAULT_CSS = """
    PromptField { height: 1fr; }
    PromptField > .prompt-title { color: $text-muted; }
    PromptField > PromptEditor { height: 1fr; }
    PromptField > .prompt-status { color: $text-muted; height: 1; }
    PromptField > .prompt-status.-problem { color: $warning; }
    """

    stats: reactive[TokenStats | None] = reactive(None)
    offered: reactive[Candidate | None] = reactive(None)

    def __init__(self, title: str, *, vocabulary: Vocabulary | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self._vocabulary = vocabulary
        self._count_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="prompt-title")
        yield PromptEditor(vocabulary=self._vocabulary, id=f"{self.id}-editor" if self.id else None)
        yield Label("", classes="prompt-status", markup=False)

    @property
    def editor(self) -> PromptEditor:
        return self.query_one(PromptEditor)

    def on_prompt_editor_analysed(self, event: PromptEditor.Analysed) -> None:
        event.stop()
        if self._count_timer is not None:
            self._count_timer.stop()
        self._count_timer = self.set_timer(0.15, self._count)
        self._update_status()

    def _count(self) -> None:
        self._count_worker(self.editor.tokenized)

    @work(thread=True, exclusive=True, group="token-count", exit_on_error=False)
    def _count_worker(self, tokenized: TokenizedPrompt) -> None:
        # The vocabulary takes ~0.2 s to build, so it is loaded here, off the UI thread, on first use.
        from peropix_tui.core.clip_tokenizer import CHUNK, chunk_count, clip_tokenizer

        assert CHUNK == CLIP_CHUNK
        text = " ".join(piece for piece, _ in weighted_chunks(tokenized))
        clip = clip_tokenizer().count(text)
        # NovelAI counts with its own (T5) vocabulary after stripping weights; CLIP's BPE is a close stand-in,
        # hence the "≈" in the status line.
        self.app.call_from_thread(setattr, self, "stats", TokenStats(clip, chunk_count(clip), clip))

    def on_prompt_editor_completion_changed(self, event: PromptEditor.CompletionChanged) -> None:
        event.stop()
        self.offered = event.candidate

    def watch_stats(self) -> None:
        self._update_status()

    def watch_offered(self) -> None:
        self._update_status()

    def _update_status(self) -> None:
        label = self.query_one(".prompt-status", Label)
        if self.offered is not None:
            detail = f" · {self.offered.detail}" if self.offered.detail else f" · {self.offered.kind}"
            label.update(f"Tab → {self.offered.text}{detail}   (ctrl+n: next)")
            label.remove_class("-problem")
            return
        diagnostics = self.editor.tokenized.diagnostics
        if diagnostics:
            first = diagnostics[0]
            more = f" (+{len(diagnostics) - 1} more)" if len(diagnostics) > 1 else ""
            label.update(f"⚠ {first.message}{more}")
            label.add_class("-problem")
            return
        label.remove_class("-problem")
        label.update(self.stats.describe() if self.stats else "")
