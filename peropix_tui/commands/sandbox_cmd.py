"""`peropix sandbox`: run the sandbox NovelAI server in the foreground until Ctrl-C.

It prints where it listens, the tokens it accepts and one line of environment settings to paste in front
of any `peropix` command (or into a shell) so the app talks to the sandbox instead of NovelAI. Each request
it answers is printed as it happens, so a newcomer can watch what the app sends.
"""

from __future__ import annotations

import argparse
import logging
import threading

from peropix_tui.core.errors import PeropixError

log = logging.getLogger(__name__)

POLL_S = 0.5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from peropix_tui.sandbox.nai_accounts import DEFAULT_BALANCE, SANDBOX_TOKEN

    parser = sub.add_parser(
        "sandbox",
        help="run a local fake NovelAI server to try everything without an account",
        description="Run a local server that answers like NovelAI (images, streaming, vibes, Anlas) on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1 or ::1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument(
        "--balance", type=int, default=DEFAULT_BALANCE, help=f"Anlas of the sandbox account (default {DEFAULT_BALANCE})"
    )
    parser.add_argument(
        "--token", default=SANDBOX_TOKEN, help=f"token the sandbox account accepts (default {SANDBOX_TOKEN})"
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="time each generation takes (default 0)"
    )
    parser.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> None:
    if args.balance < 0:
        raise PeropixError(f"--balance must be 0 or more, not {args.balance}")
    if not args.token or any(c.isspace() for c in args.token):
        raise PeropixError("--token must be non-empty and contain no spaces")
    if not 0 <= args.delay <= 600:
        raise PeropixError(f"--delay must be between 0 and 600 seconds, not {args.delay}")


def env_line(base_url: str, token: str) -> str:
    """The settings that point peropix at a sandbox, as one line of shell assignments."""
    return f"PEROPIX_NAI_BASE_URL={base_url} PEROPIX_NAI_ACCOUNT_URL={base_url} PEROPIX_NAI_TOKEN={token}"


def _run(args: argparse.Namespace) -> int:
    from peropix_tui.sandbox.nai_accounts import SANDBOX_OPUS_TOKEN, default_accounts
    from peropix_tui.sandbox.nai_server import NaiSandbox, RecordedRequest

    _check(args)

    def show(entry: RecordedRequest) -> None:
        status = "dropped" if entry.status is None else str(entry.status)
        print(f"{entry.method} {entry.path} -> {status}", flush=True)

    accounts = default_accounts(args.token, args.balance)
    sandbox = NaiSandbox(host=args.host, port=args.port, accounts=accounts, delay_s=args.delay, on_request=show)
    sandbox.start()
    try:
        print(f"NovelAI sandbox listening on {sandbox.base_url} (Ctrl-C stops it)")
        print(f"  token      {args.token} ({accounts[args.token].describe()})")
        if args.token != SANDBOX_OPUS_TOKEN:
            print(f"  opus token {SANDBOX_OPUS_TOKEN} ({accounts[SANDBOX_OPUS_TOKEN].describe()})")
        print("Point peropix at it with:")
        print(f"  {env_line(sandbox.base_url, args.token)}", flush=True)
        _wait_forever()
    except KeyboardInterrupt:
        print("stopping the sandbox", flush=True)
    finally:
        sandbox.stop()
    return 0


def _wait_forever() -> None:
    idle = threading.Event()
    while not idle.wait(POLL_S):
        pass
