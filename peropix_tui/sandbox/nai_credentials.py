"""The NovelAI sandbox's accounts by name: apart from the server so `peropix --help` can show them cheaply."""

from __future__ import annotations

from typing import Final

SANDBOX_TOKEN: Final = "pst-peropix-sandbox"
"""The documented token of the default sandbox account (Scroll tier, pays for every image)."""
SANDBOX_OPUS_TOKEN: Final = "pst-peropix-sandbox-opus"
"""A second sandbox account on the Opus tier: one small image per request is free."""
DEFAULT_BALANCE: Final = 10_000
