"""Deterministic stand-in images for the sandbox: pleasant to look at, cheap to make, and visibly tied to the
request so a user (or a test) can tell that prompt, seed and characters reached the server.

The prompt picks the palette, the seed (with the prompt, negative prompt and model) picks the composition,
prompt guidance sets the contrast, and every character prompt gets a halo and a ring at its position. The
picture is drawn on a coarse grid and scaled up, which keeps an 832x1216 image to a few milliseconds.
img2img blends the source in by strength; infill changes only the masked cells. Stream previews fade from
seeded noise into the final picture, one frame per step.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
from collections.abc import Iterator
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from peropix_tui.sandbox.nai_requests import GenerateJob

CELL: Final = 8
PREVIEW_SIDE: Final = 256
PREVIEW_QUALITY: Final = 75
BLOBS: Final = (4, 8)
SPARKLES: Final = 24

Floats = NDArray[np.float32]


def _digest(*parts: object) -> bytes:
    hasher = hashlib.sha256()
    for part in parts:
        data = str(part).encode("utf-8")
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.digest()


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(_digest(*parts)[:16], "big"))


def _colour(hue: float, saturation: float, value: float) -> Floats:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32)


def palette(prompt: str) -> list[Floats]:
    """Four colours from the prompt: two analogous pastels, a deeper shade and a complementary accent."""
    raw = _digest("palette", prompt)
    hue = raw[0] / 256
    spread = 0.06 + raw[1] / 256 * 0.14
    return [
        _colour(hue, 0.35 + raw[2] / 256 * 0.25, 0.92),
        _colour(hue + spread, 0.45 + raw[3] / 256 * 0.25, 0.82),
        _colour(hue - spread, 0.6, 0.45 + raw[4] / 256 * 0.2),
        _colour(hue + 0.5, 0.55, 0.95),
    ]


def _grid(width: int, height: int) -> tuple[Floats, Floats]:
    """Cell-centre coordinates scaled by the longer side, so circles stay round on any aspect."""
    cols, rows = max(2, math.ceil(width / CELL)), max(2, math.ceil(height / CELL))
    side = max(width, height)
    xs = ((np.arange(cols, dtype=np.float32) + 0.5) * CELL / side)[np.newaxis, :]
    ys = ((np.arange(rows, dtype=np.float32) + 0.5) * CELL / side)[:, np.newaxis]
    return np.broadcast_to(xs, (rows, cols)), np.broadcast_to(ys, (rows, cols))


def _blend(canvas: Floats, colour: Floats, weight: Floats) -> Floats:
    w = weight[..., np.newaxis]
    out: Floats = canvas * (1.0 - w) + colour * w
    return out


def _field(job: GenerateJob, index: int) -> Floats:
    """The picture on the coarse grid, RGB floats in 0..1."""
    colours = palette(job.prompt)
    rng = _rng("layout", job.model, job.prompt, job.negative, job.sample_seed(index))
    xs, ys = _grid(job.width, job.height)
    aspect_x, aspect_y = job.width / max(job.width, job.height), job.height / max(job.width, job.height)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    canvas = _blend(np.broadcast_to(colours[0], (*xs.shape, 3)), colours[1], ramp)
    for _ in range(int(rng.integers(*BLOBS))):
        cx, cy = rng.uniform(0, aspect_x), rng.uniform(0, aspect_y)
        radius = rng.uniform(0.08, 0.3)
        colour = colours[int(rng.integers(1, len(colours)))] * rng.uniform(0.85, 1.1)
        weight = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2)) * rng.uniform(0.45, 0.85)
        canvas = _blend(canvas, np.clip(colour, 0, 1), weight.astype(np.float32))
    for character in job.characters:
        cx, cy = character.center[0] * aspect_x, character.center[1] * aspect_y
        colour = palette(character.prompt)[2]
        weight = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 0.08**2)) * 0.85
        canvas = _blend(canvas, colour, weight.astype(np.float32))
    wave = _digest("wave", job.prompt)
    frequency = 3 + wave[0] % 9
    phase = rng.uniform(0, 2 * math.pi)
    bands = 1.0 + 0.05 * np.sin(2 * math.pi * frequency * (xs * 0.6 + ys * 0.8) + phase)
    contrast = 0.75 + min(job.scale, 10.0) / 20
    out = (canvas * bands[..., np.newaxis] - 0.5) * contrast + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _decorate(image: Image.Image, job: GenerateJob, index: int) -> None:
    """Full-resolution details: sparkles placed by the seed and a ring at each character's position."""
    draw = ImageDraw.Draw(image)
    rng = _rng("sparkles", job.prompt, job.sample_seed(index))
    side = max(job.width, job.height)
    for _ in range(SPARKLES):
        x, y = rng.uniform(0, job.width), rng.uniform(0, job.height)
        r = rng.uniform(0.002, 0.007) * side
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 250))
    ring = max(2, side // 200)
    for character in job.characters:
        x, y = character.center[0] * job.width, character.center[1] * job.height
        r = 0.07 * side
        colour = tuple(int(c * 255) for c in palette(character.prompt)[3])
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=ring)


def render(job: GenerateJob, index: int) -> Image.Image:
    """Sample `index` of `job` as an RGB image of the requested size."""
    field = _field(job, index)
    small = Image.fromarray((field * 255 + 0.5).astype(np.uint8), "RGB")
    image = small.resize((job.width, job.height), Image.Resampling.BICUBIC)
    _decorate(image, job, index)
    if job.source is None:
        return image
    source = job.source.convert("RGB")
    mixed = Image.blend(source, image, job.strength)
    if job.mask is None:
        return mixed
    return Image.composite(mixed, source, job.mask)


def previews(final: Image.Image, job: GenerateJob, index: int, count: int) -> Iterator[bytes]:
    """`count` small JPEG frames fading from seeded noise (or the source image) into `final`."""
    scale = min(1.0, PREVIEW_SIDE / max(final.size))
    size = (max(1, round(final.width * scale)), max(1, round(final.height * scale)))
    target = np.asarray(final.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    if job.source is not None:
        start = np.asarray(job.source.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    else:
        start = _rng("noise", job.sample_seed(index)).uniform(0, 255, target.shape).astype(np.float32)
    for step in range(1, count + 1):
        t = step / count
        frame = start * (1 - t) + target * t
        buffer = io.BytesIO()
        Image.fromarray(frame.astype(np.uint8), "RGB").save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
        yield buffer.getvalue()
