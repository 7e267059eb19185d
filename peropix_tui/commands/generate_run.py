"""Carrying out a `peropix generate` plan: the dry run, or the requests, the saving and the report. The progress
display, the saving and the report are shared with `generate_local`, which carries out `--provider local` plans.

A dry run touches no network and needs no token: it prints each request body exactly as it would be sent
(image data elided, vibes still to encode marked) and the web's price for it. A real run reads the account
first (a bad token fails before anything is sent and prices know the tier), then sends the requests one
after the other; each request's images are saved and indexed as soon as it finishes, so an error or Ctrl-C
later keeps every image already paid for, and the report says what was saved either way.

Wildcards in the prompts are drawn once per request, before anything is sent, with the request's seed as the
draw's seed: the same command with the same `--seed` and the same wildcard files sends the same prompts. The
dry run prints what was drawn; a real run saves it in each image's metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from peropix_tui.commands.generate_plan import Plan
from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.history import HistoryStore
from peropix_tui.core.notify import QueueSummary, queue_finished
from peropix_tui.core.outputs import SaveOptions
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.prompt.wildcards import WildcardLibrary
from peropix_tui.core.secrets import SecretStore
from peropix_tui.engine.nai.client import GENERATE_PATH, STREAM_PATH, NaiTokenMissingError, NovelAIClient
from peropix_tui.engine.nai.cost import OPUS_TIER, Account, estimate_cost
from peropix_tui.engine.nai.errors import NaiForbiddenError, NaiHttpError, NaiResponseError, NaiValidationError
from peropix_tui.engine.nai.models import VibeSupport, model_spec
from peropix_tui.engine.nai.payload import PENDING_ENCODING, build_payload, needs_encoding, redacted_payload
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.run import ExpandedRequest, HistoryOpener, SavedOutput, expand_request, save_output
from peropix_tui.engine.types import LOCAL, Action, GeneratedImage, GenerationRequest, ProgressEvent, read_image_input
from peropix_tui.sandbox.session import NAI_PROVIDER, nai_provider, vibe_cache_dir

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)

StreamFormat = Literal["msgpack", "sse"]
PENDING_NOTE: Final = "<vibe encoding, made when sent (2 Anlas)>"


def warn(message: str, *, logged: bool = False) -> None:
    """Tell the user on stderr, and the log unless the code that found the problem has already logged it."""
    if not logged:
        log.warning("%s", message)
    print(f"peropix: warning: {message}", file=sys.stderr)


def print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def stream_format(args: argparse.Namespace) -> StreamFormat | None:
    """How the answer is streamed (None: whole, from the non-streaming endpoint)."""
    if not args.stream:
        return None
    return "sse" if args.sse else "msgpack"


def request_body(request: GenerationRequest, *, stream: StreamFormat | None) -> dict[str, Any]:
    """The JSON body sent for `request`: the generate-image payload, plus the stream format when streaming."""
    body = build_payload(request)
    if stream is not None:
        body["parameters"]["stream"] = stream
    return body


# --- dry run -------------------------------------------------------------------------------------------------


def _cached_vibes(request: GenerationRequest, cache_dir: Path) -> tuple[GenerationRequest, list[int]]:
    """`request` with each vibe's encoding taken from the local cache, and the indexes of the vibes that would
    have to be encoded (and paid for) when sent; those carry a stand-in here."""
    spec = model_spec(request.model)
    if spec.vibes is not VibeSupport.ENCODED or request.action is Action.INPAINT or not request.vibes:
        return request, []
    cache = VibeCache(cache_dir)
    vibes, pending = [], []
    for index, vibe in enumerate(request.vibes):
        if needs_encoding(vibe, spec.id):
            assert vibe.image is not None  # needs_encoding is False without an image
            key = VibeKey.of(read_image_input(vibe.image, "vibe image"), spec.id, vibe.information_extracted)
            encoding = cache.get(key)
            if encoding is None:
                pending.append(index)
                encoding = PENDING_ENCODING
            vibe = dataclasses.replace(vibe, encoding=encoding, encoding_model=spec.id)
        vibes.append(vibe)
    return dataclasses.replace(request, vibes=tuple(vibes)), pending


def drawn_batches(plan: Plan, config: Config) -> list[ExpandedRequest]:
    """The plan's requests with their wildcards drawn (from `<config dir>/wildcards`), each request's seed
    seeding its draw."""
    library = WildcardLibrary.in_config_dir(config.dirs.config_dir)
    drawn = []
    for batch in plan.batches():
        assert batch.seed is not None  # a plan's requests always have their seed
        drawn.append(expand_request(batch, library, batch.seed))
    return drawn


def describe_draw(record: dict[str, Any]) -> str:
    """One line saying what the wildcards drew: `wildcards (seed 7): __hair__ → silver hair; ...`."""
    parts = []
    for choice in record["choices"]:
        field = "" if choice["field"] == "prompt" else f"{choice['field']}: "
        parts.append(f"{field}{choice['source']} → {choice['value']!r}")
    return f"wildcards (seed {record['seed']}): " + "; ".join(parts)


def dry_run(plan: Plan, args: argparse.Namespace, config: Config) -> int:
    """Print every request body (and what its wildcards drew) and the price, for no subscription and for Opus;
    send nothing."""
    stream = stream_format(args)
    url = config.get("endpoints.nai_base_url").rstrip("/") + (STREAM_PATH if stream else GENERATE_PATH)
    opus = Account(tier=OPUS_TIER, active=True)
    requests: list[dict[str, Any]] = []
    cost = opus_cost = encodings = 0
    for number, drawn in enumerate(drawn_batches(plan, config)):
        batch, pending = _cached_vibes(drawn.request, vibe_cache_dir(config))
        body = redacted_payload(request_body(batch, stream=stream))
        for index in pending:
            body["parameters"]["reference_image_multiple"][index] = PENDING_NOTE
        entry = {"method": "POST", "url": url, "body": body}
        if drawn.record is not None:
            entry["wildcards"] = drawn.record
        requests.append(entry)
        # An encoding is paid once: the requests after the first find it in the cache.
        uncached = len(pending) if number == 0 else 0
        encodings += uncached
        cost += estimate_cost(batch, None, uncached_vibes=uncached).total
        opus_cost += estimate_cost(batch, opus, uncached_vibes=uncached).total
    if args.json:
        summary = {"anlas": cost, "opus_anlas": opus_cost, "images": plan.images, "requests": len(requests)}
        print_json({"requests": requests, "cost": {**summary, "vibe_encodings": encodings}})
        return 0
    for entry in requests:
        if "wildcards" in entry:
            print(describe_draw(entry["wildcards"]))
        print(f"{entry['method']} {entry['url']}")
        print(orjson.dumps(entry["body"], option=orjson.OPT_INDENT_2).decode())
    print(f"cost: {cost} Anlas for {plural(plan.images, 'image')} (with an active Opus subscription: {opus_cost})")
    return 0


# --- the run -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What a run achieved so far; filled as it goes, so an error or Ctrl-C can still report it."""

    saved: list[SavedOutput] = field(default_factory=list)
    cost: int | None = 0
    """Anlas spent, by the web's price; None when the model's price is not known."""
    balance: int | None = None
    tier: str | None = None


class Display:
    """A progress bar on stderr when it is a terminal; each saved image as a line on stdout unless --json."""

    def __init__(self, plan: Plan, *, bar: bool, lines: bool) -> None:
        self.steps = plan.request.steps
        """Units of the bar per image: a streamed step moves it by the step's share of its image."""
        self.images = plan.images
        self.lines = lines
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            request = plan.request
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[saved]}"),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            description = f"{request.model} {request.width}x{request.height}"
            self._task = self._progress.add_task(
                description, total=plan.images * self.steps, saved=f"0/{plan.images} saved"
            )

    def __enter__(self) -> Display:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _update(self, completed: float, saved: int | None = None) -> None:
        if self._progress is None or self._task is None:
            return
        completed = max(self._progress.tasks[0].completed, completed)
        if saved is None:
            self._progress.update(self._task, completed=completed)
        else:
            self._progress.update(self._task, completed=completed, saved=f"{saved}/{self.images} saved")

    def step(self, first: int, event: ProgressEvent) -> None:
        """A streamed step of image `first + event.sample_index` of the run."""
        share = min(event.step, event.total) / event.total if event.total > 0 else 0.0
        self._update((first + event.sample_index + share) * self.steps)

    def saved(self, image: SavedOutput, count: int) -> None:
        self._update((image.index + 1) * self.steps, count)
        if self.lines:
            print(f"saved {image.path}  seed {image.seed}", flush=True)

    def drawn(self, record: dict[str, Any]) -> None:
        """What the wildcards of the next request drew."""
        if self.lines:
            print(describe_draw(record), flush=True)


def open_history(config: Config) -> HistoryStore | None:
    try:
        store = HistoryStore(config.history_file)
    except PeropixError as exc:
        warn(f"the history cannot be opened, so new images are not indexed: {exc}")
        return None
    if store.recovered:
        warn(store.recovered)
    return store


class Saver:
    """Saves and indexes each image as the TUI does (`save_output`), numbered across the whole run; an image
    that cannot be indexed is a warning, one that cannot be saved stops the run."""

    def __init__(self, out_dir: Path, provider: str, history: HistoryStore | None, options: SaveOptions) -> None:
        self.out_dir = out_dir
        self.provider = provider
        self.history: HistoryOpener | None = None if history is None else lambda: history
        self.options = options

    def __call__(self, image: GeneratedImage, index: int, extra_peropix: dict[str, Any]) -> SavedOutput:
        output = save_output(
            image,
            outputs_dir=self.out_dir,
            provider=self.provider,
            history=self.history,
            options=self.options,
            extra_peropix=extra_peropix,
        )
        if output.problem is not None:
            warn(output.problem, logged=True)
        return dataclasses.replace(output, index=index)


async def _read_account(client: NovelAIClient) -> None:
    """A bad token fails here, before anything is sent; an account host that cannot say the balance only
    costs the Opus discount in the printed price."""
    try:
        await client.subscription()
    except (NaiValidationError, NaiForbiddenError, NaiHttpError, NaiResponseError) as exc:
        warn(f"the Anlas balance cannot be read ({exc}); prices assume no subscription")


async def _generate(
    plan: Plan,
    batches: list[ExpandedRequest],
    client: NovelAIClient,
    *,
    streaming: bool,
    save: Callable[[GeneratedImage, int, dict[str, Any]], SavedOutput],
    display: Display,
    outcome: Outcome,
) -> None:
    await _read_account(client)
    priced = not model_spec(plan.request.model).legacy
    first = 0
    for drawn in batches:
        batch = drawn.request
        if drawn.record is not None:
            display.drawn(drawn.record)
        estimate = await client.estimate(batch) if priced else None

        def progress(event: ProgressEvent, first: int = first) -> None:
            display.step(first, event)

        images = await client.generate(batch, on_progress=progress, stream=streaming)
        outcome.cost = None if estimate is None or outcome.cost is None else outcome.cost + estimate.total
        for image in images:
            saved = save(image, first + image.index, drawn.peropix_fields)
            outcome.saved.append(saved)
            display.saved(saved, len(outcome.saved))
        first += batch.n
        if client.last_subscription is not None:
            outcome.balance = client.last_subscription.balance
            outcome.tier = client.last_subscription.tier_name


async def _run(
    plan: Plan,
    batches: list[ExpandedRequest],
    args: argparse.Namespace,
    config: Config,
    token: str,
    save: Callable[[GeneratedImage, int, dict[str, Any]], SavedOutput],
    outcome: Outcome,
) -> None:
    stream = stream_format(args)
    client = NovelAIClient(
        token,
        base_url=config.get("endpoints.nai_base_url"),
        account_url=config.get("endpoints.nai_account_url"),
        vibe_cache=VibeCache(vibe_cache_dir(config)),
        stream_format=stream or "msgpack",
    )
    async with client:
        with Display(plan, bar=sys.stderr.isatty(), lines=not args.json) as display:
            await _generate(
                plan, batches, client, streaming=stream is not None, save=save, display=display, outcome=outcome
            )


def report(outcome: Outcome, plan: Plan, args: argparse.Namespace, provider: str, error: str | None = None) -> None:
    if args.json:
        document: dict[str, Any] = {
            "images": [{"path": str(s.path), "seed": s.seed, "index": s.index} for s in outcome.saved],
            "cost": outcome.cost,
            "balance": outcome.balance,
            "tier": outcome.tier,
            "provider": provider,
        }
        if error is not None:
            document["error"] = error
        print_json(document)
        return
    if error is not None:
        if outcome.saved:
            print(f"peropix: {len(outcome.saved)} of {plural(plan.images, 'image')} saved", file=sys.stderr)
        return
    if provider == LOCAL:
        print(f"{plural(len(outcome.saved), 'image')} made by the local engine: nothing charged")
        return
    cost = "unknown" if outcome.cost is None else f"{outcome.cost} Anlas"
    balance = "unknown" if outcome.balance is None else f"{outcome.balance} Anlas ({outcome.tier})"
    where = "" if provider == NAI_PROVIDER else f" [{provider}: nothing real was charged]"
    print(f"cost {cost}, balance {balance}{where}")


def ring(config: Config, outcome: Outcome, *, failed: bool) -> None:
    """The bell (and the desktop notification) when the run ends, as set, if stderr is a terminal to hear it."""
    if not sys.stderr.isatty():
        return
    notify = config.settings.notify
    summary = QueueSummary(saved=len(outcome.saved), failed=int(failed))
    text = queue_finished(summary, bell=notify.bell, desktop=notify.desktop, environ=os.environ)
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()


def execute(plan: Plan, args: argparse.Namespace, config: Config) -> int:
    """Send the plan's requests, save and index every image, report; 0 only when every image was saved.

    Images are always saved into the outputs folder (or `--out`), whatever the auto-save setting: a command
    that prints the paths it saved keeps them. `--format` and `--save-quality` override the saving settings."""
    batches = drawn_batches(plan, config)  # a wildcard that cannot be drawn fails here, before anything is sent
    store = SecretStore(AppDirs.from_env().secrets_file)
    if store.problem:
        warn(store.problem)
    token = store.value("nai_token")
    if not token:
        raise NaiTokenMissingError(
            "no NovelAI token: save one with `peropix secrets set nai_token`, set PEROPIX_NAI_TOKEN, "
            "or try everything offline with --sandbox"
        )
    provider = nai_provider()
    history = open_history(config)
    out_dir = args.out.expanduser() if args.out is not None else config.outputs_dir
    options = config.save_options(format=args.save_format, quality=args.save_quality)
    outcome = Outcome()
    try:
        saver = Saver(out_dir, provider, history, options)
        asyncio.run(_run(plan, batches, args, config, token, saver, outcome))
    except KeyboardInterrupt:
        report(outcome, plan, args, provider, error="interrupted")
        raise
    except PeropixError as exc:
        report(outcome, plan, args, provider, error=str(exc))
        ring(config, outcome, failed=True)
        raise
    finally:
        if history is not None:
            history.close()
    report(outcome, plan, args, provider)
    ring(config, outcome, failed=False)
    return 0
