"""Decoding `/ai/generate-image-stream`: msgpack frames or server-sent events, turned into progress and images.

Both framings carry the same events: `intermediate` (a JPEG preview per step), `final` (the finished image
with its metadata) and `error`. Only `final` frames are results; a stream that ends before every sample's
final arrived is a failure, never "use the last preview". Frames and the whole stream are size-capped so a
broken or hostile server cannot make the client buffer without bound.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
import msgpack
import orjson
from httpx_sse import EventSource, SSEError

from peropix_tui.engine.nai.errors import NaiError, NaiResponseError, NaiServerError, error_class
from peropix_tui.engine.nai.responses import ReturnedImage, image_format, looks_like_html
from peropix_tui.engine.types import ProgressEvent

log = logging.getLogger(__name__)

StreamFormat = Literal["msgpack", "sse"]
STREAM_FORMATS: Final[tuple[StreamFormat, ...]] = ("msgpack", "sse")
LENGTH_BYTES: Final = 4
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
MAX_STREAM_BYTES: Final = 1024 * 1024 * 1024
MAX_EVENT_KEYS: Final = 64
EventKind = Literal["intermediate", "final", "error"]
_KINDS: Final[frozenset[str]] = frozenset({"intermediate", "final", "error"})


@dataclass(frozen=True, slots=True)
class StreamEvent:
    kind: EventKind
    sample_index: int = 0
    step_index: int | None = None
    image: bytes | None = None
    message: str = ""
    code: int | None = None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _image(value: object, kind: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NaiResponseError(f"a stream {kind} event carries an image that is not valid base64") from exc
    raise NaiResponseError(f"a stream {kind} event carries an image of type {type(value).__name__}")


def event_from_mapping(data: Mapping[Any, Any]) -> StreamEvent | None:
    """The event in one decoded frame; None for event types this client does not use."""
    kind = data.get("event_type")
    if not isinstance(kind, str) or kind not in _KINDS:
        log.debug("NovelAI stream: ignoring an event of type %r", kind)
        return None
    sample = _int(data.get("samp_ix")) or 0
    if kind == "error":
        message = data.get("message")
        code = _int(data.get("code"))
        if code is None:
            code = _int(data.get("status_code")) or _int(data.get("statusCode"))
        return StreamEvent("error", sample, message=message if isinstance(message, str) else "", code=code)
    image = _image(data.get("image"), kind)
    if kind == "final" and not image:
        raise NaiResponseError("a stream final event carries no image")
    step = _int(data.get("step_ix"))
    return StreamEvent("final" if kind == "final" else "intermediate", sample, step, image)


def _unpack(frame: bytes) -> Any:
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=False,
            max_bin_len=MAX_FRAME_BYTES,
            max_str_len=MAX_FRAME_BYTES,
            max_array_len=MAX_EVENT_KEYS,
            max_map_len=MAX_EVENT_KEYS,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise NaiResponseError(f"a stream frame is not valid msgpack ({exc})") from exc


class MsgpackFrameDecoder:
    """Splits a byte stream of `[uint32 big-endian length][msgpack map]` frames into events; feed it chunks
    as they arrive, cut anywhere."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame_bytes
        self._seen_bytes = False

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        if not chunk:
            return []
        if not self._seen_bytes:
            self._seen_bytes = True
            if looks_like_html(chunk):
                raise NaiResponseError("the stream was an HTML page, not frames (a proxy or Cloudflare block?)")
            # A frame's first byte is the top of its length, so "{" (a 2 GB frame) can only be a JSON answer.
            if chunk.startswith(b"{"):
                text = " ".join(chunk[:200].decode("utf-8", "replace").split())
                raise NaiResponseError(f"the stream was a JSON answer, not frames: {text}")
        self._buffer += chunk
        events: list[StreamEvent] = []
        offset = 0
        while len(self._buffer) - offset >= LENGTH_BYTES:
            length = int.from_bytes(self._buffer[offset : offset + LENGTH_BYTES], "big")
            if length == 0 or length > self._max_frame:
                raise NaiResponseError(f"a stream frame declares {length} bytes (1 to {self._max_frame} are accepted)")
            end = offset + LENGTH_BYTES + length
            if end > len(self._buffer):
                break
            decoded = _unpack(bytes(self._buffer[offset + LENGTH_BYTES : end]))
            offset = end
            if not isinstance(decoded, dict):
                raise NaiResponseError(f"a stream frame holds a {type(decoded).__name__}, not a map")
            event = event_from_mapping(decoded)
            if event is not None:
                events.append(event)
        del self._buffer[:offset]
        return events

    def close(self) -> None:
        """Check the stream ended on a frame boundary."""
        if self._buffer:
            raise NaiResponseError(f"the stream ended inside a frame ({len(self._buffer)} bytes left over)")


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise NaiResponseError(f"the stream is longer than {limit} bytes")
        yield chunk


async def msgpack_stream_events(
    chunks: AsyncIterator[bytes], *, limit: int = MAX_STREAM_BYTES
) -> AsyncGenerator[StreamEvent, None]:
    decoder = MsgpackFrameDecoder()
    async for chunk in _bounded(chunks, limit):
        for event in decoder.feed(chunk):
            yield event
    decoder.close()


class _BoundedBody(httpx.AsyncByteStream):
    """The decoded body of a live response, with a cap on its total length."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response = response
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in _bounded(self._response.aiter_bytes(), self._limit):
            yield chunk


async def sse_stream_events(
    response: httpx.Response, *, limit: int = MAX_STREAM_BYTES
) -> AsyncGenerator[StreamEvent, None]:
    """The events of a `text/event-stream` response; each `data` field is the event's JSON."""
    # The body is already decoded by the wrapper, so the stand-in response must not decode it again.
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
    bounded = httpx.Response(response.status_code, headers=headers, stream=_BoundedBody(response, limit))
    try:
        async for sse in EventSource(bounded).aiter_sse():
            if not sse.data:
                continue
            try:
                data = orjson.loads(sse.data)
            except orjson.JSONDecodeError as exc:
                raise NaiResponseError(f"a stream {sse.event!r} event's data is not JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise NaiResponseError(f"a stream {sse.event!r} event's data is not a JSON object")
            if "event_type" not in data and sse.event in _KINDS:
                data["event_type"] = sse.event
            event = event_from_mapping(data)
            if event is not None:
                yield event
    except SSEError as exc:
        raise NaiResponseError(f"the stream is not server-sent events ({exc})") from exc


def stream_error(event: StreamEvent, correlation_id: str | None) -> NaiError:
    """The typed error for an `error` frame: by its status code when it has one, else a server error."""
    kind = error_class(event.code) if event.code is not None and 400 <= event.code <= 599 else NaiServerError
    return kind(event.message, status=event.code, correlation_id=correlation_id)


class StreamCollector:
    """Turns stream events into progress callbacks and final images for a batch of `samples` images."""

    def __init__(
        self,
        samples: int,
        total_steps: int,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        *,
        correlation_id: str | None = None,
    ) -> None:
        self.samples = samples
        self.total_steps = total_steps
        self.on_progress = on_progress
        self.correlation_id = correlation_id
        self.finals: dict[int, ReturnedImage] = {}
        self.intermediates = 0

    def handle(self, event: StreamEvent) -> None:
        if event.kind == "error":
            raise stream_error(event, self.correlation_id)
        if not 0 <= event.sample_index < self.samples:
            raise NaiResponseError(
                f"the stream sent an event for image {event.sample_index} of a batch of {self.samples}",
                correlation_id=self.correlation_id,
            )
        if event.kind == "final":
            assert event.image is not None  # event_from_mapping refuses finals without one
            kind = image_format(event.image, f"final image {event.sample_index}", correlation_id=self.correlation_id)
            self.finals[event.sample_index] = ReturnedImage(event.image, kind, event.sample_index)
            return
        self.intermediates += 1
        if self.on_progress is not None:
            step = (event.step_index if event.step_index is not None else self.intermediates - 1) + 1
            self.on_progress(ProgressEvent(step, self.total_steps, event.image, event.sample_index))

    def images(self) -> list[ReturnedImage]:
        """The final images in batch order; an error when any sample never got its final frame."""
        if len(self.finals) < self.samples:
            raise NaiResponseError(
                f"the stream ended after {len(self.finals)} of {self.samples} final images",
                correlation_id=self.correlation_id,
            )
        return [self.finals[index] for index in range(self.samples)]
