"""Slot mode (F9 on Generate): named prompt parts, each added to the base prompt, queued together.

The set being edited belongs to the Generate screen, so it survives closing this modal; every edit replaces it
with a new immutable `SlotSet`, so a refused edit (an empty or taken name) leaves it as it was. "Queue all" builds
one request per unlocked slot and round from the Generate screen's current settings, prices the whole queue and
asks before queueing it through `GenerateScreen.queue_request`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, TextArea

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.slots import MAX_REPEAT, Slot, SlotLibrary, SlotSet
from peropix_tui.screens.confirm import ConfirmScreen
from peropix_tui.widgets.prompt_editor import PromptEditor

if TYPE_CHECKING:
    from peropix_tui.app import PeropixApp
    from peropix_tui.engine.nai.cost import Account
    from peropix_tui.engine.types import GenerationRequest
    from peropix_tui.screens.generate import GenerateScreen

PART_PREVIEW = 60
"""Characters of a slot's part shown in the table."""


def _one_line(text: str, width: int = PART_PREVIEW) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def describe_cost(requests: list[GenerationRequest], account: Account | None) -> str:
    """The Anlas the whole queue costs, summed request by request; FREE ones count 0 and are said so."""
    from peropix_tui.engine.nai.cost import CostError, estimate_cost

    total = free = unknown = 0
    for request in requests:
        try:
            estimate = estimate_cost(request, account)
        except CostError:
            unknown += 1
            continue
        total += estimate.total
        free += estimate.free
    line = f"{total:,} Anlas"
    if free:
        line += f" ({free} FREE, counted as 0)"
    if unknown:
        line += f", plus {unknown} job{'s' if unknown > 1 else ''} of unknown price"
    return line


class SlotsScreen(ModalScreen[None]):
    """Edit the Generate screen's slot set and queue it."""

    TITLE = "Slots"
    DEFAULT_CSS = """
    SlotsScreen { align: center middle; background: $background 60%; }
    #slots-box {
        width: 100%; max-width: 120; height: 100%; max-height: 40;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    #slots-title, .slots-label, #slots-status { color: $text-muted; height: 1; }
    #slots-table { height: 1fr; min-height: 3; }
    #slots-row { height: 1; }
    #slots-row Label { width: auto; padding-right: 1; }
    #slot-name { width: 1fr; }
    #slots-repeat { width: 8; }
    #slot-prompt { height: 5; }
    #slot-negative { height: 3; }
    #slots-status.-problem { color: $error; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5,ctrl+enter", "queue_all", "Queue all", id="slots_queue_all"),
        Binding("a", "add", "Add", id="slots_add"),
        Binding("c", "duplicate", "Duplicate", id="slots_duplicate"),
        Binding("l", "toggle_lock", "Lock", id="slots_lock"),
        Binding("x,delete", "delete", "Delete", id="slots_delete"),
        Binding("shift+up", "move(-1)", "Move up", show=False, id="slots_move_up"),
        Binding("shift+down", "move(1)", "Move down", show=False, id="slots_move_down"),
        Binding("ctrl+s", "save_set", "Save set", id="slots_save_set"),
        Binding("ctrl+o", "load_set", "Load set", id="slots_load_set"),
        Binding("escape", "close", "Close", show=False, id="slots_close"),
    ]

    def __init__(self, generate: GenerateScreen, library: SlotLibrary) -> None:
        super().__init__()
        self._generate = generate
        self._library = library
        self._set_name = ""
        """The name the set was last saved or loaded under, offered when saving again."""

    @property
    def slot_set(self) -> SlotSet:
        if self._generate.slot_set is None:
            self._generate.slot_set = SlotSet()
        return self._generate.slot_set

    @slot_set.setter
    def slot_set(self, value: SlotSet) -> None:
        self._generate.slot_set = value

    def compose(self) -> ComposeResult:
        vocabulary = self._generate.query_one("#prompt-editor", PromptEditor).vocabulary
        with Vertical(id="slots-box"):
            yield Label("Slots: each unlocked slot's part is added to the prompt; F5 queues them all", id="slots-title")
            table: DataTable[str] = DataTable(id="slots-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("#", "Name", "Part", "")
            yield table
            with Horizontal(id="slots-row"):
                yield Label("Name")
                yield Input(compact=True, id="slot-name", max_length=80)
                yield Label(" Repeat")
                yield Input(str(self.slot_set.repeat), compact=True, id="slots-repeat", type="integer", max_length=3)
            yield Label("Part added to the prompt", classes="slots-label")
            yield PromptEditor(vocabulary=vocabulary, id="slot-prompt")
            yield Label("Part added to the negative prompt", classes="slots-label")
            yield PromptEditor(vocabulary=vocabulary, id="slot-negative")
            yield Label("", id="slots-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._fill_table(0)
        self.query_one("#slots-table", DataTable).focus()

    # Showing the set ---------------------------------------------------------------------------------------------

    @property
    def _table(self) -> DataTable[str]:
        return self.query_one("#slots-table", DataTable)

    @property
    def _selected(self) -> int | None:
        """The index of the slot under the table's cursor, None when the set is empty."""
        if not self.slot_set.slots:
            return None
        return min(self._table.cursor_row, len(self.slot_set) - 1)

    def _row(self, number: int, slot: Slot) -> tuple[str, str, str, str]:
        return str(number), slot.name, _one_line(slot.prompt), "locked" if slot.locked else ""

    def _fill_table(self, select: int) -> None:
        table = self._table
        table.clear()
        for number, slot in enumerate(self.slot_set.slots, 1):
            table.add_row(*self._row(number, slot))
        if self.slot_set.slots:
            table.move_cursor(row=max(0, min(select, len(self.slot_set) - 1)))
        self._show_fields()
        self._status()

    def _refresh_row(self, index: int) -> None:
        for column, value in enumerate(self._row(index + 1, self.slot_set.slots[index])):
            self._table.update_cell_at(Coordinate(index, column), value)

    def _show_fields(self) -> None:
        """Put the selected slot in the fields below the table, without reading them back as edits."""
        index = self._selected
        slot = None if index is None else self.slot_set.slots[index]
        name = self.query_one("#slot-name", Input)
        prompt = self.query_one("#slot-prompt", PromptEditor)
        negative = self.query_one("#slot-negative", PromptEditor)
        with self.prevent(Input.Changed, TextArea.Changed):
            name.value = "" if slot is None else slot.name
            prompt.text = "" if slot is None else slot.prompt
            negative.text = "" if slot is None else slot.negative
        for field in (name, prompt, negative):
            field.disabled = slot is None

    def _status(self, problem: str | None = None) -> None:
        status = self.query_one("#slots-status", Label)
        status.set_class(problem is not None, "-problem")
        if problem is not None:
            status.update(problem)
        elif not self.slot_set.slots:
            status.update("No slots yet: press a to add one")
        else:
            count = self.slot_set.job_count
            status.update(f"{self.slot_set.summary()} → {count} job{'s' if count != 1 else ''}")

    def _edit(self, make: Callable[[], SlotSet], select: int | None = None) -> bool:
        """Make the set `make` returns the set in use; `select` redraws the table with that row under the cursor.
        A refused edit is shown in the status line and changes nothing (False)."""
        try:
            self.slot_set = make()
        except PeropixError as exc:
            self._status(str(exc))
            return False
        if select is None:
            self._status()
        else:
            self._fill_table(select)
        return True

    @on(DataTable.RowHighlighted, "#slots-table")
    def _highlighted(self) -> None:
        self._show_fields()

    @on(DataTable.RowSelected, "#slots-table")
    def _selected_row(self) -> None:
        if self._selected is not None:
            self.query_one("#slot-prompt", PromptEditor).focus()

    # Editing the selected slot -----------------------------------------------------------------------------------

    def _change_selected(self, change: Callable[[Slot], Slot]) -> None:
        index = self._selected
        if index is not None and self._edit(lambda: self.slot_set.replaced(index, change(self.slot_set.slots[index]))):
            self._refresh_row(index)

    @on(Input.Changed, "#slot-name")
    def _name_changed(self, event: Input.Changed) -> None:
        self._change_selected(lambda slot: replace(slot, name=event.value))

    @on(TextArea.Changed, "#slot-prompt")
    def _prompt_changed(self, event: TextArea.Changed) -> None:
        self._change_selected(lambda slot: replace(slot, prompt=event.text_area.text))

    @on(TextArea.Changed, "#slot-negative")
    def _negative_changed(self, event: TextArea.Changed) -> None:
        self._change_selected(lambda slot: replace(slot, negative=event.text_area.text))

    @on(Input.Changed, "#slots-repeat")
    def _repeat_changed(self, event: Input.Changed) -> None:
        try:
            repeat = int(event.value)
        except ValueError:
            self._status(f"Repeat: type a whole number from 1 to {MAX_REPEAT}")
            return
        self._edit(lambda: self.slot_set.with_repeat(repeat))

    # Actions -----------------------------------------------------------------------------------------------------

    def action_add(self) -> None:
        index = self._selected
        at = len(self.slot_set) if index is None else index + 1
        name = f"Slot {len(self.slot_set) + 1}"
        if self._edit(lambda: self.slot_set.added(Slot(self.slot_set.free_name(name)), at), select=at):
            self.query_one("#slot-name", Input).focus()

    def action_duplicate(self) -> None:
        index = self._selected
        if index is not None:
            self._edit(lambda: self.slot_set.duplicated(index), select=index + 1)

    def action_toggle_lock(self) -> None:
        self._change_selected(lambda slot: replace(slot, locked=not slot.locked))

    def action_delete(self) -> None:
        index = self._selected
        if index is None:
            return
        slot = self.slot_set.slots[index]

        def answered(yes: bool | None) -> None:
            if yes:
                self._edit(lambda: self.slot_set.removed(index), select=index)

        if not (slot.prompt.strip() or slot.negative.strip()):
            answered(True)
            return
        self.app.push_screen(ConfirmScreen(f"Delete the slot {slot.name!r}?", yes="Delete", no="Keep"), answered)

    def action_move(self, offset: int) -> None:
        index = self._selected
        if index is not None:
            target = max(0, min(len(self.slot_set) - 1, index + offset))
            self._edit(lambda: self.slot_set.moved(index, offset), select=target)

    def action_close(self) -> None:
        self.dismiss()

    # Saved sets --------------------------------------------------------------------------------------------------

    def action_save_set(self) -> None:
        try:
            names = self._library.names()
        except PeropixError as exc:
            self.notify(str(exc), title="Slots", severity="error", markup=False)
            return

        def chosen(name: str | None) -> None:
            if not name:
                return
            taken = next((n for n in names if n.casefold() == name.strip().casefold()), None)
            if taken is None or taken.casefold() == self._set_name.casefold():
                self._save(name)
                return
            self.app.push_screen(
                ConfirmScreen(f"Replace the saved slot set {taken!r}?", yes="Replace", no="Keep"),
                lambda yes: self._save(name) if yes else None,
            )

        self.app.push_screen(SlotSetPicker("save", names, self._set_name), chosen)

    def _save(self, name: str) -> None:
        try:
            path = self._library.save(name, self.slot_set)
        except PeropixError as exc:
            self.notify(str(exc), title="Slot set not saved", severity="error", markup=False)
            return
        self._set_name = name.strip()
        self.notify(f"Slot set {self._set_name!r} saved to {path}", title="Slots", markup=False)

    def action_load_set(self) -> None:
        try:
            names = self._library.names()
        except PeropixError as exc:
            self.notify(str(exc), title="Slots", severity="error", markup=False)
            return
        if not names:
            self.notify(f"No saved slot sets in {self._library.folder} yet", title="Slots", markup=False)
            return

        def chosen(name: str | None) -> None:
            if not name:
                return
            try:
                loaded = self._library.load(name)
            except PeropixError as exc:
                self.notify(str(exc), title="Slot set not loaded", severity="error", markup=False)
                return
            self._set_name = name.strip()
            self._edit(lambda: loaded, select=0)
            with self.prevent(Input.Changed):
                self.query_one("#slots-repeat", Input).value = str(loaded.repeat)
            self.notify(f"Slot set {self._set_name!r} loaded: {loaded.summary()}", title="Slots", markup=False)

        self.app.push_screen(SlotSetPicker("load", names, self._set_name, self._library), chosen)

    # Queueing ----------------------------------------------------------------------------------------------------

    def action_queue_all(self) -> None:
        generate = self._generate
        try:
            base = generate.current_request()
        except PeropixError as exc:
            self.notify(str(exc), title="Settings not valid", severity="error", markup=False)
            return
        jobs = self.slot_set.jobs(base.prompt, base.negative)
        if not jobs:
            self.notify("No unlocked slot to queue", title="Slots", severity="warning", markup=False)
            return
        if not generate.ready_to_queue():
            return
        requests = [(job.slot.name, replace(base, prompt=job.prompt, negative=job.negative)) for job in jobs]
        subscription = cast("PeropixApp", self.app).nai.subscription
        account = None if subscription is None else subscription.account
        cost = describe_cost([request for _, request in requests], account)
        slots, rounds = len(self.slot_set.unlocked), self.slot_set.repeat
        question = (
            f"Queue {len(requests)} job{'s' if len(requests) != 1 else ''} "
            f"({slots} slot{'s' if slots != 1 else ''} × {rounds})? The whole queue costs {cost}."
        )

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            for label, request in requests:
                generate.queue_request(request, label=label)
            self.dismiss()

        self.app.push_screen(ConfirmScreen(question, yes="Queue", no="Cancel"), answered)


class SlotSetPicker(ModalScreen[str | None]):
    """Ask for a slot set's name: type one (saving) or pick a saved one (loading); delete removes a saved set."""

    DEFAULT_CSS = """
    SlotSetPicker { align: center middle; background: $background 60%; }
    #slot-sets-box { width: 60; height: auto; max-height: 20; border: thick $primary; background: $surface; }
    #slot-sets-list { height: auto; max-height: 12; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="slot_sets_cancel"),
        Binding("delete", "delete", "Delete saved set", id="slot_sets_delete"),
    ]

    def __init__(
        self,
        mode: Literal["save", "load"],
        names: list[str],
        current: str,
        library: SlotLibrary | None = None,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.names = names
        self.current = current
        self._library = library
        """Given when loading: the saved sets can be deleted from the list."""

    def compose(self) -> ComposeResult:
        with Vertical(id="slot-sets-box"):
            if self.mode == "save":
                yield Label("Save the slot set as (enter):")
                yield Input(self.current, compact=True, id="slot-sets-name", max_length=80)
                if self.names:
                    yield Label("Saved sets:", classes="slots-label")
            else:
                yield Label("Load which slot set? (enter; delete removes one)")
            yield OptionList(*self.names, id="slot-sets-list")

    def on_mount(self) -> None:
        if self.mode == "save":
            self.query_one("#slot-sets-name", Input).focus()
        else:
            options = self.query_one("#slot-sets-list", OptionList)
            options.focus()
            if self.current in self.names:
                options.highlighted = self.names.index(self.current)

    @on(Input.Submitted, "#slot-sets-name")
    def _typed(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    @on(OptionList.OptionSelected, "#slot-sets-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(str(event.option.prompt))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "delete" or self._library is not None

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_delete(self) -> None:
        options = self.query_one("#slot-sets-list", OptionList)
        if self._library is None or options.highlighted is None:
            return
        name = self.names[options.highlighted]

        def answered(yes: bool | None) -> None:
            if not yes or self._library is None:
                return
            try:
                self._library.delete(name)
            except PeropixError as exc:
                self.notify(str(exc), title="Slots", severity="error", markup=False)
                return
            self.names.remove(name)
            options.clear_options()
            options.add_options(self.names)
            self.notify(f"Slot set {name!r} deleted", title="Slots", markup=False)

        self.app.push_screen(ConfirmScreen(f"Delete the saved slot set {name!r}?", yes="Delete", no="Keep"), answered)
