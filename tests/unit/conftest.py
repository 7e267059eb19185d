"""Fixtures of the NovelAI sandbox, client and sandbox server tests. Modules that test another server define
their own `sandbox`, which takes precedence over this one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_nai_helpers import AUTH, MakeClient, RecordingSleep

from peropix_tui.engine.nai.client import NovelAIClient
from peropix_tui.engine.nai.vibe_cache import VibeCache
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN
from peropix_tui.sandbox.nai_server import NaiSandbox


@pytest.fixture
def sandbox() -> Iterator[NaiSandbox]:
    with NaiSandbox() as server:
        yield server


@pytest.fixture
def client(sandbox: NaiSandbox) -> Iterator[httpx.Client]:
    """Plain HTTP to the sandbox with the sandbox token."""
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, timeout=20) as http:
        yield http


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make_client(sandbox: NaiSandbox, tmp_path: Path, sleeps: RecordingSleep) -> AsyncIterator[MakeClient]:
    """Builds NovelAI clients aimed at the sandbox, with a vibe cache under tmp_path and the recording wait;
    closes every one it built."""
    clients: list[NovelAIClient] = []

    def make(token: str = SANDBOX_TOKEN, **options: Any) -> NovelAIClient:
        options.setdefault("base_url", sandbox.base_url)
        options.setdefault("account_url", sandbox.base_url)
        options.setdefault("vibe_cache", VibeCache(tmp_path / "vibes"))
        options.setdefault("sleep", sleeps)
        client = NovelAIClient(token, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
