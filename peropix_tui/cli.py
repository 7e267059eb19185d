"""`peropix`: opens the TUI; `peropix <command>` runs the same core objects headless.

Heavy modules (Textual, the command implementations) are imported only when their command runs, so
`peropix --help` and every headless command start fast and never import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from peropix_tui import __version__
from peropix_tui.commands import config_cmd, meta, sandbox_cmd
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.logs import setup_logging
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.redact import ScrubbingStream

log = logging.getLogger("peropix_tui.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peropix",
        description="Generate, collect and curate anime-style images from the terminal. "
        "Without a command, opens the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"peropix {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print debug logs on stderr")
    parser.add_argument("--no-mouse", action="store_true", help="TUI: leave the mouse to the terminal")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    meta.register(sub)
    config_cmd.register(sub)
    sandbox_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    dirs = AppDirs.from_env()
    setup_logging(dirs.log_file, level=logging.DEBUG if args.verbose else logging.INFO, stderr=args.verbose)
    if args.command is None:
        from peropix_tui.app import run_app

        return run_app(dirs, mouse=not args.no_mouse)
    # Headless output may echo what a user typed (a URL with ?token=…, a pasted prompt): scrub all of it.
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbingStream(out), ScrubbingStream(err)
    try:
        func = getattr(args, "func", None)
        if func is None:
            parser.parse_args([*(argv or sys.argv[1:]), "--help"])
            return 2
        code: int = func(args)
        return code
    except PeropixError as exc:
        log.error("%s", exc)
        print(f"peropix: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted")
        print("peropix: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err


if __name__ == "__main__":
    sys.exit(main())
