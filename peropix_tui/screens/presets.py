"""Presets (F10 on Generate): parameters, sizes and characters to apply to the form or save from it.

Presets live in the config dir (`core.presets.PresetStore`); the file field exports every saved preset to a JSON
file or imports one, merging without asking (a preset of the same name is replaced, and the notification names
it). The form is changed only through its preset methods, so applying a preset prices the settings like any edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Select, Tab, Tabs

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.presets import (
    BUILTIN_RESOLUTIONS,
    CharacterPreset,
    ParameterPreset,
    Preset,
    PresetKind,
    PresetStore,
    ResolutionPreset,
)
from peropix_tui.engine.types import CharacterPrompt
from peropix_tui.screens.confirm import ConfirmScreen
from peropix_tui.widgets.parameter_form import ParameterForm
from peropix_tui.widgets.path_input import PathInput

TAB_TITLES = {
    PresetKind.PARAMETERS: "Parameters",
    PresetKind.RESOLUTIONS: "Sizes",
    PresetKind.CHARACTERS: "Characters",
}


def _builtin(preset: Preset) -> bool:
    """Whether `preset` is one of the built-in sizes itself (a saved preset of the same name is not)."""
    return any(preset is builtin for builtin in BUILTIN_RESOLUTIONS)


class PresetsScreen(ModalScreen[None]):
    """Apply, save, delete, import and export presets for the Generate screen's form."""

    TITLE = "Presets"
    DEFAULT_CSS = """
    PresetsScreen { align: center middle; background: $background 60%; }
    #presets-box {
        width: 100%; max-width: 120; height: 100%; max-height: 36;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    #presets-title, #presets-status { color: $text-muted; height: 1; }
    #presets-status.-problem { color: $error; }
    #presets-table { height: 1fr; min-height: 3; }
    .presets-row { height: 1; }
    .presets-row > Label { width: 10; color: $text-muted; }
    .presets-row > Input, .presets-row > Select { width: 1fr; }
    .-hidden { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "apply", "Apply", id="presets_apply"),
        Binding("ctrl+s", "save", "Save form as preset", id="presets_save"),
        Binding("x,delete", "delete", "Delete", id="presets_delete"),
        Binding("ctrl+o", "import_file", "Import", id="presets_import"),
        Binding("ctrl+t", "export_file", "Export", id="presets_export"),
        Binding("p", "show('parameters')", "Parameters", show=False, id="presets_show_parameters"),
        Binding("s", "show('resolutions')", "Sizes", show=False, id="presets_show_resolutions"),
        Binding("c", "show('characters')", "Characters", show=False, id="presets_show_characters"),
        Binding("escape", "close", "Close", id="presets_close"),
    ]

    def __init__(self, form: ParameterForm, store: PresetStore) -> None:
        super().__init__()
        self._form = form
        self._store = store
        self._kind = PresetKind.PARAMETERS
        self._shown: list[Preset] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="presets-box"):
            yield Label("Presets: enter or a applies the highlighted one to the form", id="presets-title")
            yield Tabs(*(Tab(title, id=kind.value) for kind, title in TAB_TITLES.items()), id="presets-tabs")
            table: DataTable[str] = DataTable(id="presets-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("Name", "Values")
            yield table
            with Horizontal(classes="presets-row"):
                yield Label("Name")
                yield Input(placeholder="name to save the form under (ctrl+s)", compact=True, id="preset-name")
            with Horizontal(classes="presets-row -hidden", id="preset-character-row"):
                yield Label("Character")
                yield Select[str]([], prompt="the form has no characters", compact=True, id="preset-character")
            with Horizontal(classes="presets-row"):
                yield Label("File")
                yield PathInput(
                    placeholder="JSON file: ctrl+o imports it, ctrl+t exports every preset to it",
                    suffixes=(".json",),
                    id="preset-file",
                )
            yield Label("", id="presets-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._reload()
        self.query_one("#presets-table", DataTable).focus()

    # Listing -----------------------------------------------------------------------------------------------------

    @property
    def _table(self) -> DataTable[str]:
        return self.query_one("#presets-table", DataTable)

    def _status(self, text: str, *, problem: bool = False) -> None:
        status = self.query_one("#presets-status", Label)
        status.update(text)
        status.set_class(problem, "-problem")

    def _tell(self, line: str, *, title: str = "Presets", severity: SeverityLevel = "information") -> None:
        """Say `line` in the status line and in a notification, which stays readable after the screen closes."""
        self._status(line, problem=severity != "information")
        self.notify(line, title=title, severity=severity, markup=False)

    def _reload(self, select: str | None = None) -> None:
        """List the presets of the current kind; `select` puts the cursor on the preset of that name."""
        table = self._table
        table.clear()
        try:
            self._shown = self._store.listed(self._kind)
        except PeropixError as exc:
            self._shown = []
            self._status(str(exc), problem=True)
            return
        for preset in self._shown:
            detail = preset.describe() + ("  (built-in)" if _builtin(preset) else "")
            table.add_row(preset.name, detail)
        names = [p.name.casefold() for p in self._shown]
        if select is not None and select.casefold() in names:
            table.move_cursor(row=names.index(select.casefold()))
        count = len(self._shown)
        self._status(f"{TAB_TITLES[self._kind]}: {count} preset{'s' if count != 1 else ''}")

    def _highlighted(self) -> Preset | None:
        if not self._shown:
            return None
        return self._shown[min(self._table.cursor_row, len(self._shown) - 1)]

    @on(Tabs.TabActivated, "#presets-tabs")
    def _tab(self, event: Tabs.TabActivated) -> None:
        if event.tab.id is None:
            return
        self._kind = PresetKind(event.tab.id)
        self.query_one("#preset-character-row").set_class(self._kind is not PresetKind.CHARACTERS, "-hidden")
        if self._kind is PresetKind.CHARACTERS:
            self._list_form_characters()
        self._reload()

    def action_show(self, kind: str) -> None:
        self.query_one("#presets-tabs", Tabs).active = kind

    def _list_form_characters(self) -> None:
        characters = self._form.image_inputs.characters
        select = self.query_one("#preset-character", Select)
        select.set_options(
            (f"{n}. {' '.join(c.prompt.split())[:60] or '(empty)'}", str(n - 1)) for n, c in enumerate(characters, 1)
        )
        if characters:
            select.value = "0"

    # Applying ----------------------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#presets-table")
    def _selected(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        preset = self._highlighted()
        if preset is None:
            return
        form = self._form
        skipped: list[str] = []
        if isinstance(preset, ParameterPreset):
            skipped = form.apply_parameter_preset(preset)
        elif isinstance(preset, ResolutionPreset):
            form.set_size(preset.width, preset.height)
        else:
            try:
                character = CharacterPrompt(preset.prompt, preset.negative, preset.position)
            except PeropixError as exc:
                self._status(str(exc), problem=True)
                return
            inputs = form.image_inputs
            form.set_image_inputs(inputs.with_characters((*inputs.characters, character)))
            self._list_form_characters()
            problem = form.image_inputs.problem(str(form.query_one("#param-model", Select).value))
            if problem is not None:
                skipped.append(problem)
        line = f"Applied {preset.name!r}"
        if isinstance(preset, CharacterPreset):
            line = f"Character {preset.name!r} added ({len(form.image_inputs.characters)} in the form)"
        if skipped:
            line += "; not applied: " + "; ".join(skipped)
        self._tell(line, severity="warning" if skipped else "information")

    # Saving and deleting -----------------------------------------------------------------------------------------

    def _preset_from_form(self, name: str) -> Preset:
        form = self._form
        if self._kind is PresetKind.PARAMETERS:
            return form.parameter_preset(name)
        if self._kind is PresetKind.RESOLUTIONS:
            return ResolutionPreset(name, *form.image_size())
        characters = form.image_inputs.characters
        choice = self.query_one("#preset-character", Select).value
        if not characters or not isinstance(choice, str):
            raise PeropixError("the form has no character prompt to save: add one first")
        character = characters[int(choice)]
        return CharacterPreset(name, character.prompt, character.negative, character.position)

    def action_save(self) -> None:
        name_field = self.query_one("#preset-name", Input)
        if not name_field.value.strip():
            self._status("Type a name for the preset first", problem=True)
            name_field.focus()
            return
        try:
            preset = self._preset_from_form(name_field.value)
            replaced = self._store.save(preset)
        except PeropixError as exc:
            self._status(str(exc), problem=True)
            return
        self._reload(select=preset.name)
        verb = "replaced" if replaced else "saved"
        self._status(f"{TAB_TITLES[self._kind]} preset {preset.name!r} {verb}: {preset.describe()}")

    def action_delete(self) -> None:
        preset = self._highlighted()
        if preset is None:
            return
        if _builtin(preset):
            self._status(f"{preset.name!r} is a built-in size and cannot be deleted", problem=True)
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self._store.delete(preset.kind, preset.name)
            except PeropixError as exc:
                self._status(str(exc), problem=True)
                return
            self._reload()
            self._status(f"{TAB_TITLES[preset.kind]} preset {preset.name!r} deleted")

        self.app.push_screen(ConfirmScreen(f"Delete the preset {preset.name!r}?", yes="Delete", no="Keep"), answered)

    # Files -------------------------------------------------------------------------------------------------------

    def _file(self) -> Path | None:
        field = self.query_one("#preset-file", PathInput)
        if not field.value.strip():
            self._status("Type the path of a JSON file first", problem=True)
            field.focus()
            return None
        return Path(field.value.strip()).expanduser()

    def action_import_file(self) -> None:
        path = self._file()
        if path is None:
            return
        try:
            report = self._store.import_file(path)
        except PeropixError as exc:
            self._tell(str(exc), title="Presets not imported", severity="error")
            return
        self._reload()
        self._tell(report.describe())

    def action_export_file(self) -> None:
        path = self._file()
        if path is None:
            return
        try:
            count = self._store.export(path)
        except PeropixError as exc:
            self._tell(str(exc), title="Presets not exported", severity="error")
            return
        self._tell(f"{count} preset{'s' if count != 1 else ''} exported to {path}")

    def action_close(self) -> None:
        self.dismiss()
