"""`--sandbox`: the sandbox NovelAI and CivitAI servers running inside this process, with the process
pointed at them.

For as long as the session lasts, the NovelAI endpoint and token and the CivitAI endpoint and API key
environment variables name the sandboxes, so settings and secrets loaded after it starts talk to them and
never to NovelAI or CivitAI (real tokens and keys in the environment are set aside and restored after; the
environment wins over the secrets file, so a stored key is not used either). The data dir stays the user's:
images land in the usual outputs folder, recorded with the provider "sandbox". Two things are kept apart
because they are fake and must never be taken for real: vibe encodings (they could be sent to NovelAI later)
and the CivitAI library (sandbox models and images would look like real downloads), both under
`<data>/sandbox/`.

`active_session()` tells any part of the app (the TUI's SANDBOX badge, the history provider) whether it is
talking to a sandbox.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from peropix_tui.core.config import Config
from peropix_tui.sandbox.civitai_credentials import SANDBOX_API_KEY, SANDBOX_USERNAME
from peropix_tui.sandbox.nai_accounts import DEFAULT_BALANCE, SANDBOX_TOKEN, default_accounts
from peropix_tui.sandbox.nai_server import NaiSandbox, SandboxError

if TYPE_CHECKING:
    from peropix_tui.sandbox.civitai_server import CivitaiSandbox

log = logging.getLogger(__name__)

ENV_BASE_URL: Final = "PEROPIX_NAI_BASE_URL"
ENV_ACCOUNT_URL: Final = "PEROPIX_NAI_ACCOUNT_URL"
ENV_TOKEN: Final = "PEROPIX_NAI_TOKEN"
ENV_CIVITAI_BASE_URL: Final = "PEROPIX_CIVITAI_BASE_URL"
ENV_CIVITAI_API_KEY: Final = "PEROPIX_CIVITAI_API_KEY"
ENV_KEYS: Final = (ENV_BASE_URL, ENV_ACCOUNT_URL, ENV_TOKEN, ENV_CIVITAI_BASE_URL, ENV_CIVITAI_API_KEY)
SANDBOX_PROVIDER: Final = "sandbox"
NAI_PROVIDER: Final = "nai"
SANDBOX_DATA_SUBDIR: Final = "sandbox"


@dataclass(frozen=True, slots=True)
class SandboxSession:
    """Where the running sandboxes answer and the token and API key they accept."""

    base_url: str
    account_url: str
    token: str
    server: NaiSandbox
    civitai_url: str
    civitai_key: str
    civitai_server: CivitaiSandbox


_lock = threading.Lock()
_active: SandboxSession | None = None


def active_session() -> SandboxSession | None:
    """The sandbox session this process is running, or None when it talks to NovelAI and CivitAI."""
    return _active


def nai_provider() -> str:
    """The provider name history records for NovelAI images made now: "sandbox" inside a session."""
    return SANDBOX_PROVIDER if _active is not None else NAI_PROVIDER


def vibe_cache_dir(config: Config) -> Path:
    """The vibe cache folder to use now; a sandbox session's fake encodings are kept apart from real ones."""
    if _active is None:
        return config.vibes_dir
    return config.dirs.data_dir / SANDBOX_DATA_SUBDIR / "vibes"


def civitai_root(config: Config, chosen: Path | None = None) -> Path:
    """The CivitAI library root to collect into now: the folder the user named (`--root`) wins; otherwise a
    sandbox session's own folder, even over a configured `paths.civitai_root`, so that what the fake server
    serves never sits next to real downloads; otherwise the configured root."""
    if chosen is not None:
        return chosen.expanduser()
    if _active is None:
        return config.civitai_root
    return config.dirs.data_dir / SANDBOX_DATA_SUBDIR / "civitai"


class _Answered(Protocol):
    """What both sandboxes record of a request, as much as the debug log shows."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def status(self) -> int | None: ...


def _request_logger(name: str) -> Callable[[_Answered], None]:
    def log_request(entry: _Answered) -> None:
        status = "dropped" if entry.status is None else str(entry.status)
        log.debug("%s sandbox: %s %s -> %s", name, entry.method, entry.path, status)

    return log_request


@contextmanager
def sandbox_session(
    *,
    token: str = SANDBOX_TOKEN,
    balance: int = DEFAULT_BALANCE,
    delay_s: float = 0.0,
    civitai_key: str = SANDBOX_API_KEY,
    environ: MutableMapping[str, str] | None = None,
) -> Iterator[SandboxSession]:
    """Start both sandboxes on free loopback ports and point `environ` (the process environment by default)
    at them until the block ends; then the previous values come back and the servers stop. One session at a
    time."""
    # Imported here: `peropix generate` without --sandbox loads this module and need not pay for the CivitAI side.
    from peropix_tui.sandbox.civitai_default import default_dataset
    from peropix_tui.sandbox.civitai_server import CivitaiSandbox

    global _active
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    with _lock:
        if _active is not None:
            raise SandboxError(f"a sandbox is already running in this process at {_active.base_url}")
        nai = NaiSandbox(
            accounts=default_accounts(token, balance), delay_s=delay_s, on_request=_request_logger("NovelAI")
        )
        # The default dataset is cheap to build: file bytes, hashes and images are only made when asked for.
        civitai = CivitaiSandbox(default_dataset(), api_keys={}, on_request=_request_logger("CivitAI"))
        civitai.add_api_key(civitai_key, SANDBOX_USERNAME)
        nai.start()
        try:
            civitai.start()
        except BaseException:
            nai.stop()
            raise
        session = SandboxSession(
            base_url=nai.base_url,
            account_url=nai.base_url,
            token=token,
            server=nai,
            civitai_url=civitai.base_url,
            civitai_key=civitai_key,
            civitai_server=civitai,
        )
        saved = {name: env.get(name) for name in ENV_KEYS}
        env[ENV_BASE_URL] = session.base_url
        env[ENV_ACCOUNT_URL] = session.account_url
        env[ENV_TOKEN] = token
        env[ENV_CIVITAI_BASE_URL] = session.civitai_url
        env[ENV_CIVITAI_API_KEY] = civitai_key
        _active = session
    log.info("sandbox session started: NovelAI at %s, CivitAI at %s", session.base_url, session.civitai_url)
    try:
        yield session
    finally:
        with _lock:
            _active = None
            for name, value in saved.items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value
        # Each server takes up to a poll interval to notice it must stop: stop both at once, not one after the other.
        stopper = threading.Thread(target=civitai.stop, name="civitai-sandbox-stop", daemon=True)
        stopper.start()
        try:
            nai.stop()
        finally:
            stopper.join()
        log.info("sandbox session ended")
