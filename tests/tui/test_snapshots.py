"""SVG snapshots of every screen at 100×30: fixed folders, no clock, no cursor blink, half-cell images.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update` and review
`snapshot_report.html`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from peropix_tui.app import PeropixApp
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.widgets.prompt_editor import PromptEditor

FIXED = Path("/tmp/peropix-snapshots")
SIZE = (100, 30)


@pytest.fixture(autouse=True)
def fixed_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Paths appear on screen (empty states, summaries), so they must not depend on pytest's tmp folder.
    shutil.rmtree(FIXED, ignore_errors=True)
    monkeypatch.setenv("PEROPIX_CONFIG_DIR", str(FIXED / "config"))
    monkeypatch.setenv("PEROPIX_DATA_DIR", str(FIXED / "data"))
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    yield
    shutil.rmtree(FIXED, ignore_errors=True)


def settled(*keys: str) -> Callable[[Pilot[object]], object]:
    async def run_before(pilot: Pilot[object]) -> None:
        await pilot.pause(0.2)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.3)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.4)
        await pilot.app.workers.wait_for_complete()

    return run_before


def app() -> PeropixApp:
    return PeropixApp(image_widget="halfcell")


def test_generate(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled())


def test_generate_with_prompt(snap_compare: Callable[..., bool]) -> None:
    async def typed(pilot: Pilot[object]) -> None:
        await pilot.pause(0.2)
        await pilot.app.workers.wait_for_complete()  # the tag list is loaded, so completion is deterministic
        await pilot.press(*"1girl, {{silver hair}}, 1.5::night::, <lora:detail:0.8>, [blush")
        await pilot.pause(0.5)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.3)

    assert snap_compare(app(), terminal_size=SIZE, run_before=typed)


def test_history_empty(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled("f3"))


def test_downloads(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled("f4"))


def test_prompt_tools(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled("f6"))


def test_settings(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled("f7"))


def test_help(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled("f7", "f1"))


def test_generate_small_terminal(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=(80, 24), run_before=settled())


def test_welcome(snap_compare: Callable[..., bool]) -> None:
    async def shown(pilot: Pilot[object]) -> None:
        await settled()(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # the token field has the focus: its cursor must not blink mid-capture

    first_start = PeropixApp(image_widget="halfcell", welcome=True)
    assert snap_compare(first_start, terminal_size=SIZE, run_before=shown)


def test_generate_after_a_sandbox_image(snap_compare: Callable[..., bool]) -> None:
    async def generated(pilot: Pilot[object]) -> None:
        app = pilot.app
        assert isinstance(app, PeropixApp)
        await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        app.screen.query_one("#prompt-editor", PromptEditor).text = "1girl, silver hair, night sky"
        app.screen.query_one("#param-seed", Input).value = "1234"  # the sandbox draws the same image for a seed
        await pilot.press("f5")
        while app.jobs.active_count or not app.jobs.jobs:
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await pilot.pause(0.4)

    with sandbox_session() as session:
        app = PeropixApp(image_widget="halfcell", sandbox=session)
        assert snap_compare(app, terminal_size=SIZE, run_before=generated)
