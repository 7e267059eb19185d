"""What a generation takes besides its prompt and parameters: character prompts, vibes, a character reference and an
img2img or inpaint source, held as one immutable value that the parameter form turns into request fields.

Files are named, not read: the engine reads images when the request is sent (a vibe file's own content excepted,
which is parsed once when it is added). Whether the model can take these inputs is decided by the engine's own check,
run on a probe request that differs from a valid one only by these inputs, so the form refuses exactly what NovelAI
would refuse, in the engine's words. Nothing here imports the image codec: the first frame of the app loads this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from peropix_tui.engine.types import CharacterPrompt, GenerationRequest, RequestError

if TYPE_CHECKING:
    from peropix_tui.widgets.image_entries import ReferenceEntry, SourceEntry, VibeEntry, VibeState

IMAGE_SUFFIXES: Final = (".png", ".webp", ".jpg", ".jpeg")
VIBE_FILE_SUFFIXES: Final = (".naiv4vibe", ".naiv4vibebundle")
INPUT_FIELDS: Final = frozenset({"characters", "vibes", "character_reference", "image", "mask", "strength", "noise"})
"""The request fields these inputs set: an engine refusal naming one of them is about the inputs."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class ImageInputs:
    """Everything beside the prompt and the parameters; empty by default (a plain text-to-image request)."""

    characters: tuple[CharacterPrompt, ...] = ()
    vibes: tuple[VibeEntry, ...] = ()
    reference: ReferenceEntry | None = None
    source: SourceEntry | None = None

    @property
    def empty(self) -> bool:
        return not (self.characters or self.vibes or self.reference or self.source)

    def fields(self, model: str) -> dict[str, Any]:
        """`GenerationRequest` fields for `model` (raises RequestError when a vibe file has nothing for it)."""
        fields: dict[str, Any] = {
            "characters": self.characters,
            "vibes": tuple(vibe.ref(model) for vibe in self.vibes),
            "character_reference": None if self.reference is None else self.reference.reference(),
        }
        if self.source is not None:
            fields |= {
                "image": self.source.path,
                "strength": self.source.strength,
                "noise": self.source.noise,
                "mask": self.source.mask,
            }
        return fields

    def with_characters(self, characters: Iterable[CharacterPrompt]) -> ImageInputs:
        return replace(self, characters=tuple(characters))

    def applied_to(self, request: GenerationRequest) -> GenerationRequest:
        """`request` with these inputs (replacing any it had)."""
        if self.empty and not request.characters:
            return request
        return replace(request, **({"image": None, "mask": None} | self.fields(request.model)))

    def check(self, model: str) -> None:
        """Raise the engine's RequestError when `model` cannot take these inputs (too many characters, vibes with a
        character reference or with inpainting, a reference on a model without one, ...)."""
        if self.empty:
            return
        # Imported here: the payload builder pulls in the image codec, which the first frame must not wait for.
        from peropix_tui.engine.nai.payload import check_request_before_encoding

        probe = GenerationRequest(prompt="", model=model, seed=1, uc_preset=None, **self.fields(model))
        try:
            check_request_before_encoding(probe)
        except RequestError as exc:
            if exc.field in INPUT_FIELDS or exc.field == "model":
                raise

    def problem(self, model: str) -> str | None:
        """The engine's one-line refusal of these inputs on `model`, or None when it takes them."""
        try:
            self.check(model)
        except RequestError as exc:
            return str(exc)
        return None

    # Describing ------------------------------------------------------------------------------------------------

    def summary(self, vibe_state: Callable[[VibeEntry], VibeState] | None = None) -> str:
        """One line such as "2 characters · 1 vibe (cached) · img2img 0.70"; empty when there is nothing.

        `vibe_state` tells each vibe's cache state for the current model; without it (or while it is unknown) the
        vibes are only counted."""
        parts: list[str] = []
        if self.characters:
            text = _plural(len(self.characters), "character")
            off = sum(not c.enabled for c in self.characters)
            parts.append(f"{text} ({off} off)" if off else text)
        if self.vibes:
            text = _plural(len(self.vibes), "vibe")
            states = [vibe_state(v) for v in self.vibes] if vibe_state is not None else []
            cached = sum(s is True for s in states)
            pending = sum(s is False for s in states)
            if states and cached == len(states):
                text += " (cached)"
            elif pending == len(states) and states:
                text += " (to encode)"
            elif cached and pending:
                text += f" ({cached} cached)"
            parts.append(text)
        if self.reference is not None:
            style = ", style" if self.reference.style_aware else ""
            parts.append(f"reference {self.reference.fidelity:.2f}{style}")
        if self.source is not None:
            parts.append(f"{self.source.action} {self.source.strength:.2f}")
        return " · ".join(parts)
