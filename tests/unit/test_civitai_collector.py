"""Whole collector runs against the sandbox server: the library layout, sidecars, logs and reruns, checked
against what the dataset says they must be."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from civitai_helpers import FILTERS, alice_dataset, collect, model_files

from peropix_tui.civitai.client import CivitaiClient
from peropix_tui.civitai.collector import CollectOptions, Collector
from peropix_tui.civitai.download_log import read_download_log
from peropix_tui.civitai.events import CreatorPlanned, ImagesFound
from peropix_tui.civitai.layout import safe_filename, safe_name
from peropix_tui.civitai.urls import CreatorRef
from peropix_tui.core.prompt import Dialect, normalize_prompt
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, ModelType, SandboxImage
from peropix_tui.sandbox.civitai_images import ImageFormat
from peropix_tui.sandbox.civitai_server import CivitaiSandbox

EXTENSIONS = {ImageFormat.PNG: "png", ImageFormat.JPEG: "jpg", ImageFormat.WEBP: "webp"}


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    with CivitaiSandbox(alice_dataset()) as server:
        yield server


def folder_of(root: Path, dataset: CivitaiDataset, model_id: int) -> Path:
    model = dataset.models[model_id]
    return root / "Users" / safe_name(model.username, fallback="user") / safe_name(model.name, fallback="m")


def lora_models(dataset: CivitaiDataset, username: str = "alice") -> list[Any]:
    return [
        m for m in dataset.models.values() if m.username == username and m.type in (ModelType.LORA, ModelType.LOCON)
    ]


def images_of(dataset: CivitaiDataset, model: Any) -> list[SandboxImage]:
    ids = {v.id for v in model.versions}
    return [i for i in dataset.images.values() if i.version_id in ids and i.username == model.username]


def saved_names(model: Any) -> dict[int, str]:
    """File id -> name on disk: the API's name made safe, the file id appended when a file listed earlier
    (versions come newest first) already took it, ignoring case."""
    names: dict[int, str] = {}
    for version in model.versions:
        for sandbox_file in version.files:
            name = safe_filename(sandbox_file.name, fallback="f")
            if name.casefold() in {n.casefold() for n in names.values()}:
                stem, dot, ext = name.rpartition(".")
                name = f"{stem}_{sandbox_file.id}{dot}{ext}"
            names[sandbox_file.id] = name
    return names


def saved_path(root: Path, dataset: CivitaiDataset, file_id: int) -> Path:
    model = dataset.models[dataset.versions[dataset.files[file_id].version_id].model_id]
    return folder_of(root, dataset, model.id) / saved_names(model)[file_id]


def leftovers(root: Path) -> list[Path]:
    """Partial downloads and temp files of atomic writes: none may stay after a finished run."""
    return [*root.rglob("*.part"), *root.rglob(".*.tmp")]


def escaped(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if not path.resolve().is_relative_to(root.resolve())]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_layout_and_sidecars_match_the_dataset(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    dataset = sandbox.dataset
    result = await collect(sandbox, tmp_path)
    assert result.tally.failed == 0
    for model in lora_models(dataset):
        folder = folder_of(tmp_path, dataset, model.id)
        model_json = json.loads((folder / "model.json").read_text())
        assert model_json["id"] == model.id and model_json["name"] == model.name
        assert (folder / "description.html").read_text() == model.description
        primary_stems: dict[int, str] = {}
        names = saved_names(model)
        for version in model.versions:
            version_json = json.loads((folder / f"version_{version.id}.json").read_text())
            assert version_json["id"] == version.id
            words = (folder / f"trigger_words_{version.id}.txt").read_text().splitlines()
            assert words == version.trained_words
            for sandbox_file in version.files:
                assert (folder / names[sandbox_file.id]).read_bytes() == sandbox_file.read()
            primary_stems[version.id] = names[version.files[0].id].rsplit(".", 1)[0]
        for image in images_of(dataset, model):
            path = folder / f"{image.id}.{EXTENSIONS[image.image_format]}"
            assert path.read_bytes() == image.original
            sidecar = json.loads((folder / f"{image.id}.txt").read_text())
            raw = (image.meta or {}).get("prompt", "")
            assert sidecar["raw_prompt"] == raw
            assert (sidecar["model_id"], sidecar["version_id"], sidecar["image_id"]) == (
                model.id,
                image.version_id,
                image.id,
            )
            assert sidecar["meta"] == image.meta
            assert sidecar["image_url"].endswith(f"/{image.uuid}/original=true/{image.uuid}.jpeg")
            assert sidecar["showcase"] is True and sidecar["username"] == "alice"
            stem = primary_stems[image.version_id]  # type: ignore[index]
            own = sidecar["lora"][0]
            assert own.startswith(f"<lora:{stem}:")
            assert sidecar["prompt"].startswith(own)
            rest = sidecar["prompt"].removeprefix(own).lstrip(", ")
            assert "masterpiece" not in sidecar["prompt"]  # a filtered word (FILTERS' etc list)
            assert rest == normalize_prompt(FILTERS.apply(rest, Dialect.SD).text, dialect=Dialect.SD)
    # The checkpoint is not a wanted type: nothing of it.
    mix = next(m for m in dataset.models.values() if m.type is ModelType.CHECKPOINT)
    assert not folder_of(tmp_path, dataset, mix.id).exists()
    # The log says what is on disk, and the Downloads screen reads it.
    seen = read_download_log(tmp_path / "download_logs" / "alice" / "alice_download_log.json", "alice")
    wanted_files = model_files(dataset, "alice")
    wanted_images = [i for m in lora_models(dataset) for i in images_of(dataset, m)]
    assert (seen.models_ok, seen.images_ok, seen.failed) == (len(wanted_files), len(wanted_images), 0)
    assert leftovers(tmp_path) == []


async def test_rerun_skips_verified_work_and_refetches_what_was_deleted(
    sandbox: CivitaiSandbox, tmp_path: Path
) -> None:
    dataset = sandbox.dataset
    await collect(sandbox, tmp_path)
    before = all_files(tmp_path / "Users")
    sandbox.clear_requests()
    again = await collect(sandbox, tmp_path)
    assert not any(r.path.startswith(("/api/download", "/storage", "/xG1nk", "/file/")) for r in sandbox.requests)
    assert again.tally.count("verified") == again.tally.count("verified", "model") + again.tally.count(
        "verified", "image"
    )
    assert again.tally.count("done") == 0 and again.tally.failed == 0
    assert all_files(tmp_path / "Users") == before

    lora = model_files(dataset, "alice")[0]
    model = dataset.models[dataset.versions[lora.version_id].model_id]
    lost_file = saved_path(tmp_path, dataset, lora.id)
    image = images_of(dataset, model)[0]
    lost_image = folder_of(tmp_path, dataset, model.id) / f"{image.id}.{EXTENSIONS[image.image_format]}"
    lost_sidecar = lost_image.with_suffix(".txt")
    changed = saved_path(tmp_path, dataset, model_files(dataset, "alice")[1].id)
    os.remove(lost_file)
    os.remove(lost_image)
    os.remove(lost_sidecar)
    changed.write_bytes(b"truncated")  # same name, wrong size: not verified
    sandbox.clear_requests()
    third = await collect(sandbox, tmp_path)
    fetched = {r.file_id for r in sandbox.requests if r.path.startswith("/api/download")}
    assert fetched == {lora.id, model_files(dataset, "alice")[1].id}
    assert third.finished("image")[image.id].status == "done"
    assert all_files(tmp_path / "Users") == before


async def test_new_versions_are_picked_up(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    dataset = sandbox.dataset
    await collect(sandbox, tmp_path)
    before = all_files(tmp_path / "Users")
    model = lora_models(dataset)[0]
    version = dataset.add_version(model, "v3.0", trained_words=["new"])
    new_file = dataset.add_file(version)
    image = dataset.add_image(version, image_format=ImageFormat.JPEG)
    result = await collect(sandbox, tmp_path)
    assert result.finished("model")[new_file.id].status == "done"
    assert result.finished("image")[image.id].status == "done"
    # The new file's name was taken by an older version's file: it gets its id, the older keeps its name.
    stem, _, ext = new_file.name.rpartition(".")
    folder = folder_of(tmp_path, dataset, model.id)
    assert (folder / f"{stem}_{new_file.id}.{ext}").read_bytes() == new_file.read()
    after = all_files(tmp_path / "Users")
    kept = {k: v for k, v in before.items() if not k.endswith("/model.json")}  # model.json lists the new version
    assert {k: v for k, v in after.items() if k in kept} == kept


async def test_dry_run_counts_and_downloads_nothing(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    dataset = sandbox.dataset
    result = await collect(sandbox, tmp_path, dry_run=True)
    [plan] = [e for e in result.events if isinstance(e, CreatorPlanned) and e.images_todo is not None]
    wanted = model_files(dataset, "alice")
    assert (plan.models, plan.files_todo, plan.bytes_todo) == (2, len(wanted), sum(f.size for f in wanted))
    assert plan.images_todo == sum(len(images_of(dataset, m)) for m in lora_models(dataset))
    assert not any(r.path.startswith(("/api/download", "/storage", "/xG1nk")) for r in sandbox.requests)
    assert not (tmp_path / "Users").exists()
    await collect(sandbox, tmp_path)
    after = await collect(sandbox, tmp_path, dry_run=True)
    [plan] = [e for e in after.events if isinstance(e, CreatorPlanned) and e.images_todo is not None]
    assert (plan.files_todo, plan.images_todo, plan.files_verified) == (0, 0, len(wanted))


async def test_types_all_and_the_no_switches(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    dataset = sandbox.dataset
    result = await collect(sandbox, tmp_path / "all", types=None, images=False)
    assert result.tally.count("done", "model") == len(model_files(dataset, "alice", types=None))
    assert result.tally.count("done", "image") == 0
    assert not list((tmp_path / "all").rglob("*.png"))
    only_images = await collect(sandbox, tmp_path / "img", models=False)
    assert only_images.tally.count("done", "model") == 0
    assert only_images.tally.count("done", "image") == sum(len(images_of(dataset, m)) for m in lora_models(dataset))
    assert not list((tmp_path / "img").rglob("*.safetensors"))


async def test_odd_creators_names_and_json(tmp_path: Path) -> None:
    dataset = CivitaiDataset(seed=5)
    numeric = dataset.add_creator("0123")
    climber = dataset.add_model(numeric, "../../x", type=ModelType.LORA)
    version = dataset.add_version(climber)
    dataset.add_file(version, name="../../evil.safetensors")
    image = dataset.add_image(version, meta={"prompt": "ctrl \x01\x11 here, <lora:evil:0.5>"})
    twin = dataset.add_model(numeric, "..\\..\\X", type=ModelType.LORA)
    dataset.add_file(dataset.add_version(twin), name="twin.safetensors")
    with CivitaiSandbox(dataset, raw_control_chars=True) as sandbox:
        result = await collect(sandbox, tmp_path, ("0123",))
    assert result.tally.failed == 0
    user = tmp_path / "Users" / "0123"
    first = user / "_.._x"
    second = user / f"_.._X_{twin.id}"  # same folder name ignoring case: the id makes it unique
    assert (first / "_.._evil.safetensors").exists() and (second / "twin.safetensors").exists()
    sidecar = json.loads((first / f"{image.id}.txt").read_text())
    assert sidecar["username"] == "0123"
    assert sidecar["lora"] == ["<lora:_.._evil:0.5>"]
    assert sidecar["raw_prompt"] == "ctrl \x01\x11 here, <lora:evil:0.5>"
    assert escaped(tmp_path) == []


async def test_lost_log_is_rebuilt_from_the_disk(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    await collect(sandbox, tmp_path)
    log_file = tmp_path / "download_logs" / "alice" / "alice_download_log.json"
    log_file.write_text("{ torn")
    sandbox.clear_requests()
    result = await collect(sandbox, tmp_path)
    assert any("kept as" in getattr(e, "message", "") for e in result.events)
    assert not any(r.path.startswith(("/storage", "/xG1nk")) for r in sandbox.requests)
    assert result.tally.count("verified") > 0 and result.tally.count("done") == 0
    assert json.loads(log_file.read_text())["success"]
    assert list(log_file.parent.glob("*.unreadable-*"))


async def test_images_shared_by_versions_are_fetched_once_per_model(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    dataset = sandbox.dataset
    model = lora_models(dataset)[0]
    old, new = model.versions[1], model.versions[0]
    shared = dataset.add_image(old, uses=[new.id])
    result = await collect(sandbox, tmp_path)
    fetched = [r for r in sandbox.requests if shared.uuid in r.path]
    assert len(fetched) == 1
    assert result.finished("image")[shared.id].status == "done"
    found = [e for e in result.events if isinstance(e, ImagesFound)]
    assert sum(e.count for e in found) == sum(len(images_of(dataset, m)) for m in lora_models(dataset))


async def test_creator_urls_choose_the_civitai_host_unless_the_base_is_elsewhere(tmp_path: Path) -> None:
    options = CollectOptions(root=tmp_path)
    async with CivitaiClient("https://civitai.com", None) as official:
        collector = Collector(official, options, filters=FILTERS)
        assert collector.site_for(CreatorRef("x", "https://civitai.red")) == "https://civitai.red"
        assert collector.site_for(CreatorRef("x")) == "https://civitai.com"
        red = official.for_site("https://civitai.red")
        assert red.base_url == "https://civitai.red" and red.http is official.http
        collector.executors.shutdown()
    async with CivitaiClient("http://127.0.0.1:9", None) as sandboxed:
        collector = Collector(sandboxed, options, filters=FILTERS)
        assert collector.site_for(CreatorRef("x", "https://civitai.red")) == "http://127.0.0.1:9"
        collector.executors.shutdown()
