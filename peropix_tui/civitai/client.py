"""The CivitAI REST client: one httpx.AsyncClient, polite and careful with the API key.

- Metadata calls go through one gate, one at a time with `spacing_s` between them (CivitAI's edge limits are
  unpublished; serial calls with a pause are what keeps a long run unthrottled).
- The retry policy follows what the API does under load: 500/502/503/504 and network errors back off
  exponentially with jitter; a 429 waits as long as `Retry-After` says, or 30-60 s for an edge throttle
  without one (and the spacing doubles); the "too many pages" 429 is a bug on our side and is never retried.
- JSON may hold raw control characters (`strict=False`); a username that is all digits is text, not a number.
- The key travels only as `Authorization: Bearer`, only to the configured API origin or CivitAI's own site
  hosts over https: never to storage, never to image hosts, never in a URL.
- The User-Agent is not a browser's: a browser-like one makes CivitAI answer auth failures with HTML.
- Transfers run on worker threads: images with a blocking httpx client, model files with `StorageStreams`,
  which receives a body straight into the memory it is hashed and written from (see storage_stream).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import urljoin

import httpx

from peropix_tui import __version__
from peropix_tui.civitai.errors import ApiError, ApiKeyRejected, PagingLimitError
from peropix_tui.civitai.jsonio import JsonBodyError, parse_json
from peropix_tui.civitai.storage_stream import StorageStreams
from peropix_tui.civitai.urls import CIVITAI_SITES, split_url

log = logging.getLogger(__name__)

USER_AGENT: Final = f"peropix-tui/{__version__} (civitai collector; +https://pypi.org/project/peropix-tui/)"
RETRY_STATUSES: Final = frozenset({500, 502, 503, 504})
MAX_ERROR_BODY: Final = 64 * 1024
MAX_JSON_BODY: Final = 256 * 1024 * 1024
MAX_SPACING_S: Final = 10.0
_KEY_HOSTS: Final = frozenset(CIVITAI_SITES) | {f"www.{site}" for site in CIVITAI_SITES}

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before retrying; `attempts` counts every try, the first included."""

    attempts: int = 6
    base_s: float = 1.0
    cap_s: float = 30.0
    jitter: float = 0.2
    throttle_s: tuple[float, float] = (30.0, 60.0)
    max_wait_s: float = 300.0

    def backoff(self, retry: int) -> float:
        """Delay before retry number `retry` (1 for the first retry), jittered by ±`jitter`."""
        delay = min(self.cap_s, self.base_s * 2.0 ** max(retry - 1, 0))
        return max(0.0, delay * random.uniform(1 - self.jitter, 1 + self.jitter))

    def throttle(self) -> float:
        low, high = self.throttle_s
        return random.uniform(low, high)

    def retry_after(self, response: httpx.Response) -> float | None:
        """`Retry-After` in seconds (a number or an HTTP date), capped at `max_wait_s`; None when absent."""
        return retry_after_s(response.headers.get("retry-after"), self.max_wait_s)


def retry_after_s(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds != seconds:
        return None
    return min(max(seconds, 0.0), cap)


def error_message(body: bytes) -> str:
    """The `error`/`message` of a CivitAI error body as one line, else the start of the body."""
    try:
        document = parse_json(body[:MAX_ERROR_BODY], where="error body")
    except JsonBodyError:
        return " ".join(body[:200].decode("utf-8", errors="replace").split())
    if isinstance(document, dict):
        parts = [document.get("error"), document.get("message")]
        text = ": ".join(p if isinstance(p, str) else str(p) for p in parts if p)
        if text:
            return " ".join(text.split())[:300]
    return " ".join(str(document).split())[:300]


def is_html(response: httpx.Response) -> bool:
    return "html" in response.headers.get("content-type", "").lower()


class _Shared:
    """What every site view of one client shares: connections, the metadata gate and its pacing."""

    def __init__(self, http: httpx.AsyncClient, timeout: httpx.Timeout, spacing_s: float) -> None:
        self.http = http
        self.timeout = timeout
        self.gate = asyncio.Lock()
        self.last_call = 0.0
        self.spacing_s = spacing_s
        self.storage: httpx.Client | None = None
        self.streams: StorageStreams | None = None
        self.storage_lock = threading.Lock()


class CivitaiClient:
    """REST access for one run; use as an async context manager (or call `aclose`).

    `for_site` gives a view on another CivitAI host (a creator URL on civitai.red while the setting says
    civitai.com) that shares connections, pacing and retry state, so a batch is one polite client.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        spacing_s: float = 1.0,
        policy: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        shared: _Shared | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = split_url(self.base_url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(f"CivitAI base URL {base_url!r} must be an http(s) URL such as https://civitai.com")
        self._origin = (parts.scheme, parts.hostname.lower(), parts.port)
        self.api_key = api_key or None
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        if shared is None:
            timeout = timeout or httpx.Timeout(60.0, connect=20.0)
            http = httpx.AsyncClient(
                headers={"User-Agent": USER_AGENT},
                timeout=timeout,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                follow_redirects=False,
                transport=transport,
                trust_env=True,
            )
            shared = _Shared(http, timeout, spacing_s)
        self._shared = shared
        self.http = shared.http

    @property
    def storage_http(self) -> httpx.Client:
        """A blocking client for image transfers on worker threads (image hosts: it never carries the key by
        itself, and follows their redirects). Made on first use, closed with the client."""
        shared = self._shared
        with shared.storage_lock:
            if shared.storage is None:
                shared.storage = httpx.Client(
                    headers={"User-Agent": USER_AGENT},
                    timeout=shared.timeout,
                    limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
                    follow_redirects=True,
                    trust_env=True,
                )
            return shared.storage

    @property
    def storage_streams(self) -> StorageStreams:
        """Model-file GETs on worker threads, with the client's timeouts and environment proxies (storage
        hosts: the key goes only where the caller puts it, and leaves with the first redirect off its origin).
        Made on first use, closed with the client."""
        shared = self._shared
        with shared.storage_lock:
            if shared.streams is None:
                shared.streams = StorageStreams(user_agent=USER_AGENT, timeout=shared.timeout)
            return shared.streams

    @property
    def spacing_s(self) -> float:
        return self._shared.spacing_s

    def for_site(self, base_url: str) -> CivitaiClient:
        """The same client speaking to another base URL."""
        if base_url.rstrip("/") == self.base_url:
            return self
        return CivitaiClient(base_url, self.api_key, policy=self.policy, sleep=self.sleep, shared=self._shared)

    async def __aenter__(self) -> CivitaiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()
        with self._shared.storage_lock:
            storage, self._shared.storage = self._shared.storage, None
            streams, self._shared.streams = self._shared.streams, None
        if storage is not None:
            storage.close()
        if streams is not None:
            streams.close()

    # Addresses and the key -------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL for an API path (`/api/v1/models`) or a full URL given back by the API."""
        return path if "://" in path else urljoin(self.base_url + "/", path.lstrip("/"))

    def may_send_key(self, url: str) -> bool:
        """The key goes to the configured API origin, or over https to civitai.com / civitai.red themselves."""
        parts = split_url(url)
        if parts is None:
            return False
        host = (parts.hostname or "").lower()
        if (parts.scheme, host, parts.port) == self._origin:
            return True
        return parts.scheme == "https" and host in _KEY_HOSTS and parts.port in (None, 443)

    def auth_headers(self, url: str) -> dict[str, str]:
        if self.api_key and self.may_send_key(url):
            return {"Authorization": f"Bearer {self.api_key}"}
        return {}

    # Metadata calls --------------------------------------------------------------------------------------------

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, *, what: str) -> Any:
        """GET a JSON document through the spaced, retried metadata gate; `what` names it in errors."""
        url = self.url(path)
        async with self._shared.gate:
            return await self._get_json_locked(url, params, what)

    async def _space(self) -> None:
        wait = self._shared.last_call + self._shared.spacing_s - time.monotonic()
        if wait > 0:
            await self.sleep(wait)

    async def _get_json_locked(self, url: str, params: Mapping[str, Any] | None, what: str) -> Any:
        retry = 0
        while True:
            await self._space()
            wait: float | None = None
            try:
                response, body = await self._fetch(url, params)
            except httpx.InvalidURL:
                raise ApiError(f"{what}: the API gave an unusable address {url[:120]!r}", reason="bad_url") from None
            except httpx.TransportError as exc:
                self._shared.last_call = time.monotonic()
                failure = ApiError(f"{what}: network error ({type(exc).__name__})", reason="network")
            else:
                self._shared.last_call = time.monotonic()
                status = response.status_code
                if 200 <= status < 300:
                    return self._decode(response, body, what)
                message = error_message(body)
                failure = ApiError(f"{what}: HTTP {status}: {message}", status=status, reason=f"http_{status}")
                if status == 429:
                    if "too many pages" in message.lower():
                        raise PagingLimitError(f"{what}: the API refused deep paging: {message}", status=429)
                    wait = self.policy.retry_after(response)
                    if wait is None:
                        wait = self.policy.throttle()
                        shared = self._shared
                        shared.spacing_s = min(MAX_SPACING_S, max(shared.spacing_s * 2, 0.5))
                        log.warning(
                            "%s: throttled by the edge; waiting %.0f s, spacing now %.1f s", what, wait, self.spacing_s
                        )
                elif status in RETRY_STATUSES:
                    wait = self.policy.retry_after(response)
                else:
                    raise failure
            retry += 1
            if retry >= self.policy.attempts:
                raise failure
            delay = wait if wait is not None else self.policy.backoff(retry)
            log.info("%s; retry %d of %d in %.1f s", failure, retry, self.policy.attempts - 1, delay)
            await self.sleep(delay)

    async def _fetch(self, url: str, params: Mapping[str, Any] | None) -> tuple[httpx.Response, bytes]:
        """One GET whose body is read until it passes `MAX_JSON_BODY` at most (so memory stays bounded)."""
        request = self.http.build_request("GET", url, params=_query(params), headers=self.auth_headers(url))
        response = await self.http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_JSON_BODY:
                    break
            return response, b"".join(chunks)
        finally:
            await response.aclose()

    def _decode(self, response: httpx.Response, body: bytes, what: str) -> Any:
        if is_html(response):
            raise ApiError(
                f"{what}: got an HTML page instead of JSON", status=response.status_code, reason="html_response"
            )
        if len(body) > MAX_JSON_BODY:
            raise ApiError(f"{what}: answer over {MAX_JSON_BODY} bytes is too large", reason="too_large")
        try:
            return parse_json(body, where=what)
        except JsonBodyError as exc:
            raise ApiError(str(exc), status=response.status_code, reason="bad_json") from None

    async def me(self) -> dict[str, Any] | None:
        """Check the key against /api/v1/me; None without a key; `ApiKeyRejected` when it is refused."""
        if not self.api_key:
            return None
        try:
            document = await self.get_json("/api/v1/me", what="API key check (/api/v1/me)")
        except ApiError as exc:
            if exc.status in (401, 403):
                raise ApiKeyRejected(
                    f"CivitAI rejected the API key (HTTP {exc.status} from {self.base_url}/api/v1/me); "
                    "set a valid key in settings or PEROPIX_CIVITAI_API_KEY, or remove it to collect public items"
                ) from None
            raise
        return document if isinstance(document, dict) else {}


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str | int | float | bool | None]] | None:
    """httpx query pairs; list values repeat the key, booleans are `true`/`false`, None values are left out."""
    if params is None:
        return None
    pairs: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                continue
            pairs.append((key, ("true" if item else "false") if isinstance(item, bool) else str(item)))
    return pairs
