"""The NovelAI HTTP client: generation (whole answers or streamed with previews), vibe encoding through the
cache, and the subscription that tells tier and Anlas.

Rules that keep an account safe and its Anlas unspent twice:
- One request in flight per token. NovelAI answers a second concurrent generation with 429, so every
  client in the process that holds the same token queues on one lock, first come first served.
- Retries only where a later try can succeed and nothing was charged: 429, 5xx, timeouts and connection
  failures before an answer began, at most three times, 1 s, 2 s, 4 s plus jitter. Once a 2xx answer has
  started, a failure is reported and never retried, since the images may already be paid for.
- Vibes are encoded through the on-disk cache, re-checked after waiting for the lock, so concurrent
  requests for the same vibe pay once.

The token goes into the Authorization header only: it is registered with the log redactor, and no message
or exception built here contains it. Every request carries a fresh `x-correlation-id`, kept on errors.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeVar, TypeVarTuple, Unpack
from urllib.parse import urlsplit

import httpx
import orjson

from peropix_tui import __version__
from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import ExecutorName, Executors
from peropix_tui.core.metadata import ImageMetadata, MetadataError, read_metadata
from peropix_tui.core.redact import SECRETS, scrub
from peropix_tui.core.secrets import SecretStore, validate_secret
from peropix_tui.engine.nai.cost import Account, CostEstimate, estimate_cost, parse_subscription
from peropix_tui.engine.nai.errors import (
    MAX_RETRIES,
    NaiConnectionError,
    NaiError,
    NaiHttpError,
    NaiResponseError,
    NaiServerError,
    NaiTimeoutError,
    NaiValidationError,
    error_from_response,
    new_correlation_id,
    retry_delay,
)
from peropix_tui.engine.nai.models import VibeSupport, model_spec, same_encoding_family
from peropix_tui.engine.nai.payload import build_payload, check_request
from peropix_tui.engine.nai.responses import ReturnedImage, looks_like_html, parse_image_response
from peropix_tui.engine.nai.stream import (
    STREAM_FORMATS,
    StreamCollector,
    StreamEvent,
    StreamFormat,
    msgpack_stream_events,
    sse_stream_events,
)
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.nai.vibe_files import MAX_ENCODING_BYTES, VibeFile, load_vibes, make_vibe_file
from peropix_tui.engine.types import (
    Action,
    GeneratedImage,
    GenerationRequest,
    ImageInput,
    ProgressEvent,
    RequestError,
    VibeRef,
    read_image_input,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

DEFAULT_BASE_URL: Final = "https://image.novelai.net"
DEFAULT_ACCOUNT_URL: Final = "https://api.novelai.net"
GENERATE_PATH: Final = "/ai/generate-image"
STREAM_PATH: Final = "/ai/generate-image-stream"
ENCODE_PATH: Final = "/ai/encode-vibe"
SUBSCRIPTION_PATH: Final = "/user/subscription"
USER_AGENT: Final = f"peropix/{__version__}"
CORRELATION_HEADER: Final = "x-correlation-id"
DEFAULT_TIMEOUT: Final = httpx.Timeout(120.0, connect=10.0)
MAX_IMAGES_BODY_BYTES: Final = 700 * 1024 * 1024
"""Ten 50 MB images as base64 JSON, the largest answer a generation can legitimately have."""
MAX_JSON_BODY_BYTES: Final = 1024 * 1024
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
STREAM_ACCEPT: Final[Mapping[StreamFormat, str]] = {"msgpack": "application/x-msgpack", "sse": "text/event-stream"}
ImagesFormat = Literal["zip", "json"]
# Where the account host may not answer (§0 of the spec: some answer 400 there) the image host is asked.
_FALLBACK_ERRORS: Final = (
    NaiValidationError,
    NaiHttpError,
    NaiConnectionError,
    NaiTimeoutError,
    NaiServerError,
    NaiResponseError,
)

Sleep = Callable[[float], Awaitable[None]]
ProgressCallback = Callable[[ProgressEvent], None]


class NaiTokenMissingError(PeropixError):
    """No NovelAI token is configured."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """The account as `/user/subscription` reports it: tier, Anlas and whether Opus perks apply."""

    account: Account
    expires_at: int | None = None

    @property
    def tier(self) -> int:
        return self.account.tier

    @property
    def tier_name(self) -> str:
        return self.account.tier_name

    @property
    def active(self) -> bool:
        return self.account.active

    @property
    def balance(self) -> int:
        """Anlas left: the monthly subscription ones plus the purchased ones."""
        return self.account.balance

    @property
    def opus(self) -> bool:
        return self.account.opus


_TOKEN_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def token_lock(token: str) -> asyncio.Lock:
    """The lock every client of this event loop holding `token` queues on (FIFO, as asyncio.Lock is)."""
    locks = _TOKEN_LOCKS.setdefault(asyncio.get_running_loop(), {})
    key = VibeKey.of.__func__  # placeholder never used
    del key
    digest = _token_digest(token)
    lock = locks.get(digest)
    if lock is None:
        lock = locks[digest] = asyncio.Lock()
    return lock


def _token_digest(token: str) -> str:
    """The lock registry is keyed by a digest so the token itself is kept in one place only."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()
