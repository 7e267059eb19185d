"""Downloads: run CivitAI collections and watch them live, and read what the download logs on disk say.

Collect tab: creators (profile URLs, usernames, batch file paths) and options, started as one job in the app's
job manager (group `civitai`: one collection at a time, beside generation) with the same collector core,
settings and API key as `peropix civitai get/batch`, and the sandbox when the app runs with one. Its events
feed the live table (see `widgets/download_table.py`). Cancelling is Ctrl-C for the collector: the log is
saved, partial model files stay as `.part`, and starting the same collection again resumes them.

When a collection ends (finished, cancelled or failed part-way), the collected vocabulary is brought up to date
with the sidecars it wrote, in a thread worker, so prompt completion offers their tags at once; with little
changed that is one `stat` per sidecar.

Logs tab: one row per creator log, and the selected one's failures. Logs are read in a thread worker each
time the screen is shown, a run ends, or on refresh, since a collector may be writing them meanwhile; a log
that cannot be read is a row with its one-line reason, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Checkbox, DataTable, Footer, Header, Input, Label, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from peropix_tui.civitai.collector import CollectOptions
from peropix_tui.civitai.download_log import CreatorLog, logs_dir, scan_download_logs
from peropix_tui.civitai.errors import CreatorRefError
from peropix_tui.civitai.events import VERIFIED, Notice, Tally
from peropix_tui.civitai.model_types import parse_model_types
from peropix_tui.civitai.urls import CreatorRef, parse_creator, read_batch_file, unique_creators
from peropix_tui.core.collected_vocabulary import NoCollectionError, cache_path, update_cache
from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import Job, JobContext, JobEvent, JobFn, JobState
from peropix_tui.messages import CollectedVocabularyChanged
from peropix_tui.sandbox.session import civitai_root
from peropix_tui.widgets.download_table import DownloadTable, RowState, counters_text

if TYPE_CHECKING:
    from peropix_tui.app import PeropixApp

log = logging.getLogger(__name__)

COLLECT_KIND: Final = "civitai"
"""Kind and group of collection jobs; the app runs one group member at a time."""
COLLECT_TAB: Final = "tab-collect"
LOGS_TAB: Final = "tab-logs"
TICK_S: Final = 1.0
"""How often speeds are redrawn while a run is on, so a stalled download's speed falls."""
_PATH_STARTS: Final = ("/", "~", ".")
VOCABULARY_GROUP: Final = "collected-vocabulary"


@dataclass(frozen=True, slots=True)
class CollectRequest:
    """One collection as the form asked for it, with the endpoint and key resolved when it was started."""

    creators: tuple[CreatorRef, ...]
    batch_files: tuple[Path, ...]
    options: CollectOptions
    base_url: str
    api_key: str | None = field(repr=False)
    spacing_s: float
    filters_dir: Path

    @property
    def label(self) -> str:
        names = [c.username for c in self.creators] + [f"batch {p.name}" for p in self.batch_files]
        shown = ", ".join(names[:3])
        return f"{shown} and {len(names) - 3} more" if len(names) > 3 else shown


def parse_creators_field(text: str) -> tuple[list[CreatorRef], list[Path]]:
    """Creators and batch files from the field: whitespace-separated; a word starting with `/`, `~` or `.` is a
    batch file path, any other a profile URL or a username (each creator once)."""
    words = text.split()
    if not words:
        raise CreatorRefError("no creators: give CivitAI profile URLs or usernames, or a batch file path")
    creators = [parse_creator(word) for word in words if not word.startswith(_PATH_STARTS)]
    batches = [Path(word).expanduser() for word in words if word.startswith(_PATH_STARTS)]
    return unique_creators(creators), batches


def _summary(tally: Tally) -> str:
    done, verified = tally.count("done"), tally.count(VERIFIED)
    parts = [f"{done} downloaded", f"{verified} already here"]
    if tally.failed:
        parts.append(f"{tally.failed} failed")
    if tally.deferred:
        parts.append(f"{tally.deferred} deferred")
    skipped = tally.count("skipped_permanent")
    if skipped:
        parts.append(f"{skipped} skipped")
    return "finished: " + ", ".join(parts) + "; the log is in the Logs tab (Ctrl+L)"


@dataclass
class LogsRead(Message):
    root: Path
    logs: list[CreatorLog]


@dataclass
class CollectionState(Message):
    """A state change of the collection job, posted from the job manager's subscriber."""

    event: JobEvent


class _UpdateStopped(Exception):
    """Raised from the update's progress callback when the screen goes away: the cache is left as it was."""


class CreatorsInput(Input):
    """The creators field: a pasted list keeps every line (joined by spaces), not only the first."""

    def on_paste(self, event: events.Paste) -> None:
        event.prevent_default()  # Input's own handler would keep the first line only
        event.stop()
        text = " ".join(event.text.split())
        if not text:
            return
        if self.selection.is_empty:
            self.insert_text_at_cursor(text)
        else:
            self.replace(text, *self.selection)


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
    DEFAULT_CSS = """
    #downloads-tabs {
        height: 1fr;
    }
    #downloads-tabs TabPane {
        padding: 0;
    }
    #collect-options {
        height: auto;
    }
    #collect-types {
        width: 30;
    }
    #collect-options Checkbox {
        width: auto;
    }
    #collect-phase, #collect-counters, #collect-notice {
        width: 100%;
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    #collect-counters {
        color: $text-muted;
    }
    #collect-notice {
        color: $warning;
    }
    #download-table {
        height: 1fr;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5", "start_collection", "Start collection", id="downloads_start"),
        Binding("f8", "cancel_collection", "Cancel collection", id="downloads_cancel"),
        Binding("ctrl+n", "show_tab('tab-collect')", "Collect", id="downloads_tab_collect"),
        Binding("ctrl+l", "show_tab('tab-logs')", "Logs", id="downloads_tab_logs"),
        Binding("ctrl+r", "refresh_logs", "Refresh download logs", show=False, id="downloads_refresh_ctrl"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._logs: dict[str, CreatorLog] = {}
        self._shown: str | None = None
        self._job: Job[Tally] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ticker: Timer | None = None

    @property
    def _peropix(self) -> PeropixApp:
        return self.app  # type: ignore[return-value]

    @property
    def config(self) -> Config:
        return self._peropix.config

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="downloads-tabs", initial=COLLECT_TAB):
            with TabPane("Collect", id=COLLECT_TAB):
                yield CreatorsInput(
                    placeholder="profile URLs or usernames, space-separated; or a batch file: /path, ~/path, ./path",
                    id="collect-creators",
                )
                with Horizontal(id="collect-options"):
                    yield Input(placeholder="LORA,LoCon or all", id="collect-types")
                    yield Checkbox("Models", True, id="collect-models")
                    yield Checkbox("Images", True, id="collect-images")
                    yield Checkbox("Retry failed", False, id="collect-retry")
                yield Label("", id="collect-phase", markup=False)
                yield Label("", id="collect-counters", markup=False)
                yield Label("", id="collect-notice", markup=False)
                yield DownloadTable(id="download-table")
            with TabPane("Logs", id=LOGS_TAB):
                yield Label("", id="downloads-status", markup=False)
                yield CreatorTable(id="creators-table", cursor_type="row", zebra_stripes=True)
                yield Label("", id="failures-title", markup=False)
                yield FailureTable(id="failures-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        creators_input = self.query_one("#collect-creators", Input)
        creators_input.border_title = "Creators to collect (Enter or F5 starts)"
        types = self.query_one("#collect-types", Input)
        types.border_title = "Model types"
        types.value = ",".join(self.config.settings.civitai.types) or "all"
        self.query_one("#collect-phase", Label).update(
            Text("Collect every model file, image and prompt of CivitAI creators; F8 cancels, F5 again resumes.")
        )
        self.query_one("#collect-notice", Label).display = False
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
        self._ticker = self.set_interval(TICK_S, self._tick, pause=True)
        self._unsubscribe = self._peropix.jobs.subscribe(self._on_job_event)
        creators_input.focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_screen_resume(self) -> None:
        self.action_refresh_logs()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus_tab(tab)

    @on(TabbedContent.TabActivated)
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id or COLLECT_TAB)

    def _focus_tab(self, tab: str) -> None:
        if tab == LOGS_TAB:
            self.query_one(CreatorTable).focus()
        else:
            self.query_one("#collect-creators", Input).focus()

    # Collecting ------------------------------------------------------------------------------------------------

    @property
    def collecting(self) -> bool:
        """Whether a collection started here is queued or running."""
        return self._job is not None and not self._job.state.terminal

    @on(Input.Submitted, "#collect-creators, #collect-types")
    def _submitted(self) -> None:
        self.action_start_collection()

    def action_start_collection(self) -> None:
        """Start a collection of what the form names (the same creators again resume where they stopped)."""
        if self.collecting:
            self.notify("A collection is running: cancel it with F8 first", severity="warning", markup=False)
            return
        try:
            request = self._request()
        except PeropixError as exc:
            self.notify(str(exc), title="Cannot collect", severity="error", markup=False)
            return
        table = self.query_one(DownloadTable)
        table.begin_run(f"starting: {request.label}")
        self.query_one(TabbedContent).active = COLLECT_TAB
        self._job = self._peropix.jobs.submit(
            self._collection(request, table), name=f"CivitAI: {request.label}", kind=COLLECT_KIND, group=COLLECT_KIND
        )
        if self._ticker is not None:
            self._ticker.resume()

    def _request(self) -> CollectRequest:
        creators, batches = parse_creators_field(self.query_one("#collect-creators", Input).value)
        types = parse_model_types(self.query_one("#collect-types", Input).value, (), field="Model types")
        models = self.query_one("#collect-models", Checkbox).value
        images = self.query_one("#collect-images", Checkbox).value
        if not models and not images:
            raise PeropixError("Models and Images are both off: that leaves nothing to collect")
        app = self._peropix
        config = app.config
        settings = config.settings.civitai
        options = CollectOptions(
            root=civitai_root(config),
            types=types,
            models=models,
            images=images,
            retry_failed=self.query_one("#collect-retry", Checkbox).value,
            download_workers=settings.download_workers,
            image_workers=settings.image_workers,
        )
        session = app.nai.sandbox
        base_url = session.civitai_url if session is not None else config.settings.endpoints.civitai_base_url
        key = session.civitai_key if session is not None else app.secrets.value("civitai_api_key")
        return CollectRequest(
            tuple(creators), tuple(batches), options, base_url, key, settings.request_spacing_s, config.filters_dir
        )

    @staticmethod
    def _collection(request: CollectRequest, table: DownloadTable) -> JobFn[Tally]:
        async def collect(ctx: JobContext) -> Tally:
            from peropix_tui.civitai.client import CivitaiClient
            from peropix_tui.civitai.collector import Collector
            from peropix_tui.core.prompt import WordFilter

            creators = list(request.creators)
            for path in request.batch_files:
                batch = await ctx.run_in("io", read_batch_file, path)
                for problem in batch.problems:
                    table.post_event(Notice(f"{path}: {problem} (skipped)", "warning"))
                creators.extend(line.creator for line in batch.creators)
            creators = unique_creators(creators)
            if not creators:
                raise CreatorRefError(f"no creators to collect in {', '.join(str(p) for p in request.batch_files)}")
            filters = await ctx.run_in("io", WordFilter.load, request.filters_dir)
            async with CivitaiClient(request.base_url, request.api_key, spacing_s=request.spacing_s) as client:
                collector = Collector(client, request.options, filters=filters, on_event=table.post_event)
                return await collector.run(creators)

        return collect

    def action_cancel_collection(self) -> None:
        """Stop the collection as Ctrl-C stops `peropix civitai`: the log is saved, partial files are kept."""
        if self._job is None or not self.collecting:
            self.notify("No collection is running", severity="warning", markup=False)
            return
        self._peropix.jobs.cancel(self._job.id)
        self.query_one(DownloadTable).show_phase("cancelling: saving the log…")

    def _on_job_event(self, event: JobEvent) -> None:
        job = self._job
        if job is not None and event.job_id == job.id and event.kind == "state" and event.state.terminal:
            self.post_message(CollectionState(event))

    @on(CollectionState)
    def _collection_ended(self, message: CollectionState) -> None:
        event = message.event
        job = self._job
        if job is None or event.job_id != job.id:
            return
        if self._ticker is not None:
            self._ticker.pause()
        table = self.query_one(DownloadTable)
        if event.state is JobState.DONE and job.result is not None:
            table.end_run(_summary(job.result))
        elif event.state is JobState.CANCELLED:
            table.end_run("cancelled: the log is saved and partial files are kept; F5 resumes the same collection")
        else:
            table.end_run(f"failed: {event.message}")
            self.notify(event.message, title="Collection failed", severity="error", markup=False)
        self.action_refresh_logs()
        self._follow_vocabulary(civitai_root(self.config))

    @work(thread=True, group=VOCABULARY_GROUP, exit_on_error=False, description="Update the collected vocabulary")
    def _follow_vocabulary(self, root: Path) -> None:
        """Read the sidecars the collection wrote into the collected vocabulary and tell the app when it changed.
        Success is quiet (the Vocabulary tab of Prompt tools shows the counts); a failure is a warning."""
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            if worker.is_cancelled:
                raise _UpdateStopped

        path = cache_path(self._peropix.dirs.data_dir)
        try:
            vocabulary, report = update_cache(path, root, progress)
        except (_UpdateStopped, NoCollectionError):  # quitting, or the run ended before writing anything
            return
        except PeropixError as exc:
            self.notify(
                f"Collected vocabulary not updated: {exc}", title="Vocabulary", severity="warning", markup=False
            )
            return
        log.info("collected vocabulary after the collection: %s; %s", report.summary(), vocabulary.summary())
        if report.touched:
            self.app.post_message(CollectedVocabularyChanged(path))

    def _tick(self) -> None:
        table = self.query_one(DownloadTable)
        table.board.tick()
        table.announce()

    @on(DownloadTable.Redrawn)
    def _board_drawn(self) -> None:
        table = self.query_one(DownloadTable)
        board = table.board
        self.query_one("#collect-phase", Label).update(Text(board.phase))
        self.query_one("#collect-counters", Label).update(Text(counters_text(board)))
        notice = self.query_one("#collect-notice", Label)
        notice.display = bool(board.notices)
        if board.notices:
            latest = board.notices[-1]
            plural = "s" if board.warnings != 1 else ""
            notice.update(Text(f"{board.warnings} warning{plural}; latest: {latest.message}"))

    @on(DataTable.RowSelected, "#download-table")
    def _download_selected(self) -> None:
        row = self.query_one(DownloadTable).selected_row()
        if row is None:
            return
        detail = f"{row.kind} of {row.model or 'unknown model'} by {row.creator or 'unknown creator'}"
        lines = [f"{row.name}: {row.state_text()}", detail]
        if row.info:
            lines.append(row.info)
        failed = row.state in (RowState.FAILED, RowState.HASH_MISMATCH)
        self.notify("\n".join(lines), title="Download", severity="error" if failed else "information", markup=False)

    # Logs ------------------------------------------------------------------------------------------------------

    def action_refresh_logs(self) -> None:
        root = civitai_root(self.config)
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
                    "in Settings (F7). Collect tab (Ctrl+N) starts a collection."
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
            vocabulary = event.worker.group == VOCABULARY_GROUP
            what = "Updating the collected vocabulary" if vocabulary else "Reading download logs"
            self.notify(
                f"{what} failed: {type(error).__name__}: {error}",
                title="Internal error",
                severity="error",
                markup=False,
            )
