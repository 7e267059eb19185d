"""`peropix vibe encode`: images to `.naiv4vibe` / `.naiv4vibebundle` files the web and `--vibe` read.

Encoding goes through the client and its vibe cache, so an image encoded before (by this command, a
`generate --vibe` or the TUI) is written from the cache and not paid for again. Everything that can be
checked locally (output name, model, numbers, images) is checked before the first encoding is bought.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peropix_tui.core.errors import PeropixError

if TYPE_CHECKING:
    from peropix_tui.core.config import Config
    from peropix_tui.engine.nai.vibe_files import VibeFile

DEFAULT_INFO = 1.0
DEFAULT_STRENGTH = 0.6


class VibeArgsError(PeropixError):
    """A `peropix vibe` setting that cannot be used as given."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vibe = sub.add_parser(
        "vibe",
        help="NovelAI vibe files (.naiv4vibe, .naiv4vibebundle)",
        description="Make NovelAI vibe files; use them with `peropix generate --vibe FILE` or in the NovelAI web.",
    )
    actions = vibe.add_subparsers(dest="vibe_command", metavar="ACTION", required=True)
    encode = actions.add_parser(
        "encode",
        help="encode images into a .naiv4vibe (one) or .naiv4vibebundle (several) file",
        description="Encode each IMG for a model (2 Anlas per encoding, nothing for one already in the cache) "
        "and write them, with the images, into one vibe file.",
    )
    encode.add_argument("images", nargs="+", type=Path, metavar="IMG", help="the reference images")
    encode.add_argument("--model", help="model id or short name such as v4.5 (default: the default model)")
    encode.add_argument(
        "--info", type=float, default=DEFAULT_INFO, help=f"information extracted, 0-1 (default {DEFAULT_INFO:g})"
    )
    encode.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help=f"strength stored in the file for when it is used, 0-1 (default {DEFAULT_STRENGTH:g})",
    )
    encode.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="OUT.naiv4vibe or OUT.naiv4vibebundle"
    )
    encode.add_argument("--json", action="store_true", help="print one JSON document instead of a line")
    encode.set_defaults(func=_encode)


def _check_output(output: Path, images: int) -> None:
    from peropix_tui.engine.nai.vibe_files import BUNDLE_SUFFIX, VIBE_SUFFIX

    if output.suffix not in (VIBE_SUFFIX, BUNDLE_SUFFIX):
        raise VibeArgsError(f"-o {output}: name it {VIBE_SUFFIX} (one image) or {BUNDLE_SUFFIX} (several)")
    if output.suffix == VIBE_SUFFIX and images > 1:
        raise VibeArgsError(f"-o {output}: {images} images go into a {BUNDLE_SUFFIX} file, not a {VIBE_SUFFIX}")
    if not output.parent.is_dir():
        raise VibeArgsError(f"-o {output}: the folder {output.parent} does not exist")


def _check_settings(args: argparse.Namespace) -> str:
    """The model id to encode for, after checking the flags."""
    from peropix_tui.commands.generate_plan import parse_model
    from peropix_tui.engine.nai.models import DEFAULT_MODEL, VibeSupport, model_spec

    for flag, value in (("--info", args.info), ("--strength", args.strength)):
        if not 0.0 <= value <= 1.0:
            raise VibeArgsError(f"{flag} {value:g}: use a number from 0 to 1")
    spec = model_spec(parse_model(args.model) if args.model is not None else DEFAULT_MODEL)
    if spec.vibes is not VibeSupport.ENCODED or spec.vibe_file_key is None:
        raise VibeArgsError(f"--model {spec.id}: {spec.label} has no vibe encodings to export (use V4 or later)")
    return spec.id


def _read_images(paths: list[Path]) -> list[bytes]:
    """Each image's bytes, refused here (before anything is paid) when it is not a readable image."""
    from peropix_tui.engine.nai.imageprep import image_size
    from peropix_tui.engine.types import read_image_input

    images = []
    for path in paths:
        data = read_image_input(path, "IMG")
        image_size(data, f"IMG {path}")
        images.append(data)
    return images


async def _export(
    config: Config, token: str, paths: list[Path], images: list[bytes], model: str, args: argparse.Namespace
) -> tuple[list[VibeFile], int]:
    """The vibe of each image (named after its file) and how many encodings had to be bought."""
    from peropix_tui.engine.nai.client import NovelAIClient
    from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
    from peropix_tui.sandbox.session import vibe_cache_dir

    cache = VibeCache(vibe_cache_dir(config))
    vibes: list[VibeFile] = []
    encoded = 0
    client = NovelAIClient(
        token,
        base_url=config.get("endpoints.nai_base_url"),
        account_url=config.get("endpoints.nai_account_url"),
        vibe_cache=cache,
    )
    async with client:
        for path, data in zip(paths, images, strict=True):
            if cache.get(VibeKey.of(data, model, args.info)) is None:
                encoded += 1
            vibe = await client.export_vibe(data, model, args.info, strength=args.strength)
            vibes.append(dataclasses.replace(vibe, name=path.stem))
    return vibes, encoded


def _encode(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from peropix_tui.core.config import Config
    from peropix_tui.core.paths import AppDirs
    from peropix_tui.core.secrets import SecretStore
    from peropix_tui.engine.nai.client import NaiTokenMissingError
    from peropix_tui.engine.nai.cost import VIBE_ENCODE_COST
    from peropix_tui.engine.nai.vibe_files import save_vibes
    from peropix_tui.sandbox.session import NAI_PROVIDER, nai_provider

    paths: list[Path] = [path.expanduser() for path in args.images]
    output: Path = args.output.expanduser()
    _check_output(output, len(paths))
    model = _check_settings(args)
    images = _read_images(paths)
    dirs = AppDirs.from_env()
    config = Config.load(dirs)
    for issue in config.issues:
        print(f"peropix: warning: {issue}", file=sys.stderr)
    store = SecretStore(dirs.secrets_file)
    if store.problem:
        print(f"peropix: warning: {store.problem}", file=sys.stderr)
    token = store.value("nai_token")
    if not token:
        raise NaiTokenMissingError(
            "no NovelAI token: save one with `peropix secrets set nai_token`, set PEROPIX_NAI_TOKEN, "
            "or try everything offline with --sandbox"
        )
    vibes, encoded = asyncio.run(_export(config, token, paths, images, model, args))
    save_vibes(output, vibes)
    provider = nai_provider()
    if args.json:
        document: dict[str, Any] = {
            "path": str(output),
            "model": model,
            "vibes": len(vibes),
            "encoded": encoded,
            "from_cache": len(vibes) - encoded,
            "cost": encoded * VIBE_ENCODE_COST,
            "provider": provider,
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    where = "" if provider == NAI_PROVIDER else f" [{provider}: nothing real was charged]"
    print(
        f"saved {output}: {len(vibes)} vibe(s) for {model}, {encoded} encoded "
        f"({encoded * VIBE_ENCODE_COST} Anlas), {len(vibes) - encoded} from the cache{where}"
    )
    return 0
