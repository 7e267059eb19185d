"""`peropix --sandbox` in a real terminal (tmux): the SANDBOX badge, one generation through the queue, a clean quit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from e2e.terminal import Tmux, generate_and_quit, start_peropix

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def sandboxed() -> Iterator[Tmux]:
    t = start_peropix("gen", "--sandbox", size=(120, 40))
    try:
        yield t
    finally:
        t.close()


def test_sandbox_generation_in_a_real_terminal(sandboxed: Tmux) -> None:
    sandboxed.wait_for("SANDBOX · nothing is charged")
    sandboxed.wait_for("Balance 10,000", timeout=20)
    generate_and_quit(sandboxed, "Balance 9,980")  # 20 Anlas: the price shown before
