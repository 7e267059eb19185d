"""Downloads (F4), Collect tab: collections run from the screen against the sandbox CivitAI server in this process.

Each test starts a sandbox session (the app is told about it as `--sandbox` does), adds a small creator to the
sandbox's dataset, injects the faults it needs, and drives the screen with keys: rows appear and move, the end
state matches the creator's download log, a fault is a failed row with its reason, cancelling keeps the log and
the partial file, starting again completes, and typing stays live while eight downloads stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import events
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Label

from peropix_tui.app import PeropixApp
from peropix_tui.civitai.events import FileProgress, FileQueued, FileStarted, ImageStarted, ItemFinished, item_key
from peropix_tui.core.config import Config
from peropix_tui.core.jobs import JobState
from peropix_tui.core.paths import AppDirs
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, ModelType, SandboxFile, SandboxImage
from peropix_tui.sandbox.civitai_faults import B2_PREFIX, CDN_PREFIX, Fault, FaultKind
from peropix_tui.sandbox.session import SandboxSession, civitai_root, sandbox_session
from peropix_tui.screens.downloads import COLLECT_KIND
from peropix_tui.widgets.download_table import KEEP_FINISHED, DownloadTable, RowState

SIZE = (100, 30)
MIB = 1 << 20
CREATOR = "tui_artist"


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.03)


@contextmanager
def sandbox_app(**civitai: Any) -> Iterator[tuple[SandboxSession, PeropixApp]]:
    """A sandbox session and an app that uses it, with no pause between metadata calls."""
    with sandbox_session() as session:
        config = Config.load(AppDirs.from_env())
        config.settings.civitai.request_spacing_s = 0.0
        for name, value in civitai.items():
            setattr(config.settings.civitai, name, value)
        yield session, PeropixApp(config=config, sandbox=session, image_widget="halfcell")


def library(app: PeropixApp) -> Path:
    return civitai_root(app.config)


def table(app: PeropixApp) -> DownloadTable:
    return app.screen.query_one(DownloadTable)


def cells(app: PeropixApp, key: str) -> dict[str, str]:
    downloads = table(app)
    row = downloads.get_row(key)
    return {str(column.key.value): str(cell) for column, cell in zip(downloads.ordered_columns, row, strict=True)}


def collection_jobs(app: PeropixApp) -> list[Any]:
    return [job for job in app.jobs.jobs if job.kind == COLLECT_KIND]


def finished(app: PeropixApp) -> bool:
    jobs = collection_jobs(app)
    return bool(jobs) and jobs[-1].state.terminal


def label(app: PeropixApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Label).render())


def block_image(session: SandboxSession, image: SandboxImage) -> None:
    """The CDN and the B2 origin both answer 404 for this image."""
    paths = frozenset({f"{CDN_PREFIX}{image.uuid}/*", f"{B2_PREFIX}*{image.uuid}*"})
    session.civitai_server.inject(Fault(FaultKind.STATUS, status=404, paths=paths), times=None)


def read_log(app: PeropixApp) -> dict[str, Any]:
    path = library(app) / "download_logs" / CREATOR / f"{CREATOR}_download_log.json"
    document: dict[str, Any] = json.loads(path.read_text())
    return document


async def start(pilot: Pilot[Any], creators: str = CREATOR) -> None:
    await pilot.press("f4")
    await pilot.pause(0.1)
    await pilot.press(*creators, "enter")


@dataclass
class Artist:
    big: SandboxFile
    early: SandboxFile
    shown: SandboxImage
    missing: SandboxImage


def add_artist(dataset: CivitaiDataset, *, big_size: int = 3 * MIB) -> Artist:
    creator = dataset.add_creator(CREATOR)
    night = dataset.add_model(creator, "Night Style", type=ModelType.LORA)
    v1 = dataset.add_version(night, trained_words=["nightstyle"])
    big = dataset.add_file(v1, size=big_size)
    shown = dataset.add_image(v1)
    missing = dataset.add_image(v1)
    outfit = dataset.add_model(creator, "Day Outfit", type=ModelType.LOCON)
    ahead = dataset.add_version(outfit, early_access_until=time.time() + 7200)
    early = dataset.add_file(ahead, size=64 * 1024)
    mix = dataset.add_model(creator, "Day Mix", type=ModelType.CHECKPOINT)  # not a wanted type: no rows
    dataset.add_file(dataset.add_version(mix), size=64 * 1024)
    return Artist(big, early, shown, missing)


async def test_a_collection_streams_into_the_table_and_ends_as_its_log_says() -> None:
    with sandbox_app() as (session, app):
        artist = add_artist(session.civitai_server.dataset)
        block_image(session, artist.missing)
        session.civitai_server.inject(Fault(FaultKind.SLOW, file_id=artist.big.id, rate=MIB), times=1)
        messages: list[Message] = []
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await start(pilot)
            big = item_key("model", artist.big.id)
            board = table(app).board

            def big_percent() -> int:
                row = board.rows.get(big)
                return row.percent or 0 if row is not None and row.state is RowState.DOWNLOADING else 0

            await wait_until(pilot, lambda: 0 < big_percent() < 100, "the big file part-way")
            first = big_percent()
            await wait_until(pilot, lambda: big_percent() > first or finished(app), "the big file's progress moving")
            assert cells(app, big)["state"] == "downloading" or finished(app)
            await wait_until(pilot, lambda: finished(app), "the collection to end")
            await pilot.pause(0.2)
            await app.workers.wait_for_complete()
            await pilot.pause(0.3)

            job = collection_jobs(app)[-1]
            assert job.state is JobState.DONE, job.failure
            assert cells(app, big) | {"speed": ""} == {
                "state": "done",
                "percent": "100%",
                "speed": "",
                "size": "3.1 MB",
                "kind": "model",
                "file": artist.big.name,
                "model": "Night Style",
                "creator": CREATOR,
            }
            missing = cells(app, item_key("image", artist.missing.id))
            assert (missing["state"], missing["kind"], missing["model"]) == ("failed: missing", "image", "Night Style")
            assert cells(app, item_key("image", artist.shown.id))["state"] == "done"
            early = cells(app, item_key("model", artist.early.id))
            assert early["state"].startswith("deferred to ") and early["model"] == "Day Outfit"
            assert table(app).row_count == 4  # the checkpoint is not a wanted type

            # The end state counts are the log's lists.
            log = read_log(app)
            assert {int(e["id"]) for e in log["success"]} == {artist.big.id, artist.shown.id}
            assert {int(e["id"]): e["reason"] for e in log["failed"]} == {
                artist.missing.id: "missing",
                artist.early.id: "early_access",
            }
            assert (board.logged_ok, board.logged_failed) == (len(log["success"]), len(log["failed"]))
            assert label(app, "#collect-counters").startswith("2 done · 1 failed · 1 deferred │ 3.1 MB fetched")
            assert label(app, "#collect-phase").startswith("finished: 2 downloaded, 0 already here, 1 failed")

            # Enter on the failed row tells its reason and the info the log keeps.
            downloads = table(app)
            downloads.focus()
            downloads.move_cursor(row=downloads.get_row_index(item_key("image", artist.missing.id)))
            await pilot.press("enter")
            await pilot.pause(0.1)
            [detail] = [m.notification.message for m in messages if isinstance(m, Notify)]
            assert detail.startswith(f"{artist.missing.id}: failed: missing\nimage of Night Style by {CREATOR}\n")
            assert "HTTP 404" in detail

            # The Logs tab shows the new log.
            await pilot.press("ctrl+l")
            await pilot.pause(0.1)
            creators = app.screen.query_one("#creators-table", DataTable)
            got = [[str(cell) for cell in creators.get_row_at(i)] for i in range(creators.row_count)]
            assert [row[:4] for row in got] == [[CREATOR, "1", "1", "2"]]
            assert got[0][5] == "early_access ×1, missing ×1"


async def test_cancel_keeps_the_log_and_the_part_and_starting_again_completes() -> None:
    with sandbox_app() as (session, app):
        dataset = session.civitai_server.dataset
        creator = dataset.add_creator(CREATOR)
        model = dataset.add_model(creator, "Night Style", type=ModelType.LORA)
        big = dataset.add_file(dataset.add_version(model), size=8 * MIB)
        session.civitai_server.inject(Fault(FaultKind.SLOW, file_id=big.id, rate=MIB), times=1)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            key = item_key("model", big.id)
            board = table(app).board
            await wait_until(pilot, lambda: key in board.rows and board.rows[key].done >= 2 * MIB, "2 MiB of the file")
            await pilot.press("f8")
            await wait_until(pilot, lambda: finished(app), "the cancelled job to end")
            await pilot.pause(0.3)
            first = collection_jobs(app)[-1]
            assert first.state is JobState.CANCELLED
            assert cells(app, key)["state"] == "stopped: .part kept"
            assert label(app, "#collect-phase").startswith("cancelled: the log is saved and partial files are kept")
            assert read_log(app)["models"]  # saved on the way out
            [part] = list(library(app).rglob("*.part"))
            kept = part.stat().st_size
            assert 2 * MIB <= kept < 8 * MIB
            assert part.read_bytes() == big.read(0, kept)

            # F5 with the same form resumes: the rest comes with a Range request, and the file is whole.
            session.civitai_server.clear_requests()
            await pilot.press("f5")
            await wait_until(pilot, lambda: collection_jobs(app)[-1] is not first and finished(app), "the rerun")
            await pilot.pause(0.3)
            assert collection_jobs(app)[-1].state is JobState.DONE
            assert cells(app, key)["state"] == "done"
            target = part.with_name(part.name.removesuffix(".part"))
            assert target.read_bytes() == big.read()
            assert not part.exists()
            [storage] = [r for r in session.civitai_server.requests if r.path.startswith("/storage/")]
            assert storage.headers["range"] == f"bytes={kept}-"
            assert {int(e["id"]) for e in read_log(app)["success"]} == {big.id}


async def test_typing_stays_live_while_eight_downloads_stream() -> None:
    with sandbox_app(download_workers=8) as (session, app):
        dataset = session.civitai_server.dataset
        creator = dataset.add_creator(CREATOR)
        files = []
        for number in range(8):
            model = dataset.add_model(creator, f"Style {number}", type=ModelType.LORA)
            files.append(dataset.add_file(dataset.add_version(model), size=4 * MIB))
        for sandbox_file in files:
            session.civitai_server.inject(Fault(FaultKind.SLOW, file_id=sandbox_file.id, rate=MIB), times=1)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            await pilot.pause(0.1)
            field = app.screen.query_one("#collect-creators", Input)
            assert app.focused is field
            await pilot.press("x", "backspace")  # the first keys pay for warming up
            began = time.monotonic()
            await pilot.press(*CREATOR)
            idle = (time.monotonic() - began) / len(CREATOR)
            await pilot.press("enter")
            board = table(app).board
            await wait_until(pilot, lambda: board.active(RowState.DOWNLOADING) == 8, "eight downloads")
            await wait_until(pilot, lambda: all(row.done > 0 for row in board.rows.values()), "bytes from all eight")
            typing = " still typing"
            began = time.monotonic()
            await pilot.press(*typing)
            busy = (time.monotonic() - began) / len(typing)
            assert field.value == f"{CREATOR}{typing}"
            assert board.active(RowState.DOWNLOADING) == 8  # the downloads were streaming all along
            assert busy < 4 * idle + 0.05, f"a key took {busy:.3f} s while downloading, {idle:.3f} s before"
            await pilot.press("f8")
            await wait_until(pilot, lambda: finished(app), "the cancelled job to end")


async def test_a_flood_of_events_is_one_redraw_and_a_short_table() -> None:
    app = PeropixApp(image_widget="halfcell")
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await pilot.press("f4")
        await pilot.pause(0.1)
        downloads = table(app)
        downloads.begin_run("test")
        await pilot.pause(0.2)
        messages.clear()
        # All posted without yielding to the loop, as a burst of collector events would be.
        downloads.post_event(FileQueued("file:1", "model", "big.safetensors", "Big", 10_000))
        downloads.post_event(FileStarted("file:1", "big.safetensors", 10_000))
        for done in range(1, 5001):
            downloads.post_event(FileProgress("file:1", done, 10_000))
        for ident in range(10_000):
            key = item_key("image", ident)
            downloads.post_event(FileQueued(key, "image", str(ident), "M"))
            downloads.post_event(ImageStarted(key))
            downloads.post_event(ItemFinished("image", ident, f"{ident}.png", "done", size=10, model="M"))
        for ident in range(10_000, 20_000):  # already on disk: counted, never a row
            downloads.post_event(ItemFinished("image", ident, f"{ident}.png", "verified", size=10, model="M"))
        await pilot.pause(0.3)
        assert len([m for m in messages if isinstance(m, DownloadTable.Changed)]) == 1
        assert KEEP_FINISHED + 1 <= downloads.row_count <= 2 * KEEP_FINISHED + 1
        assert cells(app, "file:1")["percent"] == "50%"
        assert "image:9999" in downloads.rows and "image:9000" not in downloads.rows
        assert "image:19999" not in downloads.rows
        counters = label(app, "#collect-counters")
        assert counters.startswith("10000 done · 10000 already here · 1 downloading, 0 queued │ 105.0 kB fetched")
        assert f"{10_000 - downloads.row_count + 1} older rows hidden" in counters


async def test_the_form_refuses_what_it_cannot_collect() -> None:
    app = PeropixApp(image_widget="halfcell")
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await pilot.press("f4")
        await pilot.pause(0.1)

        async def errors_after(*keys: str) -> list[str]:
            messages.clear()
            await pilot.press(*keys)
            await pilot.pause(0.1)
            return [m.notification.message for m in messages if isinstance(m, Notify)]

        assert await errors_after("f5") == ["no creators: give CivitAI profile URLs or usernames, or a batch file path"]
        field = app.screen.query_one("#collect-creators", Input)
        field.post_message(events.Paste("alice\nhttps://civitai.red/user/bob\n  carol\n"))
        await pilot.pause(0.1)
        assert field.value == "alice https://civitai.red/user/bob carol"  # every pasted line, not the first only
        field.value = "https://civitai.com/models/123"
        [error] = await errors_after("f5")
        assert "is a model page" in error
        field.value = CREATOR
        app.screen.query_one("#collect-types", Input).value = "LORA Lora2"
        [error] = await errors_after("f5")
        assert error.startswith("Model types: unknown model type Lora2; known: Checkpoint")
        app.screen.query_one("#collect-types", Input).value = "lora, locon"
        app.screen.query_one("#collect-models", Checkbox).value = False
        app.screen.query_one("#collect-images", Checkbox).value = False
        assert await errors_after("f5") == ["Models and Images are both off: that leaves nothing to collect"]
        assert await errors_after("f8") == ["No collection is running"]
        assert not collection_jobs(app)


async def test_a_batch_file_is_collected_and_its_bad_lines_are_warnings(tmp_path: Path) -> None:
    batch = tmp_path / "creators.txt"
    batch.write_text(f"# tonight\n{CREATOR}\nhttps://civitai.com/models/5\n", encoding="utf-8")
    with sandbox_app() as (session, app):
        dataset = session.civitai_server.dataset
        creator = dataset.add_creator(CREATOR)
        version = dataset.add_version(dataset.add_model(creator, "Night Style", type=ModelType.LORA))
        sandbox_file = dataset.add_file(version, size=64 * 1024)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot, f"{tmp_path}/nowhere.txt")
            await wait_until(pilot, lambda: finished(app), "the job to fail")
            await pilot.pause(0.3)
            assert collection_jobs(app)[-1].state is JobState.FAILED
            assert label(app, "#collect-phase") == f"failed: batch file {tmp_path}/nowhere.txt does not exist"

            app.screen.query_one("#collect-creators", Input).value = str(batch)
            await pilot.press("f5")
            await wait_until(pilot, lambda: len(collection_jobs(app)) == 2 and finished(app), "the batch")
            await pilot.pause(0.3)
            assert collection_jobs(app)[-1].state is JobState.DONE
            assert cells(app, item_key("model", sandbox_file.id))["state"] == "done"
            notice = label(app, "#collect-notice")
            assert notice.startswith(f"1 warning; latest: {batch}: line 3: ")
            assert notice.endswith("is a model page; use https://civitai.com/user/<name> or just the name (skipped)")
