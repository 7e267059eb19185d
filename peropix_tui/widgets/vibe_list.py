"""Vibe transfer references: a path to add an image or a `.naiv4vibe`/`.naiv4vibebundle` file from, the list with
each vibe's strength, information extracted and whether its encoding for the model is cached (or what encoding it
will cost), and the selected vibe's two values to edit.

The screen reads the files (off the UI thread) and decides what the model takes; this widget posts `FileChosen` for a
path typed and `Changed` with the whole list after every edit.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label

from peropix_tui.widgets.image_entries import VibeEntry, VibeState
from peropix_tui.widgets.image_inputs import IMAGE_SUFFIXES, VIBE_FILE_SUFFIXES
from peropix_tui.widgets.path_input import PathInput


def parse_fraction(text: str, label: str) -> float:
    """A value from 0 to 1 as typed; ValueError names the field."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{label}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{label}: must be between 0 and 1, not {text.strip()}")
    return value


class VibeTable(DataTable[Text | str]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d,delete", "remove", "Remove vibe", id="vibes_remove"),
    ]

    class Remove(Message):
        pass

    def action_remove(self) -> None:
        self.post_message(self.Remove())


class VibeList(Vertical):
    DEFAULT_CSS = """
    VibeList { height: 1fr; }
    VibeList .vibe-row { height: 1; }
    VibeList .vibe-label { width: 11; color: $text-muted; }
    VibeList #vibe-path { width: 1fr; }
    VibeList #vibe-table { height: auto; min-height: 3; max-height: 1fr; }
    VibeList #vibe-strength, VibeList #vibe-info { width: 8; }
    VibeList .vibe-gap { width: 3; }
    VibeList #vibe-note { color: $text-muted; height: auto; width: 100%; }
    """

    class FileChosen(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Changed(Message):
        def __init__(self, vibes: tuple[VibeEntry, ...]) -> None:
            super().__init__()
            self.vibes = vibes

    class Invalid(Message):
        """A value typed that cannot be used (the list keeps the last valid one); empty `message` when fixed."""

        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    def __init__(self, vibes: tuple[VibeEntry, ...] = (), *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.vibes = vibes
        self.states: tuple[VibeState, ...] | None = None
        self.encode_cost: int | None = None
        """Anlas one encoding costs on the model, when the model takes encodings."""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="vibe-row"):
            yield Label("Add file", classes="vibe-label")
            yield PathInput(
                suffixes=IMAGE_SUFFIXES + VIBE_FILE_SUFFIXES,
                placeholder="image or .naiv4vibe(bundle) path; → completes, Enter adds",
                id="vibe-path",
            )
        table = VibeTable(id="vibe-table", cursor_type="row", zebra_stripes=True)
        table.add_column("#", key="number", width=2)
        table.add_column("Vibe", key="name", width=24)
        table.add_column("Str.", key="strength", width=4)
        table.add_column("Info", key="info", width=4)
        table.add_column("Encoding", key="state", width=20)
        yield table
        with Horizontal(classes="vibe-row"):
            yield Label("Strength", classes="vibe-label")
            yield Input("", compact=True, id="vibe-strength", type="number", max_length=5)
            yield Label("", classes="vibe-gap")
            yield Label("Info extr.", classes="vibe-label")
            yield Input("", compact=True, id="vibe-info", type="number", max_length=5)
        yield Label("", id="vibe-note", markup=False)

    def on_mount(self) -> None:
        self.show(self.vibes)

    @property
    def table(self) -> VibeTable:
        return self.query_one("#vibe-table", VibeTable)

    @property
    def selected(self) -> int | None:
        row = self.table.cursor_row
        return row if 0 <= row < len(self.vibes) else None

    def show(self, vibes: tuple[VibeEntry, ...], select: int | None = None) -> None:
        if vibes != self.vibes:
            self.states = None
        self.vibes = vibes
        table = self.table
        row = table.cursor_row if select is None else select
        with self.app.batch_update():
            table.clear()
            for number, vibe in enumerate(vibes, start=1):
                table.add_row(*self._cells(number, vibe), key=str(number))
            if vibes:
                table.move_cursor(row=max(0, min(row, len(vibes) - 1)), animate=False)
        self._load_values()

    def show_states(self, vibes: tuple[VibeEntry, ...], states: tuple[VibeState, ...], note: str) -> None:
        """The cache states of `vibes` (ignored when the list changed since) and the model's note."""
        self.query_one("#vibe-note", Label).update(note)
        if vibes != self.vibes:
            return
        self.states = states
        for number, vibe in enumerate(vibes, start=1):
            self.table.update_cell(str(number), "state", self._cells(number, vibe)[4])

    def _state_text(self, number: int) -> Text:
        if self.states is None or number > len(self.states):
            return Text("…", style="dim")
        state = self.states[number - 1]
        if state is None:
            return Text("—", style="dim")
        if state:
            return Text("cached", style="green")
        cost = f"{self.encode_cost} Anlas" if self.encode_cost is not None else "paid"
        return Text(f"to encode: {cost}", style="yellow")

    def _cells(self, number: int, vibe: VibeEntry) -> tuple[Text | str, ...]:
        return (
            str(number),
            Text(vibe.name),
            f"{vibe.strength:.2f}",
            f"{vibe.information_extracted:.2f}",
            self._state_text(number),
        )

    def _load_values(self) -> None:
        index = self.selected
        vibe = self.vibes[index] if index is not None else None
        fields = (self.query_one("#vibe-strength", Input), self.query_one("#vibe-info", Input))
        with self.prevent(Input.Changed):
            fields[0].value = f"{vibe.strength:g}" if vibe else ""
            fields[1].value = f"{vibe.information_extracted:g}" if vibe else ""
        for field in fields:
            field.disabled = vibe is None

    @on(DataTable.RowHighlighted, "#vibe-table")
    def _highlighted(self) -> None:
        self._load_values()

    @on(Input.Submitted, "#vibe-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.FileChosen(event.value))

    def path_added(self) -> None:
        """The typed file was added: clear the path for the next one."""
        self.query_one("#vibe-path", PathInput).value = ""

    @on(Input.Changed, "#vibe-strength, #vibe-info")
    def _value_changed(self, event: Input.Changed) -> None:
        event.stop()
        index = self.selected
        if index is None:
            return
        strength = event.input.id == "vibe-strength"
        try:
            value = parse_fraction(event.value, "Strength" if strength else "Information extracted")
        except ValueError as exc:
            self.post_message(self.Invalid(str(exc)))
            return
        self.post_message(self.Invalid(""))
        vibe = self.vibes[index]
        vibe = replace(vibe, strength=value) if strength else replace(vibe, information_extracted=value)
        vibes = list(self.vibes)
        vibes[index] = vibe
        self.vibes = tuple(vibes)
        if not strength:
            self.states = None  # an encoding is made for one information-extracted value
        for column, cell in zip(("strength", "info", "state"), self._cells(index + 1, vibe)[2:], strict=True):
            self.table.update_cell(str(index + 1), column, cell)
        self.post_message(self.Changed(self.vibes))

    @on(VibeTable.Remove)
    def _remove(self, event: VibeTable.Remove) -> None:
        event.stop()
        index = self.selected
        if index is None:
            return
        vibes = list(self.vibes)
        del vibes[index]
        self.show(tuple(vibes), select=index)
        self.post_message(self.Changed(self.vibes))
