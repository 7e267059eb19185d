"""`peropix meta show|strip` through the real CLI entry point."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from peropix_tui.cli import main
from peropix_tui.core.metadata import strip_metadata

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V3 = "nai__LlmKira_novelai-python__sample-0316.png"
NAI_CHARS = "nai__enslo_sd-metadata__novelai-full-3char.png"
A1111 = "a1111__d3x-at_sd-parsers__automatic1111_cropped.png"
FORGE = "a1111__enslo_sd-metadata__forge.png"
COMFY = "comfy__d3x-at_sd-parsers__unclip_2pass_cropped.png"
NAI_WEBP = "webp__enslo_sd-metadata__novelai-curated.webp"
A1111_WEBP = "webp__enslo_sd-metadata__sd-webui.webp"
JPEG = "other__d3x-at_sd-parsers__automatic1111_cropped.jpg"
STEALTH_ONLY = "a1111__d3x-at_sd-parsers__automatic1111_stealth.png"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEROPIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PEROPIX_CONFIG_DIR", str(tmp_path / "config"))


def pillow_text(name: str) -> dict[str, str]:
    with Image.open(FIXTURES / name) as im:
        return dict(im.text)  # type: ignore[attr-defined]


def show_json(capsys: pytest.CaptureFixture[str], *names: str) -> list[dict[str, object]]:
    code = main(["meta", "show", "--json", *(str(FIXTURES / n) for n in names)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list)
    return out


def test_show_text_for_each_family(capsys: pytest.CaptureFixture[str]) -> None:
    names = [NAI_V3, NAI_CHARS, A1111, FORGE, COMFY, NAI_WEBP, A1111_WEBP, JPEG, STEALTH_ONLY]
    assert main(["meta", "show", *(str(FIXTURES / n) for n in names)]) == 0
    out = capsys.readouterr().out
    blocks = dict(zip(names, out.split(str(FIXTURES) + "/")[1:], strict=True))
    v3 = pillow_text(NAI_V3)
    assert "seed:         1148692016" in blocks[NAI_V3]
    assert "cfg:          10 (rescale 0.38)" in blocks[NAI_V3]
    assert "sampler:      k_euler + SMEA DYN" in blocks[NAI_V3]
    assert f"prompt:       {v3['Description']}" in blocks[NAI_V3]
    assert "model:        nai-diffusion-3 (C1E1DE52)" in blocks[NAI_V3]
    assert "character 3:  (0.3, 0.7) boy, kagamine len, hand up," in blocks[NAI_CHARS]
    assert "cfg:          5 (rescale 0)" in blocks[NAI_CHARS]
    assert "found in:     tEXt, a1111" in blocks[A1111]
    assert "size:         512x400" in blocks[A1111]
    assert "scheduler:    karras" in blocks[FORGE] and "seed:         747066619" in blocks[FORGE]
    assert "found in:     tEXt, comfyui" in blocks[COMFY] and "size:         1920x1088" in blocks[COMFY]
    assert "found in:     exif, novelai" in blocks[NAI_WEBP]
    assert "model:        nai-diffusion-4-5-curated (C02D4F98)" in blocks[NAI_WEBP]
    assert "found in:     exif, a1111" in blocks[A1111_WEBP] and "cfg:          5.5" in blocks[A1111_WEBP]
    assert "prompt:       photo of a duck" in blocks[JPEG]
    assert "found in:     stealth, a1111" in blocks[STEALTH_ONLY]
    assert "negative:     a square" in blocks[STEALTH_ONLY]


def test_show_json_keeps_zero_and_all_fields(capsys: pytest.CaptureFixture[str]) -> None:
    docs = show_json(capsys, NAI_CHARS, A1111)
    nai, a1111 = docs
    comment = json.loads(pillow_text(NAI_CHARS)["Comment"])
    assert nai["file"] == str(FIXTURES / NAI_CHARS)
    assert nai["cfg_rescale"] == 0.0 and nai["cfg_rescale"] is not None
    assert nai["seed"] == comment["seed"] and nai["steps"] == comment["steps"]
    assert nai["negative_prompt"] == comment["uc"]
    assert [c["prompt"] for c in nai["characters"]] == [  # type: ignore[attr-defined]
        c["char_caption"] for c in comment["v4_prompt"]["caption"]["char_captions"]
    ]
    assert nai["found_in"] == ["tEXt", "iTXt", "novelai"]
    assert a1111["model_hash"] == "c0d1994c73"
    assert "comment_keys" not in nai


def test_damaged_file_one_line_others_processed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n")
    empty = tmp_path / "empty.webp"
    empty.write_bytes(b"")
    with caplog.at_level(logging.ERROR, logger="peropix_tui.commands.meta"):
        code = main(["meta", "show", str(broken), str(FIXTURES / A1111), str(empty)])
    assert code == 1
    captured = capsys.readouterr()
    assert "photo of a duck" in captured.out
    errors = captured.err.strip().splitlines()
    assert errors == [
        f"peropix: {broken}: PNG file truncated inside its signature",
        f"peropix: {empty}: empty file",
    ]
    assert sum(1 for r in caplog.records if r.levelno == logging.ERROR) == 2


def test_show_json_with_bad_file_still_emits_valid_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe1\xff\xff")
    assert main(["meta", "show", "--json", str(bad), str(FIXTURES / JPEG)]) == 1
    docs = json.loads(capsys.readouterr().out)
    assert docs[0]["file"] == str(bad) and "error" in docs[0]
    assert docs[1]["prompt"] == "photo of a duck"


def test_strip_to_output_dir_then_show_finds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "clean"
    names = [NAI_V3, JPEG, NAI_WEBP, COMFY]
    assert main(["meta", "strip", "-o", str(out_dir), *(str(FIXTURES / n) for n in names)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == (
        f"{FIXTURES / NAI_V3} -> {out_dir / NAI_V3}: "
        "Title, Description, Software, Source, Generation time, Comment, stealth alpha"
    )
    assert lines[1].endswith(": EXIF") and lines[2].endswith(": EXIF, stealth alpha")
    assert lines[3].endswith(": prompt, workflow")
    assert main(["meta", "show", "--json", *(str(out_dir / n) for n in names)]) == 0
    for doc in json.loads(capsys.readouterr().out):
        assert doc["found_in"] == [] and doc["raw"] == {} and doc["prompt"] is None, doc["file"]
    assert (FIXTURES / NAI_V3).read_bytes() != (out_dir / NAI_V3).read_bytes()


def test_strip_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "img.png"
    shutil.copyfile(FIXTURES / NAI_V3, target)
    assert main(["meta", "strip", "--in-place", str(target)]) == 0
    assert "stealth alpha" in capsys.readouterr().out
    with Image.open(target) as im, Image.open(FIXTURES / NAI_V3) as orig:
        assert not im.text  # type: ignore[attr-defined]
        assert im.convert("RGB").tobytes() == orig.convert("RGB").tobytes()
    assert main(["meta", "strip", "--in-place", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"{target}: nothing to remove"


def test_strip_mixed_good_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes((FIXTURES / NAI_V3).read_bytes()[:500])
    good = tmp_path / "good.png"
    shutil.copyfile(FIXTURES / A1111, good)
    assert main(["meta", "strip", "--in-place", str(bad), str(good), str(tmp_path / "missing.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{good}: parameters"
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"peropix: {bad}: refusing to rewrite a damaged PNG")
    assert errors[1].startswith(f"peropix: {tmp_path / 'missing.png'}: cannot read")
    assert bad.read_bytes() == (FIXTURES / NAI_V3).read_bytes()[:500]


def test_strip_refuses_to_overwrite_input_via_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "img.png"
    shutil.copyfile(FIXTURES / A1111, target)
    assert main(["meta", "strip", "-o", str(tmp_path), str(target)]) == 1
    assert "use --in-place" in capsys.readouterr().err
    assert target.read_bytes() == (FIXTURES / A1111).read_bytes()


def test_strip_needs_exactly_one_destination(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["meta", "strip", str(FIXTURES / A1111)])
    with pytest.raises(SystemExit):
        main(["meta", "strip", "--in-place", "-o", "x", str(FIXTURES / A1111)])
    capsys.readouterr()


def test_strip_two_inputs_with_one_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a" / "img.png", tmp_path / "b" / "img.png"
    for target, source in ((first, A1111), (second, NAI_V3)):
        target.parent.mkdir()
        shutil.copyfile(FIXTURES / source, target)
    out_dir = tmp_path / "out"
    assert main(["meta", "strip", "-o", str(out_dir), str(first), str(second)]) == 1
    assert "already written" in capsys.readouterr().err
    assert (out_dir / "img.png").read_bytes() == strip_bytes(FIXTURES / A1111)


def strip_bytes(path: Path) -> bytes:
    return strip_metadata(path.read_bytes()).data
