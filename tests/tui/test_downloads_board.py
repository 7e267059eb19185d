"""The download board (the live table's data): how collector events fold into rows, counters and rates, and
how the rows kept stay bounded. Plain objects with a fake clock, no app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.civitai.events import (
    VERIFIED,
    CreatorStarted,
    FileProgress,
    FileQueued,
    FileStarted,
    ImageStarted,
    ItemFinished,
    Notice,
    Phase,
    item_key,
)
from peropix_tui.widgets.download_table import (
    LOGGED_OK,
    SETTLED_STATES,
    DownloadBoard,
    RateMeter,
    RowState,
    counters_text,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_meter_reads_a_steady_rate_and_falls_to_zero_when_bytes_stop() -> None:
    meter = RateMeter(window_s=3.0)
    assert meter.rate(0.0) is None
    for tenth in range(51):  # 5 s at 1 MB/s, one sample every 0.1 s
        meter.add(tenth / 10, tenth * 100_000)
    rate = meter.rate(5.0)
    assert rate is not None and 0.9e6 <= rate <= 1.1e6
    later = meter.rate(5.2)
    assert later is not None and later < rate  # nothing came for 0.2 s
    assert meter.rate(20.0) == 0  # the window holds only the last sample now


def test_a_model_file_from_queue_to_done_with_bytes_and_speed() -> None:
    clock = Clock()
    board = DownloadBoard(clock=clock)
    board.start("starting")
    board.apply(CreatorStarted("alice", "https://civitai.com"))
    key = item_key("model", 7)
    board.apply(FileQueued(key, "model", "style.safetensors", "Alice Style", 4_000_000))
    row = board.rows[key]
    assert (row.state, row.creator, row.model, row.percent) == (RowState.QUEUED, "alice", "Alice Style", None)
    board.apply(FileStarted(key, "style.safetensors", 4_000_000))
    for second in range(4):
        clock.now += 1
        board.apply(FileProgress(key, (second + 1) * 900_000, 4_000_000))
    assert row.state is RowState.DOWNLOADING and row.percent == 90
    speed = board.row_speed(row)
    assert speed is not None and 850_000 <= speed <= 950_000
    assert board.fetched == 3_600_000
    board.apply(ItemFinished("model", 7, "style.safetensors", "done", size=4_000_000, key=key, model="Alice Style"))
    assert (row.state, row.percent, row.size, row.meter) == (RowState.DONE, 100, 4_000_000, None)
    assert board.fetched == 4_000_000
    assert board.counts == {RowState.DONE: 1}
    assert counters_text(board).startswith("1 done │ 4.0 MB fetched · ")


def test_the_first_report_of_a_resumed_file_is_not_speed() -> None:
    clock = Clock()
    board = DownloadBoard(clock=clock)
    key = item_key("model", 1)
    board.apply(FileStarted(key, "big.safetensors", 10_000_000))
    board.apply(FileProgress(key, 8_000_000, 10_000_000))  # 8 MB were already in the .part
    clock.now += 1
    board.apply(FileProgress(key, 8_500_000, 10_000_000))
    assert board.fetched == 8_500_000
    speed = board.row_speed(board.rows[key])
    assert speed is not None and speed <= 600_000
    rate = board.rate()
    assert rate is not None and rate <= 600_000


def test_images_problems_and_deadlines_read_as_the_log_will() -> None:
    board = DownloadBoard()
    board.start("starting")
    image = item_key("image", 55)
    board.apply(FileQueued(image, "image", "55", "Alice Style"))
    board.apply(ImageStarted(image))
    assert board.rows[image].state is RowState.DOWNLOADING
    board.apply(ItemFinished("image", 55, "55", "failed", "missing", "image 55: HTTP 404", model="Alice Style"))
    failed = board.rows[image]
    assert (failed.state_text(), failed.info) == ("failed: missing", "image 55: HTTP 404")
    deadline = datetime(2031, 5, 2, 12, 30, tzinfo=UTC)
    board.apply(ItemFinished("model", 9, "early.safetensors", "deferred", "early_access", retry_after=deadline))
    local = deadline.astimezone()
    assert board.rows[item_key("model", 9)].state_text() == f"deferred to {local:%m-%d %H:%M}"
    board.apply(ItemFinished("model", 10, "gone.safetensors", "skipped_permanent", "archived"))
    board.apply(ItemFinished("model", 11, "odd.safetensors", "hash_mismatch", "hash_mismatch", size=10))
    board.apply(ItemFinished("image", 12, "12.png", VERIFIED, size=5))
    board.apply(ItemFinished("image", 13, "13", "weird_status"))
    assert board.rows[item_key("image", 13)].state_text() == "failed: weird_status"
    assert (board.logged_ok, board.logged_failed) == (1, 5)
    counters = counters_text(board)
    assert counters.startswith("0 done · 1 already here · 2 failed · 1 hash mismatch · 1 skipped · 1 deferred")


def test_the_phase_follows_the_run_and_warnings_are_kept() -> None:
    board = DownloadBoard()
    board.start("starting: alice")
    assert board.phase == "starting: alice" and board.running
    board.apply(Phase("checking the CivitAI API key"))
    assert board.phase == "checking the CivitAI API key"
    board.apply(Notice("API key accepted for me"))
    assert board.phase == "API key accepted for me" and not board.notices
    board.apply(CreatorStarted("alice", "https://civitai.com"))
    assert board.phase == "alice: listing models on https://civitai.com"
    board.apply(Notice("alice: no LORA models found", "warning"))
    assert [n.message for n in board.notices] == ["alice: no LORA models found"] and board.warnings == 1


def test_ending_a_run_stops_what_was_active_and_a_new_run_starts_empty() -> None:
    board = DownloadBoard()
    board.start("starting")
    part, waiting, image = item_key("model", 1), item_key("model", 2), item_key("image", 3)
    board.apply(FileQueued(part, "model", "a.safetensors", "A", 100))
    board.apply(FileStarted(part, "a.safetensors", 100))
    board.apply(FileProgress(part, 40, 100))
    board.apply(FileQueued(waiting, "model", "b.safetensors", "B", 100))
    board.apply(FileQueued(image, "image", "3", "A"))
    board.apply(ImageStarted(image))
    board.finish("cancelled")
    assert not board.running and board.phase == "cancelled"
    states = {key: board.rows[key].state_text() for key in (part, waiting, image)}
    assert states == {part: "stopped: .part kept", waiting: "stopped: not fetched", image: "stopped: not fetched"}
    assert not board.counts  # nothing stopped is counted as settled
    board.start("again")
    assert not board.rows and board.fetched == 0 and board.phase == "again"


def test_changes_come_in_the_order_items_first_changed() -> None:
    board = DownloadBoard()
    keys = [item_key("image", ident) for ident in (907, 13, 450, 2, 77, 31)]
    for key in keys:
        board.apply(FileQueued(key, "image", key, "M"))
    board.apply(ImageStarted(keys[3]))
    assert [row.key for row in board.take_changes()[0]] == keys  # so the table's order does not hang on hashing


def test_take_changes_hands_each_change_once() -> None:
    board = DownloadBoard(keep_finished=1)
    board.apply(ItemFinished("image", 1, "1.png", "done", size=1))
    changed, removed = board.take_changes()
    assert [row.key for row in changed] == ["image:1"] and removed == set()
    assert board.take_changes() == ([], set())
    board.apply(ItemFinished("image", 2, "2.png", "done", size=1))
    assert [row.key for row in board.take_changes()[0]] == ["image:2"]
    board.apply(ItemFinished("image", 3, "3.png", "done", size=1))  # past twice the limit: cut back to it
    changed, removed = board.take_changes()
    assert [row.key for row in changed] == ["image:3"] and removed == {"image:1", "image:2"}
    assert list(board.rows) == ["image:3"] and board.dropped == 2
    board.apply(FileStarted("file:5", "x", 10))
    board.take_changes()
    board.tick()
    assert [row.key for row in board.take_changes()[0]] == ["file:5"]


def test_files_already_there_are_counted_not_listed_unless_queued() -> None:
    board = DownloadBoard()
    board.apply(ItemFinished("image", 1, "1.png", VERIFIED, size=5))
    assert not board.rows and board.counts == {RowState.VERIFIED: 1}
    board.apply(FileQueued("file:2", "model", "a.safetensors", "A", 10))
    board.apply(ItemFinished("model", 2, "a.safetensors", VERIFIED, size=10))  # adopted by its hash
    assert board.rows["file:2"].state_text() == "already here"
    assert board.counts == {RowState.VERIFIED: 2}


# A random run: queueing, starting, progress and endings of a few items, in any order.
_KIND = st.sampled_from(["model", "image"])
_STATUS = st.sampled_from(["done", VERIFIED, "failed", "deferred", "skipped_permanent", "hash_mismatch"])
_STEP = st.tuples(st.sampled_from(["queue", "start", "progress", "finish"]), _KIND, st.integers(0, 40), _STATUS)


@given(st.lists(_STEP, min_size=30, max_size=300), st.integers(1, 8), st.integers(1, 8))
def test_rows_kept_stay_bounded_and_counts_follow_the_latest_endings(
    steps: list[tuple[str, Any, int, str]], keep_finished: int, keep_problems: int
) -> None:
    """Checked against a plain model: each settled row sits in its group (finished or problem) in the order of
    its ending; a group past twice its limit keeps its newest `limit`; a row queued again leaves its group."""
    board = DownloadBoard(keep_finished=keep_finished, keep_problems=keep_problems)
    board.start("run")
    latest: dict[str, RowState] = {}  # each item's latest ending, as the log keeps it
    groups: dict[bool, list[str]] = {True: [], False: []}  # problem? -> keys, oldest ending first
    limits = {True: keep_problems, False: keep_finished}
    active: set[str] = set()
    for action, kind, ident, status in steps:
        key = item_key(kind, ident)
        listed = key in board.rows
        if action == "queue":
            board.apply(FileQueued(key, kind, str(ident), "M"))
        elif action == "start":
            board.apply(FileStarted(key, str(ident), 100) if kind == "model" else ImageStarted(key))
        elif action == "progress":
            board.apply(FileProgress(key, ident, 100))
        else:
            board.apply(ItemFinished(kind, ident, str(ident), status, "why"))
        if action == "queue" or (action == "start" and kind == "model"):
            active.add(key)
            for keys in groups.values():
                if key in keys:
                    keys.remove(key)
        elif action == "finish":
            active.discard(key)
            state = latest[key] = SETTLED_STATES[status]
            if not listed and state is RowState.VERIFIED:
                assert key not in board.rows  # already there and never queued: counted only
                continue
            for keys in groups.values():
                if key in keys:
                    keys.remove(key)
            group = groups[state.problem]
            group.append(key)
            limit = limits[state.problem]
            if len(group) > 2 * limit:
                del group[:-limit]
            assert board.rows[key].state is state
    for state in RowState:
        assert board.counts[state] == sum(1 for s in latest.values() if s is state)
    assert {key for key, row in board.rows.items() if row.state.active} == active
    assert {key for key, row in board.rows.items() if row.state.problem} == set(groups[True])
    assert {key for key, row in board.rows.items() if row.state in LOGGED_OK} == set(groups[False])
    assert len(groups[True]) <= 2 * keep_problems and len(groups[False]) <= 2 * keep_finished
