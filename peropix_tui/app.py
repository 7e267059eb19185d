"""The Textual application: modes (one per screen), global keys, the command palette and job bookkeeping.

Screens own their widgets; the app owns what is global: the settings object, the secret store, the job manager
(shared with headless commands), and the quit confirmation while jobs run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import Worker, get_current_worker

from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import Executors, ExecutorSizes, JobEvent, JobManager, JobState, UnknownJobError
from peropix_tui.core.notify import QueueTally, queue_finished
from peropix_tui.core.outputs import prune_unsaved
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SecretStore
from peropix_tui.engine.local_provider import LocalEngineSlot, LocalSettings
from peropix_tui.messages import (
    ApplySettings,
    CollectedVocabularyChanged,
    HistoryAdded,
    HistoryEvent,
    HistoryStatus,
    UseImage,
)
from peropix_tui.nai_access import NaiAccess
from peropix_tui.navigation import MODE_INFO
from peropix_tui.palette import PeropixCommands
from peropix_tui.screens.confirm import ConfirmScreen
from peropix_tui.screens.help import HelpScreen

if TYPE_CHECKING:
    from peropix_tui.core.history import HistoryStore
    from peropix_tui.engine.local.engine import LocalEngine
    from peropix_tui.sandbox.session import SandboxSession
    from peropix_tui.screens.welcome import WelcomeChoice
    from peropix_tui.terminal_probe import TerminalProbe

log = logging.getLogger(__name__)

STYLES = Path(__file__).parent / "styles"
PROGRESS_INTERVAL = 0.1
"""Seconds between two import progress messages from the history worker."""
SCAN_STOP_TIMEOUT = 10.0
"""Seconds quitting waits for a cancelled history scan to stop (it stops at its next file)."""


class _ScanCancelled(Exception):
    """Raised from the import progress callback to stop a scan when the app quits."""


def _make_screen(name: str) -> Screen[None]:
    return _screen_class(name)()


def _screen_class(name: str) -> type[Screen[None]]:
    # Imported here so each screen module is loaded once, when its mode is first shown.
    if name == "generate":
        from peropix_tui.screens.generate import GenerateScreen

        return GenerateScreen
    if name == "history":
        from peropix_tui.screens.history import HistoryScreen

        return HistoryScreen
    if name == "downloads":
        from peropix_tui.screens.downloads import DownloadsScreen

        return DownloadsScreen
    if name == "prompts":
        from peropix_tui.screens.prompts import PromptToolsScreen

        return PromptToolsScreen
    from peropix_tui.screens.settings import SettingsScreen

    return SettingsScreen


class PeropixApp(App[int]):
    """peropix-tui."""

    TITLE = "peropix"
    CSS_PATH = STYLES / "app.tcss"
    COMMANDS: ClassVar = App.COMMANDS | {PeropixCommands}
    DEFAULT_MODE = "generate"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        info.name: partial(_make_screen, info.name) for info in MODE_INFO
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "request_quit", "Quit", priority=True, id="quit"),
        Binding("f1", "help", "Help", priority=True, id="help"),
        Binding("question_mark", "help", "Help", show=False, id="help_question_mark"),
        *(
            Binding(info.key, f"switch_mode('{info.name}')", info.title, priority=True, id=f"mode_{info.name}")
            for info in MODE_INFO
        ),
    ]

    def __init__(
        self,
        dirs: AppDirs | None = None,
        *,
        config: Config | None = None,
        secrets: SecretStore | None = None,
        image_widget: str | None = None,
        sandbox: SandboxSession | None = None,
        welcome: bool = False,
    ) -> None:
        super().__init__()
        self.dirs = dirs or AppDirs.from_env()
        self.config = config or Config.load(self.dirs)
        self.secrets = secrets or SecretStore(self.dirs.secrets_file)
        sizes = self.config.settings.executors
        self.jobs = JobManager(
            executors=Executors(ExecutorSizes(gpu=sizes.gpu, metadata=sizes.metadata, io=sizes.io, hash=sizes.hash)),
            limits={"nai": 1, "local": 1, "gpu": 1, "civitai": 1},
        )
        # Tests and snapshots force a renderer; otherwise the setting decides (see widgets/image_preview.py).
        self.image_widget = image_widget or self.config.settings.ui.image_renderer
        self.theme = self.config.settings.ui.theme
        self.nai = NaiAccess(self.config, self.secrets, self.jobs.executors, sandbox=sandbox)
        """The NovelAI client and the sandbox session, shared by every screen."""
        self.local_engines = LocalEngineSlot()
        """The local engine, made by the first local job (`local_engine`) and closed when the app ends."""
        # The first-start welcome is offered by the interactive entry point (`run_app`) only.
        self._offer_welcome = welcome
        # The history store opens in a worker after the first frame (see `scan_history`), so start-up never
        # waits for SQLite or for an old install's outputs folder to be indexed.
        self.history: HistoryStore | None = None
        self.history_signal: Signal[HistoryEvent] = Signal(self, "history")
        self.vocabulary_signal: Signal[Path] = Signal(self, "vocabulary")
        """The collected vocabulary's cache path, each time an update in the app rewrote it."""
        self.history_version = 0
        """Bumped whenever entries may have changed; a screen that missed the signal compares it on resume."""
        self.history_event: HistoryEvent | None = None
        """The latest history news, for a screen mounted after it was published."""
        self._history_lock = threading.Lock()
        self._scans = threading.Condition()
        self._scans_running = 0
        """History scan threads still running; quitting waits for them before closing the store."""
        self._queue_tally = QueueTally()
        """What the generation queue did since it was last idle, for the notification when it runs dry."""
        self._unwatch_queue: Callable[[], None] | None = None
        self._gc_paused = False

    def resume_gc_after_first_frame(self) -> None:
        """Re-enable the garbage collector (paused by the caller for start-up) once the first frame is out."""
        self._gc_paused = True

    def _resume_gc(self) -> None:
        # What start-up made lives as long as the app: frozen, later collections no longer walk through it.
        gc.freeze()
        gc.enable()

    def on_mount(self) -> None:
        if self._gc_paused:
            # Frames are held back until Textual's start-up is over; the app's queue runs after it.
            self.call_later(self.call_after_refresh, self._resume_gc)
        for issue in self.config.issues:
            self.notify(str(issue), title="Settings", severity="warning", markup=False, timeout=10)
        if self.secrets.problem:
            self.notify(self.secrets.problem, title="Secrets", severity="warning", markup=False, timeout=10)
        self.call_after_refresh(self.scan_history, first=True)
        self._unwatch_queue = self.jobs.subscribe(self._watch_generation_queue)
        self.show_sandbox_badge()
        if self._offer_welcome:
            self._welcome()

    # NovelAI and the sandbox -------------------------------------------------------------------------------------

    def show_sandbox_badge(self) -> None:
        """SANDBOX in the header of every screen while requests go to the sandbox."""
        self.sub_title = "SANDBOX · nothing is charged" if self.nai.sandbox is not None else ""

    def _welcome(self) -> None:
        from peropix_tui.screens.welcome import WelcomeScreen, mark_welcome_seen, needs_welcome

        if not needs_welcome(self.dirs, self.config, self.nai):
            return

        def chosen(choice: WelcomeChoice | None) -> None:
            mark_welcome_seen(self.dirs)
            self.show_sandbox_badge()
            log.info("welcome: %s", choice or "left for later")

        self.push_screen(WelcomeScreen(self.config, self.secrets, self.nai), chosen)

    def local_engine(self) -> LocalEngine:
        """The local engine for the current settings (blocking: the first call imports torch; run it in a worker).
        Raises PeropixError when torch is missing or the device setting cannot be used."""
        return self.local_engines.get(LocalSettings.from_config(self.config))

    # History -----------------------------------------------------------------------------------------------------

    def open_history(self) -> HistoryStore:
        """The history store, opened on first use; safe from any thread. Raises PeropixError when unusable."""
        with self._history_lock:
            if self.history is None:
                from peropix_tui.core.history import HistoryStore

                self.history = HistoryStore(self.config.history_file)
            return self.history

    @work(thread=True, exclusive=True, group="history-scan", exit_on_error=False)
    def scan_history(self, first: bool = False) -> None:
        """Index the outputs folder into the history store.

        At start (`first`) this only opens the store, and indexes the folder when the store is empty: the first
        run after an upgrade, or after a damaged database was replaced. Otherwise (a rescan) it adds the files it
        does not know and forgets entries whose file was deleted outside the app.
        """
        with self._scans:
            self._scans_running += 1
        try:
            self._scan(first)
        finally:
            with self._scans:
                self._scans_running -= 1
                self._scans.notify_all()

    def _scan(self, first: bool) -> None:
        worker = get_current_worker()
        try:
            store = self.open_history()
            if store.recovered:
                self.post_message(HistoryStatus(HistoryEvent("failed", message=store.recovered)))
            if first:
                self._prune_unsaved(store)
            self.post_message(HistoryStatus(HistoryEvent("opened")))
            if first and store.count(include_deleted=True) > 0:
                return
            last = 0.0

            def progress(done: int, total: int) -> None:
                nonlocal last
                if worker.is_cancelled:
                    raise _ScanCancelled
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL or done == total:
                    last = now
                    self.post_message(HistoryStatus(HistoryEvent("progress", done=done, total=total)))

            report = store.import_folder(self.config.outputs_dir, progress=progress)
            removed = 0 if first else store.remove_missing()
        except _ScanCancelled:
            return
        except PeropixError as exc:
            self.post_message(HistoryStatus(HistoryEvent("failed", message=str(exc))))
            return
        for path, reason in report.skipped:
            log.info("history import skipped %s: %s", path, reason)
        event = HistoryEvent("imported", added=report.added, skipped=len(report.skipped), removed=removed)
        self.post_message(HistoryStatus(event))

    def _prune_unsaved(self, store: HistoryStore) -> None:
        """Delete the unsaved images past their time or beyond the size cap, and their history entries."""
        saving = self.config.settings.saving
        folder = self.config.unsaved_dir
        pruned = prune_unsaved(folder, keep_days=saving.unsaved_keep_days, max_bytes=saving.unsaved_max_mb << 20)
        if pruned:
            log.info("deleted %d unsaved images from %s", len(pruned), folder)
            store.forget(pruned)

    def _wait_for_scans(self, timeout: float) -> None:
        with self._scans:
            if not self._scans.wait_for(lambda: self._scans_running == 0, timeout):
                log.warning("a history scan was still running %.0f s after quitting", timeout)

    def on_history_status(self, message: HistoryStatus) -> None:
        event = message.event
        if event.kind == "failed":
            self.notify(event.message, title="History", severity="warning", markup=False, timeout=10)
        elif event.kind == "imported" and (event.added or event.skipped or event.removed):
            parts = [f"{event.added} image{'s' if event.added != 1 else ''} indexed"]
            if event.removed:
                parts.append(f"{event.removed} missing forgotten")
            if event.skipped:
                parts.append(f"{event.skipped} unreadable skipped (see the log)")
            self.notify(", ".join(parts), title="History", markup=False)
        self._publish_history(event)

    def on_history_added(self, message: HistoryAdded) -> None:
        self._publish_history(HistoryEvent("added", entry_id=message.entry_id))

    def on_collected_vocabulary_changed(self, message: CollectedVocabularyChanged) -> None:
        self.vocabulary_signal.publish(message.path)

    def _publish_history(self, event: HistoryEvent) -> None:
        if event.changes_entries:
            self.history_version += 1
        self.history_event = event
        self.history_signal.publish(event)

    @work(thread=True, group="save-unsaved", exit_on_error=False)
    def save_unsaved_image(self, entry_id: int) -> None:
        """Save an image that waits unsaved (auto-save off) into the outputs folder with the saving settings."""
        from peropix_tui.engine.run import save_unsaved

        config = self.config
        try:
            options = config.save_options()
            store = self.open_history()
            path = save_unsaved(
                store, entry_id, outputs_dir=config.outputs_dir, unsaved_dir=config.unsaved_dir, options=options
            )
        except PeropixError as exc:
            self.notify(str(exc), title="Not saved", severity="warning", markup=False)
            return
        self.notify(f"Saved {path}", title="Saved", markup=False)
        self.post_message(HistoryAdded(entry_id))

    # Generation queue ----------------------------------------------------------------------------------------

    def _watch_generation_queue(self, event: JobEvent) -> None:
        """Tally finished generation jobs; when none is left queued or running, ring and notify as set."""
        if event.kind != "state" or not event.state.terminal:
            return
        from peropix_tui.screens.generate import GENERATION_KIND

        try:
            job = self.jobs.get(event.job_id)
        except UnknownJobError:
            return
        if job.kind != GENERATION_KIND:
            return
        if event.state is JobState.DONE:
            outputs = job.result or []
            unsaved = sum(1 for output in outputs if output.unsaved)
            self._queue_tally.job_done(saved=len(outputs) - unsaved, unsaved=unsaved)
        elif event.state is JobState.FAILED:
            self._queue_tally.job_failed()
        else:
            self._queue_tally.job_cancelled()
        if any(other.kind == GENERATION_KIND and not other.state.terminal for other in self.jobs.jobs):
            return
        notify = self.config.settings.notify
        text = queue_finished(self._queue_tally.take(), bell=notify.bell, desktop=notify.desktop, environ=os.environ)
        if text and self._driver is not None:
            # Through the driver, as Textual writes the bell and OSC 52 itself: never in the middle of a frame.
            self._driver.write(text)

    async def on_apply_settings(self, message: ApplySettings) -> None:
        await self.switch_mode("generate")
        # The mode's own screen, not a modal that may be open above it.
        self.screen_stack[0].post_message(message.forwarded())

    async def on_use_image(self, message: UseImage) -> None:
        await self.switch_mode("generate")
        self.screen_stack[0].post_message(message.forwarded())

    # Actions ---------------------------------------------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen(self.screen))

    async def action_request_quit(self) -> None:
        running = self.jobs.active_count
        if not running:
            self.exit(0)
            return

        def answered(quit_anyway: bool | None) -> None:
            if quit_anyway:
                self.exit(0)

        noun = "job is" if running == 1 else "jobs are"
        self.push_screen(
            ConfirmScreen(f"{running} {noun} still running. Quit and cancel them?", yes="Quit", no="Stay"),
            answered,
        )

    async def on_unmount(self) -> None:
        if self._unwatch_queue is not None:
            self._unwatch_queue()  # jobs cancelled by quitting are not news
        await self.jobs.aclose()
        await self.nai.aclose()
        await asyncio.to_thread(self.local_engines.close)  # waits for the engine's worker, frees its memory
        scans: list[Worker[Any]] = [w for w in self.workers if w.group == "history-scan"]
        for scan in scans:
            scan.cancel()
        # A cancelled thread worker is only told to stop; wait for the thread itself to leave the store.
        await asyncio.to_thread(self._wait_for_scans, SCAN_STOP_TIMEOUT)
        with self._history_lock:
            if self.history is not None:
                self.history.close()


def run_app(
    dirs: AppDirs,
    *,
    config: Config,
    probe: TerminalProbe,
    mouse: bool = True,
    sandbox: SandboxSession | None = None,
    gc_paused: bool = False,
) -> int:
    """Run the TUI once the terminal has answered `probe` (it must be over before Textual reads stdin); the
    Generate screen's modules load meanwhile. `sandbox` is the session `--sandbox` started; `gc_paused` says the
    caller disabled the garbage collector for start-up, for the app to resume after its first frame."""
    import peropix_tui.screens.generate  # noqa: F401

    probe.wait()
    app = PeropixApp(dirs, config=config, sandbox=sandbox, welcome=True)
    if gc_paused:
        app.resume_gc_after_first_frame()
    result = app.run(mouse=mouse and app.config.settings.ui.mouse)
    return result if isinstance(result, int) else (app.return_code or 0)
