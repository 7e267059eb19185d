"""The generation queue as a compact table: one row per job with its state, progress and price.

Job events come from the job manager on the loop thread and are posted to the table as `JobQueue.Updated`
messages. A progress message gives way to a newer one of the same job still waiting in the queue, so a stream of
sampler steps is drawn at the pace the terminal can take. The messages then bubble on to the screen, which shows
preview frames and failures. Keys act on the row under the cursor: cancel a queued or running job, retry a
failed or cancelled one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import JobEvent, JobManager, JobState, UnknownJobError

MAX_ROWS: Final = 100
"""Rows kept; beyond this the oldest finished jobs leave the table."""
NAME_CHARS: Final = 60


def progress_label(event: JobEvent) -> str:
    """The progress cell: a percentage while it is known, blank otherwise."""
    if event.state is JobState.DONE:
        return "100%"
    fraction = event.progress.fraction
    return "" if fraction is None else f"{int(fraction * 100)}%"


class JobQueue(DataTable[Text]):
    """The jobs of one kind in a `JobManager`, newest last."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x,delete", "cancel_job", "Cancel job", id="queue_cancel"),
        Binding("r", "retry_job", "Retry job", id="queue_retry"),
    ]

    class Updated(Message):
        """A job of the table's kind changed; bubbles to the screen after the table has drawn it."""

        def __init__(self, event: JobEvent) -> None:
            super().__init__()
            self.event = event

        def can_replace(self, message: Message) -> bool:
            # A waiting event of the same job carries a newer state and progress: this step need not be drawn.
            return (
                self.event.kind == "progress"
                and isinstance(message, JobQueue.Updated)
                and message.event.job_id == self.event.job_id
            )

    def __init__(self, jobs: JobManager, kind: str, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id)
        self._jobs = jobs
        self._kind = kind
        self._prices: dict[int, str] = {}
        self._states: dict[int, JobState] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def on_mount(self) -> None:
        # What changes goes first, so a narrow table still shows it; the job's prompt takes what is left.
        self.add_column("#", key="id")
        self.add_column("State", key="state", width=9)
        self.add_column("Done", key="progress", width=4)
        self.add_column("Anlas", key="price", width=5)
        self.add_column("Prompt", key="name")
        self._unsubscribe = self._jobs.subscribe(self._on_event)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def set_price(self, job_id: int, price: str) -> None:
        """The price shown for a job; set it right after submitting, before the job's first event is drawn."""
        self._prices[job_id] = price
        if str(job_id) in self.rows:
            self.update_cell(str(job_id), "price", Text(price))

    def _on_event(self, event: JobEvent) -> None:
        if event.kind == "log":
            return
        try:
            kind = self._jobs.get(event.job_id).kind
        except UnknownJobError:
            return
        if kind == self._kind:
            self.post_message(self.Updated(event))

    def on_job_queue_updated(self, message: Updated) -> None:
        event = message.event
        key = str(event.job_id)
        self._states[event.job_id] = event.state
        cells = {"state": Text(event.state.value), "progress": Text(progress_label(event))}
        if key in self.rows:
            for column, value in cells.items():
                self.update_cell(key, column, value)
            return
        price = Text(self._prices.get(event.job_id, ""))
        name = Text(event.name[:NAME_CHARS], no_wrap=True)
        self.add_row(Text(key), cells["state"], cells["progress"], price, name, key=key)
        self._trim()

    def _trim(self) -> None:
        finished = [job_id for job_id, state in self._states.items() if state.terminal]
        for job_id in finished[: max(0, len(self.rows) - MAX_ROWS)]:
            self._forget(job_id)

    def _forget(self, job_id: int) -> None:
        self._states.pop(job_id, None)
        self._prices.pop(job_id, None)
        if str(job_id) in self.rows:
            self.remove_row(str(job_id))

    def selected_job(self) -> int | None:
        """The id of the job under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return None if key is None else int(key)

    def action_cancel_job(self) -> None:
        job_id = self.selected_job()
        if job_id is None:
            return
        try:
            cancelled = self._jobs.cancel(job_id)
        except UnknownJobError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        if not cancelled:
            self.notify(f"job #{job_id} has already finished", severity="warning", markup=False)

    def action_retry_job(self) -> None:
        job_id = self.selected_job()
        if job_id is None:
            return
        try:
            job = self._jobs.retry(job_id)
        except PeropixError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self._prices[job.id] = self._prices.get(job_id, "")
        self._forget(job_id)
