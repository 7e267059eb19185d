"""CivitAI's model types, and the list a user types to pick some (`--types`, the Downloads screen's field)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from peropix_tui.core.errors import PeropixError

KNOWN_TYPES: Final = (
    "Checkpoint", "TextualInversion", "Hypernetwork", "AestheticGradient", "LORA", "LoCon", "DoRA", "Controlnet",
    "Upscaler", "MotionModule", "VAE", "Poses", "Wildcards", "Workflows", "Detection", "Other",
)  # fmt: skip


def parse_model_types(text: str | None, default: Sequence[str], *, field: str = "--types") -> tuple[str, ...] | None:
    """Type names separated by commas or spaces, as CivitAI spells them; None for `all`; `default` when `text`
    is None. An empty list, or names CivitAI does not know, are one error naming `field` and the known types."""
    names = list(default) if text is None else text.replace(",", " ").split()
    if any(name.casefold() == "all" for name in names):
        return None
    if not names:
        raise PeropixError(f"{field} is empty; give types such as LORA,LoCon or 'all'")
    canonical = {name.casefold(): name for name in KNOWN_TYPES}
    unknown = [name for name in names if name.casefold() not in canonical]
    if unknown:
        raise PeropixError(f"{field}: unknown model type {', '.join(unknown)}; known: {', '.join(KNOWN_TYPES)} or all")
    return tuple(dict.fromkeys(canonical[name.casefold()] for name in names))
