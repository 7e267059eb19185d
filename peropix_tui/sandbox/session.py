"""`--sandbox`: the sandbox NovelAI server running inside this process, with the process pointed at it.

For as long as the session lasts, the NovelAI endpoint and token environment variables name the sandbox, so
settings and secrets loaded after it starts talk to it and never to NovelAI (a real token in the environment
is set aside and restored after). The data dir stays the user's: images land in the usual outputs folder,
recorded with the provider "sandbox". Vibe encodings are the one exception: the sandbox's are fake, so they
are cached apart and can never be sent to NovelAI later.

`active_session()` tells any part of the app (the TUI's SANDBOX badge, the history provider) whether it is
talking to a sandbox.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peropix_tui.core.config import Config
from peropix_tui.sandbox.nai_accounts import DEFAULT_BALANCE, SANDBOX_TOKEN, default_accounts
from peropix_tui.sandbox.nai_server import NaiSandbox, RecordedRequest, SandboxError

log = logging.getLogger(__name__)

ENV_BASE_URL: Final = "PEROPIX_NAI_BASE_URL"
ENV_ACCOUNT_URL: Final = "PEROPIX_NAI_ACCOUNT_URL"
ENV_TOKEN: Final = "PEROPIX_NAI_TOKEN"
ENV_KEYS: Final = (ENV_BASE_URL, ENV_ACCOUNT_URL, ENV_TOKEN)
SANDBOX_PROVIDER: Final = "sandbox"
NAI_PROVIDER: Final = "nai"
SANDBOX_DATA_SUBDIR: Final = "sandbox"


@dataclass(frozen=True, slots=True)
class SandboxSession:
    """Where the running sandbox answers and the token it accepts."""

    base_url: str
    account_url: str
    token: str
    server: NaiSandbox


_lock = threading.Lock()
_active: SandboxSession | None = None


def active_session() -> SandboxSession | None:
    """The sandbox session this process is running, or None when it talks to NovelAI."""
    return _active


def nai_provider() -> str:
    """The provider name history records for NovelAI images made now: "sandbox" inside a session."""
    return SANDBOX_PROVIDER if _active is not None else NAI_PROVIDER


def vibe_cache_dir(config: Config) -> Path:
    """The vibe cache folder to use now; a sandbox session's fake encodings are kept apart from real ones."""
    if _active is None:
        return config.vibes_dir
    return config.dirs.data_dir / SANDBOX_DATA_SUBDIR / "vibes"


def _log_request(entry: RecordedRequest) -> None:
    status = "dropped" if entry.status is None else str(entry.status)
    log.debug("sandbox: %s %s -> %s", entry.method, entry.path, status)


@contextmanager
def sandbox_session(
    *,
    token: str = SANDBOX_TOKEN,
    balance: int = DEFAULT_BALANCE,
    delay_s: float = 0.0,
    environ: MutableMapping[str, str] | None = None,
) -> Iterator[SandboxSession]:
    """Start the sandbox on a free loopback port and point `environ` (the process environment by default) at it
    until the block ends; then the previous values come back and the server stops. One session at a time."""
    global _active
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    with _lock:
        if _active is not None:
            raise SandboxError(f"a sandbox is already running in this process at {_active.base_url}")
        server = NaiSandbox(accounts=default_accounts(token, balance), delay_s=delay_s, on_request=_log_request)
        server.start()
        session = SandboxSession(server.base_url, server.base_url, token, server)
        saved = {key: env.get(key) for key in ENV_KEYS}
        env[ENV_BASE_URL] = session.base_url
        env[ENV_ACCOUNT_URL] = session.account_url
        env[ENV_TOKEN] = token
        _active = session
    log.info("sandbox session started at %s", session.base_url)
    try:
        yield session
    finally:
        with _lock:
            _active = None
            for key, value in saved.items():
                if value is None:
                    env.pop(key, None)
                else:
                    env[key] = value
        server.stop()
        log.info("sandbox session ended")
