"""`peropix models`: the local checkpoints `peropix generate --provider local --model NAME` can use.

Each checkpoint of the `paths.checkpoint_dirs` folders is listed by the name `--model` takes, with its family,
prediction type and size, read from the file's header only (a folder of 7 GB files lists in milliseconds). Files
and folders that cannot be used are listed too, one line each, so a missing model is explained rather than absent.
`peropix generate --list-models` prints the same.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from peropix_tui.core.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser(
        "models",
        help="list the local checkpoints (paths.checkpoint_dirs) for generate --provider local",
        description="List the SDXL / SD 1.5 checkpoints of the paths.checkpoint_dirs folders by the name "
        "`peropix generate --provider local --model NAME` takes, with family, prediction type and size, and "
        "every file or folder that cannot be used, with the reason.",
    )
    models.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    models.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from peropix_tui.core.paths import AppDirs

    config = Config.load(AppDirs.from_env())
    for issue in config.issues:
        print(f"peropix: warning: {issue}", file=sys.stderr)
    return list_models(config, as_json=args.json)


def list_models(config: Config, *, as_json: bool) -> int:
    """Print the checkpoints and the problems; 0 when at least one checkpoint can be used, else 1."""
    from peropix_tui.engine.local_provider import LocalSettings, scan_checkpoints

    scan = scan_checkpoints(LocalSettings.from_config(config).checkpoint_dirs)
    if as_json:
        document: dict[str, Any] = {
            "checkpoints": [
                {
                    "name": c.name,
                    "path": str(c.path),
                    "family": c.family,
                    "prediction": c.prediction,
                    "inpainting": c.inpainting,
                    "size": c.size,
                    "warnings": list(c.warnings),
                }
                for c in scan.checkpoints
            ],
            "problems": list(scan.problems),
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        width = max((len(c.name) for c in scan.checkpoints), default=0)
        for checkpoint in scan.checkpoints:
            print(f"{checkpoint.name:<{width}}  {checkpoint.describe()}  {checkpoint.path}")
            for warning in checkpoint.warnings:
                print(f"{'':<{width}}  note: {warning}")
        for problem in scan.problems:
            print(f"peropix: warning: {problem}", file=sys.stderr)
    return 0 if scan.checkpoints else 1
