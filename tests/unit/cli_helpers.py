"""Running the CLI in-process from the unit tests, against a sandbox NovelAI server the environment points at."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from peropix_tui.cli import main
from peropix_tui.sandbox.nai_accounts import SandboxAccount
from peropix_tui.sandbox.nai_faults import GENERATE_PATH, STREAM_PATH
from peropix_tui.sandbox.nai_server import NaiSandbox


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@contextlib.contextmanager
def cli_sandbox(
    monkeypatch: pytest.MonkeyPatch, token: str, accounts: Mapping[str, SandboxAccount]
) -> Iterator[NaiSandbox]:
    """A sandbox holding `accounts`, with the environment pointing the CLI at it and signed in as `token`."""
    with NaiSandbox(accounts=dict(accounts)) as server:
        monkeypatch.setenv("PEROPIX_NAI_BASE_URL", server.base_url)
        monkeypatch.setenv("PEROPIX_NAI_ACCOUNT_URL", server.base_url)
        monkeypatch.setenv("PEROPIX_NAI_TOKEN", token)
        yield server


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """`peropix ARGS` through the real entry point, with what it printed."""
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def one_line(result: Result) -> str:
    """The one error line a failed command printed."""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("peropix: ")
    return lines[0]


def png(path: Path, size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (200, 40, 90)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def generated(sandbox: NaiSandbox) -> list[Any]:
    """Bodies of the generation requests the sandbox answered, in order."""
    return [r.body for r in sandbox.requests if r.path in (GENERATE_PATH, STREAM_PATH)]
