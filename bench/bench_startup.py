"""Cold start to the first painted frame: peropix vs a bare Textual app, each in a fresh interpreter.

Each run is a new process (so imports are cold for Python, warm for the OS page cache, as a user's second launch
is); the child exits right after its first refresh and prints how long that took since interpreter start, and
whether torch was imported. Goal: peropix under 0.5 s and never importing torch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
t0 = time.perf_counter()
from textual.app import App
from textual.widgets import Label
KIND = sys.argv[1]
if KIND == "peropix":
    from peropix_tui.app import PeropixApp as Base
else:
    class Base(App):
        def compose(self):
            yield Label("hello")
class Probe(Base):
    def on_mount(self):
        self.call_after_refresh(self._painted)
    def _painted(self):
        self.painted_at = time.perf_counter() - t0
        self.exit()
app = Probe()
app.run(headless=True, size=(100, 30))
print(f"{app.painted_at:.4f} {'torch' in sys.modules}")
"""


def run(kind: str, env: dict[str, str]) -> tuple[float, bool]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    seconds, torch = done.stdout.split()
    return float(seconds), torch == "True"


def main() -> None:
    rounds = 7
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PEROPIX_CONFIG_DIR=f"{tmp}/c", PEROPIX_DATA_DIR=f"{tmp}/d", TEXTUAL_ANIMATIONS="none")
        run("peropix", env)  # warm the OS file cache and byte-code caches once
        ours, ref, torch_seen = [], [], False
        for _ in range(rounds):
            t, torch = run("peropix", env)
            ours.append(t)
            torch_seen |= torch
            ref.append(run("bare", env)[0])
    o, r = statistics.median(ours), statistics.median(ref)
    print(
        f"first frame, median of {rounds}: peropix {o * 1000:.0f} ms | bare Textual app {r * 1000:.0f} ms "
        f"| ratio {o / r:.2f} | goal < 500 ms: {'met' if o < 0.5 else 'MISSED'}"
    )
    print(f"torch imported during start: {torch_seen}")


if __name__ == "__main__":
    main()
