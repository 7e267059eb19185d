"""Async jobs and the bounded executors they run blocking work in; shared by the TUI and the CLI."""

from __future__ import annotations

from peropix_tui.core.jobs.cancel import CancelToken, JobCancelled
from peropix_tui.core.jobs.context import JobContext
from peropix_tui.core.jobs.events import EventKind, EventStream, JobEvent
from peropix_tui.core.jobs.executors import (
    EXECUTOR_NAMES,
    ExecutorName,
    Executors,
    ExecutorSizeError,
    ExecutorSizes,
)
from peropix_tui.core.jobs.manager import (
    JobManager,
    JobStateError,
    Subscriber,
    UnknownJobError,
    describe_failure,
)
from peropix_tui.core.jobs.model import (
    TRANSITIONS,
    IllegalTransitionError,
    Job,
    JobFailure,
    JobFn,
    JobState,
    Progress,
    Stamp,
)

__all__ = [
    "EXECUTOR_NAMES",
    "TRANSITIONS",
    "CancelToken",
    "EventKind",
    "EventStream",
    "ExecutorName",
    "ExecutorSizeError",
    "ExecutorSizes",
    "Executors",
    "IllegalTransitionError",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobEvent",
    "JobFailure",
    "JobFn",
    "JobManager",
    "JobState",
    "JobStateError",
    "Progress",
    "Stamp",
    "Subscriber",
    "UnknownJobError",
    "describe_failure",
]
