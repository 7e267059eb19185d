"""The Textual application: modes (one per screen), global keys, the command palette and job bookkeeping.

Screens own their widgets; the app owns what is global: the settings object, the secret store, the job manager
(shared with headless commands), and the quit confirmation while jobs run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from peropix_tui.core.config import Config
from peropix_tui.core.jobs import Executors, ExecutorSizes, JobManager
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SecretStore
from peropix_tui.navigation import MODE_INFO
from peropix_tui.palette import PeropixCommands
from peropix_tui.screens.confirm import ConfirmScreen
from peropix_tui.screens.help import HelpScreen

log = logging.getLogger(__name__)

STYLES = Path(__file__).parent / "styles"


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
    ) -> None:
        super().__init__()
        self.dirs = dirs or AppDirs.from_env()
        self.config = config or Config.load(self.dirs)
        self.secrets = secrets or SecretStore(self.dirs.secrets_file)
        sizes = self.config.settings.executors
        self.jobs = JobManager(
            executors=Executors(ExecutorSizes(gpu=sizes.gpu, metadata=sizes.metadata, io=sizes.io, hash=sizes.hash)),
            limits={"nai": 1, "gpu": 1},
        )
        # Tests and snapshots force a renderer; otherwise the setting decides (see widgets/image_preview.py).
        self.image_widget = image_widget or self.config.settings.ui.image_renderer
        self.theme = self.config.settings.ui.theme

    def on_mount(self) -> None:
        for issue in self.config.issues:
            self.notify(str(issue), title="Settings", severity="warning", markup=False, timeout=10)
        if self.secrets.problem:
            self.notify(self.secrets.problem, title="Secrets", severity="warning", markup=False, timeout=10)

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
        await self.jobs.aclose()


def run_app(dirs: AppDirs, *, mouse: bool = True) -> int:
    """Probe the terminal's image support (it must happen before the app starts), then run the TUI."""
    from peropix_tui.widgets.image_preview import probe_terminal

    probe_terminal()
    app = PeropixApp(dirs)
    result = app.run(mouse=mouse and app.config.settings.ui.mouse)
    return result if isinstance(result, int) else (app.return_code or 0)
