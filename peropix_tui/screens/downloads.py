"""Downloads: what the CivitAI collector's logs say, one row per creator, and the selected one's failures.

Logs are read in a thread worker each time the screen is shown or refreshed, since a collector may be writing
them meanwhile; a log that cannot be read is a row with its one-line reason, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label
from textual.worker import Worker, WorkerState

from peropix_tui.civitai.download_log import CreatorLog, logs_dir, scan_download_logs
from peropix_tui.core.config import Config


@dataclass
class LogsRead(Message):
    root: Path
    logs: list[CreatorLog]


class CreatorTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "screen.open_detail", "Open the creator's failures", id="downloads_open"),
        Binding("r", "screen.refresh_logs", "Refresh download logs", id="downloads_refresh"),
    ]


class FailureTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "screen.back", "Back to creators", id="downloads_back"),
        Binding("r", "screen.refresh_logs", "Refresh download logs", id="downloads_refresh_detail"),
    ]


def _reasons(entry: CreatorLog) -> Text:
    if entry.error is not None:
        reason = entry.error.removeprefix(f"{entry.path}: ")  # the creator column already says which log
        return Text(f"UNREADABLE: {reason}", style="bold red")
    if not entry.failures:
        return Text("—")
    return Text(", ".join(f"{reason} ×{count}" for reason, count in entry.failed_by_reason))


def _count(value: int, entry: CreatorLog) -> Text:
    return Text("—" if entry.error is not None else str(value), justify="right")


class DownloadsScreen(Screen[None]):
    TITLE = "Downloads"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "refresh_logs", "Refresh download logs", show=False, id="downloads_refresh_ctrl"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._logs: dict[str, CreatorLog] = {}
        self._shown: str | None = None

    @property
    def config(self) -> Config:
        return self.app.config  # type: ignore[attr-defined,no-any-return]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="downloads-status", markup=False)
        yield CreatorTable(id="creators-table", cursor_type="row", zebra_stripes=True)
        yield Label("", id="failures-title", markup=False)
        yield FailureTable(id="failures-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        creators = self.query_one(CreatorTable)
        creators.add_column("Creator", key="creator", width=22)
        creators.add_column("Models", key="models", width=7)
        creators.add_column("Images", key="images", width=7)
        creators.add_column("Failed", key="failed", width=7)
        creators.add_column("Updated", key="updated", width=16)
        creators.add_column("Failed by reason", key="reasons")
        failures = self.query_one(FailureTable)
        failures.add_column("ID", key="id", width=12)
        failures.add_column("Type", key="type", width=8)
        failures.add_column("Reason", key="reason", width=24)
        failures.add_column("Info", key="info")
        creators.focus()

    def on_screen_resume(self) -> None:
        self.action_refresh_logs()

    def action_refresh_logs(self) -> None:
        root = self.config.civitai_root
        self.query_one("#downloads-status", Label).update(Text(f"Reading download logs in {logs_dir(root)} …"))
        self._read_logs(root)

    @work(thread=True, exclusive=True, group="download-logs", exit_on_error=False, description="Read logs")
    def _read_logs(self, root: Path) -> None:
        self.post_message(LogsRead(root, scan_download_logs(root)))

    @on(LogsRead)
    def _logs_read(self, message: LogsRead) -> None:
        table = self.query_one(CreatorTable)
        keep = self._shown
        table.clear()
        self._logs = {}
        for entry in message.logs:
            key = str(entry.path)
            self._logs[key] = entry
            updated = datetime.fromtimestamp(entry.mtime).strftime("%Y-%m-%d %H:%M") if entry.mtime else "—"
            table.add_row(
                Text(entry.username or str(entry.path)),
                _count(entry.models_ok, entry),
                _count(entry.images_ok, entry),
                _count(entry.failed, entry),
                Text(updated),
                _reasons(entry),
                key=key,
            )
        folder = logs_dir(message.root)
        status = self.query_one("#downloads-status", Label)
        if not message.logs:
            status.update(
                Text(
                    f"No download logs yet in {folder}. The CivitAI collector writes one per creator "
                    "there (<username>/<username>_download_log.json); the root is paths.civitai_root "
                    "in Settings (F7)."
                )
            )
            self._show_failures(None)
            return
        broken = sum(1 for entry in message.logs if entry.error is not None)
        summary = f"{len(message.logs)} creators in {folder}, newest first"
        status.update(Text(f"{summary}; {broken} log(s) unreadable" if broken else summary))
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep))
        self._show_failures(self._selected())

    def _selected(self) -> CreatorLog | None:
        table = self.query_one(CreatorTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._logs.get(key or "")

    @on(DataTable.RowHighlighted, "#creators-table")
    def _creator_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_failures(self._logs.get(event.row_key.value or ""))

    def _show_failures(self, entry: CreatorLog | None) -> None:
        title = self.query_one("#failures-title", Label)
        table = self.query_one(FailureTable)
        self._shown = None if entry is None else str(entry.path)
        table.clear()
        if entry is None:
            title.update(Text(""))
            return
        name = entry.username or str(entry.path)
        if entry.error is not None:
            title.update(Text(f"{name}: the log could not be read — {entry.error}"))
            return
        odd = f"; {entry.odd_entries} entries were not objects and are left out" if entry.odd_entries else ""
        if not entry.failures:
            title.update(Text(f"{name}: no failures logged in {entry.path}{odd}"))
            return
        title.update(Text(f"{name}: {entry.failed} failures, from {entry.path}{odd}"))
        for index, item in enumerate(entry.failures):
            table.add_row(Text(item.id), Text(item.type), Text(item.reason), Text(item.info), key=str(index))

    def action_open_detail(self) -> None:
        failures = self.query_one(FailureTable)
        if not failures.row_count:
            entry = self._selected()
            reason = "no creator selected" if entry is None else "nothing failed for this creator"
            self.notify(f"No failures to show: {reason}", markup=False)
            return
        failures.focus()

    def action_back(self) -> None:
        self.query_one(CreatorTable).focus()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            self.notify(
                f"Reading download logs failed: {type(error).__name__}: {error}",
                title="Internal error",
                severity="error",
                markup=False,
            )
