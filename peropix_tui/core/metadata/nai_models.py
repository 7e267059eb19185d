"""NovelAI's `Source` chunk (`NovelAI Diffusion V4.5 4BDE2A90`) <-> API model id and weights hash.

Older Comments do not name the model, so `Source` is the only place it can be recovered from; the hash tells
full from curated weights, which share a display name.
"""

from __future__ import annotations

import re

# API id -> (Source display name, known weight hashes; the first is used when writing without a hash).
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nai-diffusion-4-5-full": ("NovelAI Diffusion V4.5", ("4BDE2A90", "1229B44F", "B9F340FD", "F3D95188")),
    "nai-diffusion-4-5-curated": ("NovelAI Diffusion V4.5", ("C02D4F98", "5AB81C7C", "B5A2A797")),
    "nai-diffusion-4-full": (
        "NovelAI Diffusion V4",
        ("37442FCA", "4F49EC75", "CA4B7203", "79F47848", "F6302A9D"),
    ),
    "nai-diffusion-4-curated-preview": ("NovelAI Diffusion V4", ("7ABFFA2A", "C1CCBA86", "770A9E12")),
    "nai-diffusion-3": (
        "Stable Diffusion XL",
        ("C1E1DE52", "7BCCAA2C", "1120E6A9", "8BA2AF87", "B0BDF6C1"),
    ),
    "nai-diffusion-furry-3": (
        "Stable Diffusion XL",
        ("4BE8C60C", "C8704949", "37C2B166", "F306816B", "9CC2F394"),
    ),
    "nai-diffusion-5-full": ("NovelAI Diffusion V5", ("0ADF9AB7", "657484A5")),
}

# Display name -> the id assumed when the hash is unknown (the "full" weights).
_DEFAULT_FOR_NAME = {
    "NovelAI Diffusion V4.5": "nai-diffusion-4-5-full",
    "NovelAI Diffusion V4": "nai-diffusion-4-full",
    "NovelAI Diffusion V5": "nai-diffusion-5-full",
    "Stable Diffusion XL": "nai-diffusion-3",
}
_BY_HASH = {(name, h): model for model, (name, hashes) in MODELS.items() for h in hashes}
_SOURCE = re.compile(r"^(.*?)\s+([0-9A-Fa-f]{8,12})$")


def model_from_source(source: str) -> tuple[str | None, str | None]:
    """(model, hash) from a Source value; the model is an API id when recognised, else the name as written."""
    match = _SOURCE.match(source.strip())
    name, digest = (match.group(1), match.group(2)) if match else (source.strip(), None)
    if not name:
        return None, digest
    if digest is not None and (name, digest.upper()) in _BY_HASH:
        return _BY_HASH[name, digest.upper()], digest
    return _DEFAULT_FOR_NAME.get(name, name), digest


def source_for(model: str, model_hash: str | None) -> str:
    """The Source value NovelAI would write for `model`; unknown models are written as named."""
    known = MODELS.get(model)
    if known is None:
        return f"{model} {model_hash}" if model_hash else model
    name, hashes = known
    return f"{name} {model_hash or hashes[0]}"
