from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.jobs import TRANSITIONS, IllegalTransitionError, Job, JobState, Progress


async def _noop(ctx: object) -> None:
    return None


def _job() -> Job[None]:
    return Job(id=1, name="n", kind="k", group=None, fn=_noop)


def test_terminal_states_have_no_exits_and_live_states_do() -> None:
    assert {s for s in JobState if s.terminal} == {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
    assert JobState.QUEUED.can_become(JobState.RUNNING)
    assert JobState.QUEUED.can_become(JobState.CANCELLED)
    assert not JobState.QUEUED.can_become(JobState.DONE)
    assert not JobState.QUEUED.can_become(JobState.FAILED)
    assert not JobState.RUNNING.can_become(JobState.QUEUED)


def test_advance_stamps_start_and_finish() -> None:
    job = _job()
    assert job.started is None and job.finished is None and job.elapsed is None
    job.advance(JobState.RUNNING)
    assert job.started is not None and job.finished is None
    assert job.elapsed is not None and job.elapsed >= 0
    job.advance(JobState.DONE)
    assert job.finished is not None
    assert job.finished.mono >= job.started.mono >= job.created.mono
    assert job.elapsed == job.finished.mono - job.started.mono


def test_illegal_transition_raises_and_keeps_state() -> None:
    job = _job()
    with pytest.raises(IllegalTransitionError, match="queued -> done"):
        job.advance(JobState.DONE)
    assert job.state is JobState.QUEUED


@given(st.lists(st.sampled_from(list(JobState)), max_size=12))
def test_any_sequence_follows_the_table(targets: list[JobState]) -> None:
    job = _job()
    for target in targets:
        before = job.state
        if target in TRANSITIONS[before]:
            job.advance(target)
            assert job.state is target
        else:
            with pytest.raises(IllegalTransitionError):
                job.advance(target)
            assert job.state is before
        if before.terminal:
            assert job.state is before


def test_progress_fraction() -> None:
    assert Progress(5, 10).fraction == 0.5
    assert Progress(15, 10).fraction == 1.0
    assert Progress(3).fraction is None
    assert Progress(0, 0).fraction is None


@pytest.mark.parametrize(("done", "total"), [(-1, None), (math.nan, None), (math.inf, 1), (1, -2), (1, math.nan)])
def test_progress_rejects_nonsense(done: float, total: float | None) -> None:
    with pytest.raises(ValueError, match="progress"):
        Progress(done, total)
