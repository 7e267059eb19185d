"""The app's way to NovelAI: one client for the whole session, and the sandbox when one is in use.

The client is made when first needed (its modules cost start-up time) and made again when the token or the
endpoint changes (the welcome or the settings saved a new one); the previous one stays open until the app ends,
so a request already running with it finishes.
Inside a sandbox session, from `--sandbox` or started from the welcome screen, the client talks to the sandbox
with its token, images are recorded with the provider "sandbox", and fake vibe encodings are cached apart from
real ones. A sandbox started here is stopped by `aclose`, which puts the environment back as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from peropix_tui.core.config import Config
from peropix_tui.core.jobs import Executors
from peropix_tui.core.secrets import SecretStore

if TYPE_CHECKING:
    from peropix_tui.engine.nai.client import NovelAIClient, Subscription
    from peropix_tui.sandbox.session import SandboxSession

log = logging.getLogger(__name__)


class NaiAccess:
    """Owns the NovelAI client and any sandbox session the app started; everything runs on the app's loop."""

    def __init__(
        self,
        config: Config,
        secrets: SecretStore,
        executors: Executors,
        *,
        sandbox: SandboxSession | None = None,
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._executors = executors
        self._sandbox = sandbox
        self._client: NovelAIClient | None = None
        self._client_account = 0
        self._retired: list[NovelAIClient] = []
        self._owned = contextlib.ExitStack()

    @property
    def sandbox(self) -> SandboxSession | None:
        """The sandbox session in use, or None when requests go to NovelAI."""
        return self._sandbox

    @property
    def provider(self) -> str:
        """The provider recorded with images made now."""
        return "sandbox" if self._sandbox is not None else "nai"

    @property
    def has_token(self) -> bool:
        """Whether generation can be tried at all: a sandbox, or a NovelAI token configured."""
        return self._sandbox is not None or bool(self._secrets.value("nai_token"))

    @property
    def account(self) -> int:
        """A number that changes whenever requests would go elsewhere or with another token: a screen showing
        the balance compares it to know it must read the account again."""
        if self._sandbox is not None:
            return hash((self._sandbox.base_url, self._sandbox.token))
        return hash((self._config.get("endpoints.nai_account_url"), self._secrets.value("nai_token")))

    @property
    def subscription(self) -> Subscription | None:
        """The account as last read (after the start-up check and after each generation); None before."""
        if self._client is None or self._client_account != self.account:
            return None
        return self._client.last_subscription

    def client(self) -> NovelAIClient:
        """The client for the current token and endpoint, made when first needed; raises NaiTokenMissingError
        when there is no token and no sandbox."""
        account = self.account
        if self._client is not None and self._client_account != account:
            self._retired.append(self._client)
            self._client = None
        if self._client is None:
            self._client = self._make_client()
            self._client_account = account
        return self._client

    def _make_client(self) -> NovelAIClient:
        from peropix_tui.engine.nai.client import NovelAIClient
        from peropix_tui.engine.nai.vibe_cache import VibeCache

        session = self._sandbox
        if session is None:
            return NovelAIClient.from_config(self._config, self._secrets, executors=self._executors)
        from peropix_tui.sandbox.session import vibe_cache_dir

        return NovelAIClient(
            session.token,
            base_url=session.base_url,
            account_url=session.account_url,
            vibe_cache=VibeCache(vibe_cache_dir(self._config)),
            executors=self._executors,
        )

    async def start_sandbox(self) -> SandboxSession:
        """Start a sandbox for the rest of this run and send every request to it."""
        from peropix_tui.sandbox.session import sandbox_session

        if self._sandbox is not None:
            return self._sandbox
        session = await asyncio.to_thread(self._owned.enter_context, sandbox_session())
        self._sandbox = session
        log.info("the app now uses the sandbox at %s", session.base_url)
        return session

    async def aclose(self) -> None:
        """Close the clients and stop a sandbox started here (waiting for its threads off the loop)."""
        clients = [*self._retired, *([self._client] if self._client is not None else [])]
        self._client, self._retired = None, []
        for client in clients:
            await client.aclose()
        await asyncio.to_thread(self._owned.close)
