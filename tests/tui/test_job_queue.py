"""The queue table over a real job manager: rows per job of its kind, coalesced progress, cancel and retry keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from textual.app import App, ComposeResult
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot

from peropix_tui.core.jobs import JobContext, JobManager, JobState
from peropix_tui.widgets.job_queue import JobQueue

KIND = "nai-generate"


class QueueApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.jobs = JobManager()

    def compose(self) -> ComposeResult:
        yield JobQueue(self.jobs, KIND)

    async def on_unmount(self) -> None:
        await self.jobs.aclose()


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def cell(queue: JobQueue, job_id: int, column: str) -> str:
    return str(queue.get_cell(str(job_id), column))


async def test_a_burst_of_progress_is_drawn_coalesced_and_ends_done() -> None:
    app = QueueApp()
    messages: list[Message] = []
    async with app.run_test(message_hook=messages.append) as pilot:
        queue = app.query_one(JobQueue)

        async def busy(ctx: JobContext) -> None:
            for step in range(1, 501):
                ctx.progress(step, 500, preview=b"frame")  # on the loop: every call is an event
            await asyncio.sleep(0)

        job = app.jobs.submit(busy, name="burst", kind=KIND)
        queue.set_price(job.id, "17")
        await wait_until(pilot, lambda: str(job.id) in queue.rows and cell(queue, job.id, "state") == "done", "done")
        # a message is seen once per node it bubbles through: count each one once
        updates = {id(m): m for m in messages if isinstance(m, JobQueue.Updated)}
        handled = [m.event for m in updates.values()]
        progress = [e for e in handled if e.kind == "progress"]
        assert 0 < len(progress) < 500
        assert [e.state for e in handled if e.kind == "state"] == [JobState.QUEUED, JobState.RUNNING, JobState.DONE]
        assert cell(queue, job.id, "progress") == "100%"
        assert cell(queue, job.id, "price") == "17"
        assert cell(queue, job.id, "id") == str(job.id) and cell(queue, job.id, "name") == "burst"


async def test_jobs_of_other_kinds_are_not_listed() -> None:
    app = QueueApp()
    async with app.run_test() as pilot:
        queue = app.query_one(JobQueue)

        async def nothing(ctx: JobContext) -> None:
            await asyncio.sleep(0)

        other = app.jobs.submit(nothing, name="download", kind="civitai-download")
        mine = app.jobs.submit(nothing, name="image", kind=KIND)
        await app.jobs.wait_all()
        await wait_until(pilot, lambda: str(mine.id) in queue.rows, "the generation row")
        assert str(other.id) not in queue.rows and queue.row_count == 1


async def test_cancel_then_retry_from_the_keyboard() -> None:
    app = QueueApp()
    messages: list[Message] = []
    async with app.run_test(message_hook=messages.append) as pilot:
        queue = app.query_one(JobQueue)
        release = asyncio.Event()

        async def waits(ctx: JobContext) -> str:
            await release.wait()
            return "made"

        job = app.jobs.submit(waits, name="slow", kind=KIND)
        queue.set_price(job.id, "FREE")
        await wait_until(pilot, lambda: str(job.id) in queue.rows, "the row")
        queue.focus()
        await pilot.press("r")  # a running job cannot be retried
        await wait_until(pilot, lambda: any(isinstance(m, Notify) for m in messages), "the warning")
        await pilot.press("x")
        await wait_until(pilot, lambda: cell(queue, job.id, "state") == "cancelled", "the cancel")

        release.set()
        await pilot.press("r")
        await wait_until(pilot, lambda: queue.row_count == 1 and str(job.id) not in queue.rows, "the retry row")
        retry = app.jobs.jobs[-1]
        assert retry.retry_of == job.id
        await wait_until(pilot, lambda: cell(queue, retry.id, "state") == "done", "the retry to finish")
        assert cell(queue, retry.id, "price") == "FREE" and retry.result == "made"

        await pilot.press("x")  # a finished job: nothing to cancel, and the user is told
        texts = [m.notification.message for m in messages if isinstance(m, Notify)]
        assert texts[0].endswith("only failed or cancelled jobs can be retried")
        await wait_until(
            pilot,
            lambda: any("already finished" in m.notification.message for m in messages if isinstance(m, Notify)),
            "the second warning",
        )
