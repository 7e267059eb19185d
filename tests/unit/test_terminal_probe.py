"""The terminal's image-support queries run in a thread beside start-up, and not at all with previews off."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import sys
from peropix_tui.terminal_probe import TerminalProbe
probe = TerminalProbe(sys.argv[1]).start()
probe.wait()
print("textual_image.renderable" in sys.modules, "textual" in sys.modules)
"""


def probe_in_fresh_interpreter(renderer: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, renderer], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_auto_asks_the_terminal_without_importing_textual_itself() -> None:
    # textual-image's renderables are loaded (that is what queries the terminal); Textual's widget side is left
    # to the main thread.
    assert probe_in_fresh_interpreter("auto") == ["True", "False"]


def test_previews_off_asks_nothing() -> None:
    assert probe_in_fresh_interpreter("off") == ["False", "False"]
