"""`peropix generate`: NovelAI (or local engine) images from the command line, saved and indexed exactly as the
TUI does it.

This module holds the command line itself; `generate_plan` turns it into a checked request and
`generate_run` sends it (or, with `--dry-run`, prints it). Both are imported when the command runs, so
building the parser costs nothing at start-up. `--provider local` makes the images with a checkpoint of
`paths.checkpoint_dirs` on this machine instead (`--list-models` lists them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

DEFAULT_STRENGTH: Final = 0.7
DEFAULT_VIBE_STRENGTH: Final = 0.6
DEFAULT_MAGNITUDE: Final = 3
ENHANCE_FACTORS: Final = ("1", "1.5")
"""`--enhance` choices: the web's Enhance keeps the size (1) or upscales by half (1.5)."""
FILE_FORMATS: Final = ("png", "webp", "jpeg")
"""`--format` choices (core/outputs.SaveFormat, spelled out so building the parser imports nothing)."""
PROVIDER_CHOICES: Final = ("novelai", "local")
"""`--provider` choices (engine/types.PROVIDERS, spelled out so building the parser imports nothing)."""


def _save_quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, not {text!r}")
    return value


class _CharAction(argparse.Action):
    """`--char "PROMPT[@CELL]"` adds a character; its order on the command line is its order in the image."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        characters: list[dict[str, str]] = list(getattr(namespace, self.dest) or [])
        characters.append({"spec": str(values), "negative": ""})
        setattr(namespace, self.dest, characters)


class _CharNegativeAction(argparse.Action):
    """`--char-negative TEXT` sets the undesired content of the `--char` just before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        characters: list[dict[str, str]] = list(getattr(namespace, "characters", None) or [])
        if not characters:
            parser.error("--char-negative belongs to a --char given before it")
        characters[-1] = {**characters[-1], "negative": str(values)}
        namespace.characters = characters


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "generate",
        help="generate images with NovelAI or the local engine and save them with their settings",
        description="Generate images with NovelAI (or the sandbox, with --sandbox) or, with --provider local, "
        "with a local SDXL / SD 1.5 checkpoint; save them into the outputs folder with NovelAI-compatible "
        "metadata and index them in the history.",
    )
    text = parser.add_argument_group("prompt")
    text.add_argument(
        "--prompt",
        help="the prompt (required unless --from-image gives one); __name__ draws a line of "
        "<config dir>/wildcards/name.txt and <pick:a|b|c> one of its choices, anew for each request",
    )
    text.add_argument("--negative", help="undesired content, added after the UC preset")
    text.add_argument(
        "--char",
        dest="characters",
        action=_CharAction,
        metavar="PROMPT[@CELL]",
        help="a character prompt, at a cell of the 5x5 grid (A1..E5, column then row) or placed by the model; "
        "repeat for more characters (V4+)",
    )
    text.add_argument(
        "--char-negative", action=_CharNegativeAction, metavar="TEXT", help="undesired content of the --char before"
    )
    text.add_argument(
        "--quality",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append the model's quality tags (default: on, or as the --from-image image had it)",
    )
    text.add_argument(
        "--uc-preset",
        metavar="PRESET",
        help="undesired-content preset: heavy (default), light, human_focus, furry_focus, none, "
        "or off (send the negative exactly as written)",
    )
    text.add_argument("--dataset", choices=("fur", "background"), help="dataset prefix, for models that have one")

    settings = parser.add_argument_group("settings")
    settings.add_argument(
        "--provider",
        choices=PROVIDER_CHOICES,
        default="novelai",
        help="novelai (default) or local: a checkpoint of paths.checkpoint_dirs on this machine, nothing charged "
        "(needs peropix-tui[local]); NovelAI-only settings (vibes, character reference, SMEA, ...) are refused",
    )
    settings.add_argument(
        "--model",
        help="model id or short name such as v4.5, v4.5-curated, v4, v3, v5; with --provider local, a checkpoint "
        "name as --list-models prints it (or a file path)",
    )
    settings.add_argument("--size", metavar="WxH", help="image size, multiples of 64 (default 832x1216)")
    settings.add_argument(
        "--steps",
        type=int,
        help="sampling steps, 1-50 (default 28; Opus pays nothing for up to 28 steps at up to 1 MP)",
    )
    settings.add_argument("--scale", type=float, help="prompt guidance, 0-10 (default: the model's)")
    settings.add_argument("--cfg-rescale", type=float, help="prompt guidance rescale, 0-1 (default 0)")
    settings.add_argument(
        "--sampler",
        help="k_euler_ancestral (default), k_euler, k_dpmpp_2s_ancestral, ...; local: euler_ancestral (default), "
        "euler, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde, heun, ddim, ...",
    )
    settings.add_argument(
        "--schedule",
        help="noise schedule: karras (default), exponential, polyexponential; local: normal (default), karras, "
        "exponential, sgm_uniform, simple, beta, ...",
    )
    settings.add_argument(
        "--variety", action=argparse.BooleanOptionalAction, default=None, help="Variety+ (skip guidance early)"
    )
    settings.add_argument("--smea", action=argparse.BooleanOptionalAction, default=None, help="SMEA (V3 models)")
    settings.add_argument("--smea-dyn", action=argparse.BooleanOptionalAction, default=None, help="SMEA DYN (V3)")
    settings.add_argument("--seed", metavar="N", help="seed of the first image, or 'random' (default: random)")
    settings.add_argument("--n", type=int, default=1, metavar="N", help="number of images (default 1)")
    settings.add_argument(
        "--separate",
        action="store_true",
        help="one request per image (on Opus each small image is then free) instead of batches",
    )

    source = parser.add_argument_group("img2img, inpaint and references")
    source.add_argument("--image", type=Path, metavar="SRC", help="img2img: start from this image")
    source.add_argument("--strength", type=float, help=f"img2img strength, 0.01-1 (default {DEFAULT_STRENGTH})")
    source.add_argument("--noise", type=float, help="img2img noise, 0-1 (default 0)")
    source.add_argument("--mask", type=Path, metavar="M", help="inpaint: white where --image is repainted")
    source.add_argument(
        "--enhance",
        choices=ENHANCE_FACTORS,
        help="Enhance --image as the web does: img2img at 1x or 1.5x its size (snapped to the 64 grid), "
        "strength and noise from --magnitude",
    )
    source.add_argument(
        "--magnitude",
        type=int,
        choices=range(1, 6),
        metavar="1-5",
        help=f"Enhance magnitude, 1 (light) to 5 (strong) (default {DEFAULT_MAGNITUDE})",
    )
    source.add_argument(
        "--vibe",
        dest="vibes",
        action="append",
        metavar="IMG[:STRENGTH[:INFO]]",
        help="vibe transfer from an image or a .naiv4vibe/.naiv4vibebundle file (strength default "
        f"{DEFAULT_VIBE_STRENGTH}, information extracted default 1); repeat for more (up to 16)",
    )
    source.add_argument("--charref", type=Path, metavar="IMG", help="character reference image (V4.5)")
    source.add_argument("--fidelity", type=float, help="character reference fidelity, 0-1 (default 1)")
    source.add_argument("--charref-strength", type=float, help="character reference strength, 0-1 (default 1)")
    source.add_argument(
        "--style-aware",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the character reference also carries the style (default on)",
    )
    source.add_argument("--from-image", type=Path, metavar="PNG", help="reuse the settings stored in an image")

    run = parser.add_argument_group("output")
    run.add_argument("--out", type=Path, metavar="DIR", help="outputs folder (default: the configured one)")
    run.add_argument(
        "--format",
        dest="save_format",
        choices=FILE_FORMATS,
        help="file format: png keeps NovelAI's file as sent; webp and jpeg carry its metadata in EXIF "
        "(default: the saving.format setting)",
    )
    run.add_argument(
        "--save-quality",
        type=_save_quality,
        metavar="1-100",
        help="WebP/JPEG quality (default: the saving.quality setting)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the request bodies and the cost; send nothing")
    run.add_argument(
        "--list-models",
        action="store_true",
        help="list the local checkpoints --provider local can use (as `peropix models` does) and exit",
    )
    run.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    run.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream progress step by step (default on)",
    )
    run.add_argument("--sse", action="store_true", help="stream as server-sent events instead of msgpack")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from peropix_tui.commands.generate_plan import build_plan
    from peropix_tui.commands.generate_run import dry_run, execute, warn
    from peropix_tui.core.config import Config
    from peropix_tui.core.paths import AppDirs

    config = Config.load(AppDirs.from_env())
    for issue in config.issues:
        print(f"peropix: warning: {issue}", file=sys.stderr)
    if args.list_models:
        from peropix_tui.commands.models_cmd import list_models

        return list_models(config, as_json=args.json)
    plan = build_plan(args)
    for warning in plan.warnings:
        warn(warning)
    if plan.request.provider == "local":
        from peropix_tui.commands import generate_local

        if args.dry_run:
            return generate_local.dry_run(plan, args, config)
        return generate_local.execute(plan, args, config)
    if args.dry_run:
        return dry_run(plan, args, config)
    return execute(plan, args, config)
