"""HTTP for one NovelAI token: headers, answers turned into typed errors, the retry policy, and the lock that
keeps one request per token in flight.

- Every request carries the token (in the Authorization header only: it is registered with the log
  redactor, and no message built here contains it), `User-Agent: peropix/<version>` and a fresh
  six-character `x-correlation-id` that every error keeps.
- Retries only where a later try can succeed and nothing was charged: 429, 5xx, timeouts and connection
  failures before an answer began, at most three more tries spaced 1 s, 2 s, 4 s plus jitter. Once a 2xx
  answer has started, a failure is reported and never retried, since the images may already be paid for.
- NovelAI answers a second concurrent generation on one account with 429, so every client in the process
  holding the same token queues on one lock, first come first served.
- Bodies are read with a cap: a broken or hostile server costs bounded memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar
from urllib.parse import urlsplit

import httpx

from peropix_tui import __version__
from peropix_tui.core.redact import SECRETS, scrub
from peropix_tui.core.secrets import validate_secret
from peropix_tui.engine.nai.errors import (
    MAX_RETRIES,
    NaiConnectionError,
    NaiError,
    NaiResponseError,
    NaiTimeoutError,
    error_from_response,
    new_correlation_id,
    retry_delay,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT: Final = f"peropix/{__version__}"
CORRELATION_HEADER: Final = "x-correlation-id"
DEFAULT_TIMEOUT: Final = httpx.Timeout(120.0, connect=10.0)
MAX_ERROR_BODY_BYTES: Final = 64 * 1024

Sleep = Callable[[float], Awaitable[None]]
Handler = Callable[[httpx.Response, str], Awaitable[T]]
"""Reads a 2xx answer; gets the response and the request's correlation id."""

_TOKEN_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def token_lock(token: str) -> asyncio.Lock:
    """The lock every client on this event loop holding `token` queues on (first come, first served).

    Keyed by a digest, so the token itself is kept in one place only.
    """
    locks = _TOKEN_LOCKS.setdefault(asyncio.get_running_loop(), {})
    digest = hashlib.sha256(token.encode()).hexdigest()
    lock = locks.get(digest)
    if lock is None:
        lock = locks[digest] = asyncio.Lock()
    return lock


async def read_body(response: httpx.Response, limit: int, correlation_id: str) -> bytes:
    """The whole body, refused as soon as it is longer than `limit`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise NaiResponseError(f"the answer is {declared} bytes, more than {limit}", correlation_id=correlation_id)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise NaiResponseError(f"the answer is longer than {limit} bytes", correlation_id=correlation_id)
    return bytes(body)


async def _read_error_body(response: httpx.Response) -> bytes:
    """The start of an error answer: enough for the message, never the whole of a runaway body."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY_BYTES:
                break
    except httpx.HTTPError as exc:
        log.debug("NovelAI error answer cut short: %s", exc)
    return bytes(body[:MAX_ERROR_BODY_BYTES])


def _with_correlation(error: NaiError, correlation_id: str) -> NaiError:
    if error.correlation_id is not None:
        return error
    return type(error)(error.server_message, status=error.status, correlation_id=correlation_id, details=error.details)


class NaiTransport:
    """Requests for one token. `sleep` and `random_fraction` drive the retry waits (tests pass fast ones)."""

    def __init__(
        self,
        token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self._token = validate_secret("nai_token", token)
        SECRETS.add(self._token)
        self._timeout = timeout
        self._sleep = sleep
        self._random_fraction = random_fraction
        self._http = httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT})

    def lock(self) -> asyncio.Lock:
        """This token's queue; hold it around anything NovelAI runs one at a time per account."""
        return token_lock(self._token)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _transport_error(self, exc: httpx.HTTPError, url: str, committed: bool, correlation_id: str) -> NaiError:
        host = urlsplit(url).netloc
        detail = scrub(str(exc) or type(exc).__name__)
        if committed:
            return NaiResponseError(
                f"the connection to {host} broke before the answer was complete ({detail}); not retried, "
                "since NovelAI may already have charged for it",
                correlation_id=correlation_id,
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return NaiTimeoutError(
                f"could not connect to {host} within {self._timeout.connect:g} s", correlation_id=correlation_id
            )
        if isinstance(exc, httpx.TimeoutException):
            return NaiTimeoutError(
                f"{host} did not answer within {self._timeout.read:g} s", correlation_id=correlation_id
            )
        return NaiConnectionError(f"{host}: {detail}", correlation_id=correlation_id)

    async def call(
        self,
        method: str,
        url: str,
        handle: Handler[T],
        *,
        body: bytes | None = None,
        accept: str | None = None,
    ) -> T:
        """Send a request (`body` is JSON), retrying what may be retried, and give the 2xx answer to `handle`.

        Errors raised by `handle` count as a broken answer: reported, and never retried.
        """
        path = urlsplit(url).path
        attempt = 0
        while True:
            correlation_id = new_correlation_id()
            headers = {"Authorization": f"Bearer {self._token}", CORRELATION_HEADER: correlation_id}
            if body is not None:
                headers["Content-Type"] = "application/json"
            if accept is not None:
                headers["Accept"] = accept
            committed = False
            log.info("NovelAI %s %s (correlation id %s)", method, path, correlation_id)
            try:
                async with self._http.stream(method, url, content=body, headers=headers) as response:
                    if not 200 <= response.status_code < 300:
                        raise error_from_response(
                            response.status_code, await _read_error_body(response), correlation_id=correlation_id
                        )
                    committed = True
                    return await handle(response, correlation_id)
            except NaiError as exc:
                error = _with_correlation(exc, correlation_id)
                delay = None if committed else retry_delay(error, attempt, random_fraction=self._random_fraction)
                if delay is None:
                    raise error from exc
            except httpx.HTTPError as exc:
                error = self._transport_error(exc, url, committed, correlation_id)
                delay = None if committed else retry_delay(error, attempt, random_fraction=self._random_fraction)
                if delay is None:
                    raise error from exc
            attempt += 1
            log.warning("NovelAI %s %s: %s; retry %d of %d in %.1f s", method, path, error, attempt, MAX_RETRIES, delay)
            await self._sleep(delay)
