"""Cooperative cancellation for work running in executor threads.

A thread cannot be interrupted from outside, so blocking code polls a `CancelToken` between chunks (a sampler
step, a file block) and stops by raising `JobCancelled`. The token is a `threading.Event`, so it can also be
handed to blocking calls that accept an event.
"""

from __future__ import annotations

import threading


class JobCancelled(Exception):
    """Raised by work that saw its token set; the job ends CANCELLED, not FAILED."""


class CancelToken:
    """A one-way flag set when the job is cancelled; safe to read and set from any thread."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def event(self) -> threading.Event:
        """The underlying event, for blocking calls that wait on one (`event.wait(timeout)`)."""
        return self._event

    def cancel(self) -> None:
        self._event.set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("cancelled")
