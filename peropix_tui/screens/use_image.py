"""Use an image file: a path typed on the Generate screen, then what to take from it — its settings, prompt or seed,
or the image itself as the img2img or inpaint base, a vibe or the character reference.

The file is read in a worker once the path is entered, so only what it can give is offered (an image without
recorded settings can still be a base, a vibe or a reference; a `.naiv4vibe` file can only be a vibe).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from peropix_tui.core.errors import PeropixError
from peropix_tui.widgets.image_inputs import IMAGE_SUFFIXES, VIBE_FILE_SUFFIXES
from peropix_tui.widgets.path_input import PathInput

if TYPE_CHECKING:
    from peropix_tui.core.metadata import ImageMetadata
    from peropix_tui.messages import ApplyWhat, UseAs

APPLY_CHOICES: Final[tuple[tuple[ApplyWhat, str, str], ...]] = (
    ("all", "a", "Apply all its settings"),
    ("prompt", "p", "Apply its prompt"),
    ("seed", "s", "Apply its seed"),
)
USE_CHOICES: Final[tuple[tuple[UseAs, str, str], ...]] = (
    ("img2img", "b", "Use it as the img2img base"),
    ("inpaint", "i", "Use it as the inpaint base, then choose a mask"),
    ("vibe", "v", "Add it as a vibe"),
    ("reference", "c", "Use it as the character reference"),
)


@dataclass(frozen=True, slots=True)
class UseChoice:
    """What was chosen: settings to apply (`apply`, with the file's `metadata`) or an input to use it as (`use`)."""

    path: Path
    apply: ApplyWhat | None = None
    use: UseAs | None = None
    metadata: ImageMetadata | None = None


class ChoiceList(OptionList):
    """The choices; each also has its letter, as in the History pane."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(key, f"pick('{what}')", label, show=False, id=f"use_image_{what}")
        for what, key, label in (*APPLY_CHOICES, *USE_CHOICES)
    ]

    def action_pick(self, what: str) -> None:
        option = self.get_option(what)
        if not option.disabled:
            self.highlighted = self.get_option_index(what)
            self.action_select()


class UseImageScreen(ModalScreen[UseChoice | None]):
    DEFAULT_CSS = """
    UseImageScreen { align: center middle; }
    #use-box { width: 80%; min-width: 60; max-width: 100; height: auto; border: round $primary;
               background: $surface; padding: 0 1; }
    #use-path { margin-bottom: 1; }
    #use-info { height: auto; width: 100%; color: $text-muted; }
    #use-info.-error { color: $error; }
    #use-choices { height: auto; max-height: 9; margin-top: 1; }
    #use-hint { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="use_image_cancel")]

    class Checked(Message):
        """The file was read: its settings (None when it records none), or why it cannot be used."""

        def __init__(self, path: Path, metadata: ImageMetadata | None, error: str = "") -> None:
            super().__init__()
            self.path = path
            self.metadata = metadata
            self.error = error

    def __init__(self) -> None:
        super().__init__()
        self._checked: UseImageScreen.Checked | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="use-box"):
            yield Label("Use an image file", markup=False)
            yield PathInput(
                suffixes=IMAGE_SUFFIXES + VIBE_FILE_SUFFIXES,
                placeholder="path of a PNG, WebP or JPEG image; → completes, Enter reads it",
                id="use-path",
            )
            yield Label("", id="use-info", markup=False)
            choices = ChoiceList(
                *(Option(f"{key}  {label}", id=what) for what, key, label in (*APPLY_CHOICES, *USE_CHOICES)),
                id="use-choices",
            )
            choices.disabled = True
            yield choices
            yield Label("Enter or the letter picks · Escape cancels", id="use-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one("#use-path", PathInput).focus()

    @on(Input.Submitted, "#use-path")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._check(event.value)

    @on(Input.Changed, "#use-path")
    def _path_changed(self) -> None:
        self._checked = None
        self.query_one(ChoiceList).disabled = True

    @work(thread=True, exclusive=True, group="use-image-check", exit_on_error=False)
    def _check(self, text: str) -> None:
        from peropix_tui.widgets.image_files import ImageFileError, read_settings, resolve_path

        try:
            path = resolve_path(text)
            if path.suffix.lower() in VIBE_FILE_SUFFIXES:
                if not path.is_file():
                    raise ImageFileError(f"{path}: no such file")
                self.post_message(self.Checked(path, None))
                return
            metadata = read_settings(path)
        except PeropixError as exc:
            self.post_message(self.Checked(Path(text), None, str(exc)))
            return
        self.post_message(self.Checked(path, metadata if metadata.prompt is not None else None))

    def on_use_image_screen_checked(self, event: UseImageScreen.Checked) -> None:
        info = self.query_one("#use-info", Label)
        info.set_class(bool(event.error), "-error")
        choices = self.query_one(ChoiceList)
        if event.error:
            info.update(event.error)
            return
        self._checked = event
        vibe_file = event.path.suffix.lower() in VIBE_FILE_SUFFIXES
        meta = event.metadata
        if vibe_file:
            info.update(f"{event.path.name}: a vibe file, to add as a vibe.")
        elif meta is None:
            info.update(f"{event.path.name} records no generation settings: use the image itself.")
        else:
            seed = f", seed {meta.seed}" if meta.seed is not None else ""
            info.update(f"{event.path.name}: {meta.model or meta.source or 'settings'}{seed}.")
        usable: set[str] = {what for what, _, _ in APPLY_CHOICES if meta is not None and (what != "seed" or meta.seed)}
        usable |= {what for what, _, _ in USE_CHOICES if what == "vibe" or not vibe_file}
        for option in choices.options:
            if option.id in usable:
                choices.enable_option(option.id)
            elif option.id is not None:
                choices.disable_option(option.id)
        choices.disabled = False
        choices.highlighted = next(i for i, option in enumerate(choices.options) if not option.disabled)
        choices.focus()

    @on(OptionList.OptionSelected, "#use-choices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        checked = self._checked
        if checked is None:
            return
        what = event.option.id
        for apply, _, _ in APPLY_CHOICES:
            if apply == what:
                self.dismiss(UseChoice(checked.path, apply=apply, metadata=checked.metadata))
                return
        for use, _, _ in USE_CHOICES:
            if use == what:
                self.dismiss(UseChoice(checked.path, use=use))
                return

    def action_cancel(self) -> None:
        self.dismiss(None)
