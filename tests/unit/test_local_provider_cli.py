"""`peropix generate --provider local`, `peropix models` and `--list-models` through the real entry point: flags
refused in one line, dry runs resolved against real checkpoint files, and one real generation on a tiny
checkpoint, saved and indexed with the provider "local"."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import Result, one_line, run
from PIL import Image
from test_local_provider import header_checkpoint

from peropix_tui.core.config import Config
from peropix_tui.core.history import HistoryStore
from peropix_tui.core.metadata import ImageMetadata, read_metadata, write_metadata
from peropix_tui.core.paths import AppDirs
from peropix_tui.engine.local_provider import INSTALL_HINT

ROOT = Path(__file__).resolve().parents[2]


def configure(folder: Path | None, **settings: str) -> Config:
    config = Config.load(AppDirs.from_env())
    if folder is not None:
        config.set("paths.checkpoint_dirs", [str(folder)])
    for key, value in settings.items():
        config.set(key.replace("__", "."), value)
    config.save()
    return config


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    return run(capsys, "generate", "--provider", "local", *args)


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoints"
    header_checkpoint(folder / "animagine.safetensors")
    header_checkpoint(folder / "sd15" / "anything.safetensors", context=768, adm=None)
    configure(folder)
    return folder


# --- flags --------------------------------------------------------------------------------------------------


def test_novelai_only_flags_are_refused_each_named(capsys: pytest.CaptureFixture[str]) -> None:
    result = generate(capsys, "--model", "m", "--prompt", "x", "--vibe", "a.png", "--smea", "--uc-preset", "light")
    assert result.code == 1
    assert one_line(result) == (
        "peropix: --vibe, --smea, --uc-preset: NovelAI only; the local engine has no such setting"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--prompt", "x"], "--model is required with --provider local"),
        (["--model", "m"], "--prompt is required"),
        (["--model", "m", "--prompt", "x", "--sampler", "k_euler_a"], "sampler: the local engine has no sampler"),
        (["--model", "m", "--prompt", "x", "--char", "girl@C3"], "character 1 is placed at C3"),
        (["--model", "m", "--prompt", "x", "--strength", "0.5"], "--strength and --mask need --image"),
        (["--model", "m", "--prompt", "x", "--seed", str(2**64)], "local seeds go from 0 to"),
    ],
)
def test_bad_local_settings_fail_in_one_line_before_anything_loads(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    result = generate(capsys, *args, "--dry-run")
    assert result.code == 1
    assert words in one_line(result)


# --- dry runs -----------------------------------------------------------------------------------------------


def test_a_dry_run_resolves_the_checkpoint_and_batches_the_images(
    capsys: pytest.CaptureFixture[str], checkpoints: Path
) -> None:
    pytest.importorskip("torch")
    result = generate(
        capsys,
        *("--model", "animagine", "--prompt", "1girl", "--n", "6", "--seed", "10"),
        *("--sampler", "k_dpmpp_2m", "--schedule", "native", "--size", "1024x1024", "--char", "boy"),
        *("--dry-run", "--json"),
    )
    assert result.code == 0, result.err
    document = result.json()
    assert document["cost"] == {"anlas": 0, "images": 6, "requests": 2}
    first, second = document["requests"]
    assert (first["seed"], first["n"], second["seed"], second["n"]) == (10, 4, 14, 2)
    assert first["checkpoint"] == str(checkpoints / "animagine.safetensors")
    assert (first["sampler"], first["scheduler"], first["width"], first["provider"]) == (
        "dpmpp_2m",
        "normal",
        1024,
        "local",
    )
    assert not list((checkpoints.parent / "data").rglob("*.png"))

    text = generate(capsys, "--model", "animagine", "--prompt", "1girl", "--separate", "--n", "2", "--dry-run")
    assert text.code == 0 and text.out.count('"checkpoint"') == 2
    assert text.out.rstrip().endswith("cost: nothing, 2 images made by the local engine")


def test_an_unknown_checkpoint_fails_the_dry_run_in_the_engines_words(
    capsys: pytest.CaptureFixture[str], checkpoints: Path
) -> None:
    pytest.importorskip("torch")
    result = generate(capsys, "--model", "nope", "--prompt", "x", "--dry-run")
    assert result.code == 1
    assert one_line(result) == f"peropix: no checkpoint named 'nope' in the checkpoint folders ({checkpoints})"


def test_from_image_takes_a_local_images_settings(
    capsys: pytest.CaptureFixture[str], checkpoints: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    meta = ImageMetadata(
        prompt="1girl, night",
        negative_prompt="lowres",
        model="animagine",
        seed=99,
        steps=12,
        cfg=6.0,
        sampler="k_euler",
        scheduler="karras",
        width=896,
        height=1152,
        peropix={"provider": "local"},
    )
    source = tmp_path / "made.png"
    source.write_bytes(write_metadata(buffer.getvalue(), meta, stealth=False))
    result = generate(capsys, "--from-image", str(source), "--steps", "20", "--dry-run", "--json")
    assert result.code == 0, result.err
    [request] = result.json()["requests"]
    expected = {"prompt": "1girl, night", "negative": "lowres", "model": "animagine", "seed": 99, "steps": 20}
    assert {key: request[key] for key in expected} == expected
    assert (request["sampler"], request["scheduler"], request["scale"], request["width"]) == (
        "euler",
        "karras",
        6.0,
        896,
    )


# --- listing ------------------------------------------------------------------------------------------------


def test_models_lists_checkpoints_and_problems(capsys: pytest.CaptureFixture[str], checkpoints: Path) -> None:
    pytest.importorskip("torch")
    (checkpoints / "broken.safetensors").write_bytes(b"not a safetensors file")
    listed = run(capsys, "models")
    assert listed.code == 0
    lines = [line for line in listed.out.splitlines() if not line.lstrip().startswith("note:")]
    assert lines[0].split()[:4] == ["animagine", "SDXL", "·", "eps"]
    assert lines[1].startswith("anything ") and "SD 1.5" in lines[1]
    # header-only files hold no text encoders: each listing says so under the checkpoint
    assert "note: no CLIP-L text encoder" in listed.out
    assert "broken.safetensors" in listed.err
    document = run(capsys, "models", "--json").json()
    assert [c["name"] for c in document["checkpoints"]] == ["animagine", "anything"]
    assert document["checkpoints"][1]["family"] == "sd15"
    assert len(document["problems"]) == 1
    assert run(capsys, "generate", "--list-models").out == listed.out


def test_models_without_a_folder_says_which_setting(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "models")
    assert result.code == 1 and result.out == ""
    assert "set paths.checkpoint_dirs" in one_line(result)


def test_without_torch_local_generation_says_what_to_install(checkpoints: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from peropix_tui.cli import main\n"
        "sys.exit(main(['generate', '--provider', 'local', '--model', 'animagine', '--prompt', 'x']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, env=dict(os.environ)
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"peropix: {INSTALL_HINT}"


# --- a real generation --------------------------------------------------------------------------------------


def test_a_local_generation_is_saved_and_indexed_as_local(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("torch")
    from local.tiny_checkpoint import tiny_checkpoint

    shared = tmp_path_factory.getbasetemp() / "tiny_checkpoints"
    shared.mkdir(exist_ok=True)
    folder = tmp_path / "models"
    tiny_checkpoint(shared, folder / "tiny_xl.safetensors", sdxl=True, seed=0)
    config = configure(folder, local__device="cpu")
    result = generate(
        capsys,
        *("--model", "tiny_xl", "--prompt", "a cat on a red chair", "--negative", "blurry"),
        *("--size", "64x64", "--steps", "2", "--seed", "7", "--n", "2", "--sampler", "k_euler", "--json"),
    )
    assert result.code == 0, result.err
    document = result.json()
    assert (document["provider"], document["cost"], document["balance"]) == ("local", 0, None)
    assert [(image["seed"], image["index"]) for image in document["images"]] == [(7, 0), (8, 1)]
    paths = [Path(image["path"]) for image in document["images"]]
    assert all(path.is_relative_to(config.outputs_dir) for path in paths)
    first = read_metadata(paths[0])
    assert first.peropix["provider"] == "local"
    assert (first.model, first.seed, first.steps, first.width, first.prompt) == (
        "tiny_xl",
        7,
        2,
        64,
        "a cat on a red chair",
    )
    with Image.open(paths[1]) as picture:
        assert picture.size == (64, 64)
    store = HistoryStore(config.history_file)
    try:
        entries = store.page(0, 10)
    finally:
        store.close()
    assert sorted(e.path for e in entries) == sorted(p.resolve() for p in paths)
    assert {e.provider for e in entries} == {"local"}

    again = generate(capsys, "--from-image", str(paths[1]), "--dry-run", "--json")
    assert again.code == 0, again.err
    [request] = again.json()["requests"]
    assert (request["model"], request["seed"], request["sampler"], request["prompt"]) == (
        "tiny_xl",
        8,
        "euler",
        "a cat on a red chair",
    )
    assert request["checkpoint"] == str(folder / "tiny_xl.safetensors")
