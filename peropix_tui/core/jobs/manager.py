"""The job manager: queues async jobs, runs them under group limits and tells subscribers about every change.

It lives on one asyncio loop (the TUI's, or `asyncio.run` in the CLI) and every public method is called from
that loop's thread; job functions reach other threads only through `JobContext.run_in`, and those threads
report back through the context, which hops onto the loop. Both front ends drive the same object: the TUI
subscribes a callback that posts Textual messages, the CLI iterates `events()` and draws progress bars.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs.cancel import CancelToken, JobCancelled
from peropix_tui.core.jobs.context import JobContext
from peropix_tui.core.jobs.events import NO_EXTRA, EventKind, EventStream, JobEvent
from peropix_tui.core.jobs.executors import Executors
from peropix_tui.core.jobs.model import Job, JobFailure, JobFn, JobState, Progress

log = logging.getLogger(__name__)

T = TypeVar("T")

Subscriber = Callable[[JobEvent], None]

DEFAULT_MAX_FINISHED: Final = 500


class UnknownJobError(PeropixError):
    """A job id that this session never had, or a finished job that has since been forgotten."""


class JobStateError(PeropixError):
    """An operation that the job's current state does not allow."""


def describe_failure(exc: BaseException) -> JobFailure:
    """The user-facing line for an exception: a `PeropixError` as it is, anything else as internal."""
    if isinstance(exc, PeropixError):
        return JobFailure(str(exc), exc, internal=False)
    detail = " ".join(str(exc).split())
    kind = type(exc).__name__
    return JobFailure(f"internal error: {kind}: {detail}" if detail else f"internal error: {kind}", exc, True)


@dataclass(eq=False)
class _Entry:
    job: Job[Any]
    done: asyncio.Future[None]
    token: CancelToken = field(default_factory=CancelToken)
    task: asyncio.Task[Any] | None = None
    cancel_requested: bool = False


async def _call(fn: JobFn[T], ctx: JobContext) -> T:
    # Calling the job function inside the task means a task cancelled before its first step never creates
    # the coroutine, and a function that raises instead of returning an awaitable fails the job, not `submit`.
    return await fn(ctx)


class JobManager:
    """Runs jobs on the current loop.

    `limits` caps how many jobs of a group run at once (e.g. `{"nai": 1}`: one request in flight per token);
    groups without a limit, and jobs without a group, are unlimited. Jobs start in submission order, and
    within a group strictly first in, first out. `max_running` optionally caps all running jobs together. At
    most `max_finished` finished jobs are remembered; older ones are forgotten, oldest first. The manager owns
    `executors` (made with default sizes when not given) and shuts them down in `aclose`.
    """

    def __init__(
        self,
        *,
        executors: Executors | None = None,
        limits: Mapping[str, int] | None = None,
        max_running: int | None = None,
        max_finished: int = DEFAULT_MAX_FINISHED,
    ) -> None:
        for group, limit in (limits or {}).items():
            if limit < 1:
                raise ValueError(f"job group {group!r} limit must be >= 1, got {limit}")
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if max_finished < 0:
            raise ValueError(f"max_finished must be >= 0, got {max_finished}")
        self._executors = executors or Executors()
        self._limits = dict(limits or {})
        self._max_running = max_running
        self._max_finished = max_finished
        self._ids = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._queues: dict[str | None, deque[_Entry]] = {}
        self._running: Counter[str | None] = Counter()
        self._finished: deque[int] = deque()
        self._active = 0
        self._subscribers: list[Subscriber] = []
        self._streams: list[EventStream] = []
        self._backlog: deque[JobEvent] = deque()
        self._emitting = False
        self._pumping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # ---- reading -------------------------------------------------------------------------------------------

    @property
    def executors(self) -> Executors:
        """The pools, also for blocking work not worth a job (hashing one file, reading one header)."""
        return self._executors

    @property
    def jobs(self) -> tuple[Job[Any], ...]:
        """Remembered jobs, oldest first."""
        return tuple(entry.job for entry in self._entries.values())

    @property
    def active_count(self) -> int:
        """Jobs queued or running."""
        return self._active

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, job_id: int) -> Job[Any]:
        return self._entry(job_id).job

    # ---- submitting ----------------------------------------------------------------------------------------

    def submit(self, fn: JobFn[T], *, name: str, kind: str, group: str | None = None) -> Job[T]:
        """Queue `async def fn(ctx) -> T`; it starts as soon as its group and the global cap allow."""
        job: Job[T] = Job(id=next(self._ids), name=name, kind=kind, group=group, fn=fn)
        self._enqueue(job)
        return job

    def retry(self, job_id: int) -> Job[Any]:
        """Queue a failed or cancelled job again as a new job (its next attempt) with the same function."""
        old = self._entry(job_id).job
        if old.state not in (JobState.FAILED, JobState.CANCELLED):
            raise JobStateError(f"job {job_id} is {old.state}; only failed or cancelled jobs can be retried")
        job: Job[Any] = Job(
            id=next(self._ids),
            name=old.name,
            kind=old.kind,
            group=old.group,
            fn=old.fn,
            attempt=old.attempt + 1,
            retry_of=old.id,
        )
        self._enqueue(job)
        return job

    # ---- cancelling ----------------------------------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Cancel a job; False when it had already finished.

        A queued job ends CANCELLED at once, without running. A running job has its token set and its task
        cancelled; it ends CANCELLED when its coroutine ends (after any thread work has returned), or DONE if
        it completes anyway.
        """
        entry = self._entry(job_id)
        state = entry.job.state
        if state is JobState.QUEUED:
            queue = self._queues[entry.job.group]
            queue.remove(entry)
            if not queue:
                del self._queues[entry.job.group]
            entry.cancel_requested = True
            entry.token.cancel()
            self._finish(entry, JobState.CANCELLED)
            return True
        if state is JobState.RUNNING and entry.task is not None and not entry.task.done():
            if not entry.cancel_requested:
                entry.cancel_requested = True
                entry.token.cancel()
                entry.task.cancel()
            return True
        return False

    def cancel_all(self) -> int:
        """Cancel queued jobs (first, so none starts meanwhile), then running ones; returns how many."""
        queued = [e.job.id for e in self._entries.values() if e.job.state is JobState.QUEUED]
        running = [e.job.id for e in self._entries.values() if e.job.state is JobState.RUNNING]
        return sum(self.cancel(job_id) for job_id in queued + running)

    def clear_finished(self) -> int:
        """Forget every finished job; returns how many."""
        gone = [job_id for job_id, e in self._entries.items() if e.job.state.terminal]
        for job_id in gone:
            del self._entries[job_id]
        self._finished.clear()
        return len(gone)

    # ---- waiting -------------------------------------------------------------------------------------------

    async def wait(self, job_id: int) -> Job[Any]:
        """Wait until the job has finished, whatever the outcome, and return it."""
        entry = self._entry(job_id)
        await asyncio.shield(entry.done)
        return entry.job

    async def wait_all(self) -> None:
        """Wait until no job is queued or running, including jobs submitted while waiting."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Refuse new jobs, cancel all, wait for them to end, end event streams, shut the executors down."""
        self._closed = True
        self.cancel_all()
        await self._idle.wait()
        for stream in list(self._streams):
            stream.end()
        await asyncio.to_thread(self._executors.shutdown, wait=True)

    async def __aenter__(self) -> JobManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---- events --------------------------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` on the loop thread for every event; returns a function that unsubscribes.

        A callback that raises is logged and otherwise ignored.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def events(self, *, coalesce: bool = True, maxsize: int = 1000) -> EventStream:
        """A buffered async iterator over events from now on; see `EventStream` for the buffering rules."""
        stream = EventStream(coalesce=coalesce, maxsize=maxsize, on_close=self._streams.remove)
        self._streams.append(stream)
        if self._closed and not self._active:
            stream.end()
        return stream

    # ---- internals -----------------------------------------------------------------------------------------

    def _entry(self, job_id: int) -> _Entry:
        entry = self._entries.get(job_id)
        if entry is None:
            raise UnknownJobError(f"no job {job_id}")
        return entry

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this JobManager belongs to another event loop")
        return loop

    def _enqueue(self, job: Job[Any]) -> None:
        loop = self._bind_loop()
        if self._closed:
            raise RuntimeError("the job manager is closed")
        entry = _Entry(job, loop.create_future())
        self._entries[job.id] = entry
        self._queues.setdefault(job.group, deque()).append(entry)
        self._active += 1
        self._idle.clear()
        self._emit_state(job)
        self._pump()

    def _has_room(self, group: str | None) -> bool:
        limit = self._limits.get(group) if group is not None else None
        return limit is None or self._running[group] < limit

    def _pump(self) -> None:
        """Start queued jobs while limits allow: the oldest startable job first."""
        if self._pumping:
            return  # the outer pump re-checks after each start, so it will see whatever changed
        self._pumping = True
        try:
            while self._max_running is None or self._running.total() < self._max_running:
                heads = [q[0] for group, q in self._queues.items() if self._has_room(group)]
                if not heads:
                    return
                entry = min(heads, key=lambda e: e.job.id)
                queue = self._queues[entry.job.group]
                queue.popleft()
                if not queue:
                    del self._queues[entry.job.group]
                self._start(entry)
        finally:
            self._pumping = False

    def _start(self, entry: _Entry) -> None:
        job = entry.job
        loop = self._loop
        assert loop is not None  # jobs are only queued after the loop is bound
        job.advance(JobState.RUNNING)
        self._running[job.group] += 1
        ctx = JobContext(
            job_id=job.id,
            loop=loop,
            executors=self._executors,
            token=entry.token,
            on_progress=functools.partial(self._on_progress, entry),
            on_log=functools.partial(self._on_log, entry),
        )
        entry.task = loop.create_task(_call(job.fn, ctx), name=f"peropix-job-{job.id}")
        entry.task.add_done_callback(functools.partial(self._on_task_done, entry))
        self._emit_state(job)

    def _on_task_done(self, entry: _Entry, task: asyncio.Task[Any]) -> None:
        job = entry.job
        self._running[job.group] -= 1
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or isinstance(error, JobCancelled):
            self._finish(entry, JobState.CANCELLED)
        elif error is None:
            job.result = task.result()
            self._finish(entry, JobState.DONE)
        elif entry.cancel_requested:
            log.debug("job %d (%s) raised while being cancelled", job.id, job.name, exc_info=error)
            self._finish(entry, JobState.CANCELLED)
        else:
            failure = describe_failure(error)
            if failure.internal:
                log.error("job %d (%s) failed", job.id, job.name, exc_info=error)
            else:
                log.warning("job %d (%s) failed: %s", job.id, job.name, failure.message)
            job.failure = failure
            self._finish(entry, JobState.FAILED)

    def _finish(self, entry: _Entry, state: JobState) -> None:
        job = entry.job
        job.advance(state)
        self._active -= 1
        if not entry.done.done():
            entry.done.set_result(None)
        self._finished.append(job.id)
        while len(self._finished) > self._max_finished:
            self._entries.pop(self._finished.popleft(), None)
        self._emit_state(job)
        self._pump()
        if not self._active:
            self._idle.set()

    def _on_progress(self, entry: _Entry, progress: Progress, extra: Mapping[str, object]) -> None:
        job = entry.job
        if job.state is not JobState.RUNNING:
            return  # a late hop from a thread after the job ended
        job.progress = progress
        self._emit(job, "progress", progress.message, extra)

    def _on_log(self, entry: _Entry, message: str) -> None:
        job = entry.job
        if job.state is not JobState.RUNNING:
            return
        job.log_lines.append(message)
        log.info("job %d (%s): %s", job.id, job.name, message)
        self._emit(job, "log", message)

    def _emit_state(self, job: Job[Any]) -> None:
        self._emit(job, "state", job.failure.message if job.failure is not None else "")

    def _emit(self, job: Job[Any], kind: EventKind, message: str, extra: Mapping[str, object] = NO_EXTRA) -> None:
        event = JobEvent(job.id, job.name, kind, job.state, job.progress, message, extra)
        if self._emitting:
            # a subscriber caused this event; deliver it after the current one so everyone sees the same order
            self._backlog.append(event)
            return
        self._emitting = True
        try:
            while True:
                for stream in list(self._streams):
                    stream.push(event)
                for callback in list(self._subscribers):
                    try:
                        callback(event)
                    except Exception:
                        log.exception(
                            "job event subscriber %r failed on %s event of job %d",
                            callback,
                            event.kind,
                            event.job_id,
                        )
                if not self._backlog:
                    return
                event = self._backlog.popleft()
        finally:
            self._emitting = False
