"""Driving `peropix sandbox` from the sandbox tests: parsed options for `_run`, and the command in a child
process, read until it prints its settings line and stopped with ctrl+c as a user would."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peropix_tui.commands import sandbox_cmd

_SCRIPT = (
    "import argparse, sys\n"
    "from peropix_tui.commands import sandbox_cmd\n"
    "parser = argparse.ArgumentParser()\n"
    "sandbox_cmd.register(parser.add_subparsers())\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def sandbox_args(**values: Any) -> argparse.Namespace:
    """The options of a bare `peropix sandbox`, with `values` set over them."""
    parser = argparse.ArgumentParser()
    sandbox_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["sandbox"])
    for key, value in values.items():
        setattr(args, key, value)
    return args


@contextlib.contextmanager
def sandbox_process(*options: str, ready: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], list[str]]]:
    """`peropix sandbox OPTIONS` in a child process, read up to the first line holding `ready` (its settings
    line). Yields the process, that line's `NAME=value` settings and every line read; the process is killed on
    the way out if it still runs."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, "sandbox", *options], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or ready not in lines[-1]:
            line = process.stdout.readline()
            assert line, "the command ended before printing its settings"
            lines.append(line)
        yield process, dict(part.split("=", 1) for part in lines[-1].split()), lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def interrupt(process: subprocess.Popen[str]) -> None:
    """Stop the command with ctrl+c and check that it says so and exits cleanly."""
    assert process.stdout is not None
    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 0
    assert "stopping the sandbox" in process.stdout.read()
