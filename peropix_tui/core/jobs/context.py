"""What a running job's function is given: progress and log reporting, executors and its cancel token.

`progress` and `log` may be called from the loop or from an executor thread. From a thread they are marshalled
onto the loop with `call_soon_threadsafe`; progress is coalesced on the way (one hop queued at a time,
carrying the latest value), so a thread reporting every sampler step or every kilobyte cannot flood the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar, TypeVarTuple, Unpack

from peropix_tui.core.jobs.cancel import CancelToken
from peropix_tui.core.jobs.events import JobEvent
from peropix_tui.core.jobs.executors import ExecutorName, Executors
from peropix_tui.core.jobs.model import Progress

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

ProgressSink = Callable[[Progress, Mapping[str, object]], None]
LogSink = Callable[[str], None]


class JobContext:
    """Handed to each job function; created by the manager on the loop thread."""

    def __init__(
        self,
        *,
        job_id: int,
        loop: asyncio.AbstractEventLoop,
        executors: Executors,
        token: CancelToken,
        on_progress: ProgressSink,
        on_log: LogSink,
    ) -> None:
        self._job_id = job_id
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._executors = executors
        self._token = token
        self._on_progress = on_progress
        self._on_log = on_log
        self._lock = threading.Lock()
        self._queued: tuple[Progress, Mapping[str, object]] | None = None

    @property
    def job_id(self) -> int:
        return self._job_id

    @property
    def token(self) -> CancelToken:
        """Pass this to blocking functions so they can poll `raise_if_cancelled()`."""
        return self._token

    @property
    def cancelled(self) -> bool:
        return self._token.cancelled

    def progress(self, done: float, total: float | None = None, message: str = "", **extra: object) -> None:
        """Report progress from any thread; `extra` carries payloads such as preview image bytes."""
        update = (Progress(done, total, message), JobEvent.freeze_extra(extra))
        if threading.get_ident() == self._loop_thread:
            self._on_progress(*update)
            return
        with self._lock:
            hop_queued = self._queued is not None
            self._queued = update
        if not hop_queued:
            self._to_loop(self._flush_progress)

    def log(self, message: str) -> None:
        """Add a line to the job's log (and the app log) from any thread; log lines are never coalesced."""
        if threading.get_ident() == self._loop_thread:
            self._on_log(message)
        else:
            self._to_loop(self._on_log, message)

    async def run_in(self, name: ExecutorName, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """Run blocking `fn(*args)` in the named pool; on cancel, waits until the thread has returned."""
        return await self._executors.run(name, fn, *args, token=self._token)

    def _flush_progress(self) -> None:
        with self._lock:
            update, self._queued = self._queued, None
        if update is not None:
            self._on_progress(*update)

    def _to_loop(self, callback: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        # A closed loop means the manager is gone and the job with it; there is no one left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)
