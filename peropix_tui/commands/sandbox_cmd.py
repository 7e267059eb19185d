"""`peropix sandbox`: run the sandbox NovelAI and CivitAI servers in the foreground until Ctrl-C.

It prints where they listen, the tokens and API key they accept and one line of environment settings to
paste in front of any `peropix` command (or into a shell) so the app talks to the sandboxes instead of
NovelAI and CivitAI. Each request they answer is printed as it happens, so a newcomer can watch what the
app sends.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from peropix_tui.core.errors import PeropixError

log = logging.getLogger(__name__)

POLL_S = 0.5
MAX_FILE_MIB = 4096


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from peropix_tui.sandbox.civitai_credentials import SANDBOX_API_KEY
    from peropix_tui.sandbox.nai_credentials import DEFAULT_BALANCE, SANDBOX_TOKEN

    parser = sub.add_parser(
        "sandbox",
        help="run local fake NovelAI and CivitAI servers to try everything without an account",
        description="Run local servers that answer like NovelAI (images, streaming, vibes, Anlas) and CivitAI "
        "(models, images, downloads) on loopback.",
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
    parser.add_argument("--civitai-port", type=int, default=0, help="port of the CivitAI sandbox (default: any)")
    parser.add_argument(
        "--civitai-key",
        default=SANDBOX_API_KEY,
        help=f"API key the CivitAI sandbox accepts (default {SANDBOX_API_KEY})",
    )
    parser.add_argument(
        "--civitai-file-mib",
        type=float,
        default=1.0,
        metavar="MIB",
        help="size of each CivitAI sandbox model file in MiB (default 1)",
    )
    parser.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> None:
    if args.balance < 0:
        raise PeropixError(f"--balance must be 0 or more, not {args.balance}")
    if not args.token or any(c.isspace() for c in args.token):
        raise PeropixError("--token must be non-empty and contain no spaces")
    if not 0 <= args.delay <= 600:
        raise PeropixError(f"--delay must be between 0 and 600 seconds, not {args.delay}")
    if not args.civitai_key or any(c.isspace() for c in args.civitai_key):
        raise PeropixError("--civitai-key must be non-empty and contain no spaces")
    if not 0.01 <= args.civitai_file_mib <= MAX_FILE_MIB:
        raise PeropixError(f"--civitai-file-mib must be between 0.01 and {MAX_FILE_MIB}, not {args.civitai_file_mib}")


def env_line(base_url: str, token: str) -> str:
    """The settings that point peropix at a sandbox, as one line of shell assignments."""
    return f"PEROPIX_NAI_BASE_URL={base_url} PEROPIX_NAI_ACCOUNT_URL={base_url} PEROPIX_NAI_TOKEN={token}"


def civitai_env_line(base_url: str, key: str) -> str:
    """The settings that point peropix at a CivitAI sandbox, as shell assignments."""
    return f"PEROPIX_CIVITAI_BASE_URL={base_url} PEROPIX_CIVITAI_API_KEY={key}"


def _run(args: argparse.Namespace) -> int:
    from peropix_tui.sandbox import civitai_server
    from peropix_tui.sandbox.civitai_credentials import SANDBOX_USERNAME
    from peropix_tui.sandbox.civitai_default import default_dataset
    from peropix_tui.sandbox.nai_accounts import SANDBOX_OPUS_TOKEN, default_accounts
    from peropix_tui.sandbox.nai_server import NaiSandbox, RecordedRequest

    _check(args)

    def show(entry: RecordedRequest) -> None:
        status = "dropped" if entry.status is None else str(entry.status)
        print(f"{entry.method} {entry.path} -> {status}", flush=True)

    def show_civitai(entry: civitai_server.RecordedRequest) -> None:
        status = "dropped" if entry.status is None else str(entry.status)
        fault = f" ({entry.fault})" if entry.fault else ""
        print(f"civitai {entry.method} {entry.path} -> {status}{fault}", flush=True)

    accounts = default_accounts(args.token, args.balance)
    sandbox = NaiSandbox(host=args.host, port=args.port, accounts=accounts, delay_s=args.delay, on_request=show)
    dataset = default_dataset(round(args.civitai_file_mib * 1024 * 1024))
    civitai = civitai_server.CivitaiSandbox(
        dataset,
        host=args.host,
        port=args.civitai_port,
        api_keys={args.civitai_key: SANDBOX_USERNAME},
        on_request=show_civitai,
    )
    sandbox.start()
    try:
        civitai.start()
        print(f"NovelAI sandbox listening on {sandbox.base_url} (Ctrl-C stops it)")
        print(f"  token      {args.token} ({accounts[args.token].describe()})")
        if args.token != SANDBOX_OPUS_TOKEN:
            print(f"  opus token {SANDBOX_OPUS_TOKEN} ({accounts[SANDBOX_OPUS_TOKEN].describe()})")
        creators = ", ".join(sorted(c.username for c in dataset.creators.values()))
        print(f"CivitAI sandbox listening on {civitai.base_url} (creators: {creators})")
        print(f"  api key    {args.civitai_key}")
        print("Point peropix at them with:")
        print(f"  {env_line(sandbox.base_url, args.token)} {civitai_env_line(civitai.base_url, args.civitai_key)}")
        sys.stdout.flush()
        _wait_forever()
    except KeyboardInterrupt:
        print("stopping the sandbox", flush=True)
    finally:
        civitai.stop()
        sandbox.stop()
    return 0


def _wait_forever() -> None:
    idle = threading.Event()
    while not idle.wait(POLL_S):
        pass
