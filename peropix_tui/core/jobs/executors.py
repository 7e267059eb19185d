"""The bounded thread pools that run blocking work, so the event loop (and the UI on it) never waits.

Each kind of work has its own pool so one kind cannot starve another: `gpu` has exactly one worker so model
calls are serialised, `metadata`, `io` and `hash` are small pools sized from settings. Pools start on first
use.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, TypeVar, TypeVarTuple, Unpack

from peropix_tui.core.errors import ConfigError
from peropix_tui.core.jobs.cancel import CancelToken, JobCancelled

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

ExecutorName = Literal["gpu", "metadata", "io", "hash"]
EXECUTOR_NAMES: Final[tuple[ExecutorName, ...]] = ("gpu", "metadata", "io", "hash")
MAX_POOL_SIZE: Final = 64


class ExecutorSizeError(ConfigError):
    """A pool size that is not a whole number in range."""


@dataclass(frozen=True, slots=True)
class ExecutorSizes:
    """Worker counts per pool; `gpu` is accepted only as 1 so settings can be passed through unchanged."""

    gpu: int = 1
    metadata: int = 4
    io: int = 4
    hash: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            hi = 1 if f.name == "gpu" else MAX_POOL_SIZE
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                rule = "is fixed at 1 (GPU work is serialised)" if hi == 1 else f"must be an integer from 1 to {hi}"
                raise ExecutorSizeError(f"executors.{f.name} {rule}, got {value!r}")

    def size_of(self, name: ExecutorName) -> int:
        return int(getattr(self, name))


def _name_worker(name: str, numbers: itertools.count[int], lock: threading.Lock) -> None:
    with lock:
        n = next(numbers)
    threading.current_thread().name = f"peropix-{name}-{n}"


class Executors:
    """Named pools created lazily; `shutdown` (or leaving the `with` block) stops them all."""

    def __init__(self, sizes: ExecutorSizes | None = None) -> None:
        self._sizes = sizes or ExecutorSizes()
        self._pools: dict[ExecutorName, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def sizes(self) -> ExecutorSizes:
        return self._sizes

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, name: ExecutorName) -> ThreadPoolExecutor:
        """The pool for `name`, started on first use."""
        if name not in EXECUTOR_NAMES:
            raise ValueError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTOR_NAMES)}")
        with self._lock:
            if self._closed:
                raise RuntimeError("executors are shut down")
            pool = self._pools.get(name)
            if pool is None:
                pool = ThreadPoolExecutor(
                    max_workers=self._sizes.size_of(name),
                    thread_name_prefix=f"peropix-{name}",
                    initializer=_name_worker,
                    initargs=(name, itertools.count(1), threading.Lock()),
                )
                self._pools[name] = pool
            return pool

    def submit(self, name: ExecutorName, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> Future[T]:
        """Queue `fn(*args)` on a pool from any thread; the caller's context variables go with it."""
        context = contextvars.copy_context()
        return self.get(name).submit(context.run, functools.partial(fn, *args))

    async def run(
        self,
        name: ExecutorName,
        fn: Callable[[Unpack[Ts]], T],
        *args: *Ts,
        token: CancelToken | None = None,
    ) -> T:
        """Await `fn(*args)` on a pool.

        If the awaiting task is cancelled, `token` is set and, when the work has already started, the task
        waits for the thread to return before re-raising: cancellation then means the work has stopped, and
        the GPU pool never holds work from a job that already reports CANCELLED.
        """
        thread_future = self.submit(name, fn, *args)
        loop_future = asyncio.wrap_future(thread_future)
        try:
            return await asyncio.shield(loop_future)
        except asyncio.CancelledError:
            if token is not None:
                token.cancel()
            if not thread_future.cancel():
                await _settle(loop_future)
            raise

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop every pool; all are told first, then joined, so they wind down in parallel. Idempotent."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=cancel_futures)
        if wait:
            for pool in pools:
                pool.shutdown(wait=True)

    def __enter__(self) -> Executors:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


async def _settle(future: asyncio.Future[T]) -> None:
    """Wait for abandoned work to end and consume its outcome so nothing is reported as never retrieved.

    The caller is already being cancelled; a further cancel (an app cancelling every task as it quits) must not
    cut the wait short, or the task would end while its thread still runs."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((future,))
    if future.cancelled():
        return
    error = future.exception()
    if error is not None and not isinstance(error, JobCancelled):
        log.debug("work finished with an error after its caller was cancelled", exc_info=error)
