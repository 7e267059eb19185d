"""Shared pieces of the job manager and executor tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from peropix_tui.core.jobs import CancelToken, JobCancelled


def token_aware_steps(started: threading.Event, ended: list[str]) -> Callable[[CancelToken], str]:
    """Blocking work of about 20 s that polls its token every 5 ms; records how it ended in `ended`."""

    def steps(token: CancelToken) -> str:
        started.set()
        try:
            for _ in range(4000):
                token.raise_if_cancelled()
                time.sleep(0.005)
        except JobCancelled:
            ended.append("cancelled")
            raise
        ended.append("finished")
        return "finished"

    return steps
