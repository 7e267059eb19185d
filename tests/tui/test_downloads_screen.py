"""Downloads (F4), Logs tab: creators from the download logs on disk, and the failures of the selected one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import DataTable, Label

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.paths import AppDirs
from peropix_tui.screens.downloads import FailureTable


def civitai_root() -> Path:
    return Config.load(AppDirs.from_env()).civitai_root


def write_log(username: str, document: Any, mtime: float) -> Path:
    path = civitai_root() / "download_logs" / username / f"{username}_download_log.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    os.utime(path, (mtime, mtime))
    return path


GGRUE = {
    "success": [
        {"id": 469281, "type": "lora", "path": "/lib/Users/Ggrue/CGM/cgm.safetensors", "size": 228456499},
        {"id": 556208, "type": "lora", "path": "/lib/Users/Ggrue/CGM/cgm_v2.safetensors", "size": 228456499},
        {"id": 76353065, "type": "image", "path": "/lib/Users/Ggrue/CGM/76353065.png", "size": 1874432},
    ],
    "failed": [
        {"id": 469282, "type": "lora", "reason": "http_401", "info": "requires login"},
        {"id": 76353070, "type": "image", "reason": "no_meta", "info": {"status": 404}},
        {"id": 76353071, "type": "image", "reason": "no_meta", "info": "[red]not markup[/red]"},
    ],
    "schema_note": "keys the reader does not know are ignored",
}


async def settle(pilot: Pilot[int]) -> None:
    await pilot.pause(0.1)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


def rows(table: DataTable[object]) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def label_text(app: PeropixApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Label).render())


async def test_creators_newest_first_with_counts_and_broken_logs() -> None:
    write_log("Ggrue", GGRUE, mtime=2_000_000_000)
    write_log("quiet", {"success": [{"id": 1, "type": "image"}], "failed": []}, mtime=1_900_000_000)
    write_log("mangled", "{ this is not json", mtime=1_950_000_000)
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        await pilot.press("f4", "ctrl+l")
        await settle(pilot)
        table = app.screen.query_one("#creators-table", DataTable)
        got = rows(table)
        assert [row[0] for row in got] == ["Ggrue", "mangled", "quiet"]
        assert got[0][1:4] == ["2", "1", "3"]
        assert got[0][5] == "no_meta ×2, http_401 ×1"
        assert got[1][1:4] == ["—", "—", "—"]
        assert got[1][5].startswith("UNREADABLE: not valid JSON (")
        assert got[2][1:4] == ["0", "1", "0"]
        assert got[2][5] == "—"
        status = label_text(app, "#downloads-status")
        assert "3 creators" in status and "1 log(s) unreadable" in status

        # the first creator's failures are shown below, markup-looking text kept as it is
        failures = app.screen.query_one("#failures-table", DataTable)
        assert rows(failures) == [
            ["469282", "lora", "http_401", "requires login"],
            ["76353070", "image", "no_meta", '{"status":404}'],
            ["76353071", "image", "no_meta", "[red]not markup[/red]"],
        ]
        assert label_text(app, "#failures-title").startswith("Ggrue: 3 failures, from ")

        # enter opens the detail (focus moves to it); escape comes back
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.focused, FailureTable)
        await pilot.press("escape")
        await settle(pilot)
        assert app.focused is table

        await pilot.press("down")
        await settle(pilot)
        assert failures.row_count == 0
        assert "the log could not be read" in label_text(app, "#failures-title")

        await pilot.press("down")
        await settle(pilot)
        assert label_text(app, "#failures-title").startswith("quiet: no failures logged")


async def test_refresh_picks_up_new_logs_and_keeps_the_selection() -> None:
    write_log("first", GGRUE, mtime=1_000_000_000)
    app = PeropixApp()
    messages: list[Message] = []
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await pilot.pause(0.1)
        await pilot.press("f4", "ctrl+l")
        await settle(pilot)
        table = app.screen.query_one("#creators-table", DataTable)
        assert [row[0] for row in rows(table)] == ["first"]
        write_log("second", {"failed": [{"id": 5, "type": "image", "reason": "http_404"}]}, mtime=1_500_000_000)
        await pilot.press("r")
        await settle(pilot)
        assert [row[0] for row in rows(table)] == ["second", "first"]
        table.move_cursor(row=1)
        await settle(pilot)
        write_log("third", {"success": []}, mtime=1_600_000_000)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert [row[0] for row in rows(table)] == ["third", "second", "first"]
        assert rows(table)[table.cursor_row][0] == "first"  # still on the creator that was selected
        assert label_text(app, "#failures-title").startswith("first: 3 failures")

        # a creator with nothing failed: enter says so instead of opening an empty table
        table.move_cursor(row=0)
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert any(
            isinstance(m, Notify) and "nothing failed for this creator" in m.notification.message for m in messages
        )
        assert app.focused is table


async def test_empty_state_explains_where_logs_are_read() -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        await pilot.press("f4", "ctrl+l")
        await settle(pilot)
        assert app.screen.query_one("#creators-table", DataTable).row_count == 0
        status = label_text(app, "#downloads-status")
        assert status.startswith(f"No download logs yet in {civitai_root() / 'download_logs'}.")
        assert "paths.civitai_root in Settings (F7)" in status
