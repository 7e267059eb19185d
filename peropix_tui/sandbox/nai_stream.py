"""The two framings of `/ai/generate-image-stream`: length-prefixed msgpack maps and server-sent events.

Both carry the same events (`intermediate` with a JPEG preview per step, `final` with the finished image,
`error` when generation fails part-way); SSE sends the image bytes as base64 inside JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack

SIGMA_MAX: Final = 14.6146
SIGMA_MIN: Final = 0.0292
RHO: Final = 7.0


def sigma(step: int, steps: int) -> float:
    """The Karras-schedule noise level at `step` of `steps`, as the web's progress events report it."""
    if steps <= 1:
        return SIGMA_MIN
    ramp = step / (steps - 1)
    high, low = SIGMA_MAX ** (1 / RHO), SIGMA_MIN ** (1 / RHO)
    value: float = (high + ramp * (low - high)) ** RHO
    return round(value, 4)


def msgpack_frame(event: Mapping[str, Any]) -> bytes:
    """One msgpack event: a 4-byte big-endian length, then the packed map."""
    packed: bytes = msgpack.packb(dict(event), use_bin_type=True)
    return len(packed).to_bytes(4, "big") + packed


def sse_frame(event: Mapping[str, Any]) -> bytes:
    """One server-sent event named after its `event_type`, bytes fields as base64 in the JSON data line."""
    data = {
        key: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        for key, value in event.items()
    }
    return f"event: {event['event_type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def intermediate(sample: int, step: int, steps: int, gen_id: str, image: bytes) -> dict[str, Any]:
    return {
        "event_type": "intermediate",
        "samp_ix": sample,
        "step_ix": step,
        "gen_id": gen_id,
        "sigma": sigma(step, steps),
        "image": image,
    }


def final(sample: int, gen_id: str, image: bytes) -> dict[str, Any]:
    return {"event_type": "final", "samp_ix": sample, "gen_id": gen_id, "image": image}


def error(sample: int, message: str, status: int = 500) -> dict[str, Any]:
    return {"event_type": "error", "samp_ix": sample, "message": message, "code": status}
