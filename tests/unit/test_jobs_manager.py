from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from typing import Any, TypeVar, cast

import pytest
from jobs_helpers import token_aware_steps

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import (
    JobCancelled,
    JobContext,
    JobEvent,
    JobFn,
    JobManager,
    JobState,
    JobStateError,
    Progress,
    UnknownJobError,
)

T = TypeVar("T")


def _states(events: list[JobEvent], job_id: int) -> list[JobState]:
    return [e.state for e in events if e.job_id == job_id and e.kind == "state"]


def _value(value: T) -> JobFn[T]:
    async def fn(ctx: JobContext) -> T:
        return value

    return fn


async def test_lifecycle_and_event_order() -> None:
    async with JobManager() as manager:
        events: list[JobEvent] = []
        manager.subscribe(events.append)

        async def answer(ctx: JobContext) -> int:
            ctx.progress(1, 2, "half", preview=b"img")
            ctx.log("hello")
            await asyncio.sleep(0)
            ctx.progress(2, 2)
            return 42

        job = manager.submit(answer, name="answer", kind="test", group="g")
        assert job.id == 1 and job.state is JobState.RUNNING and manager.active_count == 1
        assert await manager.wait(job.id) is job
        assert (job.state, job.result, job.failure) == (JobState.DONE, 42, None)
        assert job.progress == Progress(2, 2)
        assert list(job.log_lines) == ["hello"]
        assert job.started is not None and job.finished is not None
        assert job.created.mono <= job.started.mono <= job.finished.mono
        assert manager.active_count == 0
        assert manager.jobs == (job,)
        assert manager.get(1) is job
        assert [(e.kind, e.state, e.message) for e in events] == [
            ("state", JobState.QUEUED, ""),
            ("state", JobState.RUNNING, ""),
            ("progress", JobState.RUNNING, "half"),
            ("log", JobState.RUNNING, "hello"),
            ("progress", JobState.RUNNING, ""),
            ("state", JobState.DONE, ""),
        ]
        assert events[2].extra == {"preview": b"img"}
        assert events[2].progress == Progress(1, 2, "half")
        assert events[-1].progress == Progress(2, 2)
        assert {e.name for e in events} == {"answer"}


@pytest.mark.parametrize("limit", [1, 2])
async def test_group_limit_is_fifo_and_never_exceeded(limit: int) -> None:
    intervals: list[tuple[int, float, float]] = []
    running_now: list[int] = []
    peak = 0

    def make(i: int) -> JobFn[None]:
        async def fn(ctx: JobContext) -> None:
            nonlocal peak
            running_now.append(i)
            peak = max(peak, len(running_now))
            start = time.monotonic()
            await asyncio.sleep(0.01)
            intervals.append((i, start, time.monotonic()))
            running_now.remove(i)

        return fn

    async with JobManager(limits={"nai": limit}) as manager:
        jobs = [manager.submit(make(i), name=f"g{i}", kind="generate", group="nai") for i in range(6)]
        assert [j.state for j in jobs].count(JobState.RUNNING) == limit
        await manager.wait_all()
    assert peak == limit
    starts = sorted(intervals, key=lambda iv: iv[1])
    assert [i for i, _, _ in starts] == list(range(6))
    if limit == 1:
        for (_, _, end), (_, start, _) in itertools.pairwise(starts):
            assert end <= start


async def test_groups_do_not_block_each_other_and_global_cap_applies() -> None:
    release = asyncio.Event()
    order: list[str] = []

    def make(label: str) -> JobFn[None]:
        async def fn(ctx: JobContext) -> None:
            order.append(label)
            await release.wait()

        return fn

    async with JobManager(limits={"nai": 1}, max_running=3) as manager:
        manager.submit(make("nai-1"), name="a", kind="k", group="nai")
        manager.submit(make("nai-2"), name="b", kind="k", group="nai")
        manager.submit(make("free-1"), name="c", kind="k")
        manager.submit(make("free-2"), name="d", kind="k")
        manager.submit(make("free-3"), name="e", kind="k")
        await asyncio.sleep(0.01)
        # nai-2 waits for its group, free-3 waits for the global cap; free jobs overtook nai-2
        assert order == ["nai-1", "free-1", "free-2"]
        release.set()
        await manager.wait_all()
        assert sorted(order) == ["free-1", "free-2", "free-3", "nai-1", "nai-2"]
        assert all(j.state is JobState.DONE for j in manager.jobs)


async def test_cancel_queued_job_never_runs() -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def first(ctx: JobContext) -> str:
        await release.wait()
        return "first"

    async def second(ctx: JobContext) -> None:
        ran.append("second")

    async with JobManager(limits={"nai": 1}) as manager:
        events: list[JobEvent] = []
        manager.subscribe(events.append)
        a = manager.submit(first, name="a", kind="k", group="nai")
        b = manager.submit(second, name="b", kind="k", group="nai")
        assert b.state is JobState.QUEUED
        assert manager.cancel(b.id) is True
        assert b.state is JobState.CANCELLED and b.started is None
        assert manager.cancel(b.id) is False
        release.set()
        await manager.wait_all()
        assert a.state is JobState.DONE
        assert ran == []
        assert _states(events, b.id) == [JobState.QUEUED, JobState.CANCELLED]


async def test_cancel_running_job_blocked_in_executor() -> None:
    started = threading.Event()
    ended: list[str] = []
    steps = token_aware_steps(started, ended)

    async def generate(ctx: JobContext) -> str:
        return await ctx.run_in("gpu", steps, ctx.token)

    async with JobManager() as manager:
        events: list[JobEvent] = []
        manager.subscribe(events.append)
        job = manager.submit(generate, name="gen", kind="generate")
        assert await asyncio.to_thread(started.wait, 5)
        began = time.monotonic()
        assert manager.cancel(job.id) is True
        assert job.state is JobState.RUNNING  # until the coroutine ends
        await manager.wait(job.id)
        assert time.monotonic() - began < 2
        assert job.state is JobState.CANCELLED
        assert ended == ["cancelled"]  # the thread stopped before the job reported CANCELLED
        assert _states(events, job.id) == [JobState.QUEUED, JobState.RUNNING, JobState.CANCELLED]

        async def after(ctx: JobContext) -> str:
            return await ctx.run_in("gpu", str.upper, "gpu free")

        assert (await manager.wait(manager.submit(after, name="next", kind="k").id)).result == "GPU FREE"


async def test_cancel_running_async_job() -> None:
    cleaned: list[bool] = []

    async def sleeper(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(ctx.cancelled)

    async with JobManager() as manager:
        job = manager.submit(sleeper, name="sleep", kind="k")
        await asyncio.sleep(0.01)
        began = time.monotonic()
        assert manager.cancel(job.id)
        await manager.wait(job.id)
        assert time.monotonic() - began < 1
        assert job.state is JobState.CANCELLED
        assert cleaned == [True]
        assert manager.cancel(job.id) is False


async def test_job_raising_job_cancelled_ends_cancelled() -> None:
    async def gives_up(ctx: JobContext) -> None:
        raise JobCancelled("stop")

    async with JobManager() as manager:
        job = await manager.wait(manager.submit(gives_up, name="x", kind="k").id)
        assert job.state is JobState.CANCELLED and job.failure is None


async def test_executor_failure_fails_only_that_job() -> None:
    def read_header(path: str) -> str:
        if path == "bad.safetensors":
            raise PeropixError(f"{path}: header is not valid JSON")
        return f"ok {path}"

    def make(path: str) -> JobFn[str]:
        async def fn(ctx: JobContext) -> str:
            return await ctx.run_in("metadata", read_header, path)

        return fn

    async with JobManager() as manager:
        jobs = [
            manager.submit(make(p), name=p, kind="scan") for p in ["a.safetensors", "bad.safetensors", "c.safetensors"]
        ]
        await manager.wait_all()
        assert [j.state for j in jobs] == [JobState.DONE, JobState.FAILED, JobState.DONE]
        failure = jobs[1].failure
        assert failure is not None
        assert failure.message == "bad.safetensors: header is not valid JSON"
        assert not failure.internal and isinstance(failure.exception, PeropixError)
        assert jobs[2].result == "ok c.safetensors"
        again = manager.submit(make("d.safetensors"), name="d", kind="scan")
        assert (await manager.wait(again.id)).result == "ok d.safetensors"


async def test_unexpected_exception_is_internal_error_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    events: list[JobEvent] = []

    async def buggy(ctx: JobContext) -> None:
        raise ValueError("bad\nvalue")

    async with JobManager() as manager:
        manager.subscribe(events.append)
        with caplog.at_level(logging.ERROR, logger="peropix_tui.core.jobs"):
            job = await manager.wait(manager.submit(buggy, name="bug", kind="k").id)
        assert job.state is JobState.FAILED
        assert job.failure is not None and job.failure.internal
        assert job.failure.message == "internal error: ValueError: bad value"
        assert events[-1].message == "internal error: ValueError: bad value"
        records = [r for r in caplog.records if "job 1 (bug) failed" in r.getMessage()]
        assert len(records) == 1 and records[0].exc_info is not None
        assert records[0].exc_info[0] is ValueError

        def not_async(ctx: JobContext) -> int:
            return 3

        # a plain function: the job fails, `submit` does not
        sync_job = manager.submit(cast(Any, not_async), name="sync", kind="k")
        await manager.wait(sync_job.id)
        assert sync_job.state is JobState.FAILED
        assert sync_job.failure is not None and sync_job.failure.message.startswith("internal error: TypeError")


async def test_coalescing_with_slow_consumer() -> None:
    async def chatty(ctx: JobContext) -> str:
        for i in range(1, 1001):
            ctx.progress(i, 1000)
            if i % 100 == 0:
                ctx.log(f"at {i}")
            if i % 25 == 0:
                await asyncio.sleep(0)
        return "ok"

    async with JobManager() as manager:
        stream = manager.events(maxsize=100)
        jobs = [manager.submit(chatty, name=f"c{n}", kind="k") for n in range(3)]
        delivered: list[JobEvent] = []
        async for event in stream:
            delivered.append(event)
            await asyncio.sleep(0.003)
            if event.kind == "state" and event.state.terminal and manager.active_count == 0 and not len(stream):
                break
        stream.close()
    for job in jobs:
        mine = [e for e in delivered if e.job_id == job.id]
        progress = [e.progress.done for e in mine if e.kind == "progress"]
        assert len(progress) < 100
        assert progress == sorted(progress)
        assert progress[-1] == 1000
        assert [e.state for e in mine if e.kind == "state"] == [
            JobState.QUEUED,
            JobState.RUNNING,
            JobState.DONE,
        ]
        assert [e.message for e in mine if e.kind == "log"] == [f"at {i}" for i in range(100, 1001, 100)]
    assert stream.dropped == 0
    assert stream.replaced + sum(e.kind == "progress" for e in delivered) == 3000


async def test_progress_and_log_from_worker_thread_arrive_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    callback_threads: set[int] = set()

    def work(ctx: JobContext) -> str:
        for i in range(1, 501):
            ctx.progress(i, 500, f"step {i}", preview=i)
        ctx.log("thread says hi")
        return threading.current_thread().name

    async def fn(ctx: JobContext) -> str:
        return await ctx.run_in("metadata", work, ctx)

    async with JobManager() as manager:
        events: list[JobEvent] = []
        manager.subscribe(events.append)
        manager.subscribe(lambda _event: callback_threads.add(threading.get_ident()))
        job = await manager.wait(manager.submit(fn, name="t", kind="k").id)
    assert job.state is JobState.DONE
    assert str(job.result).startswith("peropix-metadata-")
    assert callback_threads == {loop_thread}
    assert job.progress == Progress(500, 500, "step 500")
    progress = [e for e in events if e.kind == "progress"]
    assert 1 <= len(progress) <= 500
    assert [e.progress.done for e in progress] == sorted(e.progress.done for e in progress)
    assert progress[-1].progress.done == 500 and progress[-1].extra == {"preview": 500}
    assert [e.kind for e in events][-2:] == ["log", "state"]
    assert list(job.log_lines) == ["thread says hi"]


async def test_retry_of_failed_and_cancelled_jobs() -> None:
    attempts: list[int] = []

    async def flaky(ctx: JobContext) -> str:
        attempts.append(ctx.job_id)
        if len(attempts) == 1:
            raise PeropixError("NovelAI: 429 too many requests")
        return "image"

    async with JobManager(limits={"nai": 1}) as manager:
        first = await manager.wait(manager.submit(flaky, name="gen", kind="generate", group="nai").id)
        assert first.state is JobState.FAILED
        second = manager.retry(first.id)
        assert (second.id, second.attempt, second.retry_of) == (2, 2, 1)
        assert (second.name, second.kind, second.group) == ("gen", "generate", "nai")
        await manager.wait(second.id)
        assert (second.state, second.result) == (JobState.DONE, "image")
        assert first.state is JobState.FAILED
        assert attempts == [1, 2]
        with pytest.raises(JobStateError, match="job 2 is done; only failed or cancelled jobs can be retried"):
            manager.retry(second.id)
        with pytest.raises(UnknownJobError, match="no job 99"):
            manager.retry(99)

        async def forever(ctx: JobContext) -> None:
            await asyncio.sleep(60)

        slow = manager.submit(forever, name="slow", kind="k")
        manager.cancel(slow.id)
        await manager.wait(slow.id)
        third = manager.retry(slow.id)
        assert third.attempt == 2 and third.state is JobState.RUNNING
        manager.cancel(third.id)


async def test_gpu_executor_serialises_concurrent_jobs() -> None:
    lock = threading.Lock()
    inside = {"gpu": 0, "io": 0}
    peak = {"gpu": 0, "io": 0}

    def step(pool: str) -> None:
        with lock:
            inside[pool] += 1
            peak[pool] = max(peak[pool], inside[pool])
        time.sleep(0.01)
        with lock:
            inside[pool] -= 1

    def make(pool: str) -> JobFn[None]:
        async def fn(ctx: JobContext) -> None:
            for _ in range(3):
                await ctx.run_in(pool, step, pool)  # type: ignore[arg-type]

        return fn

    async with JobManager() as manager:
        for n in range(5):
            manager.submit(make("gpu"), name=f"g{n}", kind="generate")
            manager.submit(make("io"), name=f"i{n}", kind="save")
        assert sum(j.state is JobState.RUNNING for j in manager.jobs) == 10
        await manager.wait_all()
    assert peak == {"gpu": 1, "io": 4}


async def test_aclose_cancels_everything_and_ends_streams() -> None:
    started = threading.Event()
    ended: list[str] = []
    steps = token_aware_steps(started, ended)

    async def on_gpu(ctx: JobContext) -> str:
        return await ctx.run_in("gpu", steps, ctx.token)

    async def sleeper(ctx: JobContext) -> None:
        await asyncio.sleep(60)

    manager = JobManager(limits={"nai": 1})
    stream = manager.events()
    gpu_job = manager.submit(on_gpu, name="gpu", kind="generate")
    nai_running = manager.submit(sleeper, name="n1", kind="generate", group="nai")
    nai_queued = manager.submit(sleeper, name="n2", kind="generate", group="nai")
    assert await asyncio.to_thread(started.wait, 5)

    delivered: list[JobEvent] = []

    async def consume() -> None:
        async for event in stream:
            delivered.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(manager.aclose(), 5)
    await asyncio.wait_for(consumer, 1)  # the stream ended by itself
    assert [j.state for j in (gpu_job, nai_running, nai_queued)] == [JobState.CANCELLED] * 3
    assert nai_queued.started is None
    assert ended == ["cancelled"]
    assert manager.executors.closed and manager.closed
    assert manager.active_count == 0
    assert sum(e.kind == "state" and e.state is JobState.CANCELLED for e in delivered) == 3
    with pytest.raises(RuntimeError, match="closed"):
        manager.submit(sleeper, name="late", kind="k")
    late_stream = manager.events()
    assert [e async for e in late_stream] == []
    await manager.aclose()


async def test_raising_subscriber_does_not_break_the_manager(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[JobEvent] = []

    def broken(event: JobEvent) -> None:
        raise RuntimeError("subscriber bug")

    async with JobManager() as manager:
        manager.subscribe(broken)
        manager.subscribe(seen.append)
        with caplog.at_level(logging.ERROR, logger="peropix_tui.core.jobs"):
            job = await manager.wait(manager.submit(_value(7), name="v", kind="k").id)
        assert job.state is JobState.DONE and job.result == 7
        assert [e.state for e in seen] == [JobState.QUEUED, JobState.RUNNING, JobState.DONE]
        failures = [r for r in caplog.records if "subscriber" in r.getMessage()]
        assert len(failures) == 3 and all(r.exc_info is not None for r in failures)


async def test_events_caused_by_a_subscriber_reach_everyone_in_order() -> None:
    manager = JobManager(limits={"nai": 1})
    later: list[tuple[int, JobState]] = []
    release = asyncio.Event()

    def canceller(event: JobEvent) -> None:
        # cancelling a queued job emits its CANCELLED event while QUEUED is still being delivered
        if event.kind == "state" and event.state is JobState.QUEUED and event.job_id == 2:
            manager.cancel(event.job_id)

    async def blocker(ctx: JobContext) -> None:
        await release.wait()

    manager.subscribe(canceller)
    unsubscribe = manager.subscribe(lambda e: later.append((e.job_id, e.state)))
    manager.submit(blocker, name="b", kind="k", group="nai")
    queued = manager.submit(blocker, name="q", kind="k", group="nai")
    assert queued.state is JobState.CANCELLED
    assert later == [
        (1, JobState.QUEUED),
        (1, JobState.RUNNING),
        (2, JobState.QUEUED),
        (2, JobState.CANCELLED),
    ]
    release.set()
    await manager.wait_all()
    unsubscribe()
    await manager.wait(manager.submit(_value(1), name="v", kind="k").id)
    assert later[-1] == (1, JobState.DONE)
    await manager.aclose()


async def test_global_cap_starts_the_oldest_job_of_any_group_first() -> None:
    order: list[str] = []

    def make(label: str) -> JobFn[None]:
        async def fn(ctx: JobContext) -> None:
            order.append(label)
            await asyncio.sleep(0.001)

        return fn

    labels = [f"{group}{n}" for n in range(3) for group in "xyz"]
    async with JobManager(max_running=1) as manager:
        for label in labels:
            manager.submit(make(label), name=label, kind="k", group=label[0])
        await manager.wait_all()
    assert order == labels


async def test_thread_progress_is_coalesced_before_it_reaches_the_loop() -> None:
    sent = threading.Event()

    def work(ctx: JobContext) -> None:
        for i in range(1, 501):
            ctx.progress(i, 500)
        ctx.log("done sending")
        sent.set()

    async def fn(ctx: JobContext) -> None:
        future = manager.executors.submit("io", work, ctx)
        # Hold the loop on purpose until the thread has sent everything: only one progress hop may be queued.
        assert sent.wait(5)
        await asyncio.wrap_future(future)

    async with JobManager() as manager:
        events: list[JobEvent] = []
        manager.subscribe(events.append)
        job = await manager.wait(manager.submit(fn, name="t", kind="k").id)
    assert job.state is JobState.DONE
    assert [(e.kind, e.progress.done) for e in events if e.kind != "state"] == [
        ("progress", 500),
        ("log", 500),
    ]


async def test_finished_jobs_are_forgotten_beyond_the_limit() -> None:
    async with JobManager(max_finished=3) as manager:
        for n in range(5):
            await manager.wait(manager.submit(_value(n), name=f"v{n}", kind="k").id)
        assert [j.id for j in manager.jobs] == [3, 4, 5]
        with pytest.raises(UnknownJobError, match="no job 1"):
            manager.get(1)
        assert manager.clear_finished() == 3
        assert manager.jobs == ()


async def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="'nai' limit"):
        JobManager(limits={"nai": 0})
    with pytest.raises(ValueError, match="max_running"):
        JobManager(max_running=0)


def test_submit_needs_a_running_loop() -> None:
    manager = JobManager()
    with pytest.raises(RuntimeError, match="no running event loop"):
        manager.submit(_value("x"), name="x", kind="k")
    manager.executors.shutdown()
