"""Settings: every key of core/config as a form field, plus the two secrets, entered masked and shown redacted.

Fields are built from the settings schema, so a new setting appears here without screen code. Saving validates
every field first; nothing is written unless all are valid, and the message names the key that was refused.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args, get_origin

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from peropix_tui.core.config import LEAVES, Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.outputs import FIELDS
from peropix_tui.core.secrets import SECRET_LABELS, SECRET_NAMES, SecretStore

SECTION_TITLES = {
    "paths": "Folders (empty = default under the data folder)",
    "endpoints": "Endpoints",
    "executors": "Worker pools",
    "ui": "Interface",
    "civitai": "CivitAI collector",
    "saving": "Saving images (name pattern fields: " + " ".join("{" + f + "}" for f in FIELDS) + ")",
    "notify": "When the generation queue finishes (bell, desktop notification)",
    "local": "Local engine (checkpoints from paths.checkpoint_dirs; device auto, cpu, cuda or cuda:N)",
}


def _field_id(key: str) -> str:
    return "set-" + key.replace(".", "--")


def _key_of(field_id: str) -> str:
    return field_id.removeprefix("set-").replace("--", ".")


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


class SettingsScreen(Screen[None]):
    TITLE = "Settings"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True, id="settings_save"),
        Binding("ctrl+r", "revert", "Revert", id="settings_revert"),
    ]

    @property
    def config(self) -> Config:
        return self.app.config  # type: ignore[attr-defined,no-any-return]

    @property
    def secrets(self) -> SecretStore:
        return self.app.secrets  # type: ignore[attr-defined,no-any-return]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="settings-form"):
            current_section = ""
            for key, leaf in LEAVES.items():
                if leaf.section != current_section:
                    current_section = leaf.section
                    yield Static(
                        Text(SECTION_TITLES.get(current_section, current_section), style="bold"),
                        classes="settings-section",
                    )
                with Horizontal(classes="settings-row"):
                    yield Label(key, classes="settings-label")
                    yield self._editor(key, leaf.type, self.config.get(key))
                    yield Label("", id=_field_id(key) + "-error", classes="settings-error")
            yield Static(
                Text("Secrets (stored with mode 0600; leave empty to keep)", style="bold"), classes="settings-section"
            )
            for name in SECRET_NAMES:
                with Horizontal(classes="settings-row"):
                    yield Label(SECRET_LABELS[name], classes="settings-label")
                    yield Input(
                        placeholder=self.secrets.describe(name),
                        password=True,
                        compact=True,
                        id=f"secret-{name}",
                        classes="settings-input",
                    )
                    yield Button("Clear", id=f"clear-{name}", classes="settings-clear")
            with Vertical(id="settings-actions"):
                yield Label("", id="settings-status", markup=False)
                with Horizontal():
                    yield Button("Save (ctrl+s)", id="settings-save", variant="primary")
                    yield Button("Revert (ctrl+r)", id="settings-revert")
        yield Footer()

    def _editor(self, key: str, tp: Any, value: Any) -> Input | Select[str] | Switch:
        fid = _field_id(key)
        if tp is bool:
            return Switch(value=bool(value), id=fid, classes="settings-input")
        if get_origin(tp) is Literal:
            options = [(str(a), str(a)) for a in get_args(tp)]
            return Select(options, value=str(value), allow_blank=False, compact=True, id=fid, classes="settings-input")
        if key == "ui.theme":
            themes = sorted(self.app.available_themes)
            if value not in themes:
                themes.append(str(value))
            return Select(
                [(t, t) for t in themes],
                value=str(value),
                allow_blank=False,
                compact=True,
                id=fid,
                classes="settings-input",
            )
        return Input(_as_text(value), compact=True, id=fid, classes="settings-input")

    def _read_field(self, key: str) -> Any:
        widget = self.query_one("#" + _field_id(key))
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return widget.value
        assert isinstance(widget, Input)
        return widget.value

    def action_save(self) -> None:
        errors: dict[str, str] = {}
        candidate = Config.load(self.config.dirs)  # validate on a copy: nothing changes unless all fields pass
        for key in LEAVES:
            label = self.query_one("#" + _field_id(key) + "-error", Label)
            try:
                candidate.set(key, self._read_field(key), from_text=True)
                label.update("")
            except PeropixError as exc:
                errors[key] = str(exc)
                label.update(Text(str(exc).split(": ", 1)[-1], style="red"))
        if errors:
            first = next(iter(errors.values()))
            self._status(f"Not saved: {first}", error=True)
            self.notify(first, title="Settings not saved", severity="error", markup=False)
            return
        try:
            for key in LEAVES:
                if candidate.get(key) != self.config.get(key) and key not in self.config.overridden:
                    self.config.set(key, candidate.get(key))
            self.config.save()
            for name in SECRET_NAMES:
                field = self.query_one(f"#secret-{name}", Input)
                if field.value.strip():
                    self.secrets.set(name, field.value)
                    field.value = ""
                    field.placeholder = self.secrets.describe(name)
        except PeropixError as exc:
            self._status(f"Not saved: {exc}", error=True)
            self.notify(str(exc), title="Settings not saved", severity="error", markup=False)
            return
        if self.app.theme != self.config.settings.ui.theme:
            self.app.theme = self.config.settings.ui.theme
        self._status(f"Saved to {self.config.path}")
        self.notify("Settings saved", markup=False)

    def action_revert(self) -> None:
        for key in LEAVES:
            widget = self.query_one("#" + _field_id(key))
            value = self.config.get(key)
            if isinstance(widget, Switch):
                widget.value = bool(value)
            elif isinstance(widget, Select):
                widget.value = str(value)
            elif isinstance(widget, Input):
                widget.value = _as_text(value)
            self.query_one("#" + _field_id(key) + "-error", Label).update("")
        self._status("Reverted to the saved settings")

    def _status(self, message: str, *, error: bool = False) -> None:
        self.query_one("#settings-status", Label).update(Text(message, style="red" if error else ""))

    @on(Button.Pressed, "#settings-save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#settings-revert")
    def _revert_pressed(self) -> None:
        self.action_revert()

    @on(Button.Pressed, ".settings-clear")
    def _clear_secret(self, event: Button.Pressed) -> None:
        name = (event.button.id or "").removeprefix("clear-")
        for known in SECRET_NAMES:
            if known == name:
                try:
                    self.secrets.set(known, None)
                except PeropixError as exc:
                    self.notify(str(exc), severity="error", markup=False)
                    return
                self.query_one(f"#secret-{known}", Input).placeholder = self.secrets.describe(known)
                self._status(f"{SECRET_LABELS[known]} removed")
