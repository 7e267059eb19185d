from __future__ import annotations

import asyncio
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.jobs import EventKind, EventStream, JobEvent, JobState, Progress


def _event(job_id: int, kind: EventKind, n: int) -> JobEvent:
    state = JobState.RUNNING
    return JobEvent(job_id, f"job {job_id}", kind, state, Progress(n), message=f"{kind} {n}")


def _stream(*, coalesce: bool = True, maxsize: int = 10_000) -> tuple[EventStream, list[EventStream]]:
    closed: list[EventStream] = []
    return EventStream(coalesce=coalesce, maxsize=maxsize, on_close=closed.append), closed


def _drain(stream: EventStream) -> list[JobEvent]:
    async def collect() -> list[JobEvent]:
        stream.end()
        return [event async for event in stream]

    return asyncio.run(collect())


# Each step pushes one event (job id, kind) or lets the consumer take one buffered event.
_steps = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 3), st.sampled_from(get_args(EventKind))),
        st.just("read"),
    ),
    max_size=120,
)


@given(_steps)
def test_coalescing_keeps_order_states_logs_and_latest_progress(
    steps: list[tuple[int, EventKind] | str],
) -> None:
    async def run() -> tuple[list[JobEvent], list[JobEvent]]:
        stream, _ = _stream()
        pushed: list[JobEvent] = []
        delivered: list[JobEvent] = []
        for n, step in enumerate(steps):
            if isinstance(step, str):
                if len(stream):
                    delivered.append(await anext(stream))
            else:
                job_id, kind = step
                event = _event(job_id, kind, n)
                pushed.append(event)
                stream.push(event)
        stream.end()
        delivered.extend([event async for event in stream])
        return pushed, delivered

    pushed, delivered = asyncio.run(run())
    # delivered is a subsequence of pushed, in order
    positions = [pushed.index(e) for e in delivered]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    missing = [e for e in pushed if e not in delivered]
    for event in missing:
        assert event.kind == "progress"
        later = pushed[pushed.index(event) + 1 :]
        assert any(e.kind == "progress" and e.job_id == event.job_id for e in later)
    for job_id in {e.job_id for e in pushed if e.kind == "progress"}:
        last = [e for e in pushed if e.kind == "progress" and e.job_id == job_id][-1]
        assert last in delivered


def test_newer_progress_replaces_pending_one_and_moves_behind_later_events() -> None:
    stream, _ = _stream()
    for event in [
        _event(1, "progress", 1),
        _event(1, "log", 2),
        _event(2, "progress", 3),
        _event(1, "progress", 4),
    ]:
        stream.push(event)
    assert [(e.job_id, e.kind, e.progress.done) for e in _drain(stream)] == [
        (1, "log", 2),
        (2, "progress", 3),
        (1, "progress", 4),
    ]
    assert stream.replaced == 1


def test_without_coalescing_every_event_is_kept() -> None:
    stream, _ = _stream(coalesce=False)
    for n in range(50):
        stream.push(_event(1, "progress", n))
    assert [e.progress.done for e in _drain(stream)] == list(range(50))


def test_full_buffer_drops_progress_and_logs_but_never_states() -> None:
    stream, _ = _stream(coalesce=False, maxsize=5)
    for n in range(10):
        stream.push(_event(1, "log", n))
    for n in range(10):
        stream.push(_event(1, "state", 100 + n))
    delivered = _drain(stream)
    assert [e.progress.done for e in delivered if e.kind == "log"] == [0, 1, 2, 3, 4]
    assert [e.progress.done for e in delivered if e.kind == "state"] == [100 + n for n in range(10)]
    assert stream.dropped == 5


def test_full_buffer_still_replaces_a_pending_progress() -> None:
    stream, _ = _stream(maxsize=2)
    stream.push(_event(1, "log", 0))
    stream.push(_event(1, "progress", 1))
    stream.push(_event(1, "progress", 2))
    stream.push(_event(2, "progress", 3))  # no room and nothing of job 2 to replace
    assert [(e.job_id, e.progress.done) for e in _drain(stream)] == [(1, 0), (1, 2)]
    assert stream.dropped == 1


def test_buffer_memory_stays_bounded_when_nobody_reads() -> None:
    stream, _ = _stream()
    for n in range(100_000):
        stream.push(_event(n % 3, "progress", n))
    assert len(stream) == 3
    assert len(stream._slots) <= 2 * len(stream) + 65
    assert [e.progress.done for e in _drain(stream)] == [99_997, 99_998, 99_999]


async def test_consumer_waits_for_events_and_stops_at_end() -> None:
    stream, _ = _stream()
    got: list[JobEvent] = []

    async def consume() -> None:
        async for event in stream:
            got.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    assert not consumer.done()
    stream.push(_event(1, "state", 1))
    await asyncio.sleep(0.01)
    assert [e.progress.done for e in got] == [1]
    stream.push(_event(1, "log", 2))
    stream.end()
    stream.push(_event(1, "log", 3))  # after the end: ignored
    await asyncio.wait_for(consumer, 1)
    assert [e.progress.done for e in got] == [1, 2]


async def test_close_unsubscribes_and_discards() -> None:
    stream, closed = _stream()
    async with stream:
        stream.push(_event(1, "log", 1))
    assert closed == [stream]
    assert len(stream) == 0
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    stream.close()
    assert closed == [stream]


def test_extra_is_read_only_copy() -> None:
    source: dict[str, object] = {"preview": b"png"}
    frozen = JobEvent.freeze_extra(source)
    source["preview"] = b"changed"
    assert frozen == {"preview": b"png"}
    with pytest.raises(TypeError):
        frozen["preview"] = b"x"  # type: ignore[index]


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        _stream(maxsize=0)
