"""Prompt tools: the LoRA library (which name each file answers to, and which names clash), word filters and the
collected vocabulary (every tag of the CivitAI collection's prompts, with how many images use it).

Scanning, hashing, reading and updating run in thread workers that only post messages; the handlers here own
every widget change. A scan is numbered, so rows from a scan that a rescan replaced are dropped rather than mixed
in. Everything shown comes from disk: the configured LoRA folders, the user's filter folder, the shipped lists and
the vocabulary's cache, which is read again whenever its file changed since (an update here, after a collection
on Downloads, or `peropix vocab update` in another terminal).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from peropix_tui.core.atomicio import atomic_write_text
from peropix_tui.core.collected_vocabulary import (
    CollectedVocabulary,
    NoCollectionError,
    Stamp,
    UpdateReport,
    cache_path,
    cache_stamp,
    update_cache,
)
from peropix_tui.core.config import Config
from peropix_tui.core.danbooru import TagStyle
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.lora_library import (
    LoraDetails,
    LoraFile,
    LoraLibrary,
    LoraScanner,
    ScanProblem,
    format_size,
    read_lora_details,
)
from peropix_tui.core.prompt.filters import DEFAULT_CATEGORIES, WordFilter, default_filter_text
from peropix_tui.core.safetensors import FileHashes, compute_hashes
from peropix_tui.messages import CollectedVocabularyChanged
from peropix_tui.sandbox.session import civitai_root
from peropix_tui.widgets.vocabulary_table import TagRow, VocabularyFilter, VocabularyTable, matching, styled

NO_FOLDERS = "No LoRA folders set — add them in Settings (F7) → paths.lora_dirs"
HASH_PROGRESS_INTERVAL_S = 0.1
FILTER_PREVIEW_LIMIT = 400
LORA_TAB = "tab-lora"
FILTERS_TAB = "tab-filters"
VOCABULARY_TAB = "tab-vocabulary"


# Messages from the workers ----------------------------------------------------------------------------------


@dataclass
class LoraBatch(Message):
    scan_id: int
    files: list[LoraFile]


@dataclass
class LoraScanDone(Message):
    scan_id: int
    problems: list[ScanProblem]


@dataclass
class LoraDetailsRead(Message):
    path: Path
    details: LoraDetails | None
    error: str | None


@dataclass
class HashProgress(Message):
    path: Path
    done: int
    total: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HashProgress) and message.path == self.path


@dataclass
class HashDone(Message):
    path: Path
    hashes: FileHashes | None
    error: str | None


@dataclass(frozen=True, slots=True)
class FilterRow:
    """One word-filter category as listed: where its list comes from and what it holds (or why not)."""

    name: str
    path: Path
    user_copy: bool
    tags: tuple[str, ...]
    error: str | None


@dataclass
class FiltersRead(Message):
    folder: Path
    rows: list[FilterRow]


@dataclass(frozen=True, slots=True)
class VocabularyView:
    """The collected vocabulary as read from its cache, ready to show."""

    rows: list[TagRow]
    """Every tag, most used first."""
    summary: str
    built_from: str
    """The collection root the cache was built from ("" before the first update)."""
    stamp: Stamp | None
    """The cache file's stamp when it was read; None: there is no cache."""
    problem: str | None
    collection: Path
    """The collection an update would read now."""
    collection_exists: bool
    moved: bool
    """The cache was built from another folder than `collection` (the setting changed since)."""


@dataclass
class VocabularyRead(Message):
    view: VocabularyView


@dataclass
class VocabularyFiltered(Message):
    view: VocabularyView
    query: str
    rows: list[TagRow]
    total: int


@dataclass
class VocabularyProgress(Message):
    done: int
    total: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, VocabularyProgress)


@dataclass
class VocabularyUpdated(Message):
    report: UpdateReport
    view: VocabularyView


@dataclass
class VocabularyUpdateFailed(Message):
    error: str
    missing: bool
    """The collection folder does not exist yet: nothing was collected."""


class _HashStopped(Exception):
    """Raised from the progress callback to end a hash whose worker was cancelled."""


class _UpdateStopped(Exception):
    """Raised from the progress callback to end an update whose worker was cancelled (the cache is not saved)."""


# Tables with their keys -------------------------------------------------------------------------------------


class LoraTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "screen.rescan", "Rescan LoRA folders", id="lora_rescan"),
        Binding("ctrl+r", "screen.rescan", "Rescan LoRA folders", show=False, id="lora_rescan_ctrl"),
        Binding("h", "screen.hash_selected", "Compute hashes (SHA256, AutoV2, AutoV3)", id="lora_hash"),
        Binding("c", "screen.copy_tag", "Copy the <lora:name:1> tag", id="lora_copy_tag"),
    ]


class FilterTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "screen.edit_filter", "Edit the filter list in $EDITOR", id="filters_edit"),
        Binding(
            "ctrl+e",
            "screen.edit_filter",
            "Edit the filter list in $EDITOR",
            show=False,
            id="filters_edit_ctrl",
        ),
        Binding("r", "screen.reload_filters", "Reload word filters", id="filters_reload"),
        Binding("ctrl+r", "screen.reload_filters", "Reload word filters", show=False, id="filters_reload_ctrl"),
    ]


def _scan_summary(library: LoraLibrary, folders: list[Path]) -> str:
    if not library.files:
        where = ", ".join(str(f) for f in folders)
        return f"No .safetensors files in {where}"
    parts = [f"{len(library.files)} LoRA files under {len(folders)} configured folder(s)"]
    damaged = len(library.damaged)
    colliding = len(library.colliding)
    renamed = sum(1 for f in library.files if f.stem_differs)
    if damaged:
        parts.append(f"{damaged} damaged")
    if colliding:
        parts.append(f"{colliding} share a name")
    if renamed:
        parts.append(f"{renamed} renamed after training")
    return " · ".join(parts)


def _vocabulary_view(vocabulary: CollectedVocabulary, stamp: Stamp | None, collection: Path) -> VocabularyView:
    """Runs in a worker: sorting every tag and looking at the collection folder stay off the UI thread."""
    try:
        exists = collection.is_dir()
        moved = bool(vocabulary.root) and vocabulary.root != str(collection.resolve())
    except OSError:
        exists, moved = False, False
    return VocabularyView(
        rows=vocabulary.top(),
        summary=vocabulary.summary(),
        built_from=vocabulary.root,
        stamp=stamp,
        problem=vocabulary.problem,
        collection=collection,
        collection_exists=exists,
        moved=moved,
    )


def _vocabulary_line(view: VocabularyView) -> str:
    if view.problem is not None:
        return f"The cache is damaged; press u to rebuild it from {view.collection}. ({view.problem})"
    if view.stamp is None:
        if not view.collection_exists:
            return f"No collected vocabulary yet, and no collection at {view.collection} yet — collect with F4."
        return f"No collected vocabulary yet: press u to read the prompts of the collection at {view.collection}."
    written = datetime.fromtimestamp(view.stamp[0] / 1e9).strftime("%Y-%m-%d %H:%M")
    line = f"{view.summary} · built from {view.built_from or view.collection} · last written {written}"
    if view.moved:
        line += f" · the collection is now at {view.collection}: u rebuilds from there"
    return line


def _problems_line(problems: list[ScanProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:3])
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return f"Skipped: {shown}{more}"


class PromptToolsScreen(Screen[None]):
    TITLE = "Prompt tools"
    DEFAULT_CSS = """
    #vocab-summary, #vocab-status {
        width: 100%;
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    #vocab-update-row {
        height: 1;
        padding: 0 1;
    }
    #vocab-update-label {
        width: auto;
    }
    #vocab-table {
        height: 1fr;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "show_tab('tab-lora')", "LoRA library", id="prompts_tab_lora"),
        Binding("ctrl+f", "show_tab('tab-filters')", "Word filters", id="prompts_tab_filters"),
        Binding("ctrl+v", "show_tab('tab-vocabulary')", "Vocabulary", id="prompts_tab_vocabulary"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._library = LoraLibrary()
        self._rows: dict[str, LoraFile] = {}
        self._scan_id = 0
        self._scanned_folders: list[Path] | None = None
        self._hashes: dict[Path, FileHashes] = {}
        self._hashing: Path | None = None
        self._details: LoraDetails | None = None
        self._filters: dict[str, FilterRow] = {}
        self._vocabulary: VocabularyView | None = None
        self._vocabulary_style: TagStyle = "spaces"
        self._vocabulary_updating = False

    @property
    def config(self) -> Config:
        return self.app.config  # type: ignore[attr-defined,no-any-return]

    @property
    def _vocabulary_path(self) -> Path:
        return cache_path(self.app.dirs.data_dir)  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="prompt-tabs", initial=LORA_TAB):
            with TabPane("LoRA library", id=LORA_TAB):
                yield Label("", id="lora-status", markup=False)
                with Horizontal(id="lora-hash-row"):
                    yield Label("", id="lora-hash-label", markup=False)
                    yield ProgressBar(id="lora-hash-progress", show_eta=False)
                yield LoraTable(id="lora-table", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="lora-detail-box"):
                    yield Static("", id="lora-detail")
            with TabPane("Word filters", id=FILTERS_TAB):
                yield Label("", id="filters-status", markup=False)
                yield FilterTable(id="filters-table", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="filters-detail-box"):
                    yield Static("", id="filters-detail")
            with TabPane("Vocabulary", id=VOCABULARY_TAB):
                yield Label("", id="vocab-summary", markup=False)
                yield Label("", id="vocab-status", markup=False)
                with Horizontal(id="vocab-update-row"):
                    yield Label("", id="vocab-update-label", markup=False)
                    yield ProgressBar(id="vocab-update-progress", show_eta=False)
                yield VocabularyFilter(placeholder="type part of a tag to narrow the list", id="vocab-filter")
                yield VocabularyTable(id="vocab-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(LoraTable)
        table.add_column("File", key="file", width=24)
        table.add_column("Tag name", key="tag", width=18)
        table.add_column("Flags", key="flags", width=28)
        table.add_column("Base model", key="base", width=14)
        table.add_column("Dim/α", key="dim", width=7)
        table.add_column("Size", key="size", width=9)
        filters = self.query_one(FilterTable)
        filters.add_column("Category", key="name", width=16)
        filters.add_column("Tags", key="count", width=7)
        filters.add_column("Source", key="source", width=16)
        filters.add_column("File", key="file")
        self.query_one("#lora-hash-row").display = False
        self.query_one("#vocab-update-row").display = False
        self.query_one(VocabularyFilter).border_title = "Filter"
        self.query_one("#vocab-status", Label).update(
            Text("u reads the collection's new and changed sidecars · / filters · c copies a tag")
        )
        table.focus()

    def on_screen_resume(self) -> None:
        # Settings may have changed the folders while another screen was shown; rescan only then.
        if self._current_folders() != self._scanned_folders:
            self.action_rescan()
        self.action_reload_filters()
        if self.query_one(TabbedContent).active == VOCABULARY_TAB:
            self._refresh_vocabulary()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus_tab(tab)

    @on(TabbedContent.TabActivated)
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id or LORA_TAB
        self._focus_tab(tab)
        if tab == VOCABULARY_TAB:
            self._refresh_vocabulary()

    def _focus_tab(self, tab: str) -> None:
        tables: dict[str, type[DataTable[Text]]] = {
            LORA_TAB: LoraTable,
            FILTERS_TAB: FilterTable,
            VOCABULARY_TAB: VocabularyTable,
        }
        self.query_one(tables.get(tab, LoraTable)).focus()

    # LoRA library: scanning --------------------------------------------------------------------------------

    def _current_folders(self) -> list[Path]:
        return [Path(f).expanduser() for f in self.config.settings.paths.lora_dirs if f.strip()]

    def action_rescan(self) -> None:
        folders = self._current_folders()
        self._scanned_folders = folders
        self._scan_id += 1
        self._library = LoraLibrary()
        self._rows.clear()
        self._details = None
        self.query_one(LoraTable).clear()
        self._set_detail(Text(""))
        if not folders:
            self._status(NO_FOLDERS)
            self._set_detail(Text("The library lists every .safetensors file under the folders in paths.lora_dirs."))
            return
        self._status(f"Scanning {', '.join(str(f) for f in folders)} …")
        self._scan(self._scan_id, folders)

    @work(thread=True, exclusive=True, group="lora-scan", exit_on_error=False, description="Scan LoRA folders")
    def _scan(self, scan_id: int, folders: list[Path]) -> None:
        worker = get_current_worker()
        scanner = LoraScanner(folders)
        for batch in scanner.batches(cancelled=lambda: worker.is_cancelled):
            self.post_message(LoraBatch(scan_id, batch))
        if not worker.is_cancelled:
            self.post_message(LoraScanDone(scan_id, list(scanner.problems)))

    @on(LoraBatch)
    def _add_batch(self, message: LoraBatch) -> None:
        if message.scan_id != self._scan_id:
            return
        table = self.query_one(LoraTable)
        self._library.add(message.files)
        touched: dict[str, LoraFile] = {}
        with self.app.batch_update():
            for entry in message.files:
                key = str(entry.path)
                self._rows[key] = entry
                table.add_row(*self._cells(entry), key=key)
                for other in self._library.collisions(entry):
                    touched[str(other.path)] = other
            for key, other in touched.items():
                if key in table.rows:
                    table.update_cell(key, "flags", self._flags(other))
        self._status(f"Scanning … {len(self._library.files)} files so far")

    @on(LoraScanDone)
    def _scan_done(self, message: LoraScanDone) -> None:
        if message.scan_id != self._scan_id:
            return
        folders = self._scanned_folders or []
        self._library.problems = message.problems
        summary = _scan_summary(self._library, folders)
        if message.problems:
            summary = f"{summary}\n{_problems_line(message.problems)}"
        self._status(summary)
        if not self._library.files:
            self._set_detail(Text("Nothing to show: no .safetensors file was found in the folders above."))

    def _cells(self, entry: LoraFile) -> list[Text]:
        dim = entry.network_dim
        if entry.network_alpha:
            dim = f"{dim}/{entry.network_alpha}"
        return [
            Text(entry.relative),
            Text(entry.tag_name if entry.error is None else "—"),
            self._flags(entry),
            Text(entry.base_model),
            Text(dim),
            Text(format_size(entry.size), justify="right"),
        ]

    def _flags(self, entry: LoraFile) -> Text:
        if entry.error is not None:
            return Text(f"DAMAGED: {entry.short_error}", style="bold red")
        flags = Text()
        others = self._library.collisions(entry)
        if len(others) == 1:
            flags.append(f"SAME NAME as {others[0].relative}", style="bold yellow")
        elif others:
            flags.append(f"SAME NAME as {len(others)} files: {others[0].relative}, …", style="bold yellow")
        if entry.stem_differs:
            if flags:
                flags.append(" · ")
            flags.append("file name ≠ output name", style="yellow")
        return flags

    def _status(self, text: str) -> None:
        self.query_one("#lora-status", Label).update(Text(text))

    def _selected(self) -> LoraFile | None:
        table = self.query_one(LoraTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._rows.get(key or "")

    # LoRA library: details ---------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#lora-table")
    def _lora_highlighted(self, event: DataTable.RowHighlighted) -> None:
        entry = self._rows.get(event.row_key.value or "")
        if entry is None:
            return
        self._details = None
        self._render_detail(entry)
        if entry.error is None:
            self._read_details(entry.path)

    @work(thread=True, exclusive=True, group="lora-detail", exit_on_error=False, description="Read LoRA header")
    def _read_details(self, path: Path) -> None:
        try:
            self.post_message(LoraDetailsRead(path, read_lora_details(path), None))
        except PeropixError as exc:
            self.post_message(LoraDetailsRead(path, None, str(exc)))

    @on(LoraDetailsRead)
    def _details_read(self, message: LoraDetailsRead) -> None:
        entry = self._selected()
        if entry is None or entry.path != message.path:
            return
        self._details = message.details
        self._render_detail(entry, message.error)

    def _render_detail(self, entry: LoraFile, error: str | None = None) -> None:
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold", no_wrap=True)
        facts.add_column(overflow="fold")
        modified = datetime.fromtimestamp(entry.mtime).strftime("%Y-%m-%d %H:%M") if entry.mtime else "?"
        facts.add_row("Path", Text(str(entry.path)))
        facts.add_row("Size", Text(f"{format_size(entry.size)} ({entry.size} bytes), modified {modified}"))
        problem = entry.error or error
        if problem is not None:
            facts.add_row("Damaged", Text(problem, style="bold red"))
            self._add_hash_rows(facts, entry)  # a SHA256 still tells a truncated download from the real file
            self._set_detail(facts)
            return
        facts.add_row("Tag", Text(entry.tag()))
        facts.add_row("ss_output_name", Text(entry.output_name or "(not set: the file name is used)"))
        if entry.stem_differs:
            facts.add_row(
                "Note",
                Text(
                    f"renamed after training: the file is {entry.stem}, trained as "
                    f"{entry.output_name}; tags may use either name",
                    style="yellow",
                ),
            )
        for other in self._library.collisions(entry):
            facts.add_row("Same name", Text(f"{other.path} (tag name {other.tag_name})", style="yellow"))
        facts.add_row("Base model", Text(entry.base_model or "(not recorded)"))
        facts.add_row(
            "Network",
            Text(
                " · ".join(
                    part
                    for part in (
                        entry.network_module,
                        f"dim {entry.network_dim or '?'}",
                        f"alpha {entry.network_alpha or '?'}",
                        f"{entry.tensor_count} tensors",
                    )
                    if part
                )
            ),
        )
        self._add_hash_rows(facts, entry)
        parts: list[RenderableType] = [facts]
        details = self._details if self._details is not None and self._details.path == entry.path else None
        if details is not None:
            if details.top_tags:
                tags = Text(f"\nTop training tags ({details.distinct_tags} distinct)\n", style="bold")
                tags.append(", ".join(f"{tag} ({count})" for tag, count in details.top_tags))
                parts.append(tags)
            meta = Table.grid(padding=(0, 2))
            meta.add_column(style="cyan", no_wrap=True)
            meta.add_column(overflow="fold")
            for key, value in details.metadata:
                meta.add_row(Text(key), Text(value))
            parts.append(Text(f"\nMetadata ({len(details.metadata)} keys)", style="bold"))
            parts.append(meta if details.metadata else Text("(the file has no __metadata__)", style="dim"))
        self._set_detail(Group(*parts))

    def _add_hash_rows(self, facts: Table, entry: LoraFile) -> None:
        hashes = self._hashes.get(entry.path)
        if hashes is not None:
            facts.add_row("SHA256", Text(hashes.sha256))
            facts.add_row("AutoV2", Text(hashes.autov2))
            facts.add_row("AutoV3", Text(hashes.autov3 or "(none: not a valid safetensors file)"))
        elif self._hashing == entry.path:
            facts.add_row("Hashes", Text("computing …"))
        else:
            facts.add_row("Hashes", Text("press h to compute SHA256 / AutoV2 / AutoV3", style="dim"))

    def _set_detail(self, content: RenderableType) -> None:
        self.query_one("#lora-detail", Static).update(content)

    # LoRA library: actions ---------------------------------------------------------------------------------

    def action_copy_tag(self) -> None:
        entry = self._selected()
        if entry is None:
            self.notify("No LoRA file selected", severity="warning", markup=False)
            return
        if entry.error is not None:
            self.notify(f"Not copied: {entry.relative} is damaged and would not load", severity="error", markup=False)
            return
        tag = entry.tag()
        self.app.copy_to_clipboard(tag)
        others = self._library.collisions(entry)
        if others:
            self.notify(
                f"Copied {tag} — but {len(others)} other file(s) answer to this name too",
                severity="warning",
                markup=False,
            )
        else:
            self.notify(f"Copied {tag}", markup=False)

    def action_hash_selected(self) -> None:
        entry = self._selected()
        if entry is None:
            self.notify("No LoRA file selected", severity="warning", markup=False)
            return
        if self._hashing is not None:
            self.notify(f"Already hashing {self._hashing.name}; one file at a time", severity="warning", markup=False)
            return
        self._hashing = entry.path
        self.query_one("#lora-hash-row").display = True
        self.query_one("#lora-hash-label", Label).update(Text(f"Hashing {entry.path.name} "))
        self.query_one("#lora-hash-progress", ProgressBar).update(total=max(entry.size, 1), progress=0)
        self._render_detail(entry)
        self._hash(entry.path)

    @work(thread=True, group="lora-hash", exit_on_error=False, description="Hash a LoRA file")
    def _hash(self, path: Path) -> None:
        worker = get_current_worker()
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            if worker.is_cancelled:
                raise _HashStopped
            now = time.monotonic()
            if now - last >= HASH_PROGRESS_INTERVAL_S or done >= total:
                last = now
                self.post_message(HashProgress(path, done, total))

        try:
            hashes = compute_hashes(path, progress=progress)
        except _HashStopped:
            return
        except PeropixError as exc:
            self.post_message(HashDone(path, None, str(exc)))
            return
        self.post_message(HashDone(path, hashes, None))

    @on(HashProgress)
    def _hash_progress(self, message: HashProgress) -> None:
        if message.path == self._hashing:
            self.query_one("#lora-hash-progress", ProgressBar).update(
                total=max(message.total, 1), progress=message.done
            )

    @on(HashDone)
    def _hash_done(self, message: HashDone) -> None:
        self._hashing = None
        self.query_one("#lora-hash-row").display = False
        if message.hashes is None:
            self.notify(message.error or "hashing failed", title="Hash", severity="error", markup=False)
        else:
            self._hashes[message.path] = message.hashes
            self.notify(f"{message.path.name}: AutoV2 {message.hashes.autov2}", title="Hashes", markup=False)
        entry = self._selected()
        if entry is not None and entry.path == message.path:
            self._render_detail(entry)

    # Word filters ------------------------------------------------------------------------------------------

    def action_reload_filters(self) -> None:
        self.query_one("#filters-status", Label).update(Text(f"Reading filter lists from {self.config.filters_dir} …"))
        self._read_filters(self.config.filters_dir)

    @work(thread=True, exclusive=True, group="filters", exit_on_error=False, description="Read filter lists")
    def _read_filters(self, folder: Path) -> None:
        names = list(DEFAULT_CATEGORIES)
        try:
            extra = sorted(p.stem for p in folder.glob("*.txt") if p.is_file())
        except OSError:
            extra = []
        names.extend(name for name in extra if name not in names)
        rows: list[FilterRow] = []
        for name in names:
            path = folder / f"{name}.txt"
            user_copy = path.is_file()
            try:
                loaded = WordFilter.load(folder, [name])
                rows.append(FilterRow(name, path, user_copy, tuple(sorted(loaded.entries(name))), None))
            except PeropixError as exc:
                rows.append(FilterRow(name, path, user_copy, (), str(exc)))
        self.post_message(FiltersRead(folder, rows))

    @on(FiltersRead)
    def _filters_read(self, message: FiltersRead) -> None:
        table = self.query_one(FilterTable)
        selected = self._selected_filter()
        table.clear()
        self._filters = {row.name: row for row in message.rows}
        for row in message.rows:
            source = "your copy" if row.user_copy else "shipped default"
            count = Text("—" if row.error else str(len(row.tags)), justify="right")
            if row.error:
                shown = Text(f"UNREADABLE: {row.error}", style="bold red")
            elif row.user_copy:
                shown = Text(str(row.path))
            else:
                shown = Text(f"{row.path} (made when you edit)", style="dim")
            table.add_row(Text(row.name), count, Text(source), shown, key=row.name)
        if selected is not None and selected.name in table.rows:
            table.move_cursor(row=table.get_row_index(selected.name))
        user_copies = sum(1 for row in message.rows if row.user_copy)
        self.query_one("#filters-status", Label).update(
            Text(
                f"{len(message.rows)} categories: {user_copies} from your folder {message.folder}, "
                f"{len(message.rows) - user_copies} shipped with peropix (e edits your copy)"
            )
        )
        current = self._selected_filter()
        if current is not None:
            self._show_filter(current)

    def _selected_filter(self) -> FilterRow | None:
        table = self.query_one(FilterTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._filters.get(key or "")

    @on(DataTable.RowHighlighted, "#filters-table")
    def _filter_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self._filters.get(event.row_key.value or "")
        if row is not None:
            self._show_filter(row)

    def _show_filter(self, row: FilterRow) -> None:
        detail = self.query_one("#filters-detail", Static)
        if row.error is not None:
            detail.update(Text(row.error, style="bold red"))
            return
        text = Text(f"{row.name}: {len(row.tags)} tags", style="bold")
        text.append(
            f" ({'from ' + str(row.path) if row.user_copy else 'shipped list; e makes your copy'})\n",
            style="dim",
        )
        text.append(", ".join(row.tags[:FILTER_PREVIEW_LIMIT]))
        if len(row.tags) > FILTER_PREVIEW_LIMIT:
            text.append(f" … and {len(row.tags) - FILTER_PREVIEW_LIMIT} more", style="dim")
        detail.update(text)

    def action_edit_filter(self) -> None:
        row = self._selected_filter()
        if row is None:
            self.notify("No filter category selected", severity="warning", markup=False)
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or ""
        if not editor.strip():
            self.notify(
                f"Set $EDITOR (for example export EDITOR=nano) to edit lists here; the file is {row.path}",
                title="No editor",
                severity="error",
                markup=False,
            )
            return
        try:
            command = [*shlex.split(editor), str(row.path)]
        except ValueError as exc:
            self.notify(f"Cannot read $EDITOR {editor!r}: {exc}", severity="error", markup=False)
            return
        try:
            if not row.path.exists():  # a shipped list: edit the user's own copy, never the package
                atomic_write_text(row.path, default_filter_text(row.name))
        except (PeropixError, OSError) as exc:
            self.notify(f"Cannot create {row.path}: {exc}", severity="error", markup=False)
            return
        try:
            with self.app.suspend():
                result = subprocess.run(command, check=False)
        except SuspendNotSupported:
            self.notify(
                f"This session cannot hand the terminal to an editor; edit {row.path} directly",
                title="Editor",
                severity="error",
                markup=False,
            )
            self.action_reload_filters()
            return
        except OSError as exc:
            self.notify(
                f"Cannot start {command[0]}: {exc.strerror or exc}",
                title="Editor",
                severity="error",
                markup=False,
            )
            return
        if result.returncode != 0:
            self.notify(
                f"{command[0]} exited with status {result.returncode}",
                title="Editor",
                severity="warning",
                markup=False,
            )
        self.action_reload_filters()

    # Collected vocabulary ----------------------------------------------------------------------------------

    def _tag_style(self) -> TagStyle:
        return "underscores" if self.config.settings.ui.underscores == "underscores" else "spaces"

    def _refresh_vocabulary(self) -> None:
        """Read the cache when it was never read or its file changed since; show it again when only the tag
        style changed."""
        if self._vocabulary_updating:
            return  # the update shows what it wrote
        view = self._vocabulary
        if view is None or cache_stamp(self._vocabulary_path) != view.stamp:
            self._set_vocabulary_summary("Reading the collected vocabulary …")
            self._read_vocabulary(self._vocabulary_path, civitai_root(self.config))
        elif self._tag_style() != self._vocabulary_style:
            self._show_tags()

    @work(thread=True, exclusive=True, group="vocab-read", exit_on_error=False, description="Read the vocabulary")
    def _read_vocabulary(self, path: Path, collection: Path) -> None:
        worker = get_current_worker()
        stamp = cache_stamp(path)  # before reading: a write in between is seen as a change next time
        view = _vocabulary_view(CollectedVocabulary.load(path), stamp, collection)
        if not worker.is_cancelled:
            self.post_message(VocabularyRead(view))

    @on(VocabularyRead)
    def _vocabulary_read(self, message: VocabularyRead) -> None:
        if self._vocabulary_updating:
            return
        self._show_vocabulary(message.view)

    def _show_vocabulary(self, view: VocabularyView) -> None:
        self._vocabulary = view
        self._set_vocabulary_summary(_vocabulary_line(view))
        self._show_tags()

    def _set_vocabulary_summary(self, text: str) -> None:
        self.query_one("#vocab-summary", Label).update(Text(text))

    def _show_tags(self) -> None:
        if self._vocabulary is not None:
            self._filter_tags(self._vocabulary, self.query_one(VocabularyFilter).value)

    @work(thread=True, exclusive=True, group="vocab-filter", exit_on_error=False, description="Filter the vocabulary")
    def _filter_tags(self, view: VocabularyView, query: str) -> None:
        # A pass over 100k+ tags takes tens of milliseconds: typing in the filter must not wait for it.
        rows, total = matching(view.rows, query)
        if not get_current_worker().is_cancelled:
            self.post_message(VocabularyFiltered(view, query, rows, total))

    @on(VocabularyFiltered)
    def _tags_filtered(self, message: VocabularyFiltered) -> None:
        field = self.query_one(VocabularyFilter)
        if message.view is not self._vocabulary or message.query != field.value:
            return  # the filter or the vocabulary changed since: a newer pass is on its way
        self._vocabulary_style = self._tag_style()
        self.query_one(VocabularyTable).show(message.rows, self._vocabulary_style)
        every = len(message.view.rows)
        counted = f"{message.total:,} of {every:,} tags match" if message.total < every else f"{every:,} tags"
        if len(message.rows) < message.total:
            counted += f" · the {len(message.rows):,} most used shown"
        field.border_subtitle = counted

    @on(Input.Changed, "#vocab-filter")
    def _vocabulary_filtered(self) -> None:
        self._show_tags()

    @on(Input.Submitted, "#vocab-filter")
    def action_focus_vocabulary(self) -> None:
        self.query_one(VocabularyTable).focus()

    def action_filter_vocabulary(self) -> None:
        self.query_one(VocabularyFilter).focus()

    def action_copy_vocabulary_tag(self) -> None:
        tag = self.query_one(VocabularyTable).selected_tag()
        if tag is None:
            self.notify("No tag selected", severity="warning", markup=False)
            return
        shown = styled(tag, self._vocabulary_style)
        self.app.copy_to_clipboard(shown)
        self.notify(f"Copied {shown}", markup=False)

    def action_update_vocabulary(self) -> None:
        """Read new and changed sidecars of the collection into the cache, then show it and tell the app."""
        if self._vocabulary_updating:
            self.notify("The collected vocabulary is already being updated", severity="warning", markup=False)
            return
        collection = civitai_root(self.config)
        self._vocabulary_updating = True
        self.workers.cancel_group(self, "vocab-read")  # what it read may be older than what the update writes
        self.query_one("#vocab-update-row").display = True
        self.query_one("#vocab-update-label", Label).update(Text("Looking for new and changed sidecars "))
        self.query_one("#vocab-update-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#vocab-status", Label).update(Text(f"Updating from {collection} …"))
        self._update_vocabulary(self._vocabulary_path, collection)

    @work(thread=True, group="vocab-update", exit_on_error=False, description="Update the collected vocabulary")
    def _update_vocabulary(self, path: Path, collection: Path) -> None:
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            if worker.is_cancelled:
                raise _UpdateStopped
            self.post_message(VocabularyProgress(done, total))

        try:
            vocabulary, report = update_cache(path, collection, progress)
        except _UpdateStopped:
            return
        except NoCollectionError:
            self.post_message(VocabularyUpdateFailed(f"No collection at {collection} yet — collect with F4", True))
            return
        except PeropixError as exc:
            self.post_message(VocabularyUpdateFailed(str(exc), False))
            return
        self.post_message(VocabularyUpdated(report, _vocabulary_view(vocabulary, cache_stamp(path), collection)))

    @on(VocabularyProgress)
    def _vocabulary_progress(self, message: VocabularyProgress) -> None:
        if not self._vocabulary_updating:
            return
        self.query_one("#vocab-update-label", Label).update(Text(f"Reading {message.total:,} sidecars "))
        self.query_one("#vocab-update-progress", ProgressBar).update(total=max(message.total, 1), progress=message.done)

    @on(VocabularyUpdated)
    def _vocabulary_updated(self, message: VocabularyUpdated) -> None:
        self._vocabulary_done()
        view, report = message.view, message.report
        line = f"{view.collection}: {report.summary()}; {view.summary}"
        self.query_one("#vocab-status", Label).update(Text(line))
        self._show_vocabulary(view)
        severity: SeverityLevel = "warning" if report.unreadable_folders else "information"
        self.notify(line, title="Collected vocabulary", severity=severity, markup=False)
        if report.touched:
            self.app.post_message(CollectedVocabularyChanged(self._vocabulary_path))

    @on(VocabularyUpdateFailed)
    def _vocabulary_update_failed(self, message: VocabularyUpdateFailed) -> None:
        self._vocabulary_done()
        self.query_one("#vocab-status", Label).update(Text(message.error))
        severity: SeverityLevel = "warning" if message.missing else "error"
        self.notify(message.error, title="Collected vocabulary", severity=severity, markup=False)

    def _vocabulary_done(self) -> None:
        self._vocabulary_updating = False
        self.query_one("#vocab-update-row").display = False

    # Errors ------------------------------------------------------------------------------------------------

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        detail = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        if event.worker.group == "lora-hash":
            self._hashing = None
            self.query_one("#lora-hash-row").display = False
        elif event.worker.group == "vocab-update":
            self._vocabulary_done()
        self.notify(
            f"{event.worker.description or event.worker.name} failed: {detail}",
            title="Internal error",
            severity="error",
            markup=False,
        )
