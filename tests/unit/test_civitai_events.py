"""What a collector run tells as it goes: every item's life as events under one key, with its model's name and
a deferral's deadline, and the phases between items. Runs against the sandbox server over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from civitai_helpers import alice_dataset, collect

from peropix_tui.civitai.events import (
    VERIFIED,
    Event,
    FileProgress,
    FileQueued,
    FileStarted,
    ImageStarted,
    ItemFinished,
    Phase,
    item_key,
)
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, ModelType
from peropix_tui.sandbox.civitai_faults import B2_PREFIX, CDN_PREFIX, Fault, FaultKind
from peropix_tui.sandbox.civitai_server import CivitaiSandbox

EARLY_UNTIL = time.time() + 7200


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    dataset = alice_dataset()
    outfit = next(m for m in dataset.models.values() if m.name == "Alice Outfit")
    dataset.add_file(dataset.add_version(outfit, "v2.0", early_access_until=EARLY_UNTIL), size=4096)
    with CivitaiSandbox(dataset) as server:
        yield server


def model_names(dataset: CivitaiDataset) -> dict[str, str]:
    """Item key -> the name of the model it belongs to, for every file and image of alice's LoRA-like models."""
    names: dict[str, str] = {}
    for model in dataset.models.values():
        if model.type not in (ModelType.LORA, ModelType.LOCON):
            continue
        for version in model.versions:
            for sandbox_file in version.files:
                names[item_key("model", sandbox_file.id)] = model.name
            for image in dataset.images.values():
                if image.version_id == version.id:
                    names[item_key("image", image.id)] = model.name
    return names


def lives(events: list[Event]) -> dict[str, list[str]]:
    """Per item key, the kinds of its events in order (progress collapsed to one)."""
    seen: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, FileQueued | FileStarted | ImageStarted | FileProgress):
            key = event.key
        elif isinstance(event, ItemFinished):
            key = event.key or item_key(event.kind, event.ident)
        else:
            continue
        kinds = seen.setdefault(key, [])
        name = type(event).__name__
        if not kinds or kinds[-1] != name:
            kinds.append(name)
    return seen


def test_item_keys_keep_kinds_apart() -> None:
    assert item_key("model", 5) == "file:5"
    assert item_key("image", 5) == "image:5"


async def test_each_item_is_queued_started_and_finished_under_one_key(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    dataset = sandbox.dataset
    lost = next(image for image in dataset.images.values() if image.meta is None)
    paths = frozenset({f"{CDN_PREFIX}{lost.uuid}/*", f"{B2_PREFIX}*{lost.uuid}*"})
    sandbox.inject(Fault(FaultKind.STATUS, status=404, paths=paths), times=None)
    result = await collect(sandbox, tmp_path)
    events = result.events
    assert events[0] == Phase("checking the CivitAI API key")
    names = model_names(dataset)
    finished = [e for e in events if isinstance(e, ItemFinished)]
    assert {item_key(e.kind, e.ident) for e in finished} == set(names)
    assert all(e.model == names[item_key(e.kind, e.ident)] for e in finished)

    got = lives(events)
    early = [f for m in dataset.models.values() for v in m.versions if v.early_access_until for f in v.files]
    for key, kinds in got.items():
        if key == item_key("model", early[0].id):
            assert kinds == ["FileQueued", "FileStarted", "ItemFinished"]  # refused before any byte
        elif key.startswith("file:"):
            assert kinds == ["FileQueued", "FileStarted", "FileProgress", "ItemFinished"], key
        else:
            assert kinds == ["FileQueued", "ImageStarted", "ItemFinished"], key
    queued = {e.key: e for e in events if isinstance(e, FileQueued)}
    assert all(queued[key].model == names[key] for key in queued)
    assert queued[item_key("model", early[0].id)].total == 4096

    by_key = {item_key(e.kind, e.ident): e for e in finished}
    deferred = by_key[item_key("model", early[0].id)]
    assert (deferred.status, deferred.reason) == ("deferred", "early_access")
    assert deferred.retry_after is not None and abs(deferred.retry_after.timestamp() - EARLY_UNTIL) < 2
    missing = by_key[item_key("image", lost.id)]
    assert (missing.status, missing.reason) == ("failed", "missing")
    phases = [e.message for e in events if isinstance(e, Phase)]
    assert phases[1:] == ["alice: images of Alice Style", "alice: images of Alice Outfit"]

    # A second run settles everything from disk and the log, the model still named, the deferral waiting with
    # its deadline; only the lost image (a failure worth another try) is queued and started again.
    again = await collect(sandbox, tmp_path)
    started = {e.key for e in again.events if isinstance(e, FileQueued | FileStarted | ImageStarted)}
    assert started == {item_key("image", lost.id)}
    rerun = {item_key(e.kind, e.ident): e for e in again.events if isinstance(e, ItemFinished)}
    assert all(e.model == names[key] for key, e in rerun.items())
    waiting = rerun[item_key("model", early[0].id)].retry_after
    assert waiting is not None and abs((waiting - deferred.retry_after).total_seconds()) < 1  # the log keeps seconds
    assert {e.status for key, e in rerun.items() if key != item_key("model", early[0].id)} <= {VERIFIED, "failed"}
