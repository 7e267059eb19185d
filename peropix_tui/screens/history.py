"""History: every image in the history store, newest first, a page at a time, with what can be done to one.

The list asks the store for 100 rows at a time and for the next 100 when the cursor nears the end, so it opens
as fast on 20,000 entries as on 20. Every store call runs in a thread worker that posts its result back; only
the selected entry's stored thumbnail is read on the UI thread (one small row), so it shows at once while the
full image decodes in the preview's worker. The app owns the store and tells this screen, through
`app.history_signal`, when entries were added or indexed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static
from textual.widgets.data_table import ColumnKey

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.nai.models import MAX_SEED, MODELS
from peropix_tui.messages import ApplySettings, ApplyWhat, HistoryEvent, UseAs, UseImage
from peropix_tui.widgets.image_preview import ImagePreview

if TYPE_CHECKING:
    from textual.signal import Signal
    from textual.worker import Worker

    from peropix_tui.core.config import Config
    from peropix_tui.core.history import Entry, HistoryStore, TrashRecord
    from peropix_tui.core.metadata import ImageMetadata

log = logging.getLogger(__name__)

PAGE_SIZE = 100
PREFETCH_ROWS = 25
"""The next page is asked for when the cursor is this close to the last loaded row."""
PROMPT_WIDTH = 200
"""Characters of the prompt kept in a row; the column shows as many as the table's width allows."""
MIN_PROMPT_COLUMN = 24
PREVIEW_DELAY = 0.15
UNDO_DEPTH = 50
DEFAULT_EXPORT_DIR = "~/peropix-export"
TRASH_FOLDER = ".trash"


class HistoryHost(Protocol):
    """What this screen needs from the app (`PeropixApp`)."""

    config: Config
    history: HistoryStore | None
    history_signal: Signal[HistoryEvent]
    history_version: int
    history_event: HistoryEvent | None
    image_widget: str

    def scan_history(self, first: bool = False) -> Worker[None]: ...

    def save_unsaved_image(self, entry_id: int) -> Worker[None]: ...


def one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def short_model(model: str | None) -> str:
    """A NovelAI model id as its short label ("V4.5 Full"); any other name as it is."""
    spec = MODELS.get(model or "")
    if spec is None:
        return model or ""
    return spec.label.removeprefix("NAI Diffusion ")


def describe(meta: ImageMetadata) -> list[tuple[str, str]]:
    """Label/value pairs for the detail pane; numeric 0 is shown, absent values are left out."""
    size = f"{meta.width}×{meta.height}" if meta.width is not None and meta.height is not None else None
    fields: list[tuple[str, object]] = [
        ("Prompt", meta.prompt),
        ("Negative", meta.negative_prompt),
        ("Model", meta.model or meta.source),
        ("Seed", meta.seed),
        ("Steps", meta.steps),
        ("CFG", meta.cfg),
        ("CFG rescale", meta.cfg_rescale),
        ("Sampler", meta.sampler),
        ("Schedule", meta.scheduler),
        ("Size", size),
        ("Strength", meta.strength),
        ("Noise", meta.noise),
        ("LoRAs", ", ".join(tag for tag, _ in meta.loras) or None),
        ("Software", meta.software),
        ("Found in", ", ".join(meta.found_in) or None),
    ]
    rows = [(label, str(value)) for label, value in fields if value is not None and value != ""]
    rows.extend((f"Character {i}", c.prompt) for i, c in enumerate(meta.characters, 1))
    rows.extend(("Warning", w) for w in meta.warnings)
    return rows


def row_cells(entry: Entry) -> tuple[Text | str, ...]:
    """The table cells of one entry; text from files is wrapped in `Text` so brackets are never markup."""
    when = datetime.fromtimestamp(entry.created).strftime("%y-%m-%d %H:%M")
    size = f"{entry.width}×{entry.height}" if entry.width is not None and entry.height is not None else ""
    prompt = Text(one_line(entry.prompt, PROMPT_WIDTH)) if entry.prompt.strip() else Text("—", style="dim")
    return (
        Text("★", style="bold yellow") if entry.favourite else "",
        when,
        prompt,
        Text(one_line(short_model(entry.model), 12)),
        "" if entry.seed is None else str(entry.seed),
        size,
    )


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    text: str = ""
    favourites: bool = False

    @property
    def active(self) -> bool:
        return bool(self.text) or self.favourites


class HistoryTable(DataTable[Text | str]):
    """The entry list; its letter keys work only here, never while the filter input has the focus."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "screen.focus_filter", "Filter", key_display="/"),
        Binding("f", "screen.favourite", "Favourite"),
        Binding("asterisk", "screen.toggle_favourites", "Favourites only", key_display="*", show=False),
        Binding("d", "screen.delete", "Delete"),
        Binding("u", "screen.undo_delete", "Undo delete", show=False),
        Binding("x", "screen.export", "Export stripped"),
        Binding("a", "screen.apply('all')", "Use settings"),
        Binding("p", "screen.apply('prompt')", "Use prompt", show=False),
        Binding("s", "screen.apply('seed')", "Use seed", show=False),
        Binding("b", "screen.use_image('img2img')", "Use as img2img base", show=False, id="history_use_img2img"),
        Binding("i", "screen.use_image('inpaint')", "Use as inpaint base", show=False, id="history_use_inpaint"),
        Binding("v", "screen.use_image('vibe')", "Use as a vibe", show=False, id="history_use_vibe"),
        Binding("c", "screen.use_image('reference')", "Use as character reference", show=False, id="history_use_ref"),
        Binding("escape", "screen.clear_filter", "Clear filter", show=False),
        # A row list: Home and End go to the first and last loaded row (End thus loads the next page).
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last loaded row", show=False),
    ]

    def on_resize(self) -> None:
        self.fit_column("prompt", MIN_PROMPT_COLUMN)

    def fit_column(self, key: str, minimum: int) -> None:
        """Size column `key` to the width the other columns leave free, so the row fills the table."""
        column = self.columns.get(ColumnKey(key))
        if column is None:
            return
        others = sum(c.get_render_width(self) for k, c in self.columns.items() if k != column.key)
        width = max(minimum, self.scrollable_content_region.width - others - 2 * self.cell_padding)
        if width != column.width:
            column.width = width
            # DataTable has no public way to resize a column: its render caches are keyed on the update count,
            # and the scrollable size is recomputed when dimensions are flagged.
            self._update_count += 1
            self._require_update_dimensions = True
            self.refresh()


class FilterInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "screen.clear_filter", "Clear filter")]


class ExportPrompt(ModalScreen[str | None]):
    """Asks for the folder an image is exported into; Enter exports, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, file_name: str, folder: str) -> None:
        super().__init__()
        self.file_name = file_name
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label(f"Export {self.file_name} without its metadata into:", id="export-question", markup=False)
            yield Input(self.folder, id="export-folder")
            yield Label("Enter exports · Escape cancels", id="export-hint")

    @on(Input.Submitted, "#export-folder")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HistoryScreen(Screen[None]):
    TITLE = "History"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "rescan", "Rescan", id="history_rescan"),
        Binding("ctrl+y", "copy_prompt", "Copy prompt", id="history_copy_prompt"),
        Binding("ctrl+t", "copy_seed", "Copy seed", id="history_copy_seed"),
        Binding("ctrl+s", "save_image", "Save to outputs", id="history_save_image"),
    ]

    class PageLoaded(Message):
        def __init__(
            self, generation: int, offset: int, entries: list[Entry], total: int | None, keep: int | None
        ) -> None:
            super().__init__()
            self.generation = generation
            self.offset = offset
            self.entries = entries
            self.total = total
            self.keep = keep

    class PageFailed(Message):
        def __init__(self, generation: int, error: str) -> None:
            super().__init__()
            self.generation = generation
            self.error = error

    class StoreDone(Message):
        """A store action finished in its worker; `finish` updates the screen on the UI thread."""

        def __init__(self, finish: Callable[[], None]) -> None:
            super().__init__()
            self.finish = finish

    class StoreFailed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self) -> None:
        super().__init__()
        self._query = HistoryQuery()
        self._entries: dict[int, Entry] = {}
        self._total = 0
        self._generation = 0
        self._loading = False
        self._loaded_once = False
        self._seen_version = -1
        self._selected: int | None = None
        self._undo: list[TrashRecord] = []
        self._export_dir = DEFAULT_EXPORT_DIR
        self._notice = ""
        """Shown in the summary line instead of the counts: indexing progress, or why nothing can be listed."""

    # layout ------------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="history-body"):
            with Vertical(id="history-list"):
                yield FilterInput(
                    placeholder="/ filter: words of prompt, model or seed",
                    id="history-filter",
                    compact=True,
                )
                yield Label("", id="history-summary", markup=False)
                table = HistoryTable(id="history-table", cursor_type="row", zebra_stripes=True)
                # Most telling first: on a narrow terminal seed and size scroll off (the detail pane has them).
                table.add_column("★", key="favourite", width=1)
                table.add_column("Date", key="date", width=14)
                table.add_column("Prompt", key="prompt", width=MIN_PROMPT_COLUMN)
                table.add_column("Model", key="model", width=12)
                table.add_column("Seed", key="seed", width=10)
                table.add_column("Size", key="size", width=9)
                yield table
            with Vertical(id="history-detail"):
                yield ImagePreview(self.host.image_widget, id="history-preview")
                with VerticalScroll(id="history-meta-scroll"):
                    yield Static("", id="history-meta")
        yield Footer()

    @property
    def host(self) -> HistoryHost:
        return cast("HistoryHost", self.app)

    @property
    def table(self) -> HistoryTable:
        return self.query_one("#history-table", HistoryTable)

    def on_mount(self) -> None:
        self.host.history_signal.subscribe(self, self._history_event)
        self.table.focus()
        if self.host.history is not None:
            self._reload()
        else:
            event = self.host.history_event
            if event is not None and event.kind == "failed":
                self._notice = f"{event.message}; ctrl+r tries again"
            else:
                self._notice = "Opening the history …"
            self._update_summary()

    def on_screen_resume(self) -> None:
        if self.host.history is not None and self.host.history_version != self._seen_version:
            self._reload(keep=self._selected)

    def _history_event(self, event: HistoryEvent) -> None:
        if event.kind == "progress":
            self._notice = f"Indexing {self.host.config.outputs_dir}: {event.done}/{event.total} …"
        elif event.kind == "failed":
            # A store that could not open lists nothing; one that recovered from damage lists what it has.
            self._notice = "" if self.host.history is not None else f"{event.message}; ctrl+r tries again"
        else:
            self._notice = ""
        if event.changes_entries and self.host.history is not None and self.is_current:
            self._reload(keep=self._selected)  # a screen out of sight catches up on resume
        else:
            self._update_summary()

    # loading -----------------------------------------------------------------------------------------------

    def _reload(self, keep: int | None = None) -> None:
        """Fetch the list again from the top, as many rows as are loaded now, keeping `keep` selected."""
        store = self.host.history
        if store is None:
            return
        self._seen_version = self.host.history_version
        self._generation += 1
        self._loading = True
        pages = max(1, -(-self.table.row_count // PAGE_SIZE))
        self._fetch(store, self._generation, self._query, 0, pages * PAGE_SIZE, keep)

    def _load_more(self, row: int) -> None:
        store = self.host.history
        table = self.table
        if store is None or self._loading or table.row_count >= self._total:
            return
        if row >= table.row_count - PREFETCH_ROWS:
            self._loading = True
            self._fetch(store, self._generation, self._query, table.row_count, PAGE_SIZE, None)

    @work(thread=True, group="history-pages", exit_on_error=False)
    def _fetch(
        self, store: HistoryStore, generation: int, query: HistoryQuery, offset: int, limit: int, keep: int | None
    ) -> None:
        text = query.text or None
        try:
            entries = store.page(offset, limit, text=text, favourites=query.favourites)
            total = store.count(text=text, favourites=query.favourites) if offset == 0 else None
        except PeropixError as exc:
            self.post_message(self.PageFailed(generation, str(exc)))
            return
        self.post_message(self.PageLoaded(generation, offset, entries, total, keep))

    def on_history_screen_page_loaded(self, event: HistoryScreen.PageLoaded) -> None:
        if event.generation != self._generation:
            return  # the query changed meanwhile
        table = self.table
        self._loading = False
        if event.total is not None:
            self._total = event.total
        with self.app.batch_update():
            previous_row = table.cursor_row
            if event.offset == 0:
                table.clear()
                self._entries.clear()
            for entry in event.entries:
                # An image added between two pages shifts offsets by one: never list an entry twice.
                if entry.id not in self._entries:
                    self._entries[entry.id] = entry
                    table.add_row(*row_cells(entry), key=str(entry.id))
            if event.offset == 0 and table.row_count:
                kept = event.keep if event.keep in self._entries else None
                row = table.get_row_index(str(kept)) if kept is not None else min(previous_row, table.row_count - 1)
                table.move_cursor(row=row, animate=False)
        self._loaded_once = True
        self._update_summary()
        if event.offset == 0:
            self._select(self._entry_at(table.cursor_row))
        self._load_more(table.cursor_row)

    def on_history_screen_page_failed(self, event: HistoryScreen.PageFailed) -> None:
        if event.generation == self._generation:
            self._loading = False
            self.notify(event.error, title="History", severity="error", markup=False)

    def _update_summary(self) -> None:
        summary = self.query_one("#history-summary", Label)
        if self._notice or not self._loaded_once:
            summary.update(self._notice or "Loading …")
            return
        query = self._query
        loaded = self.table.row_count
        if self._total == 0:
            if query.active:
                wanted = [f"matching “{query.text}”"] if query.text else []
                if query.favourites:
                    wanted.append("among the favourites")
                summary.update(f"No image {' '.join(wanted)}. Esc clears the filter.")
            else:
                summary.update(
                    f"No images yet. Generated images are saved in {self.host.config.outputs_dir} and listed here; "
                    "ctrl+r indexes images already in that folder."
                )
            return
        parts = [f"{self._total} image{'s' if self._total != 1 else ''}, newest first"]
        if query.text:
            parts.append(f"matching “{query.text}”")
        if query.favourites:
            parts.append("favourites only")
        if loaded < self._total:
            parts.append(f"{loaded} loaded")
        summary.update(" · ".join(parts))

    # selection ---------------------------------------------------------------------------------------------

    def _entry_at(self, row: int) -> Entry | None:
        table = self.table
        if not 0 <= row < table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
        return None if key is None else self._entries.get(int(key))

    def _current(self) -> Entry | None:
        return self._entry_at(self.table.cursor_row)

    @on(DataTable.RowHighlighted, "#history-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row != self.table.cursor_row:
            return  # superseded by a later move (a reload moves the cursor twice)
        self._select(self._entry_at(event.cursor_row))
        self._load_more(event.cursor_row)

    def _select(self, entry: Entry | None) -> None:
        changed = (entry.id if entry is not None else None) != self._selected
        self._selected = None if entry is None else entry.id
        meta_view = self.query_one("#history-meta", Static)
        preview = self.query_one("#history-preview", ImagePreview)
        if entry is None:
            if changed:
                preview.clear()
            meta_view.update("")
            return
        if changed:
            location = entry.location
            if location is None:
                preview.clear(f"{entry.path.name} is gone")
            else:
                preview.show(location, thumbnail=self._thumbnail(entry.id), delay=PREVIEW_DELAY)
        meta_view.update(self._detail(entry))

    def _thumbnail(self, entry_id: int) -> bytes | None:
        store = self.host.history
        if store is None:
            return None
        try:
            return store.thumbnail(entry_id)
        except PeropixError as exc:
            log.info("no thumbnail for history entry %d: %s", entry_id, exc)
            return None

    @staticmethod
    def _detail(entry: Entry) -> Text:
        text = Text()
        text.append(entry.path.name, style="bold")
        if entry.favourite:
            text.append("  ★ favourite", style="yellow")
        text.append("\n")
        when = datetime.fromtimestamp(entry.created).strftime("%Y-%m-%d %H:%M:%S")
        origin = {"nai": "NovelAI", "local": "local engine", "import": "indexed from the folder"}
        text.append(f"{when} · {origin.get(entry.provider, entry.provider)}\n", style="dim")
        text.append(f"{entry.path.parent}\n", style="dim")
        for label, value in describe(entry.metadata()):
            text.append(f"{label}: ", style="bold")
            text.append(value + "\n")
        return text

    # filter ------------------------------------------------------------------------------------------------

    def _set_query(self, query: HistoryQuery) -> None:
        if query != self._query:
            self._query = query
            self._reload(keep=self._selected)
        self._update_summary()

    def action_focus_filter(self) -> None:
        self.query_one("#history-filter", FilterInput).focus()

    @on(Input.Submitted, "#history-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self._set_query(dataclasses.replace(self._query, text=" ".join(event.value.split())))
        self.table.focus()

    def action_clear_filter(self) -> None:
        self.query_one("#history-filter", FilterInput).value = ""
        self._set_query(HistoryQuery())
        self.table.focus()

    def action_toggle_favourites(self) -> None:
        self._set_query(dataclasses.replace(self._query, favourites=not self._query.favourites))

    # store actions -----------------------------------------------------------------------------------------

    @work(thread=True, group="history-actions", exit_on_error=False)
    def _in_store(self, task: Callable[[HistoryStore], Any], finish: Callable[[Any], None]) -> None:
        """Run `task` on the store in a thread; `finish(result)` then runs on the UI thread."""
        store = self.host.history
        if store is None:
            self.post_message(self.StoreFailed("the history is not open yet"))
            return
        try:
            result = task(store)
        except PeropixError as exc:
            self.post_message(self.StoreFailed(str(exc)))
            return
        self.post_message(self.StoreDone(partial(finish, result)))

    def on_history_screen_store_done(self, event: HistoryScreen.StoreDone) -> None:
        event.finish()

    def on_history_screen_store_failed(self, event: HistoryScreen.StoreFailed) -> None:
        self.notify(event.error, title="History", severity="error", markup=False)

    def _selected_entry(self) -> Entry | None:
        entry = self._current()
        if entry is None:
            self.notify("No image selected", severity="warning")
        return entry

    def _replace_entry(self, entry: Entry) -> None:
        self._entries[entry.id] = entry
        self.table.update_cell(str(entry.id), "favourite", row_cells(entry)[0])
        if entry.id == self._selected:
            self._select(entry)

    def _drop_row(self, entry_id: int) -> None:
        """Take a row out (trashed, or unfavourited under the favourites filter) and select its neighbour."""
        key = str(entry_id)
        if key not in self.table.rows:
            return
        self.table.remove_row(key)
        self._entries.pop(entry_id, None)
        self._total = max(0, self._total - 1)
        self._update_summary()
        self._select(self._current())
        self._load_more(self.table.cursor_row)

    def action_favourite(self) -> None:
        entry = self._selected_entry()
        if entry is None:
            return
        if entry.favourite:
            self._in_store(lambda store: store.set_favourite(entry.id, False), lambda _: self._favourited(entry, None))
            return
        gallery = self.host.config.gallery_dir
        self._in_store(
            lambda store: store.favourite_copy(entry.id, gallery), lambda copy: self._favourited(entry, copy)
        )

    def _favourited(self, entry: Entry, copy: Path | None) -> None:
        favourite = copy is not None
        if favourite:
            self.notify(f"★ {entry.path.name} copied to {copy}", title="Favourite", markup=False)
        else:
            self.notify(f"{entry.path.name} is no longer a favourite (the gallery copy stays)", markup=False)
        if not favourite and self._query.favourites:
            self._drop_row(entry.id)
        elif entry.id in self._entries:
            self._replace_entry(dataclasses.replace(self._entries[entry.id], favourite=favourite))

    def action_delete(self) -> None:
        entry = self._selected_entry()
        if entry is None:
            return
        trash = self.host.config.outputs_dir / TRASH_FOLDER
        self._in_store(lambda store: store.trash(entry.id, trash), lambda record: self._trashed(entry, record))

    def _trashed(self, entry: Entry, record: TrashRecord) -> None:
        self._undo = [*self._undo[-(UNDO_DEPTH - 1) :], record]
        self._drop_row(entry.id)
        self.notify(f"Deleted {entry.path.name} — u to undo", title="History", markup=False)

    def action_undo_delete(self) -> None:
        if not self._undo:
            self.notify("Nothing to undo", severity="warning")
            return
        record = self._undo.pop()
        self._in_store(lambda store: store.undo_trash(record), lambda _: self._restored(record))

    def _restored(self, record: TrashRecord) -> None:
        self.notify(f"Restored {record.original.name}", title="History", markup=False)
        self._reload(keep=record.entry_id)

    def action_export(self) -> None:
        entry = self._selected_entry()
        if entry is None:
            return

        def chosen(folder: str | None) -> None:
            if not folder:
                return
            self._export_dir = folder
            target = Path(folder).expanduser()
            self._in_store(lambda store: store.export(entry.id, target), self._exported)

        self.app.push_screen(ExportPrompt(entry.path.name, self._export_dir), chosen)

    def _exported(self, path: Path) -> None:
        self.notify(f"Exported without metadata to {path}", title="Export", markup=False)

    def action_save_image(self) -> None:
        """Save an image kept unsaved (auto-save off) into the outputs folder; the list reloads when it is done."""
        entry = self._selected_entry()
        if entry is not None:
            self.host.save_unsaved_image(entry.id)

    def action_rescan(self) -> None:
        self._notice = f"Indexing {self.host.config.outputs_dir} …"
        self._update_summary()
        self.host.scan_history()

    # applying and copying ----------------------------------------------------------------------------------

    def action_apply(self, what: ApplyWhat) -> None:
        entry = self._selected_entry()
        if entry is None:
            return
        meta = entry.metadata()
        if what == "seed" and (meta.seed is None or not 1 <= meta.seed <= MAX_SEED):
            self.notify(f"No NovelAI seed recorded for this image ({meta.seed})", severity="warning", markup=False)
            return
        if what != "seed" and not meta.prompt:
            self.notify("No prompt recorded for this image", severity="warning")
            return
        # To the app, which shows the Generate mode and hands the message to it.
        self.app.post_message(ApplySettings(meta, what, entry.path.name))

    def action_use_image(self, use: UseAs) -> None:
        """The selected image as an input of the next generation, opened in Generate's Images & characters."""
        entry = self._selected_entry()
        if entry is None:
            return
        if entry.location is None:
            self.notify(f"{entry.path.name} is gone", severity="warning", markup=False)
            return
        self.app.post_message(UseImage(entry.location, use, entry.path.name))

    def action_copy_prompt(self) -> None:
        entry = self._current()
        if entry is None or not entry.prompt:
            self.notify("No prompt to copy for this image", severity="warning")
            return
        self.app.copy_to_clipboard(entry.prompt)
        self.notify(f"Prompt copied ({len(entry.prompt)} characters)", markup=False)

    def action_copy_seed(self) -> None:
        entry = self._current()
        if entry is None or entry.seed is None:
            self.notify("No seed to copy for this image", severity="warning")
            return
        self.app.copy_to_clipboard(str(entry.seed))
        self.notify(f"Seed {entry.seed} copied", markup=False)
