"""`peropix vibe encode` through the real CLI entry point, over real HTTP to the sandbox server."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_sandbox, generated, one_line, png, run

from peropix_tui.engine.nai.vibe_files import BUNDLE_IDENTIFIER, VIBE_IDENTIFIER, load_vibes
from peropix_tui.sandbox.nai_accounts import SandboxAccount
from peropix_tui.sandbox.nai_faults import ENCODE_PATH
from peropix_tui.sandbox.nai_server import NaiSandbox
from peropix_tui.sandbox.session import NAI_PROVIDER

TOKEN = "pst-cli-vibe-test-token-00000000000000001"
PROMPT = "1girl, solo, silver hair"
V45 = "nai-diffusion-4-5-full"


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[NaiSandbox]:
    with cli_sandbox(monkeypatch, TOKEN, {TOKEN: SandboxAccount(fixed_anlas=1000)}) as server:
        yield server


def encodes(sandbox: NaiSandbox) -> list[Any]:
    return [r.body for r in sandbox.requests if r.path == ENCODE_PATH]


def test_encode_writes_a_web_vibe_file_that_generate_uses_without_paying_again(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_dirs: tuple[Path, Path]
) -> None:
    source = png(tmp_path / "heroine.png", colour=(20, 200, 60))
    out = tmp_path / "heroine.naiv4vibe"
    result = run(capsys, "vibe", "encode", str(source), "--info", "0.7", "--strength", "0.45", "-o", str(out), "--json")
    assert result.code == 0, result.err
    assert result.json() == {
        "path": str(out),
        "model": V45,
        "vibes": 1,
        "encoded": 1,
        "from_cache": 0,
        "cost": 2,
        "provider": NAI_PROVIDER,
    }
    assert sandbox.balance(TOKEN) == 1000 - 2
    [sent] = encodes(sandbox)
    assert (sent["model"], sent["information_extracted"]) == (V45, 0.7)
    assert base64.b64decode(sent["image"]) == source.read_bytes()

    raw = json.loads(out.read_bytes())
    assert (raw["identifier"], raw["version"], raw["type"], raw["name"]) == (VIBE_IDENTIFIER, 1, "image", "heroine")
    assert raw["importInfo"] == {"model": V45, "information_extracted": 0.7, "strength": 0.45}
    [vibe] = load_vibes(out)
    assert vibe.image == source.read_bytes()
    [entry] = vibe.encodings
    assert (entry.model, entry.information_extracted) == (V45, 0.7)

    # The file carries the encoding: with the local cache gone, generating from it still buys nothing.
    shutil.rmtree(isolated_dirs[1] / "vibes")
    made = run(capsys, "generate", "--prompt", PROMPT, "--size", "256x256", "--vibe", str(out), "--json")
    assert made.code == 0, made.err
    assert len(encodes(sandbox)) == 1
    params = generated(sandbox)[0]["parameters"]
    assert params["reference_image_multiple"] == [base64.b64encode(entry.data).decode()]
    assert params["reference_strength_multiple"] == [0.45]
    assert params["reference_information_extracted_multiple"] == [0.7]


def test_an_encoding_in_the_cache_is_not_paid_again(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = png(tmp_path / "a.png", colour=(200, 40, 90))
    first = run(capsys, "vibe", "encode", str(source), "-o", str(tmp_path / "one.naiv4vibe"))
    assert first.code == 0, first.err
    assert first.out.startswith(f"saved {tmp_path / 'one.naiv4vibe'}: 1 vibe(s) for {V45}, 1 encoded (2 Anlas)")
    balance = sandbox.balance(TOKEN)
    second = run(capsys, "vibe", "encode", str(source), "-o", str(tmp_path / "two.naiv4vibe"), "--json")
    assert second.code == 0, second.err
    assert (second.json()["encoded"], second.json()["from_cache"], second.json()["cost"]) == (0, 1, 0)
    assert len(encodes(sandbox)) == 1 and sandbox.balance(TOKEN) == balance
    [one], [two] = load_vibes(tmp_path / "one.naiv4vibe"), load_vibes(tmp_path / "two.naiv4vibe")
    assert one.encodings[0].data == two.encodings[0].data


def test_several_images_go_into_a_bundle(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    images = [
        png(tmp_path / f"{name}.png", colour=colour) for name, colour in (("red", (250, 0, 0)), ("blue", (0, 0, 250)))
    ]
    out = tmp_path / "set.naiv4vibebundle"
    result = run(capsys, "vibe", "encode", *map(str, images), "--model", "v4", "-o", str(out), "--json")
    assert result.code == 0, result.err
    assert (result.json()["vibes"], result.json()["encoded"]) == (2, 2)
    raw = json.loads(out.read_bytes())
    assert raw["identifier"] == BUNDLE_IDENTIFIER and len(raw["vibes"]) == 2
    vibes = load_vibes(out)
    assert [v.name for v in vibes] == ["red", "blue"]
    assert [v.image for v in vibes] == [path.read_bytes() for path in images]
    assert {e.model for v in vibes for e in v.encodings} == {"nai-diffusion-4-full"}
    made = run(capsys, "generate", "--prompt", PROMPT, "--model", "v4", "--size", "256x256", "--vibe", str(out))
    assert made.code == 0, made.err
    assert len(encodes(sandbox)) == 2
    sent = generated(sandbox)[0]["parameters"]["reference_image_multiple"]
    assert sent == [base64.b64encode(v.encodings[0].data).decode() for v in vibes]


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    good = str(png(tmp_path / "ok.png", colour=(1, 2, 3)))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    return [
        ([good, good, "-o", str(tmp_path / "x.naiv4vibe")], "2 images go into a .naiv4vibebundle file"),
        ([good, "-o", str(tmp_path / "x.json")], "name it .naiv4vibe (one image) or .naiv4vibebundle (several)"),
        ([good, "-o", str(tmp_path / "missing" / "x.naiv4vibe")], "does not exist"),
        ([good, "--model", "v3", "-o", str(tmp_path / "x.naiv4vibe")], "has no vibe encodings to export"),
        ([good, "--model", "sd15", "-o", str(tmp_path / "x.naiv4vibe")], "is not a NovelAI model"),
        ([good, "--info", "1.5", "-o", str(tmp_path / "x.naiv4vibe")], "--info 1.5: use a number from 0 to 1"),
        ([good, "--strength", "-1", "-o", str(tmp_path / "x.naiv4vibe")], "--strength -1: use a number from 0 to 1"),
        ([str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.naiv4vibe")], "cannot read"),
        ([str(text), "-o", str(tmp_path / "x.naiv4vibe")], "not an image"),
    ]


def test_bad_inputs_are_one_line_and_cost_nothing(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for args, message in bad_inputs(tmp_path):
        result = run(capsys, "vibe", "encode", *args)
        assert result.code == 1, args
        assert message in one_line(result), args
    assert sandbox.requests == [] and sandbox.balance(TOKEN) == 1000
    assert not list(tmp_path.rglob("*.naiv4vibe*"))


def test_a_refused_token_is_one_line_and_writes_nothing(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEROPIX_NAI_TOKEN", "pst-not-a-known-token-at-all")
    out = tmp_path / "v.naiv4vibe"
    result = run(capsys, "vibe", "encode", str(png(tmp_path / "a.png", colour=(9, 9, 9))), "-o", str(out))
    assert result.code == 1
    assert "HTTP 401" in one_line(result)
    assert not out.exists()


def test_without_a_token_nothing_is_sent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = run(
        capsys, "vibe", "encode", str(png(tmp_path / "a.png", colour=(9, 9, 9))), "-o", str(tmp_path / "v.naiv4vibe")
    )
    assert result.code == 1
    assert "no NovelAI token" in one_line(result)
