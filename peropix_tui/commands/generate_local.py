"""Carrying out a `peropix generate --provider local` plan: the dry run, or the generations on this machine.

Nothing is priced and no token is needed. The checkpoint is looked up before anything else (a dry run does it
too), so a misspelt name fails at once with the engine's own words. Each request's images are saved and indexed
as soon as they are made, exactly as NovelAI's are but recorded with the provider "local"; Ctrl-C stops the
engine at its next step and the report says what was saved.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from peropix_tui.commands.generate_plan import Plan
from peropix_tui.commands.generate_run import (
    Display,
    Outcome,
    Saver,
    describe_draw,
    drawn_batches,
    open_history,
    plural,
    print_json,
    report,
    ring,
)
from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs.cancel import CancelToken
from peropix_tui.engine.local_provider import LocalSettings, open_local_engine
from peropix_tui.engine.run import ExpandedRequest, SavedOutput
from peropix_tui.engine.types import LOCAL, GeneratedImage, GenerationRequest, ProgressEvent

if TYPE_CHECKING:
    from peropix_tui.engine.local.engine import LocalEngine


def request_summary(request: GenerationRequest, checkpoint: Path) -> dict[str, Any]:
    """What the local engine is asked for, as a JSON object (source images by path)."""
    summary: dict[str, Any] = {
        "provider": LOCAL,
        "model": request.model,
        "checkpoint": str(checkpoint),
        "prompt": request.prompt,
        "negative": request.negative,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "scale": request.scale,
        "cfg_rescale": request.cfg_rescale,
        "sampler": request.sampler,
        "scheduler": request.scheduler,
        "seed": request.seed,
        "n": request.n,
    }
    if request.image is not None:
        summary["image"] = str(request.image) if isinstance(request.image, Path) else "<image bytes>"
        summary["strength"] = request.strength
    if request.mask is not None:
        summary["mask"] = str(request.mask) if isinstance(request.mask, Path) else "<mask bytes>"
    return summary


def dry_run(plan: Plan, args: argparse.Namespace, config: Config) -> int:
    """Print what each call would ask the engine for (and what its wildcards drew); make nothing."""
    engine = open_local_engine(LocalSettings.from_config(config))
    try:
        checkpoint = engine.resolve_model(plan.request.model)
    finally:
        engine.close()
    requests = []
    for drawn in drawn_batches(plan, config):
        entry = request_summary(drawn.request, checkpoint)
        if drawn.record is not None:
            entry["wildcards"] = drawn.record
        requests.append(entry)
    if args.json:
        summary = {"anlas": 0, "images": plan.images, "requests": len(requests)}
        print_json({"requests": requests, "cost": summary})
        return 0
    for entry in requests:
        if "wildcards" in entry:
            print(describe_draw(entry["wildcards"]))
        print(orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode())
    print(f"cost: nothing, {plural(plan.images, 'image')} made by the local engine")
    return 0


async def _generate(
    batches: list[ExpandedRequest],
    engine: LocalEngine,
    cancel: CancelToken,
    *,
    streaming: bool,
    save: Callable[[GeneratedImage, int, dict[str, Any]], SavedOutput],
    display: Display,
    outcome: Outcome,
) -> None:
    first = 0
    for drawn in batches:
        batch = drawn.request
        if drawn.record is not None:
            display.drawn(drawn.record)

        def progress(event: ProgressEvent, first: int = first) -> None:
            display.step(first, event)

        images = await engine.generate(batch, on_progress=progress, stream=streaming, cancel=cancel)
        for image in images:
            saved = save(image, first + image.index, drawn.peropix_fields)
            outcome.saved.append(saved)
            display.saved(saved, len(outcome.saved))
        first += batch.n


def execute(plan: Plan, args: argparse.Namespace, config: Config) -> int:
    """Make the plan's images with the local engine, save and index every one, report; 0 only when all were saved.

    Images always go into the outputs folder (or `--out`), as with NovelAI."""
    batches = drawn_batches(plan, config)  # a wildcard that cannot be drawn fails here, before any model loads
    engine = open_local_engine(LocalSettings.from_config(config))
    cancel = CancelToken()
    outcome = Outcome(cost=0)
    history = None
    try:
        engine.resolve_model(plan.request.model)
        history = open_history(config)
        out_dir = args.out.expanduser() if args.out is not None else config.outputs_dir
        saver = Saver(out_dir, LOCAL, history, config.save_options(format=args.save_format, quality=args.save_quality))
        with Display(plan, bar=sys.stderr.isatty(), lines=not args.json) as display:
            asyncio.run(
                _generate(batches, engine, cancel, streaming=args.stream, save=saver, display=display, outcome=outcome)
            )
    except KeyboardInterrupt:
        cancel.cancel()
        report(outcome, plan, args, LOCAL, error="interrupted")
        raise
    except PeropixError as exc:
        report(outcome, plan, args, LOCAL, error=str(exc))
        ring(config, outcome, failed=True)
        raise
    finally:
        engine.close()
        if history is not None:
            history.close()
    report(outcome, plan, args, LOCAL)
    ring(config, outcome, failed=False)
    return 0
