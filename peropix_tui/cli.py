"""`peropix`: opens the TUI; `peropix <command>` runs the same core objects headless.

Heavy modules (Textual, the command implementations) are imported only when their command runs, so
`peropix --help` and every headless command start fast and never import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from peropix_tui import __version__
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.logs import setup_logging
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.redact import ScrubbingStream

if TYPE_CHECKING:
    from peropix_tui.sandbox.session import SandboxSession

log = logging.getLogger("peropix_tui.cli")

SANDBOX_HELP = "try everything offline: run a local fake NovelAI server for this run and use it (nothing is charged)"


def _add_sandbox_flag(parser: argparse.ArgumentParser) -> None:
    """`--sandbox` after any command too (`peropix generate --sandbox ...`), down to nested sub-commands.

    SUPPRESS as the default keeps a sub-command that was not given the flag from resetting the top-level one.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("--sandbox", action="store_true", default=argparse.SUPPRESS, help=SANDBOX_HELP)
                _add_sandbox_flag(child)


def _global_parser(*, add_help: bool = True) -> argparse.ArgumentParser:
    """The options that come before any command; alone, they are everything the TUI takes."""
    parser = argparse.ArgumentParser(
        prog="peropix",
        description="Generate, collect and curate anime-style images from the terminal. "
        "Without a command, opens the TUI.",
        add_help=add_help,
    )
    parser.add_argument("--version", action="version", version=f"peropix {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print debug logs on stderr")
    parser.add_argument("--no-mouse", action="store_true", help="TUI: leave the mouse to the terminal")
    parser.add_argument("--sandbox", action="store_true", help=SANDBOX_HELP)
    return parser


def tui_arguments(argv: Sequence[str]) -> argparse.Namespace | None:
    """The options when `argv` opens the TUI (global options only), else None: a command or `-h` needs the whole
    parser, whose command modules the TUI's start-up does not wait for."""
    args, rest = _global_parser(add_help=False).parse_known_args(argv)
    return None if rest else args


def build_parser() -> argparse.ArgumentParser:
    from peropix_tui.commands import (
        civitai_cmd,
        config_cmd,
        generate_cmd,
        meta,
        models_cmd,
        sandbox_cmd,
        vibe_cmd,
        vocab_cmd,
    )

    parser = _global_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate_cmd.register(sub)
    models_cmd.register(sub)
    vibe_cmd.register(sub)
    civitai_cmd.register(sub)
    meta.register(sub)
    config_cmd.register(sub)
    sandbox_cmd.register(sub)
    vocab_cmd.register(sub)
    _add_sandbox_flag(parser)
    return parser


@contextlib.contextmanager
def _maybe_sandbox(enabled: bool, *, announce: bool) -> Iterator[SandboxSession | None]:
    """With `--sandbox`, the sandbox server runs for the whole command and the process points at it."""
    if not enabled:
        yield None
        return
    from peropix_tui.sandbox.session import sandbox_session

    with sandbox_session() as session:
        if announce:
            print(
                f"peropix: SANDBOX: using the local fake NovelAI at {session.base_url} "
                f"and CivitAI at {session.civitai_url}",
                file=sys.stderr,
            )
        yield session


def _start_logging(args: argparse.Namespace) -> AppDirs:
    dirs = AppDirs.from_env()
    setup_logging(dirs.log_file, level=logging.DEBUG if args.verbose else logging.INFO, stderr=args.verbose)
    return dirs


def _run_tui(args: argparse.Namespace) -> int:
    dirs = _start_logging(args)
    # Start-up allocates hundreds of thousands of long-lived objects (modules, styles, widgets); collecting them
    # while they are made is wasted time before the first frame. The app resumes and freezes them after.
    gc.disable()
    from peropix_tui.core.config import Config
    from peropix_tui.terminal_probe import TerminalProbe

    config = Config.load(dirs)
    # The terminal answers its image-support queries while Textual and the screens are being imported.
    probe = TerminalProbe(config.settings.ui.image_renderer).start()
    from peropix_tui.app import run_app

    with _maybe_sandbox(args.sandbox, announce=False) as session:
        return run_app(dirs, config=config, probe=probe, mouse=not args.no_mouse, sandbox=session, gc_paused=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    tui = tui_arguments(arguments)
    if tui is not None:
        return _run_tui(tui)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        return _run_tui(args)
    _start_logging(args)
    # Headless output may echo what a user typed (a URL with ?token=…, a pasted prompt): scrub all of it.
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbingStream(out), ScrubbingStream(err)
    try:
        func = getattr(args, "func", None)
        if func is None:
            parser.parse_args([*arguments, "--help"])
            return 2
        with _maybe_sandbox(args.sandbox, announce=True):
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
