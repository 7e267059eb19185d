"""History: the images in the outputs folder, newest first, with their metadata and a preview.

Listing is two passes in a thread worker: file names and dates first (instant, so rows appear at once), then each
file's metadata in batches, filling in the model, seed, size and prompt columns as it is read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual.worker import get_current_worker

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.metadata import ImageMetadata, read_metadata
from peropix_tui.widgets.image_preview import ImagePreview

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")
BATCH = 100
PROMPT_WIDTH = 60


@dataclass(frozen=True, slots=True)
class HistoryFile:
    path: Path
    mtime: float
    size: int


def list_images(folder: Path) -> list[HistoryFile]:
    """Every image below `folder`, newest first; unreadable entries are skipped."""
    found: list[HistoryFile] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                path = Path(dirpath, name)
                try:
                    st = path.stat()
                except OSError:
                    continue
                found.append(HistoryFile(path, st.st_mtime, st.st_size))
    found.sort(key=lambda f: (f.mtime, str(f.path)), reverse=True)
    return found


def one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


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


class HistoryScreen(Screen[None]):
    TITLE = "History"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "refresh", "Refresh", id="history_refresh"),
        Binding("ctrl+y", "copy_prompt", "Copy prompt", id="history_copy_prompt"),
        Binding("ctrl+t", "copy_seed", "Copy seed", id="history_copy_seed"),
    ]

    class Listed(Message):
        def __init__(self, files: list[HistoryFile]) -> None:
            super().__init__()
            self.files = files

    class MetadataRead(Message):
        def __init__(self, batch: list[tuple[Path, ImageMetadata | None, str | None]]) -> None:
            super().__init__()
            self.batch = batch

    def __init__(self) -> None:
        super().__init__()
        self._meta: dict[str, ImageMetadata] = {}
        self._errors: dict[str, str] = {}
        self._selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="history-body"):
            with Vertical(id="history-list"):
                yield Label("", id="history-summary", markup=False)
                table: DataTable[str | Text] = DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
                table.add_column("Date", key="date", width=16)
                table.add_column("File", key="file", width=22)
                table.add_column("Model", key="model", width=16)
                table.add_column("Seed", key="seed", width=11)
                table.add_column("Size", key="size", width=9)
                table.add_column("Prompt", key="prompt", width=PROMPT_WIDTH)
                yield table
            with Vertical(id="history-detail"):
                yield ImagePreview(self._renderer(), id="history-preview")
                with VerticalScroll(id="history-meta-scroll"):
                    yield Static("", id="history-meta")
        yield Footer()

    def _renderer(self) -> str:
        return str(getattr(self.app, "image_widget", "auto"))

    @property
    def folder(self) -> Path:
        return self.app.config.outputs_dir  # type: ignore[attr-defined,no-any-return]

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#history-summary", Label).update(f"Reading {self.folder} …")
        self._scan(self.folder)

    @work(thread=True, exclusive=True, group="history-scan", exit_on_error=False)
    def _scan(self, folder: Path) -> None:
        worker = get_current_worker()
        files = list_images(folder) if folder.is_dir() else []
        self.post_message(self.Listed(files))
        batch: list[tuple[Path, ImageMetadata | None, str | None]] = []
        for entry in files:
            if worker.is_cancelled:
                return
            try:
                batch.append((entry.path, read_metadata(entry.path), None))
            except PeropixError as exc:
                batch.append((entry.path, None, str(exc)))
            except OSError as exc:
                batch.append((entry.path, None, f"cannot read: {exc.strerror or exc}"))
            if len(batch) >= BATCH:
                self.post_message(self.MetadataRead(batch))
                batch = []
        if batch:
            self.post_message(self.MetadataRead(batch))

    def on_history_screen_listed(self, event: HistoryScreen.Listed) -> None:
        table = self.query_one("#history-table", DataTable)
        table.clear()
        self._meta.clear()
        self._errors.clear()
        summary = self.query_one("#history-summary", Label)
        if not event.files:
            summary.update(
                f"No images in {self.folder} yet. Generated images are saved there "
                "(Settings → paths.outputs_dir changes the folder)."
            )
            self._show_detail(None)
            return
        summary.update(f"{len(event.files)} images in {self.folder}, newest first")
        for entry in event.files:
            when = datetime.fromtimestamp(entry.mtime).strftime("%Y-%m-%d %H:%M")
            table.add_row(when, Text(entry.path.name), "", "", "", "", key=str(entry.path))
        table.move_cursor(row=0)

    def on_history_screen_metadata_read(self, event: HistoryScreen.MetadataRead) -> None:
        table = self.query_one("#history-table", DataTable)
        for path, meta, error in event.batch:
            key = str(path)
            if key not in table.rows:
                continue
            if meta is None:
                self._errors[key] = error or "unreadable"
                table.update_cell(key, "prompt", Text(f"⚠ {error}", style="italic"))
                continue
            self._meta[key] = meta
            size = f"{meta.width}×{meta.height}" if meta.width is not None and meta.height is not None else ""
            table.update_cell(key, "model", Text(one_line(meta.model or meta.source, 16)))
            table.update_cell(key, "seed", "" if meta.seed is None else str(meta.seed))
            table.update_cell(key, "size", size)
            if meta.prompt is None and meta.warnings:
                table.update_cell(
                    key, "prompt", Text(f"⚠ {one_line(meta.warnings[0], PROMPT_WIDTH - 2)}", style="italic")
                )
            else:
                table.update_cell(key, "prompt", Text(one_line(meta.prompt, PROMPT_WIDTH)))
        if self._selected is not None and any(str(p) == self._selected for p, _, _ in event.batch):
            self._show_detail(self._selected, preview=False)

    @on(DataTable.RowHighlighted, "#history-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_detail(event.row_key.value)

    def _show_detail(self, key: str | None, *, preview: bool = True) -> None:
        self._selected = key
        meta_view = self.query_one("#history-meta", Static)
        image = self.query_one("#history-preview", ImagePreview)
        if key is None:
            meta_view.update("")
            image.clear()
            return
        if preview:
            image.show(Path(key))
        text = Text()
        text.append(Path(key).name + "\n", style="bold")
        if key in self._errors:
            text.append(self._errors[key])
        elif key in self._meta:
            for label, value in describe(self._meta[key]):
                text.append(f"{label}: ", style="bold")
                text.append(value + "\n")
        else:
            text.append("reading metadata …", style="italic")
        meta_view.update(text)

    def action_copy_prompt(self) -> None:
        meta = self._meta.get(self._selected or "")
        if meta is None or not meta.prompt:
            self.notify("No prompt to copy for this image", severity="warning")
            return
        self.app.copy_to_clipboard(meta.prompt)
        self.notify(f"Prompt copied ({len(meta.prompt)} characters)", markup=False)

    def action_copy_seed(self) -> None:
        meta = self._meta.get(self._selected or "")
        if meta is None or meta.seed is None:
            self.notify("No seed to copy for this image", severity="warning")
            return
        self.app.copy_to_clipboard(str(meta.seed))
        self.notify(f"Seed {meta.seed} copied", markup=False)
