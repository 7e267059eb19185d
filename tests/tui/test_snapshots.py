"""SVG snapshots of every screen at 100×30: fixed folders, no clock, no cursor blink, half-cell images.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update` and review
`snapshot_report.html`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select
from unit.test_collected_vocabulary import write_sidecar

from peropix_tui.app import PeropixApp
from peropix_tui.core.collected_vocabulary import cache_path, update_cache
from peropix_tui.core.config import Config
from peropix_tui.core.paths import AppDirs
from peropix_tui.sandbox.civitai_dataset import ModelType
from peropix_tui.sandbox.civitai_faults import B2_PREFIX, CDN_PREFIX, Fault, FaultKind
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.screens.generate import GenerateScreen
from peropix_tui.widgets.download_table import DownloadTable
from peropix_tui.widgets.prompt_editor import PromptEditor
from peropix_tui.widgets.vibe_list import VibeList

FIXED = Path("/tmp/peropix-snapshots")
PICTURES = Path("/tmp/peropix-snapshot-pictures")
"""Images typed into path fields: their paths show on screen, so they too live at a fixed place."""
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
        stack = pilot.app.screen_stack
        while any(isinstance(s, GenerateScreen) and not s.side_mounted for s in stack):
            await pilot.pause(0.05)
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
    async def shown(pilot: Pilot[object]) -> None:
        await settled("f4")(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # the creators field has the focus: its cursor must not blink mid-capture

    assert snap_compare(app(), terminal_size=SIZE, run_before=shown)


def test_prompt_tools(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=settled("f6"))


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen are local times: show them in UTC whatever the machine's zone."""
    with monkeypatch.context() as patch:
        patch.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.usefixtures("utc")
def test_prompt_tools_vocabulary(snap_compare: Callable[..., bool]) -> None:
    """The Vocabulary tab over a small cache, written at a fixed time."""
    root = FIXED / "data" / "civitai"
    write_sidecar(root, "alice", "Night Style", 1, "1girl, (night sky:1.2), long_hair, smile")
    write_sidecar(root, "alice", "Night Style", 2, "1girl, night sky, city lights")
    write_sidecar(root, "bob", "Day Outfit", 3, "1girl, sundress, smile, <lora:day_outfit:0.8>")
    cache = cache_path(FIXED / "data")
    update_cache(cache, root)
    written = 1_700_000_000 * 10**9
    os.utime(cache, ns=(written, written))

    async def shown(pilot: Pilot[object]) -> None:
        await settled("f6", "ctrl+v")(pilot)
        # Reading the cache, then filtering it, are two workers one after the other.
        deadline = time.monotonic() + 20
        while pilot.app.screen.query_one("#vocab-table", DataTable).row_count < 6 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(app(), terminal_size=SIZE, run_before=shown)


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


@pytest.fixture
def pictures() -> Iterator[None]:
    shutil.rmtree(PICTURES, ignore_errors=True)
    PICTURES.mkdir(parents=True)
    Image.new("RGB", (96, 64), (30, 160, 90)).save(PICTURES / "mood.png")
    Image.new("RGB", (96, 64), (200, 40, 90)).save(PICTURES / "photo.png")
    yield
    shutil.rmtree(PICTURES, ignore_errors=True)


def test_image_inputs_characters(snap_compare: Callable[..., bool]) -> None:
    async def two_characters(pilot: Pilot[object]) -> None:
        await settled("ctrl+t")(pilot)
        screen = pilot.app.screen
        for prompt, position in (("1girl, red hair, smile", "B2"), ("1boy, black hair", "D2")):
            screen.query_one("#char-table").focus()
            await pilot.press("n")
            screen.query_one("#char-prompt", PromptEditor).text = prompt
            screen.query_one("#char-position", Select).value = position
            await pilot.pause(0.1)
        screen.query_one("#char-table").focus()
        await pilot.pause(0.3)

    assert snap_compare(app(), terminal_size=SIZE, run_before=two_characters)


@pytest.mark.usefixtures("pictures")
def test_image_inputs_vibes(snap_compare: Callable[..., bool]) -> None:
    async def one_vibe(pilot: Pilot[object]) -> None:
        await settled("ctrl+t", "f9")(pilot)
        field = pilot.app.screen.query_one("#vibe-path", Input)
        field.focus()
        field.value = str(PICTURES / "mood.png")
        await pilot.press("enter")
        vibes = pilot.app.screen.query_one(VibeList)
        while vibes.states is None:  # the file read, then its encoding looked up in the cache
            await pilot.pause(0.05)
        vibes.table.focus()
        await settled()(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=one_vibe)


@pytest.mark.usefixtures("pictures")
def test_use_image_file(snap_compare: Callable[..., bool]) -> None:
    async def chosen(pilot: Pilot[object]) -> None:
        await settled("ctrl+f")(pilot)
        field = pilot.app.screen.query_one("#use-path", Input)
        field.value = str(PICTURES / "photo.png")
        await pilot.press("enter")
        await settled()(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=chosen)


def test_downloads_after_a_sandbox_collection(snap_compare: Callable[..., bool]) -> None:
    """The Collect tab once a run has ended: rows, counters and phase hold no timing (rates show only mid-run)."""

    async def collected(pilot: Pilot[object]) -> None:
        app = pilot.app
        await pilot.pause(0.2)
        await pilot.press("f4")
        await pilot.pause(0.2)
        await pilot.press(*"tui_artist", "enter")
        while app.jobs.active_count or not app.jobs.jobs:
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await pilot.pause(0.4)
        for field in app.screen.query(Input):
            field.cursor_blink = False
        # The cursor follows the row it was first on, and which row that is depends on which download began
        # first: put it on the top row.
        app.screen.query_one(DownloadTable).move_cursor(row=0)
        await pilot.pause(0.1)

    with sandbox_session() as session:
        dataset = session.civitai_server.dataset
        artist = dataset.add_creator("tui_artist")
        night = dataset.add_version(dataset.add_model(artist, "Night Style", type=ModelType.LORA))
        dataset.add_file(night, size=200_000)
        dataset.add_image(night)
        lost = dataset.add_image(night)
        outfit = dataset.add_version(dataset.add_model(artist, "Day Outfit", type=ModelType.LOCON))
        dataset.add_file(outfit, size=120_000)
        dataset.add_image(outfit)
        lost_paths = frozenset({f"{CDN_PREFIX}{lost.uuid}/*", f"{B2_PREFIX}*{lost.uuid}*"})
        session.civitai_server.inject(Fault(FaultKind.STATUS, status=404, paths=lost_paths), times=None)
        config = Config.load(AppDirs.from_env())
        config.settings.civitai.request_spacing_s = 0.0
        app = PeropixApp(image_widget="halfcell", sandbox=session, config=config)
        assert snap_compare(app, terminal_size=SIZE, run_before=collected)
