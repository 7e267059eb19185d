"""`peropix civitai get URL|USER…` and `peropix civitai batch FILE`: collect creators from CivitAI.

On a terminal the run shows progress bars (model bytes, images, and one bar per file being fetched); piped,
it prints one line per settled item, so logs stay greppable. Either way it ends with a summary. The exit code
is 0 only when nothing failed: 1 when anything failed (a file, an image, a creator, a bad batch line), 75
(EX_TEMPFAIL) when nothing failed but some files wait for a later run (early access, download quota), 130
on Ctrl-C (partial files are kept and resumed by the next run; the log is saved).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from peropix_tui.civitai.model_types import parse_model_types
from peropix_tui.core.errors import PeropixError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from peropix_tui.civitai.collector import CollectOptions
    from peropix_tui.civitai.events import CreatorPlanned, Event, ItemFinished, Tally
    from peropix_tui.civitai.urls import CreatorRef
    from peropix_tui.core.prompt import WordFilter

log = logging.getLogger(__name__)

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_DEFERRED: Final = 75
EXIT_INTERRUPTED: Final = 130


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    civitai = sub.add_parser(
        "civitai",
        help="collect every model and image of CivitAI creators",
        description="Collect every model file, example image and prompt of CivitAI creators into the library, "
        "resumably, with a log per creator.",
    )
    actions = civitai.add_subparsers(dest="civitai_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="library root (default: the paths.civitai_root setting; with --sandbox, a sandbox folder)",
    )
    common.add_argument(
        "--types",
        metavar="T1,T2",
        help="model types to collect, comma-separated, or 'all' (default: the civitai.types setting, LORA,LoCon,DoRA)",
    )
    common.add_argument("--no-images", action="store_true", help="skip images and their sidecars")
    common.add_argument("--no-models", action="store_true", help="skip model files")
    common.add_argument("--dry-run", action="store_true", help="list and count what would be fetched; download nothing")
    common.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry what a normal run leaves alone: permanent skips, hash mismatches, deferrals not yet due",
    )
    epilog = "exit codes: 0 all done, 1 something failed, 75 some files wait for a later run, 130 interrupted"
    get = actions.add_parser(
        "get", parents=[common], help="collect creators given as profile URLs or usernames", epilog=epilog
    )
    get.add_argument("creators", nargs="+", metavar="URL|USER", help="https://civitai.com/user/<name> or a name")
    get.set_defaults(func=_get)
    batch = actions.add_parser(
        "batch", parents=[common], help="collect the creators listed in a file, one per line", epilog=epilog
    )
    batch.add_argument("file", type=Path, metavar="FILE", help="one URL or username per line; # comments")
    batch.set_defaults(func=_batch)


def _error(message: str) -> None:
    log.error("%s", message)
    print(f"peropix: {message}", file=sys.stderr)


def _get(args: argparse.Namespace) -> int:
    from peropix_tui.civitai.urls import parse_creator, unique_creators

    creators: list[CreatorRef] = []
    bad = False
    for text in args.creators:
        try:
            creators.append(parse_creator(text))
        except PeropixError as exc:
            _error(str(exc))
            bad = True
    if bad:
        return EXIT_USAGE
    return _collect(args, unique_creators(creators), bad_input=0)


def _batch(args: argparse.Namespace) -> int:
    from peropix_tui.civitai.urls import read_batch_file

    parsed = read_batch_file(args.file)
    for problem in parsed.problems:
        _error(f"{args.file}: {problem} (skipped)")
    if not parsed.creators:
        _error(f"{args.file}: no creators to collect")
        return EXIT_FAILED
    return _collect(args, [line.creator for line in parsed.creators], bad_input=len(parsed.problems))


def _collect(args: argparse.Namespace, creators: list[CreatorRef], *, bad_input: int) -> int:
    from peropix_tui.civitai.collector import CollectOptions
    from peropix_tui.core.config import Config
    from peropix_tui.core.paths import AppDirs
    from peropix_tui.core.prompt import WordFilter
    from peropix_tui.core.secrets import SecretStore
    from peropix_tui.sandbox.session import civitai_root

    if args.no_images and args.no_models:
        raise PeropixError("--no-images and --no-models together leave nothing to collect")
    dirs = AppDirs.from_env()
    config = Config.load(dirs)
    for issue in config.issues:
        print(f"peropix: warning: {issue}", file=sys.stderr)
    settings = config.settings.civitai
    options = CollectOptions(
        root=civitai_root(config, args.root),
        types=parse_model_types(args.types, settings.types),
        models=not args.no_models,
        images=not args.no_images,
        dry_run=args.dry_run,
        retry_failed=args.retry_failed,
        download_workers=settings.download_workers,
        image_workers=settings.image_workers,
    )
    secrets = SecretStore(dirs.secrets_file)
    if secrets.problem:
        print(f"peropix: warning: {secrets.problem}", file=sys.stderr)
    key = secrets.value("civitai_api_key")
    filters = WordFilter.load(config.filters_dir)
    reporter = RichReporter(sys.stdout) if sys.stdout.isatty() and not args.dry_run else LineReporter(sys.stdout)
    base_url = config.settings.endpoints.civitai_base_url
    try:
        import asyncio  # not at import time: the TUI's start-up imports this module to build the parser

        tally = asyncio.run(_run(base_url, key, settings.request_spacing_s, options, creators, filters, reporter))
    except KeyboardInterrupt:
        reporter.close()
        print("interrupted: the log is saved and partial files are kept; run the same command to resume")
        _summary(reporter.tally, options, sys.stdout)
        return EXIT_INTERRUPTED
    finally:
        reporter.close()
    tally.listing_errors += bad_input
    _summary(tally, options, sys.stdout)
    if tally.failed:
        return EXIT_FAILED
    return EXIT_DEFERRED if tally.deferred else 0


async def _run(
    base_url: str,
    key: str | None,
    spacing_s: float,
    options: CollectOptions,
    creators: list[CreatorRef],
    filters: WordFilter,
    reporter: LineReporter | RichReporter,
) -> Tally:
    from peropix_tui.civitai.client import CivitaiClient
    from peropix_tui.civitai.collector import Collector

    async with CivitaiClient(base_url, key, spacing_s=spacing_s) as client:
        collector = Collector(client, options, filters=filters, on_event=reporter.handle)
        return await collector.run(creators)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _plan_line(event: CreatorPlanned) -> str:
    files = (
        f"files: {event.files_todo} to fetch ({_size(event.bytes_todo)}), {event.files_verified} already here, "
        f"{event.files_waiting} waiting"
    )
    line = f"{event.username}: {event.models} models, {event.versions} versions; {files}"
    if event.images_todo is not None:
        line += (
            f"; images: {event.images_todo} to fetch, {event.images_verified} already here, "
            f"{event.images_waiting} waiting"
        )
    return line


def _summary(tally: Tally, options: CollectOptions, out: TextIO) -> None:
    if options.dry_run:
        return
    parts = []
    for kind, label in (("model", "model files"), ("image", "images")):
        counts = {status: n for (k, status), n in tally.counts.items() if k == kind}
        if counts:
            detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            parts.append(f"{label}: {detail}")
    print("summary: " + ("; ".join(parts) if parts else "nothing to do"), file=out)
    if tally.reasons:
        print("  not done, by reason: " + ", ".join(f"{r} ×{n}" for r, n in tally.reasons.most_common()), file=out)
    if tally.reasons.get("needs_api_key"):
        print("  some files need a CivitAI API key: peropix secrets set civitai_api_key", file=out)
    for message in tally.creator_errors:
        print(f"  {message}", file=out)
    if tally.listing_errors:
        print(f"  {tally.listing_errors} lists or input lines could not be read (see above)", file=out)


class LineReporter:
    """One line per event that matters; progress events are dropped."""

    def __init__(self, out: TextIO) -> None:
        from peropix_tui.civitai.events import Tally

        self.out = out
        self.tally = Tally()

    def handle(self, event: Event) -> None:
        from peropix_tui.civitai.events import CreatorPlanned, CreatorStarted, ItemFinished, Notice

        line: str | None = None
        if isinstance(event, Notice):
            line = f"{event.level}: {event.message}" if event.level != "info" else event.message
        elif isinstance(event, CreatorStarted):
            line = f"{event.username}: listing models on {event.site}"
        elif isinstance(event, CreatorPlanned):
            line = _plan_line(event)
        elif isinstance(event, ItemFinished):
            self.tally.add(event)
            size = f" ({_size(event.size)})" if event.size else ""
            why = f" {event.reason}: {event.info}" if event.reason else ""
            line = f"{event.status} {event.kind} {event.ident} {event.name}{size}{why}"
        if line is not None:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        self.out.flush()


class RichReporter:
    """Progress bars: counts of model files and images, bytes of all model files, one bar per file in flight."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from peropix_tui.civitai.events import Tally

        self.tally = Tally()
        self.console = Console(file=out)
        self.bytes: Progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.counts = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), console=self.console
        )
        from rich.console import Group
        from rich.live import Live

        self.live = Live(Group(self.counts, self.bytes), console=self.console, refresh_per_second=8)
        self.live.start()
        self.files_task: TaskID = self.counts.add_task("model files", total=0)
        self.images_task: TaskID = self.counts.add_task("images", total=0)
        self.all_bytes: TaskID = self.bytes.add_task("all model files", total=0)
        self.per_file: dict[str, TaskID] = {}
        self.seen_bytes: dict[str, int] = {}
        self.expected_bytes: dict[str, int] = {}

    def _print(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def handle(self, event: Event) -> None:
        from peropix_tui.civitai.events import (
            CreatorPlanned,
            CreatorStarted,
            FileProgress,
            FileStarted,
            ImagesFound,
            ItemFinished,
            Notice,
        )

        if isinstance(event, Notice):
            self._print(
                event.message, None if event.level == "info" else "yellow" if event.level == "warning" else "red"
            )
        elif isinstance(event, CreatorStarted):
            self._print(f"{event.username}: listing models on {event.site}", "bold")
        elif isinstance(event, CreatorPlanned):
            self._print(_plan_line(event))
            _grow(self.counts, self.files_task, event.files_todo + event.files_verified + event.files_waiting)
            _grow(self.bytes, self.all_bytes, event.bytes_todo)
        elif isinstance(event, ImagesFound):
            _grow(self.counts, self.images_task, event.count)
        elif isinstance(event, FileStarted):
            self.per_file[event.key] = self.bytes.add_task(event.name[:40], total=event.total)
            self.expected_bytes[event.key] = event.total or 0
        elif isinstance(event, FileProgress) and event.key in self.per_file:
            self.bytes.update(self.per_file[event.key], completed=event.done, total=event.total)
            self._count_bytes(event.key, event.done)
        elif isinstance(event, ItemFinished):
            self._finished(event)

    def _count_bytes(self, key: str, done: int) -> None:
        """Advance the overall bar by what a file gained (a file that restarts from zero does not take back)."""
        gained = done - self.seen_bytes.get(key, 0)
        if gained > 0:
            self.seen_bytes[key] = done
            self.bytes.advance(self.all_bytes, gained)

    def _finished(self, event: ItemFinished) -> None:
        self.tally.add(event)
        self.counts.advance(self.files_task if event.kind == "model" else self.images_task)
        if event.key is not None and event.key in self.per_file:
            if event.status == "done" and event.size is not None:
                self._count_bytes(event.key, event.size)
            else:  # what it will not bring leaves the overall total
                missing = self.expected_bytes.get(event.key, 0) - self.seen_bytes.get(event.key, 0)
                _grow(self.bytes, self.all_bytes, -max(missing, 0))
            self.bytes.remove_task(self.per_file.pop(event.key))
            self.seen_bytes.pop(event.key, None)
            self.expected_bytes.pop(event.key, None)
        if event.status in ("failed", "hash_mismatch", "deferred", "skipped_permanent") and event.reason:
            style = "red" if event.status in ("failed", "hash_mismatch") else "yellow"
            self._print(f"{event.status} {event.kind} {event.ident} {event.name}: {event.reason}: {event.info}", style)

    def close(self) -> None:
        if self.live.is_started:
            self.live.stop()


def _grow(progress: Progress, task: TaskID, amount: int) -> None:
    current = progress.tasks[task].total or 0
    progress.update(task, total=current + amount)
