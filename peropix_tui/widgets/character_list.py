"""Character prompts of a multi-character generation: a list to add, remove, reorder and switch characters on and off
in, and the selected character's prompt, negative prompt and grid position below it.

Every change posts `Changed` with the whole new list; the screen decides whether the model takes it (an addition past
the model's limit is refused there and the list shown again as it was).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Final

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, DataTable, Label, Select, TextArea

from peropix_tui.core.vocabulary import Vocabulary
from peropix_tui.engine.nai.models import GRID_COLUMNS, GRID_STEPS
from peropix_tui.engine.types import CharacterPrompt
from peropix_tui.widgets.prompt_editor import PromptEditor

AUTO: Final = "auto"
POSITIONS: Final = tuple(f"{column}{row}" for row in range(1, len(GRID_STEPS) + 1) for column in GRID_COLUMNS)
"""The 5×5 grid's cells, row by row as they sit on the image (A1 top left, E5 bottom right)."""
PROMPT_COLUMN_WIDTH: Final = 200


class CharacterTable(DataTable[Text | str]):
    """The character list; its letter keys work only here, never while an editor has the focus."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n,insert", "add", "New character", id="characters_add"),
        Binding("d,delete", "remove", "Remove", id="characters_remove"),
        Binding("space,e", "switch", "On/off", id="characters_toggle"),
        Binding("shift+up", "move(-1)", "Move up", key_display="⇧↑", id="characters_move_up"),
        Binding("shift+down", "move(1)", "Move down", key_display="⇧↓", id="characters_move_down"),
    ]

    class Action(Message):
        def __init__(self, name: str, step: int = 0) -> None:
            super().__init__()
            self.name = name
            self.step = step

    def action_add(self) -> None:
        self.post_message(self.Action("add"))

    def action_remove(self) -> None:
        self.post_message(self.Action("remove"))

    def action_switch(self) -> None:
        self.post_message(self.Action("switch"))

    def action_move(self, step: int) -> None:
        self.post_message(self.Action("move", step))


class CharacterList(Vertical):
    DEFAULT_CSS = """
    CharacterList { height: 1fr; }
    CharacterList #char-table { height: auto; min-height: 3; max-height: 8; }
    CharacterList .char-row { height: auto; }
    CharacterList .char-prompt-row { height: 2fr; min-height: 3; }
    CharacterList .char-negative-row { height: 1fr; min-height: 2; }
    CharacterList .char-label { width: 10; color: $text-muted; }
    CharacterList #char-prompt { height: 1fr; width: 1fr; }
    CharacterList #char-negative { height: 1fr; width: 1fr; }
    CharacterList #char-position { width: 12; }
    CharacterList Checkbox { margin-left: 2; }
    CharacterList #char-hint { color: $text-muted; height: 1; }
    """

    class Changed(Message):
        """The list as edited: `added` when a character was added (the screen may refuse it)."""

        def __init__(self, characters: tuple[CharacterPrompt, ...], *, added: bool = False) -> None:
            super().__init__()
            self.characters = characters
            self.added = added

    def __init__(
        self,
        characters: tuple[CharacterPrompt, ...] = (),
        *,
        vocabulary: Vocabulary | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.characters = characters
        self._vocabulary = vocabulary

    def compose(self) -> ComposeResult:
        table = CharacterTable(id="char-table", cursor_type="row", zebra_stripes=True)
        table.add_column("#", key="number", width=2)
        table.add_column("On", key="on", width=3)
        table.add_column("At", key="at", width=4)
        table.add_column("Prompt", key="prompt")
        yield table
        with Horizontal(classes="char-row char-prompt-row"):
            yield Label("Prompt", classes="char-label")
            prompt = PromptEditor(vocabulary=self._vocabulary, id="char-prompt")
            prompt.compact = True
            yield prompt
        with Horizontal(classes="char-row char-negative-row"):
            yield Label("Negative", classes="char-label")
            negative = PromptEditor(vocabulary=self._vocabulary, id="char-negative")
            negative.compact = True
            yield negative
        with Horizontal(classes="char-row"):
            yield Label("Position", classes="char-label")
            options = [(AUTO, AUTO), *((cell, cell) for cell in POSITIONS)]
            yield Select(options, value=AUTO, allow_blank=False, compact=True, id="char-position")
            yield Checkbox("Enabled", True, compact=True, id="char-enabled")
        yield Label("", id="char-hint", markup=False)

    def on_mount(self) -> None:
        self.show(self.characters)

    @property
    def table(self) -> CharacterTable:
        return self.query_one("#char-table", CharacterTable)

    @property
    def selected(self) -> int | None:
        """Index of the character the editors show, or None when there is none."""
        row = self.table.cursor_row
        return row if 0 <= row < len(self.characters) else None

    def show(self, characters: tuple[CharacterPrompt, ...], select: int | None = None) -> None:
        """Show `characters`, with row `select` (else the current row, kept in range) in the editors."""
        self.characters = characters
        table = self.table
        row = table.cursor_row if select is None else select
        with self.app.batch_update():
            table.clear()
            for number, character in enumerate(characters, start=1):
                table.add_row(*self._cells(number, character), key=str(number))
            if characters:
                table.move_cursor(row=max(0, min(row, len(characters) - 1)), animate=False)
        self._load_editors()

    @staticmethod
    def _cells(number: int, character: CharacterPrompt) -> tuple[Text | str, ...]:
        prompt = " ".join(character.prompt.split())[:PROMPT_COLUMN_WIDTH]
        return (
            str(number),
            "on" if character.enabled else Text("off", style="dim"),
            character.position or Text(AUTO, style="dim"),
            Text(prompt) if prompt else Text("(empty: type a prompt below)", style="dim"),
        )

    def _load_editors(self) -> None:
        index = self.selected
        character = self.characters[index] if index is not None else None
        editors = (self.query_one("#char-prompt", PromptEditor), self.query_one("#char-negative", PromptEditor))
        with self.prevent(TextArea.Changed, Select.Changed, Checkbox.Changed):
            texts = (character.prompt, character.negative) if character else ("", "")
            for editor, text in zip(editors, texts, strict=True):
                if editor.text != text:
                    editor.load_text(text)
            self.query_one("#char-position", Select).value = (character.position if character else None) or AUTO
            self.query_one("#char-enabled", Checkbox).value = character.enabled if character else True
        for widget in (*editors, self.query_one("#char-position"), self.query_one("#char-enabled")):
            widget.disabled = character is None
        hint = "n adds a character" if character is None else "n new · d remove · space on/off · ⇧↑/⇧↓ move"
        self.query_one("#char-hint", Label).update(hint)

    @on(DataTable.RowHighlighted, "#char-table")
    def _highlighted(self) -> None:
        self._load_editors()

    def _edited(self, index: int, character: CharacterPrompt) -> None:
        characters = list(self.characters)
        characters[index] = character
        self.characters = tuple(characters)
        self.table.update_cell(str(index + 1), "on", self._cells(index + 1, character)[1])
        self.table.update_cell(str(index + 1), "at", self._cells(index + 1, character)[2])
        self.table.update_cell(str(index + 1), "prompt", self._cells(index + 1, character)[3])
        self.post_message(self.Changed(self.characters))

    @on(TextArea.Changed, "#char-prompt, #char-negative")
    def _text_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        index = self.selected
        if index is None:
            return
        character, text = self.characters[index], event.text_area.text
        if event.text_area.id == "char-prompt":
            self._edited(index, replace(character, prompt=text))
        else:
            self._edited(index, replace(character, negative=text))

    @on(Select.Changed, "#char-position")
    def _position_changed(self, event: Select.Changed) -> None:
        event.stop()
        index = self.selected
        if index is not None:
            position = None if event.value == AUTO else str(event.value)
            self._edited(index, replace(self.characters[index], position=position))

    @on(Checkbox.Changed, "#char-enabled")
    def _enabled_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        index = self.selected
        if index is not None:
            self._edited(index, replace(self.characters[index], enabled=event.value))

    @on(CharacterTable.Action)
    def _table_action(self, event: CharacterTable.Action) -> None:
        event.stop()
        characters = list(self.characters)
        index = self.selected
        if event.name == "add":
            at = len(characters) if index is None else index + 1
            characters.insert(at, CharacterPrompt(""))
            self.show(tuple(characters), select=at)
            self.post_message(self.Changed(self.characters, added=True))
            self.query_one("#char-prompt", PromptEditor).focus()
            return
        if index is None:
            return
        if event.name == "remove":
            del characters[index]
        elif event.name == "switch":
            characters[index] = replace(characters[index], enabled=not characters[index].enabled)
        else:
            target = index + event.step
            if not 0 <= target < len(characters):
                return
            characters[index], characters[target] = characters[target], characters[index]
            index = target
        self.show(tuple(characters), select=index)
        self.post_message(self.Changed(self.characters))
