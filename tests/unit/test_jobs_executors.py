from __future__ import annotations

import asyncio
import contextvars
import re
import threading
import time

import pytest
from jobs_helpers import token_aware_steps

from peropix_tui.core.errors import ConfigError
from peropix_tui.core.jobs import (
    CancelToken,
    ExecutorName,
    Executors,
    ExecutorSizeError,
    ExecutorSizes,
)


class _Overlap:
    """Counts how many calls are inside `work` at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0

    def work(self, seconds: float) -> str:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        time.sleep(seconds)
        with self.lock:
            self.inside -= 1
        return threading.current_thread().name


def test_sizes_defaults_and_validation() -> None:
    sizes = ExecutorSizes()
    assert (sizes.gpu, sizes.metadata, sizes.io, sizes.hash) == (1, 4, 4, 2)
    assert ExecutorSizes(io=64).io == 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"io": 0}, "executors.io must be an integer from 1 to 64, got 0"),
        ({"hash": -3}, "executors.hash must be an integer from 1 to 64, got -3"),
        ({"metadata": 65}, "executors.metadata must be an integer from 1 to 64, got 65"),
        ({"io": 2.0}, "executors.io must be an integer from 1 to 64, got 2.0"),
        ({"io": True}, "executors.io must be an integer from 1 to 64, got True"),
        ({"gpu": 2}, "executors.gpu is fixed at 1 (GPU work is serialised), got 2"),
    ],
)
def test_sizes_reject_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ExecutorSizeError) as info:
        ExecutorSizes(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert isinstance(info.value, ConfigError)


def test_thread_names_and_pool_sizes() -> None:
    with Executors(ExecutorSizes(metadata=3)) as pools:
        gpu = _Overlap()
        names = {f.result() for f in [pools.submit("gpu", gpu.work, 0.002) for _ in range(6)]}
        assert names == {"peropix-gpu-1"}
        meta = _Overlap()
        names = {f.result() for f in [pools.submit("metadata", meta.work, 0.05) for _ in range(9)]}
        assert names <= {"peropix-metadata-1", "peropix-metadata-2", "peropix-metadata-3"}
        assert meta.peak == 3


@pytest.mark.parametrize(("name", "peak"), [("gpu", 1), ("hash", 2), ("io", 4)])
def test_pool_never_exceeds_its_size(name: ExecutorName, peak: int) -> None:
    with Executors() as pools:
        overlap = _Overlap()
        for future in [pools.submit(name, overlap.work, 0.01) for _ in range(12)]:
            future.result()
        assert overlap.peak == peak


async def test_run_returns_and_raises_and_pool_survives() -> None:
    def boom() -> None:
        raise ValueError("broken header")

    with Executors() as pools:
        assert await pools.run("io", pow, 2, 10) == 1024
        with pytest.raises(ValueError, match="broken header"):
            await pools.run("io", boom)
        assert await pools.run("io", pow, 3, 3) == 27


async def test_context_variables_reach_the_thread() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("from the loop")
    with Executors() as pools:
        assert await pools.run("hash", var.get) == "from the loop"


async def test_cancelled_run_waits_for_the_thread_and_sets_the_token() -> None:
    started = threading.Event()
    ended: list[str] = []
    steps = token_aware_steps(started, ended)

    with Executors() as pools:
        token = CancelToken()
        task = asyncio.create_task(pools.run("gpu", steps, token, token=token))
        assert await asyncio.to_thread(started.wait, 5)
        began = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the thread has already returned when the cancellation surfaces
        assert ended == ["cancelled"]
        assert token.cancelled
        assert time.monotonic() - began < 2
        assert await pools.run("gpu", str.upper, "still usable") == "STILL USABLE"


async def test_cancelled_twice_still_waits_for_the_thread() -> None:
    """A second cancel while the task waits for its thread (an app shutting down cancels everything) must not cut
    the wait short: the task may only end once the work has stopped."""
    started = threading.Event()
    ended: list[str] = []
    steps = token_aware_steps(started, ended)

    def slow_to_stop(token: CancelToken) -> None:
        try:
            steps(token)
        finally:
            time.sleep(0.2)  # the work takes a while to wind down after it saw the token
            ended.append("returned")

    with Executors() as pools:
        token = CancelToken()
        task = asyncio.create_task(pools.run("gpu", slow_to_stop, token, token=token))
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended == ["cancelled", "returned"]


async def test_cancel_before_start_does_not_run_the_work() -> None:
    ran: list[int] = []
    release = threading.Event()
    with Executors() as pools:
        blocker = asyncio.create_task(pools.run("gpu", release.wait, 5))
        queued = asyncio.create_task(pools.run("gpu", ran.append, 1))
        await asyncio.sleep(0.02)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        assert await blocker is True
    assert ran == []


def test_shutdown_is_final_and_idempotent() -> None:
    pools = Executors()
    assert pools.submit("io", pow, 2, 2).result() == 4
    pools.shutdown()
    pools.shutdown()
    assert pools.closed
    with pytest.raises(RuntimeError, match="shut down"):
        pools.get("io")
    assert not any(re.fullmatch(r"peropix-io-\d+", t.name) for t in threading.enumerate())


def test_unknown_pool_name() -> None:
    with Executors() as pools, pytest.raises(ValueError, match="unknown executor 'cuda'"):
        pools.get("cuda")  # type: ignore[arg-type]
