"""The files a generation's image inputs name: a vibe, the character reference and the img2img/inpaint source, each
with its settings. They are loaded only once such an input is chosen (defining them costs start-up time the first
frame does not have to pay).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from peropix_tui.engine.types import CharacterReference, VibeRef

if TYPE_CHECKING:
    from peropix_tui.engine.nai.vibe_files import VibeFile

DEFAULT_VIBE_STRENGTH: Final = 0.6
DEFAULT_SOURCE_STRENGTH: Final = 0.7
VibeState = bool | None
"""Whether a vibe's encoding for the model is cached (True), must be made and paid for (False), or does not apply
(None: the model takes the image itself, or no vibes at all)."""


@dataclass(frozen=True, slots=True)
class VibeEntry:
    """One vibe: an image file, or one vibe of a `.naiv4vibe`/`.naiv4vibebundle` file (`file`)."""

    path: Path
    name: str
    image_sha256: str
    """sha256 of the source image (a vibe file's id): with the model family and information extracted, the key
    of its cached encodings."""
    strength: float = DEFAULT_VIBE_STRENGTH
    information_extracted: float = 1.0
    file: VibeFile | None = None

    def ref(self, model: str) -> VibeRef:
        """The request's vibe for `model`: a vibe file's own encoding for that model when it holds one."""
        if self.file is not None:
            return self.file.to_vibe_ref(
                model, strength=self.strength, information_extracted=self.information_extracted
            )
        return VibeRef(image=self.path, strength=self.strength, information_extracted=self.information_extracted)


@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    """The character reference picture and how closely to follow it."""

    path: Path
    width: int
    height: int
    fidelity: float = 1.0
    style_aware: bool = True

    def reference(self) -> CharacterReference:
        return CharacterReference(image=self.path, fidelity=self.fidelity, style_aware=self.style_aware)


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """The picture img2img starts from (inpaint too, with `mask`); `fit` is the NovelAI size nearest to its own."""

    path: Path
    width: int
    height: int
    fit: tuple[int, int]
    strength: float = DEFAULT_SOURCE_STRENGTH
    noise: float = 0.0
    mask: Path | None = None

    @property
    def action(self) -> str:
        return "inpaint" if self.mask is not None else "img2img"
