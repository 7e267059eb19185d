"""What a `peropix generate` command line asks for, as one checked plan: the request and how it is batched.

Settings come in three layers, later ones winning: the defaults, an image's own settings (`--from-image`),
and the flags given. Values typed on the command line (sizes, seeds, `IMG:strength:info` vibes,
`prompt@C3` characters) are parsed here with one-line errors that name the flag. The request is checked
against the model's limits before anything is sent, so a bad setting never costs a request.

With `--provider local` the model is a checkpoint name, the sampler and schedule are the local engine's (NovelAI's
spellings are translated), `--from-image` takes an image's settings as recorded, and the NovelAI-only flags are
refused, each naming itself, rather than dropped without a word.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from peropix_tui.commands.generate_cmd import DEFAULT_MAGNITUDE, DEFAULT_STRENGTH, DEFAULT_VIBE_STRENGTH
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.presets import snap64
from peropix_tui.engine.local_names import DEFAULT_LOCAL_SAMPLER, DEFAULT_LOCAL_SCHEDULER
from peropix_tui.engine.local_provider import local_settings_from_metadata
from peropix_tui.engine.nai.image_settings import ImageSettings, settings_from_metadata
from peropix_tui.engine.nai.imageprep import image_size
from peropix_tui.engine.nai.models import (
    DEFAULT_MODEL,
    MAX_SEED,
    MODELS,
    max_samples,
    model_spec,
)
from peropix_tui.engine.nai.payload import check_request_before_encoding, enhance_request, snap_size
from peropix_tui.engine.nai.vibe_files import BUNDLE_SUFFIX, VIBE_SUFFIX, load_vibes
from peropix_tui.engine.types import (
    GRID,
    LOCAL,
    RANDOM_SEED_MAX,
    SEED_LIMIT,
    CharacterPrompt,
    CharacterReference,
    GenerationRequest,
    RequestError,
    UcPreset,
    VibeRef,
    read_image_input,
)

MAX_IMAGES: Final = 1000
"""Images one command may ask for (sent as several requests)."""
LOCAL_BATCH: Final = 4
"""Images one local engine call makes at once (each sample a seed of its own), unless `--separate`: enough to
keep a large GPU busy, few enough for the memory of a small one at SDXL sizes."""
NOVELAI_ONLY_FLAGS: Final = (
    ("vibes", "--vibe"),
    ("charref", "--charref"),
    ("fidelity", "--fidelity"),
    ("charref_strength", "--charref-strength"),
    ("style_aware", "--style-aware"),
    ("enhance", "--enhance"),
    ("magnitude", "--magnitude"),
    ("smea", "--smea"),
    ("smea_dyn", "--smea-dyn"),
    ("variety", "--variety"),
    ("dataset", "--dataset"),
    ("uc_preset", "--uc-preset"),
    ("quality", "--quality"),
    ("noise", "--noise"),
    ("sse", "--sse"),
)
"""(argument, flag) of every setting the local engine has no use for."""
UC_PRESET_OFF: Final = "off"
_SIZE_RE: Final = re.compile(r"\s*(\d{1,6})\s*[xX×*]\s*(\d{1,6})\s*")
_CELL_RE: Final = re.compile(r"[A-Ea-e][1-5]")
_NUMBER_RE: Final = re.compile(r"\d+(\.\d*)?|\.\d+")


class GenerateArgsError(PeropixError):
    """A `peropix generate` setting that cannot be used as given."""


# --- values given as text ------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """`832x1216` as (width, height); sides off the 64-pixel grid are refused with the nearest valid size."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise GenerateArgsError(f"--size {text!r}: use WIDTHxHEIGHT, such as 832x1216")
    width, height = int(match[1]), int(match[2])
    if width < GRID or height < GRID:
        raise GenerateArgsError(f"--size {text}: each side must be at least {GRID} pixels")
    if width % GRID or height % GRID:
        near_w, near_h = snap_size(width, height)
        raise GenerateArgsError(
            f"--size {text}: sides must be multiples of {GRID}; the nearest valid size is {near_w}x{near_h}"
        )
    return width, height


def parse_seed(text: str) -> int | None:
    """A seed number, or None for "random"."""
    if text.strip().lower() == "random":
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise GenerateArgsError(f"--seed {text!r}: use a whole number or 'random'") from None


def parse_model(text: str) -> str:
    """A model id, accepting the short family names (v4.5, v4.5-curated, v3, ...)."""
    aliases = {spec.family.value: spec.id for spec in MODELS.values() if not spec.legacy}
    name = text.strip()
    try:
        return model_spec(aliases.get(name.lower(), name)).id
    except RequestError:
        short = ", ".join(aliases)
        raise GenerateArgsError(f"--model {text!r} is not a NovelAI model (short names: {short})") from None


def parse_uc_preset(text: str) -> UcPreset | None:
    """A `UcPreset`, or None for "off"."""
    name = text.strip().lower().replace("-", "_")
    if name == UC_PRESET_OFF:
        return None
    try:
        return UcPreset(name)
    except ValueError:
        names = ", ".join([*(p.value for p in UcPreset), UC_PRESET_OFF])
        raise GenerateArgsError(f"--uc-preset {text!r}: use one of {names}") from None


@dataclass(frozen=True, slots=True)
class VibeSpec:
    """One `--vibe` value: a file and, when given, its strength and information extracted."""

    path: Path
    strength: float | None = None
    information_extracted: float | None = None


def parse_vibe(text: str) -> VibeSpec:
    """`IMG[:STRENGTH[:INFO]]`; a path that exists as written wins, so file names with colons still work."""
    if Path(text).exists():
        return VibeSpec(Path(text))
    head = text
    numbers: list[float] = []
    for _ in range(2):
        base, sep, tail = head.rpartition(":")
        if not sep or not _NUMBER_RE.fullmatch(tail.strip()):
            break
        numbers.insert(0, float(tail))
        head = base
    path = Path(head)
    if not path.exists():
        raise GenerateArgsError(f"--vibe {text!r}: {head} does not exist")
    strength = numbers[0] if numbers else None
    info = numbers[1] if len(numbers) > 1 else None
    return VibeSpec(path, strength, info)


def parse_character(spec: str) -> tuple[str, str | None]:
    """`PROMPT[@CELL]` as (prompt, cell); an `@` not followed by a cell (as in `@_@`) stays in the prompt."""
    prompt, sep, cell = spec.rpartition("@")
    if sep and _CELL_RE.fullmatch(cell.strip()):
        return prompt.strip(), cell.strip().upper()
    return spec.strip(), None


# --- the plan ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole run: one request (with the first seed) and how many images go out per request."""

    request: GenerationRequest
    images: int
    per_request: int
    warnings: tuple[str, ...] = ()

    def batches(self) -> list[GenerationRequest]:
        """The requests to send, seeds following on from one to the next."""
        assert self.request.seed is not None
        return [
            dataclasses.replace(
                self.request, seed=self.request.seed + start, n=min(self.per_request, self.images - start)
            )
            for start in range(0, self.images, self.per_request)
        ]


def _vibe_refs(specs: Sequence[str], model: str) -> tuple[VibeRef, ...]:
    refs: list[VibeRef] = []
    for text in specs:
        spec = parse_vibe(text)
        if spec.path.suffix.lower() in (VIBE_SUFFIX, BUNDLE_SUFFIX):
            for vibe in load_vibes(spec.path):
                refs.append(
                    vibe.to_vibe_ref(model, strength=spec.strength, information_extracted=spec.information_extracted)
                )
            continue
        strength = DEFAULT_VIBE_STRENGTH if spec.strength is None else spec.strength
        info = 1.0 if spec.information_extracted is None else spec.information_extracted
        refs.append(VibeRef(image=spec.path, strength=strength, information_extracted=info))
    return tuple(refs)


def _source_size(path: Path) -> tuple[int, int]:
    width, height = image_size(read_image_input(path, "image"), "image")
    return snap_size(width, height)


def _first_seed(given: int | None, images: int) -> int:
    if given is None:
        return secrets.randbelow(MAX_SEED - images + 1) + 1
    if not 1 <= given <= MAX_SEED - images + 1:
        last = "" if images == 1 else f" and {images - 1} more after it"
        raise GenerateArgsError(f"--seed {given}: NovelAI seeds go from 1 to {MAX_SEED} (the first{last})")
    return given


def _characters(given: Sequence[Mapping[str, str]]) -> tuple[CharacterPrompt, ...]:
    characters = []
    for character in given:
        prompt, position = parse_character(character["spec"])
        characters.append(CharacterPrompt(prompt, character["negative"], position))
    return tuple(characters)


def _img2img_fields(args: argparse.Namespace, from_image: ImageSettings | None, warnings: list[str]) -> dict[str, Any]:
    if args.image is None:
        if args.strength is not None or args.noise is not None:
            raise GenerateArgsError("--strength and --noise need --image (the image to start from)")
        if from_image is not None and from_image.img2img is not None:
            warnings.append("--from-image: the image was made from a source image; pass --image SRC to do the same")
        return {}
    earlier = from_image.img2img if from_image is not None else None
    fields: dict[str, Any] = {"image": args.image}
    if args.strength is not None:
        fields["strength"] = args.strength
    else:
        fields["strength"] = earlier[0] if earlier is not None else DEFAULT_STRENGTH
    if args.noise is None and earlier is not None:
        fields["noise"] = earlier[1]
    return fields


def _character_reference(
    args: argparse.Namespace, from_image: ImageSettings | None, warnings: list[str]
) -> dict[str, Any]:
    earlier = from_image.character_reference if from_image is not None else None
    if args.charref is None:
        if args.fidelity is not None or args.charref_strength is not None or args.style_aware is not None:
            raise GenerateArgsError("--fidelity, --charref-strength and --style-aware need --charref IMG")
        if earlier is not None:
            warnings.append(
                "--from-image: the image used a character reference, which it does not store; "
                "pass --charref IMG to use it again"
            )
        return {}
    fidelity, strength, style_aware = earlier or (1.0, 1.0, True)
    reference = CharacterReference(
        image=args.charref,
        fidelity=fidelity if args.fidelity is None else args.fidelity,
        strength=strength if args.charref_strength is None else args.charref_strength,
        style_aware=style_aware if args.style_aware is None else args.style_aware,
    )
    return {"character_reference": reference}


def _enhanced(request: GenerationRequest, args: argparse.Namespace) -> GenerationRequest:
    """With `--enhance`, the web's Enhance of `--image`: its size, strength, noise and prompt suffix."""
    if args.enhance is None:
        if args.magnitude is not None:
            raise GenerateArgsError("--magnitude needs --enhance 1 or --enhance 1.5")
        return request
    if args.image is None:
        raise GenerateArgsError("--enhance needs --image (the image to enhance)")
    given = [flag for flag in ("size", "strength", "noise", "mask") if getattr(args, flag) is not None]
    if given:
        flags = ", ".join(f"--{flag}" for flag in given)
        raise GenerateArgsError(f"--enhance sets the size, strength and noise itself and cannot inpaint; drop {flags}")
    magnitude = DEFAULT_MAGNITUDE if args.magnitude is None else args.magnitude
    return enhance_request(request, upscale=args.enhance == "1.5", magnitude=magnitude)


def build_plan(args: argparse.Namespace) -> Plan:
    """The run described by the parsed flags (on top of the `--from-image` image's settings, when given)."""
    if not 1 <= args.n <= MAX_IMAGES:
        raise GenerateArgsError(f"--n {args.n}: ask for 1 to {MAX_IMAGES} images")
    if args.provider == LOCAL:
        return _local_plan(args)
    model = parse_model(args.model) if args.model is not None else None
    warnings: list[str] = []
    fields: dict[str, Any] = {}
    from_image: ImageSettings | None = None
    if args.from_image is not None:
        try:
            from_image = settings_from_metadata(read_metadata(args.from_image), model=model)
        except PeropixError as exc:
            raise GenerateArgsError(f"--from-image {args.from_image}: {exc}") from None
        fields |= from_image.fields
        warnings += [f"--from-image: {warning}" for warning in from_image.warnings]
    elif args.prompt is None:
        raise GenerateArgsError("--prompt is required (or --from-image PNG to reuse an image's settings)")
    spec = model_spec(model or fields.get("model") or DEFAULT_MODEL)
    fields["model"] = spec.id
    fields.setdefault("scale", spec.default_scale)
    flags = {
        **_shared_flags(args),
        "quality_tags": args.quality,
        "dataset": args.dataset,
        "variety": args.variety,
        "smea": args.smea,
        "smea_dyn": args.smea_dyn,
        "noise": args.noise,
    }
    fields |= {name: value for name, value in flags.items() if value is not None}
    if args.uc_preset is not None:
        fields["uc_preset"] = parse_uc_preset(args.uc_preset)
    if args.characters is not None:
        fields["characters"] = _characters(args.characters)
    if args.size is not None:
        fields["width"], fields["height"] = parse_size(args.size)
    elif args.image is not None and "width" not in fields:
        fields["width"], fields["height"] = _source_size(args.image)
    fields |= _img2img_fields(args, from_image, warnings)
    if args.mask is not None:
        fields["mask"] = args.mask
    if args.vibes:
        fields["vibes"] = _vibe_refs(args.vibes, spec.id)
    fields |= _character_reference(args, from_image, warnings)
    image_seed = fields.pop("seed", None)
    seed = _first_seed(parse_seed(args.seed) if args.seed is not None else image_seed, args.n)
    request = _enhanced(GenerationRequest(**fields, seed=seed), args)
    per_request = 1 if args.separate else min(args.n, max_samples(request.width, request.height))
    request = dataclasses.replace(request, n=per_request)
    check_request_before_encoding(request)
    return Plan(request, args.n, per_request, tuple(warnings))


def _shared_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags both providers take as they are (None: not given)."""
    return {
        "prompt": args.prompt,
        "negative": args.negative,
        "steps": args.steps,
        "scale": args.scale,
        "cfg_rescale": args.cfg_rescale,
        "sampler": args.sampler,
        "scheduler": args.schedule,
    }


# --- the local engine ---------------------------------------------------------------------------------------


def _first_local_seed(given: int | None, images: int) -> int:
    if given is None:
        return secrets.randbelow(RANDOM_SEED_MAX) + 1
    last = SEED_LIMIT - images
    if not 0 <= given <= last:
        raise GenerateArgsError(f"--seed {given}: local seeds go from 0 to {last} for {images} images")
    return given


def _local_plan(args: argparse.Namespace) -> Plan:
    """The run for the local engine: a checkpoint by name, its sampler names, characters without a cell (each a
    section of the prompt), no NovelAI-only setting."""
    given = [flag for name, flag in NOVELAI_ONLY_FLAGS if getattr(args, name, None) not in (None, False, [])]
    if given:
        raise GenerateArgsError(f"{', '.join(given)}: NovelAI only; the local engine has no such setting")
    warnings: list[str] = []
    fields: dict[str, Any] = {"sampler": DEFAULT_LOCAL_SAMPLER, "scheduler": DEFAULT_LOCAL_SCHEDULER}
    if args.from_image is not None:
        try:
            from_image = local_settings_from_metadata(read_metadata(args.from_image), model=args.model)
        except PeropixError as exc:
            raise GenerateArgsError(f"--from-image {args.from_image}: {exc}") from None
        fields |= from_image.fields
        warnings += [f"--from-image: {warning}" for warning in from_image.warnings]
    elif args.prompt is None:
        raise GenerateArgsError("--prompt is required (or --from-image PNG to reuse an image's settings)")
    if args.model is not None:
        fields["model"] = args.model.strip()
    if not fields.get("model"):
        raise GenerateArgsError(
            "--model is required with --provider local: name a checkpoint (peropix models lists them)"
        )
    flags = _shared_flags(args)
    fields |= {name: value for name, value in flags.items() if value is not None}
    if args.characters is not None:
        fields["characters"] = _characters(args.characters)
    if args.size is not None:
        fields["width"], fields["height"] = parse_size(args.size)
    elif args.image is not None and "width" not in fields:
        width, height = image_size(read_image_input(args.image, "image"), "image")
        fields["width"], fields["height"] = snap64(width), snap64(height)
    if args.image is None:
        if args.strength is not None or args.mask is not None:
            raise GenerateArgsError("--strength and --mask need --image (the image to start from)")
    else:
        fields |= {"image": args.image, "mask": args.mask}
        fields["strength"] = DEFAULT_STRENGTH if args.strength is None else args.strength
    image_seed = fields.pop("seed", None)
    seed = _first_local_seed(parse_seed(args.seed) if args.seed is not None else image_seed, args.n)
    per_request = 1 if args.separate else min(args.n, LOCAL_BATCH)
    request = GenerationRequest(**fields, seed=seed, n=per_request, provider=LOCAL)
    return Plan(request, args.n, per_request, tuple(warnings))
