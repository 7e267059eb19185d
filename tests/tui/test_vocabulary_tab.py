"""Prompt tools (F6), Vocabulary tab: the collected vocabulary built from a real collection on disk, updated from
the tab, after a collection on Downloads and from another terminal, and the Generate editors following it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import DataTable, Label
from unit.test_collected_vocabulary import write_sidecar

from peropix_tui.app import PeropixApp
from peropix_tui.core.collected_vocabulary import (
    CollectedVocabulary,
    NoCollectionError,
    UpdateReport,
    cache_path,
    cache_stamp,
    update_cache,
)
from peropix_tui.core.config import Config
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.vocabulary import Candidate
from peropix_tui.sandbox.session import civitai_root
from peropix_tui.screens.generate import GenerateScreen
from peropix_tui.screens.prompts import PromptToolsScreen
from peropix_tui.widgets.prompt_editor import PromptEditor
from peropix_tui.widgets.vocabulary_table import SHOWN_LIMIT, VocabularyFilter, matching

from .helpers import wait_until
from .test_downloads_live import collection_jobs, finished, sandbox_app

SIZE = (100, 30)


def collection() -> Path:
    """The collection root the app reads: the default under the test's data dir."""
    return civitai_root(Config.load(AppDirs.from_env()))


def vocabulary_cache() -> Path:
    return cache_path(AppDirs.from_env().data_dir)


def seed_collection(root: Path) -> None:
    write_sidecar(root, "alice", "Numahana", 1, "1girl, (zyxqorb style:1.2), smile, <lora:zz:1>")
    write_sidecar(root, "alice", "Numahana", 2, "1girl, zyxqorb style, Long_Hair, score_9")
    write_sidecar(root, "bob", "Other", 3, "1girl, solo")


def prompts(app: PeropixApp) -> PromptToolsScreen:
    assert isinstance(app.screen, PromptToolsScreen)
    return app.screen


def label(app: PeropixApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Label).render())


def table_rows(app: PeropixApp) -> list[tuple[str, str]]:
    """(tag, images) of every row, as shown."""
    table = app.screen.query_one("#vocab-table", DataTable)
    return [(str(row[1]), str(row[0])) for row in (table.get_row_at(i) for i in range(table.row_count))]


def notes(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.notification.message, m.notification.severity) for m in messages if isinstance(m, Notify)]


def collected(app: PeropixApp, generate: GenerateScreen, prefix: str) -> list[Candidate]:
    """What the Generate screen's prompt editor offers for `prefix` from the collected vocabulary."""
    editor = generate.query_one("#prompt-editor", PromptEditor)
    return [c for c in editor.vocabulary.complete(prefix, kind="tag") if c.detail.startswith("collected")]


async def settle(pilot: Pilot[Any]) -> None:
    """Let the workers finish and their messages be handled, three times over: a read or an update posts a view,
    whose handler starts the filter worker, whose rows are shown by a third handler."""
    for _ in range(3):
        await pilot.pause(0.05)
        await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.05)


async def open_vocabulary(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await pilot.pause(0.1)
    await pilot.press("f6")
    await wait_until(pilot, lambda: isinstance(app.screen, PromptToolsScreen), "Prompt tools")
    await pilot.press("ctrl+v")
    await wait_until(pilot, lambda: not label(app, "#vocab-summary").startswith("Reading"), "the cache read")
    await settle(pilot)


async def update(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await pilot.press("u")
    await wait_until(pilot, lambda: not app.screen.query_one("#vocab-update-row").display, "the update")
    await settle(pilot)


async def filter_by(pilot: Pilot[Any], text: str) -> None:
    pilot.app.screen.query_one(VocabularyFilter).value = text
    await settle(pilot)


async def test_update_lists_counts_filters_and_feeds_the_generate_editors() -> None:
    root = collection()
    seed_collection(root)
    app = PeropixApp(image_widget="halfcell")
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        generate = app.screen
        assert isinstance(generate, GenerateScreen)
        await open_vocabulary(pilot)
        assert label(app, "#vocab-summary") == (
            f"No collected vocabulary yet: press u to read the prompts of the collection at {root}."
        )
        assert table_rows(app) == []
        assert app.focused is app.screen.query_one("#vocab-table")

        await update(pilot)
        # Weights, emphasis and LoRA tags are not words; the word filter dropped score_9 when the sidecar was written.
        assert table_rows(app) == [
            ("1girl", "3"),
            ("zyxqorb style", "2"),
            ("long hair", "1"),
            ("smile", "1"),
            ("solo", "1"),
        ]
        report = f"{root}: 3 new, 0 changed, 0 removed, 0 skipped sidecars; 5 tags from 3 images"
        assert label(app, "#vocab-status") == report
        assert (report, "information") in notes(messages)
        summary = label(app, "#vocab-summary")
        assert summary.startswith(f"5 tags from 3 images · built from {root.resolve()} · last written 20")
        assert CollectedVocabulary.load(vocabulary_cache()).count("zyxqorb style") == 2

        # The Generate screen, in the background, reloads its editors' vocabulary on the app's message.
        await wait_until(pilot, lambda: bool(collected(app, generate, "zyxq")), "the editors' reload")
        [candidate] = collected(app, generate, "zyxq")
        assert (candidate.text, candidate.detail) == ("zyxqorb style", "collected · used in 2 images")

        write_sidecar(root, "carol", "Third", 4, "zyxqorb style, night sky")
        await update(pilot)
        assert label(app, "#vocab-status").startswith(f"{root}: 1 new, 0 changed, 0 removed, 0 skipped sidecars")
        assert table_rows(app)[:2] == [("1girl", "3"), ("zyxqorb style", "3")]
        assert ("night sky", "1") in table_rows(app)
        await wait_until(
            pilot,
            lambda: [c.detail for c in collected(app, generate, "zyxq")] == ["collected · used in 3 images"],
            "the editors' second reload",
        )

        # `/` goes to the filter; any spelling narrows the rows to tags containing it.
        await pilot.press("slash")
        field = app.screen.query_one(VocabularyFilter)
        assert app.focused is field
        await pilot.press(*"SKY")
        await settle(pilot)
        assert table_rows(app) == [("night sky", "1")]
        assert field.border_subtitle == "1 of 6 tags match"
        await filter_by(pilot, "Long_H")
        assert table_rows(app) == [("long hair", "1")]
        await filter_by(pilot, "qqqq")
        assert table_rows(app) == []
        assert field.border_subtitle == "0 of 6 tags match"
        await filter_by(pilot, "")
        assert len(table_rows(app)) == 6 and field.border_subtitle == "6 tags"
        await pilot.press("enter")
        assert app.focused is app.screen.query_one("#vocab-table")
        assert not [text for text, severity in notes(messages) if severity == "error"]


async def test_underscore_style_and_copy() -> None:
    config = Config.load(AppDirs.from_env())
    config.set("ui.underscores", "underscores")
    config.save()
    seed_collection(collection())
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await open_vocabulary(pilot)
        await update(pilot)
        assert [tag for tag, _ in table_rows(app)] == ["1girl", "zyxqorb_style", "long_hair", "smile", "solo"]
        await pilot.press("down", "c")
        assert app.clipboard == "zyxqorb_style"
        await pilot.press("slash", *"long hair")
        await settle(pilot)
        assert table_rows(app) == [("long_hair", "1")]


async def test_an_update_from_another_terminal_is_seen_on_resume() -> None:
    root = collection()
    seed_collection(root)
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        generate = app.screen
        assert isinstance(generate, GenerateScreen)
        await open_vocabulary(pilot)
        await update(pilot)
        await wait_until(pilot, lambda: bool(collected(app, generate, "zyxq")), "the editors' reload")
        assert not collected(app, generate, "wqpv")

        # What `peropix vocab update` does, in another process: the app hears nothing of it.
        write_sidecar(root, "dave", "Fourth", 5, "wqpvx ribbon")
        outside = CollectedVocabulary.load(vocabulary_cache())
        outside.update(root)
        outside.save()

        await pilot.press("f2")
        await wait_until(pilot, lambda: bool(collected(app, generate, "wqpv")), "the reload on resume")
        await pilot.press("f6")
        await wait_until(pilot, lambda: ("wqpvx ribbon", "1") in table_rows(app), "the tab's reload on resume")
        assert label(app, "#vocab-summary").startswith("6 tags from 4 images")


async def test_no_collection_yet_and_errors_are_one_line() -> None:
    root = collection()
    app = PeropixApp(image_widget="halfcell")
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await open_vocabulary(pilot)
        assert label(app, "#vocab-summary") == (
            f"No collected vocabulary yet, and no collection at {root} yet — collect with F4."
        )
        await update(pilot)
        missing = f"No collection at {root} yet — collect with F4"
        assert label(app, "#vocab-status") == missing
        assert notes(messages)[-1] == (missing, "warning")

        # A cache that cannot be written: its folder is a file.
        seed_collection(root)
        cache = vocabulary_cache()
        cache.parent.parent.mkdir(parents=True, exist_ok=True)
        cache.parent.write_text("not a folder")
        await update(pilot)
        error, severity = notes(messages)[-1]
        assert severity == "error" and error.startswith(f"cannot write {cache}")
        assert "\n" not in error
        assert label(app, "#vocab-status") == error
        assert table_rows(app) == []

        # A damaged cache says so, and an update rebuilds it.
        cache.parent.unlink()
        cache.parent.mkdir()
        cache.write_bytes(b'{"format": 1, "root": ')
        await pilot.press("f2")
        await pilot.press("f6")
        await wait_until(pilot, lambda: label(app, "#vocab-summary").startswith("The cache is damaged"), "the damage")
        await update(pilot)
        assert label(app, "#vocab-summary").startswith("5 tags from 3 images")
        assert [row[0] for row in table_rows(app)][:2] == ["1girl", "zyxqorb style"]


async def test_a_collection_on_downloads_updates_the_vocabulary() -> None:
    with sandbox_app() as (session, app):
        dataset = session.civitai_server.dataset
        creator = dataset.add_creator("vocab_artist")
        version = dataset.add_version(dataset.add_model(creator, "Hat Style"))
        dataset.add_image(version, meta={"prompt": "1girl, (qzvwx hat:1.1), solo"})
        dataset.add_image(version, meta={"prompt": "qzvwx hat, night"})
        async with app.run_test(size=SIZE) as pilot:
            generate = app.screen
            assert isinstance(generate, GenerateScreen)
            await pilot.pause(0.1)
            await pilot.press("f4")
            await pilot.pause(0.1)
            await pilot.press(*"vocab_artist", "enter")
            await wait_until(pilot, lambda: finished(app), "the collection", limit=60)
            assert collection_jobs(app)[-1].result is not None
            await wait_until(pilot, lambda: bool(collected(app, generate, "qzvw")), "the editors' reload")
            [candidate] = collected(app, generate, "qzvw")
            assert (candidate.text, candidate.detail) == ("qzvwx hat", "collected · used in 2 images")
            cached = CollectedVocabulary.load(vocabulary_cache())
            assert cached.images == 2 and cached.count("night") == 1
            assert cached.root == str(civitai_root(app.config).resolve())


def test_matching_counts_every_match_and_keeps_the_order() -> None:
    rows = [(f"tag {i:05d}", 100_000 - i) for i in range(100_000)]
    shown, total = matching(rows, "TAG_0")
    assert total == 10_000 and len(shown) == SHOWN_LIMIT
    assert shown[0] == ("tag 00000", 100_000) and shown == rows[:SHOWN_LIMIT]
    assert matching(rows, "99999") == ([("tag 99999", 1)], 1)
    assert matching(rows, "  ") == (rows[:SHOWN_LIMIT], 100_000)
    assert matching(rows, "zzz") == ([], 0)


async def test_an_unreadable_collection_is_an_error_line(tmp_path: Path) -> None:
    root = tmp_path / ("x" * 300)  # a name no file system takes: looking at it fails, as an unreadable folder does
    config = Config.load(AppDirs.from_env())
    config.set("paths.civitai_root", str(root))
    config.save()
    app = PeropixApp(image_widget="halfcell")
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await open_vocabulary(pilot)
        await update(pilot)
        error, severity = notes(messages)[-1]
        assert severity == "error"
        assert error.startswith(f"{root}: cannot read the collection: ") and "\n" not in error
        assert label(app, "#vocab-status") == error


def test_report_lines_and_the_shared_update(tmp_path: Path) -> None:
    report = UpdateReport(added=1, changed=2, removed=3, skipped=4)
    assert report.summary() == "1 new, 2 changed, 3 removed, 4 skipped sidecars"
    assert UpdateReport(0, 0, 0, 0, unreadable_folders=2).summary() == (
        "0 new, 0 changed, 0 removed, 0 skipped sidecars, 2 folders could not be read (see the log)"
    )
    cache = tmp_path / "cache" / "collected.json"
    assert cache_stamp(cache) is None
    with pytest.raises(NoCollectionError, match="does not exist"):
        update_cache(cache, tmp_path / "nothing")
    assert cache_stamp(cache) is None
    root = tmp_path / "civitai"
    seed_collection(root)
    vocabulary, first = update_cache(cache, root)
    assert (first.added, vocabulary.summary()) == (3, "5 tags from 3 images")
    stamp = cache_stamp(cache)
    assert stamp is not None and stamp[1] == cache.stat().st_size
    _, again = update_cache(cache, root)
    assert not again.touched


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_an_unlistable_creator_folder_is_kept_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "civitai"
    seed_collection(root)
    cache = tmp_path / "collected.json"
    update_cache(cache, root)
    alice = root / "Users" / "alice"
    alice.chmod(0)
    try:
        vocabulary, report = update_cache(cache, root)
    finally:
        alice.chmod(0o755)
    assert (report.removed, report.unreadable_folders) == (0, 1)
    assert "1 folder could not be read" in report.summary()
    assert vocabulary.count("zyxqorb style") == 2


async def test_a_large_vocabulary_lists_only_the_most_used() -> None:
    root = collection()
    # 450 wide tags (150 of them in both images) and 200 others: 650 in all, more than the table holds.
    write_sidecar(root, "alice", "Many", 1, ", ".join(f"wide tag {i:03d}" for i in range(300)))
    write_sidecar(root, "alice", "Many", 2, ", ".join(f"wide tag {i:03d}" for i in range(150, 450)))
    write_sidecar(root, "alice", "Many", 3, ", ".join(f"other tag {i:03d}" for i in range(200)))
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await open_vocabulary(pilot)
        await update(pilot)
        rows = table_rows(app)
        assert len(rows) == SHOWN_LIMIT
        assert rows[:150] == [(f"wide tag {i:03d}", "2") for i in range(150, 300)]  # used twice: first
        field = app.screen.query_one(VocabularyFilter)
        assert field.border_subtitle == f"650 tags · the {SHOWN_LIMIT} most used shown"
        await filter_by(pilot, "wide")
        assert field.border_subtitle == "450 of 650 tags match"
        assert len(table_rows(app)) == 450
