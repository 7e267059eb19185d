"""The NovelAI client: generation (whole answers or streamed with previews), vibe encoding through the
cache, and the subscription that tells tier and Anlas.

Requests go through `transport` (one in flight per token, typed errors, retries only where nothing was
charged). Vibes are encoded through the on-disk cache, looked up again after waiting for the token's turn,
so requests for the same vibe pay once. Blocking work (image preparation, metadata, cache files) runs off
the event loop, on the app's executors when it has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeVar, TypeVarTuple, Unpack
from urllib.parse import urlsplit

import httpx
import orjson

from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import ExecutorName, Executors
from peropix_tui.core.metadata import MetadataError, read_metadata
from peropix_tui.core.secrets import SecretStore
from peropix_tui.engine.nai.cost import Account, CostEstimate, estimate_cost, parse_subscription
from peropix_tui.engine.nai.errors import (
    NaiConnectionError,
    NaiHttpError,
    NaiResponseError,
    NaiServerError,
    NaiTimeoutError,
    NaiValidationError,
)
from peropix_tui.engine.nai.models import VibeSupport, model_spec
from peropix_tui.engine.nai.payload import build_payload, check_request_before_encoding, needs_encoding
from peropix_tui.engine.nai.responses import ReturnedImage, looks_like_html, parse_image_response
from peropix_tui.engine.nai.stream import (
    STREAM_FORMATS,
    StreamCollector,
    StreamEvent,
    StreamFormat,
    msgpack_stream_events,
    sse_stream_events,
)
from peropix_tui.engine.nai.transport import DEFAULT_TIMEOUT, NaiTransport, Sleep, read_body
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.nai.vibe_files import MAX_ENCODING_BYTES, VibeFile, load_vibes, make_vibe_file
from peropix_tui.engine.nai.wire import b64, json_number
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
MAX_IMAGES_BODY_BYTES: Final = 700 * 1024 * 1024
"""Ten 50 MB images as base64 JSON, the largest answer a generation can legitimately have."""
MAX_JSON_BODY_BYTES: Final = 1024 * 1024
STREAM_ACCEPT: Final[Mapping[StreamFormat, str]] = {"msgpack": "application/x-msgpack", "sse": "text/event-stream"}
ImagesFormat = Literal["zip", "json"]
IMAGES_FORMATS: Final[tuple[ImagesFormat, ...]] = ("zip", "json")
# Answers from the account host after which the image host is asked instead (the account host has been
# seen answering 400 to some accounts).
_FALLBACK_ERRORS: Final = (
    NaiValidationError,
    NaiHttpError,
    NaiConnectionError,
    NaiTimeoutError,
    NaiServerError,
    NaiResponseError,
)

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


def stream_steps(request: GenerationRequest) -> int:
    """Preview frames per image: every step, or the strength's share of them for img2img and inpaint."""
    if request.action is Action.GENERATE:
        return request.steps
    return max(1, math.ceil(request.steps * request.strength))


def _images_from(returned: list[ReturnedImage], request: GenerationRequest) -> list[GeneratedImage]:
    """The finished images with their metadata read back and their seeds known."""
    if len(returned) != request.n:
        raise NaiResponseError(f"the answer held {len(returned)} images; {request.n} were asked for")
    seeds = request.sample_seeds()
    images: list[GeneratedImage] = []
    for item in returned:
        try:
            metadata = read_metadata(item.data)
        except MetadataError as exc:
            raise NaiResponseError(f"image {item.index} cannot be read: {exc}") from exc
        seed = item.seed if item.seed is not None else metadata.seed
        if seed is None:
            seed = seeds[item.index]
        images.append(GeneratedImage(item.data, item.format, seed, metadata, request, item.index))
    return images


class NovelAIClient:
    """One NovelAI account over HTTP. Use as `async with NovelAIClient(...) as client:` or call `aclose()`.

    `sleep` and `random_fraction` drive the retry waits (tests pass fast ones); `executors`, when given,
    runs the blocking work (image preparation, metadata, cache files) on the app's bounded pools.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        account_url: str = DEFAULT_ACCOUNT_URL,
        vibe_cache: VibeCache | None = None,
        executors: Executors | None = None,
        stream_format: StreamFormat = "msgpack",
        images_format: ImagesFormat = "zip",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        for name, url in (("base_url", base_url), ("account_url", account_url)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise PeropixError(f"NovelAI {name} must be an http(s) URL, not {url!r}")
        if stream_format not in STREAM_FORMATS:
            raise PeropixError(f"stream format must be msgpack or sse, not {stream_format!r}")
        if images_format not in IMAGES_FORMATS:
            raise PeropixError(f"images format must be zip or json, not {images_format!r}")
        self.base_url = base_url.rstrip("/")
        self.account_url = account_url.rstrip("/")
        self.vibe_cache = vibe_cache
        self.stream_format: StreamFormat = stream_format
        self.images_format: ImagesFormat = images_format
        self.last_subscription: Subscription | None = None
        """The account state after the last `subscription()` call (refreshed after every generation)."""
        self._executors = executors
        self._transport = NaiTransport(token, timeout=timeout, sleep=sleep, random_fraction=random_fraction)

    @classmethod
    def from_config(
        cls,
        config: Config,
        secrets: SecretStore,
        *,
        executors: Executors | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> NovelAIClient:
        """A client for the configured endpoints (environment overrides included), token and vibe cache."""
        token = secrets.value("nai_token")
        if not token:
            raise NaiTokenMissingError(
                "no NovelAI token: save one in the settings or set PEROPIX_NAI_TOKEN (or try --sandbox)"
            )
        return cls(
            token,
            base_url=config.get("endpoints.nai_base_url"),
            account_url=config.get("endpoints.nai_account_url"),
            vibe_cache=VibeCache(config.vibes_dir),
            executors=executors,
            sleep=sleep,
        )

    async def __aenter__(self) -> NovelAIClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # --- plumbing ---------------------------------------------------------------------------------------------

    async def _offload(self, pool: ExecutorName, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        if self._executors is not None:
            return await self._executors.run(pool, fn, *args)
        return await asyncio.to_thread(fn, *args)

    # --- account ----------------------------------------------------------------------------------------------

    async def _subscription_from(self, host: str) -> Subscription:
        async def read(response: httpx.Response, correlation_id: str) -> dict[str, Any]:
            data = await read_body(response, MAX_JSON_BODY_BYTES, correlation_id)
            if looks_like_html(data):
                raise NaiResponseError("the subscription answer was an HTML page", correlation_id=correlation_id)
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise NaiResponseError(
                    f"the subscription answer is not JSON ({exc})", correlation_id=correlation_id
                ) from exc
            if not isinstance(parsed, dict):
                raise NaiResponseError("the subscription answer is not a JSON object", correlation_id=correlation_id)
            return parsed

        data = await self._transport.call("GET", host + SUBSCRIPTION_PATH, read, accept="application/json")
        expires = data.get("expiresAt")
        return Subscription(
            parse_subscription(data), expires if isinstance(expires, int) and not isinstance(expires, bool) else None
        )

    async def subscription(self) -> Subscription:
        """Tier and Anlas from `/user/subscription`: the account host first, the image host if that fails."""
        hosts = [self.account_url] if self.account_url == self.base_url else [self.account_url, self.base_url]
        for host, fallback in itertools.pairwise(hosts):
            try:
                subscription = await self._subscription_from(host)
                break
            except _FALLBACK_ERRORS as exc:
                log.info("NovelAI subscription from %s failed (%s); asking %s", host, exc, fallback)
        else:
            subscription = await self._subscription_from(hosts[-1])
        self.last_subscription = subscription
        return subscription

    async def _refresh_subscription(self) -> None:
        try:
            await self.subscription()
        except PeropixError as exc:
            log.warning("could not refresh the NovelAI Anlas balance: %s", exc)

    # --- vibes ------------------------------------------------------------------------------------------------

    async def _cached(self, key: VibeKey) -> bytes | None:
        if self.vibe_cache is None:
            return None
        return await self._offload("io", self.vibe_cache.get, key)

    async def encode_vibe(
        self, image: ImageInput, model: str, information_extracted: float = 1.0, mask: ImageInput | None = None
    ) -> bytes:
        """The vibe encoding of `image` for `model`'s family, from the cache when it was ever made before,
        else from `/ai/encode-vibe` (2 Anlas) and then cached."""
        spec = model_spec(model)
        if spec.vibes is not VibeSupport.ENCODED:
            raise RequestError("vibes", f"{spec.label} does not use vibe encodings")
        if not 0.0 <= information_extracted <= 1.0:
            raise RequestError("vibe information_extracted", f"must be between 0 and 1, not {information_extracted}")
        data = await self._offload("io", read_image_input, image, "vibe image")
        mask_data = None if mask is None else await self._offload("io", read_image_input, mask, "vibe mask")
        key = VibeKey.of(data, spec.id, information_extracted, mask_data)
        cached = await self._cached(key)
        if cached is not None:
            log.info("vibe encoding for %s taken from the cache", spec.id)
            return cached
        payload: dict[str, Any] = {
            "image": b64(data),
            "information_extracted": json_number(round(information_extracted, 2)),
            "model": spec.id,
        }
        if mask_data is not None:
            payload["mask"] = b64(mask_data)

        async def read(response: httpx.Response, correlation_id: str) -> bytes:
            encoding = await read_body(response, MAX_ENCODING_BYTES, correlation_id)
            if not encoding:
                raise NaiResponseError("the vibe encoding was empty", correlation_id=correlation_id)
            if looks_like_html(encoding):
                raise NaiResponseError(
                    "the vibe encoding answer was an HTML page (a proxy or Cloudflare block?)",
                    correlation_id=correlation_id,
                )
            return encoding

        async with self._transport.lock():
            # Another request may have paid for this very encoding while this one waited for the lock.
            cached = await self._cached(key)
            if cached is not None:
                return cached
            encoding = await self._transport.call("POST", self.base_url + ENCODE_PATH, read, body=orjson.dumps(payload))
            if self.vibe_cache is not None:
                try:
                    await self._offload("io", self.vibe_cache.put, key, encoding)
                except PeropixError as exc:
                    log.warning("vibe cache: could not store an encoding: %s", exc)
        return encoding

    async def resolve_vibes(self, request: GenerationRequest) -> GenerationRequest:
        """`request` with every vibe carrying an encoding for its model (cached or made now); unchanged for
        models that send the images themselves."""
        spec = model_spec(request.model)
        if spec.vibes is not VibeSupport.ENCODED or not request.vibes or request.action is Action.INPAINT:
            return request
        resolved: list[VibeRef] = []
        for vibe in request.vibes:
            if needs_encoding(vibe, spec.id):
                assert vibe.image is not None  # needs_encoding is False without an image
                encoding = await self.encode_vibe(vibe.image, spec.id, vibe.information_extracted)
                vibe = replace(vibe, encoding=encoding, encoding_model=spec.id)
            resolved.append(vibe)
        return replace(request, vibes=tuple(resolved))

    async def uncached_vibes(self, request: GenerationRequest) -> int:
        """How many of the request's vibes would have to be encoded (and paid for) now."""
        spec = model_spec(request.model)
        if spec.vibes is not VibeSupport.ENCODED or request.action is Action.INPAINT:
            return 0
        count = 0
        for vibe in request.vibes:
            if not needs_encoding(vibe, spec.id):
                continue
            assert vibe.image is not None
            data = await self._offload("io", read_image_input, vibe.image, "vibe image")
            if await self._cached(VibeKey.of(data, spec.id, vibe.information_extracted)) is None:
                count += 1
        return count

    async def estimate(self, request: GenerationRequest) -> CostEstimate:
        """The Anlas `request` costs for this account (as last read), counting only vibes not cached yet."""
        account = self.last_subscription.account if self.last_subscription is not None else None
        return estimate_cost(request, account, uncached_vibes=await self.uncached_vibes(request))

    async def import_vibes(self, path: Path) -> list[VibeFile]:
        """The vibes of a `.naiv4vibe`/`.naiv4vibebundle` file, their encodings added to the cache."""
        vibes = await self._offload("io", load_vibes, path)
        if self.vibe_cache is not None:
            for vibe in vibes:
                await self._offload("io", self.vibe_cache.import_vibe, vibe)
        return vibes

    async def export_vibe(
        self, image: ImageInput, model: str, information_extracted: float = 1.0, *, strength: float = 0.6
    ) -> VibeFile:
        """A `.naiv4vibe` vibe for `image` holding its encoding for `model` (made now unless cached)."""
        data = await self._offload("io", read_image_input, image, "vibe image")
        encoding = await self.encode_vibe(data, model, information_extracted)
        spec = model_spec(model)
        return await self._offload(
            "metadata", lambda: make_vibe_file(data, [(spec.id, information_extracted, encoding)], strength=strength)
        )

    # --- generation -------------------------------------------------------------------------------------------

    async def _stream_images(
        self, response: httpx.Response, request: GenerationRequest, on_progress: ProgressCallback | None, cid: str
    ) -> list[ReturnedImage]:
        collector = StreamCollector(request.n, stream_steps(request), on_progress, correlation_id=cid)
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        events: AsyncGenerator[StreamEvent, None] = (
            sse_stream_events(response)
            if content_type == "text/event-stream"
            else msgpack_stream_events(response.aiter_bytes())
        )
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                collector.handle(event)
        return collector.images()

    async def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        stream: bool = True,
    ) -> list[GeneratedImage]:
        """Generate the images of `request` (its seed resolved first, so every image's seed is known).

        Streaming reports each step to `on_progress` with the preview image; without streaming the images
        arrive whole. Vibes are encoded first (through the cache). The subscription is refreshed after.
        """
        request = request.resolved()
        check_request_before_encoding(request)
        request = await self.resolve_vibes(request)
        payload = await self._offload("metadata", build_payload, request)
        if stream:
            payload["parameters"]["stream"] = self.stream_format
        body = orjson.dumps(payload)

        async def read_whole(response: httpx.Response, cid: str) -> list[ReturnedImage]:
            data = await read_body(response, MAX_IMAGES_BODY_BYTES, cid)
            return await self._offload("metadata", lambda: parse_image_response(data, correlation_id=cid))

        async def read_stream(response: httpx.Response, cid: str) -> list[ReturnedImage]:
            return await self._stream_images(response, request, on_progress, cid)

        async with self._transport.lock():
            if stream:
                returned = await self._transport.call(
                    "POST",
                    self.base_url + STREAM_PATH,
                    read_stream,
                    body=body,
                    accept=STREAM_ACCEPT[self.stream_format],
                )
            else:
                returned = await self._transport.call(
                    "POST",
                    self.base_url + GENERATE_PATH,
                    read_whole,
                    body=body,
                    accept="application/json" if self.images_format == "json" else None,
                )
        images = await self._offload("metadata", _images_from, returned, request)
        await self._refresh_subscription()
        return images
