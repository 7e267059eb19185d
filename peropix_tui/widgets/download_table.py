"""The live download queue of a CivitAI collection: one row per file queued, in flight or settled.

Collector events arrive on the app's loop thread, from the collection job. They are folded into a
`DownloadBoard` (plain data, a few dict operations per event) and the table is told with one
`DownloadTable.Changed` message at a time: while one is waiting, or while the table waits out
`REDRAW_INTERVAL_S` since its last redraw, further events only update the board. So a stream of byte counts or
of settled images costs a few redraws a second of the rows that changed, and key presses never queue behind a
backlog of progress messages.

Rows are kept for every active file (queued, downloading), for the last `KEEP_PROBLEMS` problems (failed,
hash mismatch, skipped, deferred, stopped) and for the last `KEEP_FINISHED` finished files; older ones leave
the table, while the counters and the creator's download log keep every item. Files that were already there
(verified from the log or the disk without being queued) are counted, not listed. Rows leave in batches (a
group may grow to twice its limit, then is cut back to it) and the table then rebuilds itself in one go:
removing a DataTable row costs as much as adding dozens, so a creator with ten thousand images costs about two
row additions per image instead of a removal each. The table is ordered by what needs eyes: downloads in
flight, then the queue, then problems, then finished files, each group in the order its files were queued.
"""

from __future__ import annotations

import enum
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from rich.filesize import decimal
from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from peropix_tui.civitai.events import (
    VERIFIED,
    CreatorFinished,
    CreatorPlanned,
    CreatorStarted,
    Event,
    FileProgress,
    FileQueued,
    FileStarted,
    ImageStarted,
    ItemFinished,
    ItemKind,
    Notice,
    Phase,
    item_key,
)

KEEP_FINISHED: Final = 200
KEEP_PROBLEMS: Final = 500
NOTICES_KEPT: Final = 50
RATE_WINDOW_S: Final = 3.0
RATE_RESOLUTION_S: Final = 0.2
RATE_MIN_SPAN_S: Final = 0.5
REDRAW_INTERVAL_S: Final = 0.1

Clock = Callable[[], float]


class RowState(enum.Enum):
    """A row's state: its label and its place in the table's order (lower first)."""

    DOWNLOADING = ("downloading", 0)
    QUEUED = ("queued", 1)
    FAILED = ("failed", 2)
    HASH_MISMATCH = ("hash mismatch", 2)
    SKIPPED = ("skipped", 2)
    DEFERRED = ("deferred", 2)
    STOPPED = ("stopped", 2)
    DONE = ("done", 3)
    VERIFIED = ("already here", 3)

    def __init__(self, label: str, rank: int) -> None:
        self.label = label
        self.rank = rank

    @property
    def active(self) -> bool:
        return self.rank < 2

    @property
    def problem(self) -> bool:
        return self.rank == 2


SETTLED_STATES: Final[dict[str, RowState]] = {
    "done": RowState.DONE,
    VERIFIED: RowState.VERIFIED,
    "failed": RowState.FAILED,
    "hash_mismatch": RowState.HASH_MISMATCH,
    "skipped_permanent": RowState.SKIPPED,
    "deferred": RowState.DEFERRED,
}
"""`ItemFinished.status` (a log status or `verified`) to the row state; anything else reads as failed."""

LOGGED_OK: Final = frozenset({RowState.DONE, RowState.VERIFIED})
"""States the log lists under `success`; every other settled state is in its `failed` list."""

STATE_STYLES: Final[dict[RowState, str]] = {
    RowState.DOWNLOADING: "bold cyan",
    RowState.FAILED: "bold red",
    RowState.HASH_MISMATCH: "bold red",
    RowState.SKIPPED: "yellow",
    RowState.DEFERRED: "yellow",
    RowState.STOPPED: "yellow",
    RowState.VERIFIED: "dim",
}


class RateMeter:
    """Bytes per second over the last few seconds of a growing byte count.

    Samples are taken at most every `RATE_RESOLUTION_S`, so the meter holds a handful whatever the event rate;
    a count that stops growing reads as a falling rate, then zero, once its samples leave the window.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> None:
        samples = self._samples
        if len(samples) >= 2 and now - samples[-2][0] < RATE_RESOLUTION_S:
            samples[-1] = (now, total)
        else:
            samples.append((now, total))
        self._prune(now)

    def rate(self, now: float) -> float | None:
        """Bytes per second, or None until the samples span `RATE_MIN_SPAN_S`."""
        self._prune(now)
        if not self._samples:
            return None
        start, first = self._samples[0]
        span = now - start
        if span < RATE_MIN_SPAN_S:
            return None
        return max(0, self._samples[-1][1] - first) / span

    def _prune(self, now: float) -> None:
        # The newest sample at or before the window's start stays: it is the baseline of the span.
        samples = self._samples
        while len(samples) >= 2 and samples[1][0] <= now - self._window:
            samples.popleft()


@dataclass(slots=True)
class DownloadRow:
    """One file as the table shows it; `done` counts the bytes reported so far."""

    key: str
    creator: str
    model: str
    name: str
    kind: ItemKind
    state: RowState = RowState.QUEUED
    total: int | None = None
    done: int = 0
    size: int | None = None
    reason: str | None = None
    info: str = ""
    retry_after: datetime | None = None
    meter: RateMeter | None = None
    reported: bool = False

    @property
    def percent(self) -> int | None:
        if self.state in LOGGED_OK:
            return 100
        if self.state is RowState.DOWNLOADING and self.total:
            return min(100, self.done * 100 // self.total)
        return None

    def state_text(self) -> str:
        """The state word, with the reason of a problem and the deadline of a deferral."""
        label = self.state.label
        if self.state is RowState.DEFERRED and self.retry_after is not None:
            return f"{label} to {self.retry_after.astimezone():%m-%d %H:%M}"
        if self.state.problem and self.reason:
            return f"{label}: {self.reason}"
        return label


@dataclass(slots=True)
class _Kept:
    """Keys of settled rows in one retention group, oldest first, and how many were let go; past twice
    `limit` keys, the oldest go until `limit` are left."""

    limit: int
    keys: deque[str] = field(default_factory=deque)
    dropped: int = 0


class DownloadBoard:
    """Everything the Downloads screen shows of one collection run, folded from collector events.

    Plain data, no widgets: `apply` runs on the loop thread for every event, and the table reads what changed
    with `take_changes`. `counts` holds every item settled in the run by its latest state, each item once as
    in the log (rows come and go, counts do not); `fetched` is the bytes of files downloaded in this run,
    resumed parts included.
    """

    def __init__(
        self, *, keep_finished: int = KEEP_FINISHED, keep_problems: int = KEEP_PROBLEMS, clock: Clock = time.monotonic
    ) -> None:
        self._clock = clock
        self._keep_finished = keep_finished
        self._keep_problems = keep_problems
        self.rows: dict[str, DownloadRow] = {}
        self.counts: Counter[RowState] = Counter()
        self._outcomes: dict[str, RowState] = {}
        self.fetched = 0
        self.phase = ""
        self.creator = ""
        self.notices: deque[Notice] = deque(maxlen=NOTICES_KEPT)
        self.warnings = 0
        self.running = False
        self._finished = _Kept(keep_finished)
        self._problems = _Kept(keep_problems)
        self._meter = RateMeter()
        self._rate_bytes = 0
        self._changed: dict[str, None] = {}
        """Keys changed since the last `take_changes`, in the order of their first change (a dict, unlike a set,
        keeps it: new rows reach the table in the order their items were queued, whatever the hash seed)."""
        self._removed: set[str] = set()

    # The run ---------------------------------------------------------------------------------------------------

    def start(self, phase: str) -> None:
        """Forget the previous run and show `phase` (the table clears its rows itself)."""
        self._changed.clear()
        self._removed.clear()
        self.rows.clear()
        self.counts.clear()
        self._outcomes.clear()
        self.fetched = 0
        self.creator = ""
        self.notices.clear()
        self.warnings = 0
        self._finished = _Kept(self._keep_finished)
        self._problems = _Kept(self._keep_problems)
        self._meter = RateMeter()
        self._rate_bytes = 0
        self.phase = phase
        self.running = True

    def finish(self, phase: str) -> None:
        """The run ended (done, failed or cancelled): files still active were stopped where they were."""
        self.running = False
        self.phase = phase
        for row in [row for row in self.rows.values() if row.state.active]:
            row.meter = None
            self._settle(row, RowState.STOPPED)
            row.reason = ".part kept" if row.kind == "model" and row.done else "not fetched"

    def apply(self, event: Event) -> None:
        """Fold one collector event into the board."""
        if isinstance(event, FileProgress):
            self._progress(event)
        elif isinstance(event, ItemFinished):
            self._finished_item(event)
        elif isinstance(event, FileQueued):
            row = self._row(event.key, event.kind, event.name, event.model)
            if not row.state.active:
                self._reopen(row)
            row.state = RowState.QUEUED
            row.total = event.total
        elif isinstance(event, FileStarted):
            row = self._row(event.key, "model", event.name, "")
            if not row.state.active:
                self._reopen(row)
            row.state = RowState.DOWNLOADING
            row.total = event.total
            row.done = 0
            row.reported = False
            row.meter = RateMeter()
        elif isinstance(event, ImageStarted):
            image = self.rows.get(event.key)
            if image is not None and image.state.active:
                image.state = RowState.DOWNLOADING
                self._changed[image.key] = None
        else:
            self._run_event(event)

    def _run_event(self, event: Event) -> None:
        if isinstance(event, Phase):
            self.phase = event.message
        elif isinstance(event, Notice):
            if event.level == "info":
                self.phase = event.message
            else:
                self.notices.append(event)
                self.warnings += 1
        elif isinstance(event, CreatorStarted):
            self.creator = event.username
            self.phase = f"{event.username}: listing models on {event.site}"
        elif isinstance(event, CreatorPlanned):
            self.phase = (
                f"{event.username}: {event.models} models; {event.files_todo} model files to fetch "
                f"({decimal(event.bytes_todo)}), {event.files_verified} already here, {event.files_waiting} waiting"
            )
        elif isinstance(event, CreatorFinished):
            self.phase = f"{event.username}: finished"

    def tick(self) -> None:
        """Mark rows in flight as changed, so their speed is drawn again even when no bytes came."""
        self._changed.update(dict.fromkeys(row.key for row in self.rows.values() if row.state is RowState.DOWNLOADING))

    def take_changes(self) -> tuple[list[DownloadRow], set[str]]:
        """Rows changed since the last call (still kept), and keys of rows let go meanwhile."""
        changed = [self.rows[key] for key in self._changed if key in self.rows]
        removed = self._removed
        self._changed, self._removed = {}, set()
        return changed, removed

    # Reading ---------------------------------------------------------------------------------------------------

    def active(self, state: RowState) -> int:
        return sum(1 for row in self.rows.values() if row.state is state)

    @property
    def logged_ok(self) -> int:
        """Settled items the log lists as successes (downloaded now, or already there)."""
        return sum(self.counts[state] for state in LOGGED_OK)

    @property
    def logged_failed(self) -> int:
        """Settled items the log lists as failures (failed, hash mismatch, skipped, deferred)."""
        return sum(n for state, n in self.counts.items() if state not in LOGGED_OK)

    @property
    def dropped(self) -> int:
        """Settled rows that left the table to keep it short."""
        return self._finished.dropped + self._problems.dropped

    def rate(self) -> float | None:
        """Bytes per second over the last seconds; None until it can be told."""
        return self._meter.rate(self._clock())

    def row_speed(self, row: DownloadRow) -> float | None:
        return None if row.meter is None else row.meter.rate(self._clock())

    # Folding ---------------------------------------------------------------------------------------------------

    def _row(self, key: str, kind: ItemKind, name: str, model: str) -> DownloadRow:
        row = self.rows.get(key)
        if row is None:
            row = DownloadRow(key, self.creator, model, name, kind)
            self.rows[key] = row
        else:
            row.name = name or row.name
            row.model = model or row.model
        self._changed[key] = None
        return row

    def _reopen(self, row: DownloadRow) -> None:
        """A settled row's item is queued again (an image listed under two models); it stays counted by its
        last ending until it has a new one, as the log keeps its entry."""
        group = self._group(row.state)
        if row.key in group.keys:
            group.keys.remove(row.key)
        row.reason, row.info, row.retry_after = None, "", None

    def _group(self, state: RowState) -> _Kept:
        return self._problems if state.problem else self._finished

    def _progress(self, event: FileProgress) -> None:
        row = self.rows.get(event.key)
        if row is None or row.state is not RowState.DOWNLOADING:
            return
        now = self._clock()
        gained = event.done - row.done
        if gained > 0:
            self.fetched += gained
            # The first report of a transfer may hold a resumed part: it only sets the baseline of the rates.
            if row.reported:
                self._rate_bytes += gained
        self._meter.add(now, self._rate_bytes)
        row.done = event.done
        row.total = event.total if event.total is not None else row.total
        row.reported = True
        if row.meter is not None:
            row.meter.add(now, row.done)
        self._changed[row.key] = None

    def _finished_item(self, event: ItemFinished) -> None:
        key = event.key or item_key(event.kind, event.ident)
        known = SETTLED_STATES.get(event.status)
        state = known or RowState.FAILED
        if state is RowState.VERIFIED and key not in self.rows:
            # Already there before the run and never queued: counted, but a rerun over ten thousand images
            # would only flood the table with them.
            self._count(key, state)
            return
        row = self._row(key, event.kind, event.name, event.model)
        if not row.state.active:
            self._reopen(row)
        if state in (RowState.DONE, RowState.HASH_MISMATCH) and event.size is not None:
            gained = max(0, event.size - row.done)
            self.fetched += gained
            self._rate_bytes += gained
            self._meter.add(self._clock(), self._rate_bytes)
            row.done = event.size
        row.size = event.size if event.size is not None else row.size
        row.reason = event.reason or (None if known else event.status)
        row.info = event.info
        row.retry_after = event.retry_after
        row.meter = None
        self._settle(row, state)

    def _count(self, key: str, state: RowState) -> None:
        """Count an item by its latest ending; an item settled twice (listed under two models) counts once."""
        previous = self._outcomes.get(key)
        if previous is not None:
            self.counts[previous] -= 1
            if not self.counts[previous]:
                del self.counts[previous]
        self._outcomes[key] = state
        self.counts[state] += 1

    def _settle(self, row: DownloadRow, state: RowState) -> None:
        row.state = state
        self._changed[row.key] = None
        if state is not RowState.STOPPED:
            self._count(row.key, state)
        group = self._group(state)
        group.keys.append(row.key)
        if len(group.keys) <= 2 * group.limit:
            return
        while len(group.keys) > group.limit:
            gone = group.keys.popleft()
            group.dropped += 1
            if self.rows.pop(gone, None) is not None:
                self._changed.pop(gone, None)
                self._removed.add(gone)


def counters_text(board: DownloadBoard) -> str:
    """The counters line: settled items by state, files in flight and queued, bytes fetched and the rate."""
    parts = [f"{board.counts[RowState.DONE]} done"]
    for state in (RowState.VERIFIED, RowState.FAILED, RowState.HASH_MISMATCH, RowState.SKIPPED, RowState.DEFERRED):
        if board.counts[state]:
            parts.append(f"{board.counts[state]} {state.label}")
    downloading, queued = board.active(RowState.DOWNLOADING), board.active(RowState.QUEUED)
    if downloading or queued:
        parts.append(f"{downloading} downloading, {queued} queued")
    line = " · ".join(parts) + f" │ {decimal(board.fetched)} fetched"
    if board.running:
        rate = board.rate()
        line += f" · {decimal(int(rate))}/s" if rate is not None else " · …/s"
    if board.dropped:
        line += f" │ {board.dropped} older rows hidden (all in the log)"
    return line


class _StateCell(Text):
    """The state column's cell; carries the rank the table is sorted by."""

    def __init__(self, row: DownloadRow) -> None:
        super().__init__(row.state_text(), style=STATE_STYLES.get(row.state, ""), no_wrap=True, overflow="ellipsis")
        self.rank = row.state.rank


def _rank(cell: object) -> int:
    return cell.rank if isinstance(cell, _StateCell) else 0


COLUMNS: Final[tuple[tuple[str, str, int | None], ...]] = (
    ("state", "State", 22),
    ("percent", "%", 4),
    ("speed", "Speed", 9),
    ("size", "Size", 9),
    ("kind", "Kind", 5),
    ("file", "File", 26),
    ("model", "Model", 18),
    ("creator", "Creator", None),
)
"""Key, title and width: what changes goes first, so a narrow terminal still shows it."""


class DownloadTable(DataTable[Text]):
    """The rows of a `DownloadBoard`, redrawn from what changed since the last redraw.

    Feed it with `post_event` on the app's loop thread (the collector's event sink).
    """

    class Changed(Message, bubble=False):
        """The board changed: the table's own wake-up call (it does not bubble)."""

    class Redrawn(Message):
        """The table has drawn the board; the screen redraws its counters and phase from it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.board = DownloadBoard()
        self._announced = False
        self._last_redraw = 0.0

    def on_mount(self) -> None:
        for key, title, width in COLUMNS:
            self.add_column(title, key=key, width=width)

    def begin_run(self, phase: str) -> None:
        """A new run: the previous one's rows go, its counters start from zero."""
        self.board.start(phase)
        self.clear()
        self.announce()

    def end_run(self, phase: str) -> None:
        """The run ended: what was still active is shown as stopped."""
        self.board.finish(phase)
        self.announce()

    def show_phase(self, phase: str) -> None:
        """What the run is doing, said by the screen rather than the collector (cancelling, for one)."""
        self.board.phase = phase
        self.announce()

    def post_event(self, event: Event) -> None:
        """Fold a collector event into the board; at most one `Changed` waits in the queue at any time."""
        self.board.apply(event)
        self.announce()

    def announce(self) -> None:
        """Ask for a redraw of whatever changed on the board, unless one is already on its way."""
        if not self._announced:
            self._announced = True
            self.post_message(self.Changed())

    def on_download_table_changed(self, message: Changed) -> None:
        wait = self._last_redraw + REDRAW_INTERVAL_S - time.monotonic()
        if wait > 0:
            self.set_timer(wait, self._redraw_now)
        else:
            self._redraw_now()

    def _redraw_now(self) -> None:
        self._announced = False
        self._last_redraw = time.monotonic()
        self.redraw()
        self.post_message(self.Redrawn())

    def redraw(self) -> None:
        changed, removed = self.board.take_changes()
        cursor = self._cursor_key()
        if any(key in self.rows for key in removed):
            self._rebuild(cursor)
            return
        resort = False
        for row in changed:
            cells = self._cells(row)
            if row.key in self.rows:
                resort = resort or _rank(self.get_cell(row.key, "state")) != row.state.rank
                for (column, _, _), cell in zip(COLUMNS, cells, strict=True):
                    self.update_cell(row.key, column, cell)
            else:
                self.add_row(*cells, key=row.key)
                resort = True
        if resort:
            self.sort("state", key=_rank)
        if cursor is not None and cursor in self.rows:
            self.move_cursor(row=self.get_row_index(cursor), scroll=self.has_focus)

    def _rebuild(self, cursor: str | None) -> None:
        """Every kept row again, in the table's order (a stable sort keeps the board's queue order in a group)."""
        scroll = self.scroll_y
        self.clear()
        for row in sorted(self.board.rows.values(), key=lambda row: row.state.rank):
            self.add_row(*self._cells(row), key=row.key)
        if cursor is not None and cursor in self.rows:
            self.move_cursor(row=self.get_row_index(cursor), scroll=False)
        self.scroll_to(y=scroll, animate=False, immediate=True)

    def _cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def selected_row(self) -> DownloadRow | None:
        key = self._cursor_key()
        return None if key is None else self.board.rows.get(key)

    def _cells(self, row: DownloadRow) -> tuple[Text, ...]:
        percent = row.percent
        speed = self.board.row_speed(row)
        size = row.size if row.size is not None else row.total
        return (
            _StateCell(row),
            Text("" if percent is None else f"{percent}%", justify="right"),
            Text("" if speed is None else f"{decimal(int(speed))}/s", justify="right"),
            Text("" if size is None else decimal(size), justify="right"),
            Text(row.kind),
            Text(row.name, no_wrap=True, overflow="ellipsis"),
            Text(row.model, no_wrap=True, overflow="ellipsis"),
            Text(row.creator, no_wrap=True, overflow="ellipsis"),
        )
