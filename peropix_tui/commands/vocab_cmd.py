"""`peropix vocab update|show`: the collected prompt vocabulary that prompt completion offers.

`update` reads the CivitAI collection's sidecars (only new and changed ones) into the cache and prints what
changed and the most used tags; `show` prints the cached tags, most used first. The vocabulary module is
imported when a sub-command runs, so registering the parser costs nothing at start-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peropix_tui.core.collected_vocabulary import CollectedVocabulary

DEFAULT_TOP = 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vocab = sub.add_parser(
        "vocab",
        help="collect the tags of the CivitAI collection's prompts for completion",
        description="The collected vocabulary: every tag of the collected images' prompts, counted by how many "
        "images use it. Prompt completion offers these tags next to the Danbooru list.",
    )
    actions = vocab.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)
    update = actions.add_parser("update", help="read new and changed sidecars of the collection into the cache")
    update.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="library root (default: the paths.civitai_root setting; with --sandbox, a sandbox folder)",
    )
    update.add_argument("--top", type=_count, default=DEFAULT_TOP, metavar="N", help="then print the N most used tags")
    update.set_defaults(func=_update)
    show = actions.add_parser("show", help="print the collected tags, most used first")
    show.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="only tags starting with PREFIX")
    show.add_argument("--top", type=_count, default=DEFAULT_TOP, metavar="N", help="how many tags (0: all)")
    show.set_defaults(func=_show)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return value


def _print_top(vocabulary: CollectedVocabulary, limit: int, prefix: str = "") -> None:
    rows = vocabulary.top(limit or None, prefix)
    width = len(f"{rows[0][1]:,}") if rows else 0
    for tag, images in rows:
        print(f"{images:>{width},}  {tag}")


def _update(args: argparse.Namespace) -> int:
    from peropix_tui.core.collected_vocabulary import CollectedVocabulary, cache_path
    from peropix_tui.core.config import Config
    from peropix_tui.core.paths import AppDirs
    from peropix_tui.sandbox.session import civitai_root

    dirs = AppDirs.from_env()
    config = Config.load(dirs)
    for issue in config.issues:
        print(f"peropix: warning: {issue}", file=sys.stderr)
    root = civitai_root(config, args.root)
    vocabulary = CollectedVocabulary.load(cache_path(dirs.data_dir))
    if vocabulary.problem:
        print(f"peropix: warning: {vocabulary.problem}", file=sys.stderr)
    report = vocabulary.update(root)
    vocabulary.save()
    print(f"{root}: {report.summary()}; {vocabulary.summary()}")
    _print_top(vocabulary, args.top)
    return 0


def _show(args: argparse.Namespace) -> int:
    from peropix_tui.core.collected_vocabulary import CollectedVocabulary, cache_path
    from peropix_tui.core.paths import AppDirs

    vocabulary = CollectedVocabulary.load(cache_path(AppDirs.from_env().data_dir))
    if vocabulary.problem:
        print(f"peropix: warning: {vocabulary.problem}", file=sys.stderr)
    if not len(vocabulary):
        print("no collected tags yet: run `peropix vocab update`", file=sys.stderr)
        return 0
    _print_top(vocabulary, args.top, args.prefix)
    return 0
