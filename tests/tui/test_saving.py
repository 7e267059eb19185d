"""Saving options in the TUI against the sandbox server: a JPEG named by a pattern, auto-save off with saving from
the History pane and from Generate, the settings form refusing a bad pattern, and what the app writes to the
terminal when the queue runs dry (captured where the app writes it: its terminal driver)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Select

from peropix_tui.app import PeropixApp
from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.paths import AppDirs
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.screens.history import HistoryScreen

from .helpers import PROMPT, SIZE, new_app, notifications, screen, start, wait_until


def capture_terminal(app: PeropixApp, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Everything the app writes to its terminal driver from now on."""
    writes: list[str] = []
    driver = app._driver
    assert driver is not None
    monkeypatch.setattr(driver, "write", writes.append)
    return writes


def saved_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture(autouse=True)
def kitty_outside_tmux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-kitty")
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("VTE_VERSION", raising=False)


async def generate_one(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, PeropixApp)
    await start(pilot)
    await pilot.press("f5")
    await wait_until(pilot, lambda: bool(app.jobs.jobs) and app.jobs.active_count == 0, "the generation", limit=30)


async def test_a_jpeg_lands_where_the_pattern_says_and_the_queue_end_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    with sandbox_session() as session:
        app = new_app(session)
        app.config.set("saving.format", "jpeg")
        app.config.set("saving.quality", 85)
        app.config.set("saving.name_pattern", "{date}/{model}/{counter}_{prompt}")
        async with app.run_test(size=SIZE) as pilot:
            writes = capture_terminal(app, monkeypatch)
            await generate_one(pilot)
            request = screen(app).current_request()
            day = datetime.now().strftime("%Y-%m-%d")
            name = "00001_1girl_silver_hair_night_very_aesthetic.jpg"  # the prompt with the quality tags, cut
            expected = app.config.outputs_dir / day / request.model / name
            await wait_until(pilot, lambda: bool(writes), "the queue-finished escape")
            assert saved_images(app.config.outputs_dir) == [expected]
            [entry] = app.open_history().page(0, 10)
            assert entry.path == expected.resolve()
            meta = read_metadata(expected)
            assert meta.prompt is not None and meta.prompt.startswith(PROMPT)
            assert (meta.seed, meta.width, meta.height) == (entry.seed, request.width, request.height)
            assert meta.peropix["provider"] == "sandbox"
            assert writes == ["\a\x1b]9;peropix: queue finished: 1 image saved\a"]


async def test_inside_tmux_the_notification_is_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMUX", "/tmp/tmux-1000/default,4242,0")
    with sandbox_session() as session:
        app = new_app(session)
        app.config.set("notify.bell", False)
        app.config.set("notify.desktop", "osc777")
        async with app.run_test(size=SIZE) as pilot:
            writes = capture_terminal(app, monkeypatch)
            await generate_one(pilot)
            await wait_until(pilot, lambda: bool(writes), "the queue-finished escape")
            assert writes == ["\x1bPtmux;\x1b\x1b]777;notify;peropix: queue finished;1 image saved\a\x1b\\"]


async def test_nothing_is_written_when_both_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    with sandbox_session() as session:
        app = new_app(session)
        app.config.set("notify.bell", False)
        app.config.set("notify.desktop", "off")
        async with app.run_test(size=SIZE) as pilot:
            writes = capture_terminal(app, monkeypatch)
            await generate_one(pilot)
            await pilot.pause(0.2)
            assert writes == []
            assert len(saved_images(app.config.outputs_dir)) == 1


async def test_auto_save_off_keeps_images_unsaved_until_a_key_saves_them(monkeypatch: pytest.MonkeyPatch) -> None:
    with sandbox_session() as session:
        app = new_app(session)
        app.config.set("saving.auto_save", False)
        app.config.set("saving.format", "webp")
        messages: list[Message] = []
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            writes = capture_terminal(app, monkeypatch)
            await generate_one(pilot)
            await wait_until(pilot, lambda: bool(writes), "the queue-finished escape")
            assert writes == ["\a\x1b]9;peropix: queue finished: 1 image ready, not saved\a"]
            [waiting] = saved_images(app.config.unsaved_dir)
            assert waiting.suffix == ".png"
            assert saved_images(app.config.outputs_dir) == []
            store = app.open_history()
            [entry] = store.page(0, 10)
            assert entry.path == waiting.resolve()

            await pilot.press("f3")
            await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the History mode")
            history = app.screen
            assert isinstance(history, HistoryScreen)
            table = history.query_one("#history-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1, "the unsaved image in the list")
            table.focus()
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: bool(saved_images(app.config.outputs_dir)), "the saved image")
            [saved] = saved_images(app.config.outputs_dir)
            assert saved.suffix == ".webp" and saved.name.startswith("00001_")
            assert not waiting.exists()
            await wait_until(pilot, lambda: store.get(entry.id).path == saved.resolve(), "the entry to move")  # type: ignore[union-attr]
            assert read_metadata(saved).seed == entry.seed
            await wait_until(pilot, lambda: any("Saved" in n for n in notifications(messages, "information")), "ok")

            await pilot.press("f2")
            await pilot.press("ctrl+s")  # Generate's "save last image": this one is saved already
            await wait_until(
                pilot, lambda: any("is already saved" in n for n in notifications(messages, "warning")), "the refusal"
            )
            assert saved_images(app.config.outputs_dir) == [saved]


async def test_the_settings_form_refuses_a_pattern_that_leaves_the_outputs_folder() -> None:
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f7")
        await wait_until(pilot, lambda: bool(app.screen.query("#set-saving--name_pattern")), "the settings form")
        field = app.screen.query_one("#set-saving--name_pattern", Input)
        field.value = "../{counter}"
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        error = app.screen.query_one("#set-saving--name_pattern-error", Label)
        assert "starting with '.'" in str(error.render())
        assert not AppDirs.from_env().config_file.exists()

        field.value = "{date}/{provider}/{counter}_{seed}"
        app.screen.query_one("#set-saving--format", Select).value = "jpeg"
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
    saved = orjson.loads(AppDirs.from_env().config_file.read_bytes())
    assert saved["saving"]["name_pattern"] == "{date}/{provider}/{counter}_{seed}"
    assert saved["saving"]["format"] == "jpeg"
    assert saved["notify"] == {"bell": True, "desktop": "auto"}
