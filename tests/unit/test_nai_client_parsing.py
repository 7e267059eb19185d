"""What the NovelAI client makes of answer bodies, without a server: ZIP guard, JSON and bare images, msgpack
frames cut anywhere, server-sent events, and the stream's progress and final-frame rules."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.engine.nai.errors import (
    NaiConcurrencyError,
    NaiResponseError,
    NaiServerError,
    NaiValidationError,
)
from peropix_tui.engine.nai.responses import (
    MAX_COMPRESSION_RATIO,
    MAX_ENTRY_BYTES,
    MAX_ZIP_ENTRIES,
    parse_image_response,
)
from peropix_tui.engine.nai.stream import (
    MsgpackFrameDecoder,
    StreamCollector,
    StreamEvent,
    msgpack_stream_events,
    sse_stream_events,
)
from peropix_tui.engine.types import ProgressEvent


def image_bytes(fmt: str = "PNG", colour: tuple[int, int, int] = (200, 40, 90), size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def zip_of(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_central_size(archive: bytes, size: int) -> bytes:
    """The archive with its first central-directory entry declaring another uncompressed size."""
    at = archive.index(b"PK\x01\x02") + 24
    return archive[:at] + struct.pack("<I", size) + archive[at + 4 :]


# --- whole answers ------------------------------------------------------------------------------------------


def test_zip_entries_come_back_in_batch_order_with_their_formats() -> None:
    first, second, third = image_bytes(colour=(1, 2, 3)), image_bytes("WEBP", (4, 5, 6)), image_bytes(colour=(7, 8, 9))
    archive = zip_of([("image_2.png", third), ("image_0.png", first), ("image_1.webp", second)])
    images = parse_image_response(archive)
    assert [image.data for image in images] == [first, second, third]
    assert [image.format for image in images] == ["png", "webp", "png"]
    assert [image.index for image in images] == [0, 1, 2]
    assert all(image.seed is None for image in images)


def test_zip_with_too_many_entries_is_refused() -> None:
    archive = zip_of([(f"image_{i}.png", image_bytes()) for i in range(MAX_ZIP_ENTRIES + 1)])
    with pytest.raises(NaiResponseError, match=f"{MAX_ZIP_ENTRIES + 1} files; at most {MAX_ZIP_ENTRIES}"):
        parse_image_response(archive)


def test_zip_entry_declaring_more_than_the_size_limit_is_refused_before_unpacking() -> None:
    archive = patch_central_size(zip_of([("image_0.png", image_bytes())]), MAX_ENTRY_BYTES + 1)
    with pytest.raises(NaiResponseError, match=f"more than {MAX_ENTRY_BYTES}"):
        parse_image_response(archive)


def test_zip_bomb_ratio_is_refused() -> None:
    archive = zip_of([("image_0.png", bytes(2 * 1024 * 1024))], zipfile.ZIP_DEFLATED)
    with pytest.raises(NaiResponseError, match=f"compressed more than {MAX_COMPRESSION_RATIO}:1"):
        parse_image_response(archive)


def test_zip_entry_whose_header_understates_its_size_is_refused() -> None:
    data = image_bytes()
    archive = patch_central_size(zip_of([("image_0.png", data)]), len(data) - 10)
    with pytest.raises(NaiResponseError, match=r"image_0\.png"):
        parse_image_response(archive)


def test_truncated_zip_is_a_clear_error_with_the_correlation_id() -> None:
    archive = zip_of([("image_0.png", image_bytes()), ("image_1.png", image_bytes(colour=(9, 9, 9)))])
    with pytest.raises(NaiResponseError, match="damaged or incomplete") as caught:
        parse_image_response(archive[: len(archive) // 2], correlation_id="Ab12Cd")
    assert caught.value.correlation_id == "Ab12Cd"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"not an image at all", "not an image"), (image_bytes("JPEG"), "a JPEG")],
)
def test_zip_entries_must_be_png_or_webp(content: bytes, reason: str) -> None:
    with pytest.raises(NaiResponseError, match=f"image_0.png is {reason}"):
        parse_image_response(zip_of([("image_0.png", content)]))


def test_bare_png_and_webp_bodies_are_single_images() -> None:
    png, webp = image_bytes(), image_bytes("WEBP")
    assert [(i.data, i.format) for i in parse_image_response(png)] == [(png, "png")]
    assert [(i.data, i.format) for i in parse_image_response(webp)] == [(webp, "webp")]


def test_json_images_are_decoded_in_index_order_with_their_seeds() -> None:
    first, second = image_bytes(colour=(1, 1, 1)), image_bytes(colour=(2, 2, 2))
    body = json.dumps(
        {
            "images": [
                {"image": base64.b64encode(second).decode(), "index": 1, "seed": 8},
                {"image": base64.b64encode(first).decode(), "index": 0, "seed": 7},
            ]
        }
    ).encode()
    images = parse_image_response(body)
    assert [(i.data, i.index, i.seed) for i in images] == [(first, 0, 7), (second, 1, 8)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"images": []}', "no images"),
        (b'{"statusCode": 200}', "no images"),
        (b'{"images": [{"image": "***"}]}', "not valid base64"),
        (b'{"images": [7]}', "not an object"),
        (b"{not json", "cannot be parsed"),
    ],
)
def test_bad_json_answers_are_clear_errors(body: bytes, reason: str) -> None:
    with pytest.raises(NaiResponseError, match=reason):
        parse_image_response(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<!DOCTYPE html><html><body>Just a moment...</body></html>", "HTML page"),
        (b"", "empty"),
        (b"\x00\x01garbage", "neither a ZIP"),
    ],
)
def test_other_bodies_are_named(body: bytes, reason: str) -> None:
    with pytest.raises(NaiResponseError, match=reason):
        parse_image_response(body)


# --- msgpack frames -------------------------------------------------------------------------------------------


def frame(event: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(event, use_bin_type=True)
    return len(packed).to_bytes(4, "big") + packed


def intermediate(sample: int, step: int, image: bytes = b"\xff\xd8\xffjpeg") -> dict[str, Any]:
    return {
        "event_type": "intermediate",
        "samp_ix": sample,
        "step_ix": step,
        "gen_id": "g",
        "sigma": 1.5,
        "image": image,
    }


def final(sample: int, image: bytes) -> dict[str, Any]:
    return {"event_type": "final", "samp_ix": sample, "gen_id": "g", "image": image}


event_dicts = st.one_of(
    st.builds(intermediate, st.integers(0, 7), st.integers(0, 49), st.binary(min_size=1, max_size=64)),
    st.builds(final, st.integers(0, 7), st.binary(min_size=1, max_size=64)),
    st.builds(
        lambda s, m, c: {"event_type": "error", "samp_ix": s, "message": m, "code": c},
        st.integers(0, 7),
        st.text(max_size=20),
        st.integers(400, 599),
    ),
)


@given(st.lists(event_dicts, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_frames_decode_the_same_however_the_stream_is_cut(events: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(frame(event) for event in events)
    whole = MsgpackFrameDecoder().feed(stream)
    decoder = MsgpackFrameDecoder()
    pieces: list[StreamEvent] = []
    start = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        pieces += decoder.feed(stream[start:cut])
        start = cut
    decoder.close()
    assert pieces == whole
    assert [e.kind for e in whole] == [event["event_type"] for event in events]
    assert [e.sample_index for e in whole] == [event["samp_ix"] for event in events]
    assert [e.image for e in whole] == [event.get("image") for event in events]
    assert [e.code for e in whole] == [event.get("code") for event in events]


def test_unknown_event_types_are_skipped() -> None:
    assert MsgpackFrameDecoder().feed(frame({"event_type": "heartbeat"}) + frame(final(0, b"png"))) == [
        StreamEvent("final", 0, None, b"png")
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ((1 << 31).to_bytes(4, "big") + b"x", "declares 2147483648 bytes"),
        (bytes(4), "declares 0 bytes"),
        (b"<!DOCTYPE html><html>blocked</html>", "HTML page"),
        (b'{"statusCode": 500, "message": "boom"}', "JSON answer, not frames: .*boom"),
        (frame({"event_type": "final", "samp_ix": 0}), "final event carries no image"),
        (len(b"\x93\x01\x02\x03").to_bytes(4, "big") + b"\x93\x01\x02\x03", "holds a list, not a map"),
        (b"\x00\x00\x00\x02\xc1\xc1", "not valid msgpack"),
    ],
)
def test_bad_frames_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(NaiResponseError, match=reason):
        MsgpackFrameDecoder().feed(data)


def test_a_stream_ending_inside_a_frame_is_an_error() -> None:
    decoder = MsgpackFrameDecoder()
    data = frame(final(0, b"png"))
    assert decoder.feed(data[:-3]) == []
    with pytest.raises(NaiResponseError, match="ended inside a frame"):
        decoder.close()


async def test_the_msgpack_stream_is_capped_in_total() -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield frame(intermediate(0, 0, bytes(1000)))

    with pytest.raises(NaiResponseError, match="longer than 5000 bytes"):
        async for _event in msgpack_stream_events(chunks(), limit=5000):
            pass


# --- server-sent events ----------------------------------------------------------------------------------------


def sse(event: dict[str, Any]) -> bytes:
    data = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in event.items()}
    return f"event: {event['event_type']}\ndata: {json.dumps(data)}\n\n".encode()


def sse_response(body: bytes, content_type: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(200, headers={"content-type": content_type}, content=body)


async def collect(response: httpx.Response, limit: int | None = None) -> list[StreamEvent]:
    events = sse_stream_events(response) if limit is None else sse_stream_events(response, limit=limit)
    return [event async for event in events]


async def test_sse_events_carry_base64_images_decoded() -> None:
    png = image_bytes()
    body = (
        b": keep-alive\n\n"
        + sse(intermediate(0, 0, b"jpeg-0"))
        + sse(intermediate(0, 1, b"jpeg-1"))
        + sse(final(0, png))
    )
    events = await collect(sse_response(body))
    assert [(e.kind, e.step_index, e.image) for e in events] == [
        ("intermediate", 0, b"jpeg-0"),
        ("intermediate", 1, b"jpeg-1"),
        ("final", None, png),
    ]


async def test_sse_event_name_stands_in_for_a_missing_event_type() -> None:
    body = b'event: error\ndata: {"samp_ix": 0, "message": "bad", "status_code": 429}\n\n'
    assert await collect(sse_response(body)) == [StreamEvent("error", 0, message="bad", code=429)]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"event: final\ndata: {oops\n\n", "text/event-stream", "not JSON"),
        (b"event: final\ndata: [1, 2]\n\n", "text/event-stream", "not a JSON object"),
        (b'event: final\ndata: {"samp_ix": 0, "image": "***"}\n\n', "text/event-stream", "not valid base64"),
        (b"event: final\n\n", "text/html", "not server-sent events"),
    ],
)
async def test_bad_sse_streams_are_refused(body: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(NaiResponseError, match=reason):
        await collect(sse_response(body, content_type))


async def test_the_sse_stream_is_capped_in_total() -> None:
    body = sse(intermediate(0, 0, bytes(3000))) * 5
    with pytest.raises(NaiResponseError, match="longer than 10000 bytes"):
        await collect(sse_response(body), limit=10_000)


# --- from events to progress and images ---------------------------------------------------------------------


def test_collector_reports_each_step_and_keeps_only_finals() -> None:
    progress: list[ProgressEvent] = []
    collector = StreamCollector(2, 3, progress.append, correlation_id="Zz9Yy8")
    first, second = image_bytes(colour=(1, 1, 1)), image_bytes(colour=(2, 2, 2))
    for sample, image in ((0, first), (1, second)):
        for step in range(3):
            collector.handle(StreamEvent("intermediate", sample, step, b"jpeg"))
        collector.handle(StreamEvent("final", sample, None, image))
    assert [(p.sample_index, p.step, p.total, p.preview) for p in progress] == [
        (s, step, 3, b"jpeg") for s in (0, 1) for step in (1, 2, 3)
    ]
    assert progress[-1].fraction == 1.0
    assert [(i.data, i.index) for i in collector.images()] == [(first, 0), (second, 1)]


def test_a_stream_without_every_final_is_a_failure_even_with_previews() -> None:
    collector = StreamCollector(2, 2, correlation_id="Ab12Cd")
    collector.handle(StreamEvent("intermediate", 0, 0, image_bytes()))
    collector.handle(StreamEvent("final", 0, None, image_bytes()))
    collector.handle(StreamEvent("intermediate", 1, 0, image_bytes()))
    with pytest.raises(NaiResponseError, match="1 of 2 final images") as caught:
        collector.images()
    assert caught.value.correlation_id == "Ab12Cd"


@pytest.mark.parametrize(
    ("code", "kind"),
    [(None, NaiServerError), (500, NaiServerError), (429, NaiConcurrencyError), (400, NaiValidationError)],
)
def test_error_frames_raise_the_typed_error_with_the_server_message(code: int | None, kind: type[Exception]) -> None:
    collector = StreamCollector(1, 28, correlation_id="Ab12Cd")
    with pytest.raises(kind, match="out of memory") as caught:
        collector.handle(StreamEvent("error", 0, message="out of memory", code=code))
    assert "Ab12Cd" in str(caught.value)


def test_final_frames_must_be_images_of_the_batch() -> None:
    collector = StreamCollector(1, 28)
    with pytest.raises(NaiResponseError, match="image 3 of a batch of 1"):
        collector.handle(StreamEvent("final", 3, None, image_bytes()))
    with pytest.raises(NaiResponseError, match="a JPEG, not a PNG or WebP"):
        collector.handle(StreamEvent("final", 0, None, image_bytes("JPEG")))
