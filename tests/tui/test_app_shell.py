"""The app shell: modes, help, palette, settings round trip, quit confirmation while a job runs."""

from __future__ import annotations

import asyncio
import gc
import stat
from pathlib import Path

import orjson
from textual.command import CommandPalette
from textual.widgets import DataTable, Input, Select

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.history import HistoryStore
from peropix_tui.core.jobs import JobContext
from peropix_tui.core.paths import AppDirs
from peropix_tui.screens.confirm import ConfirmScreen
from peropix_tui.screens.help import HelpScreen
from peropix_tui.screens.settings import SettingsScreen
from tests.tui.helpers import wait_until


async def settle(pilot: object, delay: float = 0.2) -> None:
    await pilot.pause(delay)  # type: ignore[attr-defined]


async def test_garbage_collector_resumes_after_the_first_frame() -> None:
    """`peropix` pauses the collector for start-up; the app turns it back on (and freezes what start-up made)."""
    app = PeropixApp()
    app.resume_gc_after_first_frame()
    gc.disable()
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, gc.isenabled, "the collector to resume")
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


async def test_function_keys_switch_modes() -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        seen = []
        for key in ("f3", "f4", "f6", "f7", "f2"):
            await pilot.press(key)
            await settle(pilot)
            seen.append(app.current_mode)
        assert seen == ["history", "downloads", "prompts", "settings", "generate"]


async def test_help_lists_bindings_of_current_screen() -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("f7")
        await settle(pilot)
        await pilot.press("f1")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table", DataTable)
        rows = [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
        actions = {r[1] for r in rows}
        assert {"Save", "Revert", "Quit", "Help", "Settings", "Generate"} <= actions
        assert ("^s", "Save", "screen") in rows
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, SettingsScreen)


async def test_palette_runs_an_action() -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await settle(pilot)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"go to settings")
        await settle(pilot, 0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_mode == "settings"


async def test_settings_save_and_reload(tmp_path: Path) -> None:
    app = PeropixApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f7")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#set-executors--io", Input).value = "6"
        screen.query_one("#set-ui--image_renderer", Select).value = "halfcell"
        screen.query_one("#set-paths--lora_dirs", Input).value = "/srv/lora, /srv/more"
        screen.query_one("#secret-nai_token", Input).value = "pst-abcdefghijklmnopqrstuvwxyz0123"
        await pilot.press("ctrl+s")
        await settle(pilot)
    dirs = AppDirs.from_env()
    again = Config.load(dirs)
    assert again.get("executors.io") == 6
    assert again.get("ui.image_renderer") == "halfcell"
    assert again.get("paths.lora_dirs") == ["/srv/lora", "/srv/more"]
    assert stat.S_IMODE(dirs.secrets_file.stat().st_mode) == 0o600
    assert orjson.loads(dirs.secrets_file.read_bytes())["nai_token"] == "pst-abcdefghijklmnopqrstuvwxyz0123"
    # and a fresh app shows the saved values, the secret only redacted
    app2 = PeropixApp()
    async with app2.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f7")
        await settle(pilot)
        assert app2.screen.query_one("#set-executors--io", Input).value == "6"
        secret_field = app2.screen.query_one("#secret-nai_token", Input)
        assert secret_field.value == ""
        assert "pst-ab…23" in secret_field.placeholder
        assert "abcdefghijklmnopqrstuvwxyz" not in secret_field.placeholder


async def test_invalid_setting_is_refused_with_message() -> None:
    app = PeropixApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f7")
        await settle(pilot)
        app.screen.query_one("#set-executors--io", Input).value = "many"
        app.screen.query_one("#set-ui--theme", Select).value = "nord"
        await pilot.press("ctrl+s")
        await settle(pilot)
        status = str(app.screen.query_one("#settings-status").render())
        assert "executors.io" in status and "whole number" in status
    assert not AppDirs.from_env().config_file.exists()  # nothing written when one field is invalid


async def test_quit_asks_while_a_job_runs() -> None:
    app = PeropixApp()
    release = asyncio.Event()

    async def long_job(ctx: JobContext) -> None:
        await release.wait()

    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.jobs.submit(long_job, name="wait", kind="test")
        await settle(pilot)
        await pilot.press("ctrl+q")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.is_running
        await pilot.press("ctrl+q")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert not app.is_running
        release.set()


async def test_quit_without_jobs_exits_at_once() -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+q")
        await settle(pilot)
        assert not app.is_running


async def test_every_screen_survives_resizing_down_to_80x24() -> None:
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key in ("f2", "f3", "f4", "f6", "f7"):
            await pilot.press(key)
            await settle(pilot)
            for size in ((80, 24), (200, 60), (80, 24)):
                await pilot.resize_terminal(*size)
                await settle(pilot, 0.1)
                assert app.screen.size == size
                # the footer (and with it every global key's label) is still on screen
                footer = app.screen.query_one("Footer")
                assert footer.region.bottom == size[1]
        assert app.is_running


async def test_quitting_while_the_history_scan_runs_stops_it_cleanly() -> None:
    """Quitting during a first import of a large outputs folder: no traceback, the scan thread stops, the store
    closes with what was indexed so far."""
    fixture = Path(__file__).parents[1] / "fixtures" / "images" / "nai__LlmKira_novelai-python__sample-0316.png"
    app = PeropixApp()
    day = app.config.outputs_dir / "2026-11-24"
    day.mkdir(parents=True)
    data = fixture.read_bytes()
    for counter in range(1, 1501):
        (day / f"{counter:05d}_{counter}.png").write_bytes(data)
    indexed: list[int] = []
    async with app.run_test(size=(100, 30)) as pilot:
        while app.history is None or app.history.count(include_deleted=True) == 0:
            await pilot.pause(0.01)
        indexed.append(app.history.count(include_deleted=True))
    # `run_test` returned without an exception from on_unmount, and no scan thread is left behind.
    assert app._scans_running == 0
    reopened = HistoryStore(app.config.history_file)
    try:
        count = reopened.count(include_deleted=True)
    finally:
        reopened.close()
    assert indexed[0] <= count < 1500
