"""Vibe encodings kept on disk and in NovelAI's `.naiv4vibe` / `.naiv4vibebundle` files."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sandbox_nai_helpers import V45, b64, png_bytes

from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.nai.vibe_files import (
    VibeFileError,
    bundle_bytes,
    load_vibes,
    make_vibe_file,
    parse_vibes,
    save_vibes,
    vibe_file_bytes,
)
from peropix_tui.engine.types import RequestError

V45_CURATED = "nai-diffusion-4-5-curated"
V4 = "nai-diffusion-4-full"


def png(colour: tuple[int, int, int] = (30, 60, 90), size: int = 32) -> bytes:
    return png_bytes(size, size, colour)


# --- cache keys and the cache --------------------------------------------------------------------------------


def test_key_rounds_information_extracted_to_the_web_grid() -> None:
    image = png()
    assert VibeKey.of(image, V45, 0.7) == VibeKey.of(image, V45, 0.7004)
    assert VibeKey.of(image, V45, 0.7) != VibeKey.of(image, V45, 0.71)
    assert VibeKey.of(image, V45, 0.7).information_extracted == 70


def test_key_is_per_model_family_and_mask() -> None:
    image = png()
    key = VibeKey.of(image, V45, 1.0)
    assert key == VibeKey.of(image, "nai-diffusion-4-5-full-inpainting", 1.0)
    assert key != VibeKey.of(image, V45_CURATED, 1.0)
    assert key != VibeKey.of(image, V4, 1.0)
    assert key != VibeKey.of(image, V45, 1.0, mask=png((255, 255, 255)))
    assert key != VibeKey.of(png((1, 2, 3)), V45, 1.0)
    assert key.image_sha256 == hashlib.sha256(image).hexdigest()


def test_key_from_a_hash_must_be_a_sha256() -> None:
    with pytest.raises(ValueError, match="sha256"):
        VibeKey.for_hash("abc", V45, 1.0)


def test_cache_round_trip_leaves_no_temporary_files(tmp_path: Path) -> None:
    cache = VibeCache(tmp_path / "vibes")
    key = VibeKey.of(png(), V45, 0.5)
    assert cache.get(key) is None
    cache.put(key, b"encoding-bytes")
    assert cache.get(key) == b"encoding-bytes"
    assert VibeCache(tmp_path / "vibes").get(key) == b"encoding-bytes"
    assert [p.name for p in (tmp_path / "vibes").rglob("*")] == ["v4.5", key.filename]


def test_an_empty_cache_entry_reads_as_missing(tmp_path: Path) -> None:
    cache = VibeCache(tmp_path)
    key = VibeKey.of(png(), V45, 1.0)
    cache.path_for(key).parent.mkdir(parents=True)
    cache.path_for(key).write_bytes(b"")
    assert cache.get(key) is None
    with pytest.raises(ValueError, match="1 to"):
        cache.put(key, b"")


# --- vibe files ----------------------------------------------------------------------------------------------


def test_exported_vibe_reads_back_identically() -> None:
    image = png()
    vibe = make_vibe_file(image, [(V45, 0.7, b"enc-a"), (V4, 1.0, b"enc-b")], strength=0.45, created_at=1735000000000)
    raw = json.loads(vibe_file_bytes(vibe))
    assert raw["identifier"] == "novelai-vibe-transfer"
    assert raw["version"] == 1
    assert raw["type"] == "image"
    assert raw["id"] == hashlib.sha256(image).hexdigest()
    assert base64.b64decode(raw["image"]) == image
    assert raw["thumbnail"].startswith("data:image/png;base64,")
    assert raw["importInfo"] == {"model": V45, "information_extracted": 0.7, "strength": 0.45}
    assert sorted(raw["encodings"]) == ["v4-5full", "v4full"]
    (entry,) = raw["encodings"]["v4full"].values()
    assert entry == {"encoding": b64(b"enc-b"), "params": {"information_extracted": 1}}
    (again,) = parse_vibes(vibe_file_bytes(vibe), "export")
    assert again == vibe


@given(
    st.lists(
        st.tuples(st.sampled_from([V45, V45_CURATED, V4]), st.integers(0, 100), st.binary(min_size=1, max_size=40)),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_bundles_round_trip(entries: list[tuple[str, int, bytes]], with_image: bool) -> None:
    image = png()
    vibes = [
        make_vibe_file(image, [(m, info / 100, data)], include_image=with_image, created_at=1)
        for m, info, data in entries
    ]
    parsed = parse_vibes(bundle_bytes(vibes), "bundle")
    assert parsed == vibes
    for vibe, (model, info, data) in zip(parsed, entries, strict=True):
        assert vibe.type == ("image" if with_image else "encoding")
        chosen = vibe.encoding_for(model, info / 100)
        assert chosen is not None
        assert chosen.data == data
        assert chosen.model == model


def web_vibe(**overrides: Any) -> dict[str, Any]:
    """A vibe in the shape the NovelAI web exports."""
    image = png()
    vibe: dict[str, Any] = {
        "identifier": "novelai-vibe-transfer",
        "version": 1,
        "type": "image",
        "image": b64(image),
        "id": hashlib.sha256(image).hexdigest(),
        "encodings": {
            "v4-5full": {
                "3f1c2d": {"encoding": b64(b"full-100"), "params": {"information_extracted": 1}},
                "9a8b7c": {"encoding": b64(b"full-050"), "params": {"information_extracted": 0.5}},
            },
            "v4curated": {"77aa00": {"encoding": b64(b"curated-v4"), "params": {"information_extracted": 1}}},
        },
        "name": "abc123-def456",
        "thumbnail": "data:image/png;base64," + b64(png(size=8)),
        "createdAt": 1735000000000,
        "importInfo": {"model": V45, "information_extracted": 0.5, "strength": 0.6},
    }
    vibe.update(overrides)
    return vibe


def test_web_export_maps_model_keys_and_picks_the_matching_encoding() -> None:
    (vibe,) = parse_vibes(json.dumps(web_vibe()).encode(), "web.naiv4vibe")
    assert {e.model_key: e.model for e in vibe.encodings} == {
        "v4-5full": V45,
        "v4curated": "nai-diffusion-4-curated-preview",
    }
    ref = vibe.to_vibe_ref(V45)
    assert (ref.encoding, ref.information_extracted, ref.strength, ref.encoding_model) == (b"full-050", 0.5, 0.6, V45)
    ref = vibe.to_vibe_ref(V45, information_extracted=1.0, strength=0.3)
    assert (ref.encoding, ref.information_extracted, ref.strength) == (b"full-100", 1.0, 0.3)
    assert vibe.to_vibe_ref("nai-diffusion-4-curated-preview").encoding == b"curated-v4"
    # No V4.5-curated encoding: the image goes along to be encoded.
    ref = vibe.to_vibe_ref(V45_CURATED)
    assert (ref.encoding, ref.image) == (None, vibe.image)
    # Another information-extracted value with the image at hand: encoded afresh, not a wrong encoding.
    assert vibe.to_vibe_ref(V45, information_extracted=0.8).encoding is None
    # A byte-faithful re-export keeps the web's keys.
    again = json.loads(vibe_file_bytes(vibe))
    assert again["encodings"] == web_vibe()["encodings"]


def test_encoding_only_file_without_the_model_family_cannot_be_used() -> None:
    raw = web_vibe(type="encoding")
    del raw["image"], raw["thumbnail"]
    (vibe,) = parse_vibes(json.dumps(raw).encode(), "enc.naiv4vibe")
    assert vibe.image is None
    # An encoding-only file offers the matching encoding, else its first one, with the value it was made with.
    ref = vibe.to_vibe_ref(V45, information_extracted=0.5)
    assert (ref.encoding, ref.information_extracted) == (b"full-050", 0.5)
    ref = vibe.to_vibe_ref(V45, information_extracted=0.8)
    assert (ref.encoding, ref.information_extracted) == (b"full-100", 1.0)
    with pytest.raises(RequestError, match="not for nai-diffusion-4-5-curated"):
        vibe.to_vibe_ref(V45_CURATED)


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ({"identifier": "something-else"}, "not a NovelAI vibe file"),
        ({"version": 2}, "version 2 is not supported"),
        ({"type": "video"}, "type must be image or encoding"),
        ({"image": "***"}, "image is not valid base64"),
        ({"id": "not-a-hash", "type": "encoding", "image": None}, "id must be the 64-hex sha256"),
        ({"encodings": []}, "encodings must be an object"),
        ({"encodings": {"v4-5full": []}}, r"encodings\.v4-5full must be an object"),
        ({"encodings": {"v4-5full": {"k": {"params": {}}}}}, r"encodings\.v4-5full\.k\.encoding is missing"),
        (
            {"encodings": {"v4-5full": {"k": {"encoding": "QUJD", "params": {"information_extracted": 3}}}}},
            "information_extracted must be between 0 and 1",
        ),
        ({"type": "encoding", "encodings": {}}, "neither an image nor an encoding"),
        ({"importInfo": {"strength": "strong"}}, "importInfo.strength must be a number"),
    ],
)
def test_malformed_vibe_files_name_the_file_and_the_field(
    tmp_path: Path, mutation: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "broken.naiv4vibe"
    path.write_text(json.dumps(web_vibe(**mutation)))
    with pytest.raises(VibeFileError, match=reason) as caught:
        load_vibes(path)
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG not json", "not JSON"),
        (b"[]", "not a vibe"),
        (b'{"identifier": "novelai-vibe-transfer-bundle", "version": 1}', "needs a vibes list"),
        (b'{"identifier": "novelai-vibe-transfer-bundle", "version": 1, "vibes": [{}]}', "vibe 1: not a NovelAI"),
    ],
)
def test_files_that_are_not_vibes_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "thing.naiv4vibebundle"
    path.write_bytes(content)
    with pytest.raises(VibeFileError, match=reason):
        load_vibes(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VibeFileError, match="cannot read"):
        load_vibes(tmp_path / "nope.naiv4vibe")


def test_save_picks_the_format_by_suffix(tmp_path: Path) -> None:
    one = make_vibe_file(png(), [(V45, 1.0, b"a")])
    two = make_vibe_file(png((9, 9, 9)), [(V45, 1.0, b"b")])
    save_vibes(tmp_path / "one.naiv4vibe", [one])
    save_vibes(tmp_path / "both.naiv4vibebundle", [one, two])
    assert load_vibes(tmp_path / "one.naiv4vibe") == [one]
    assert load_vibes(tmp_path / "both.naiv4vibebundle") == [one, two]
    with pytest.raises(VibeFileError, match="exactly one vibe"):
        save_vibes(tmp_path / "two.naiv4vibe", [one, two])
    with pytest.raises(VibeFileError, match="name it"):
        save_vibes(tmp_path / "vibes.json", [one])


def test_importing_a_file_fills_the_cache_under_the_image_key(tmp_path: Path) -> None:
    image = png()
    (vibe,) = parse_vibes(json.dumps(web_vibe()).encode(), "web")
    cache = VibeCache(tmp_path)
    assert cache.import_vibe(vibe) == 3
    assert cache.get(VibeKey.of(image, V45, 1.0)) == b"full-100"
    assert cache.get(VibeKey.of(image, V45, 0.5)) == b"full-050"
    assert cache.get(VibeKey.of(image, "nai-diffusion-4-curated-preview", 1.0)) == b"curated-v4"
    assert cache.get(VibeKey.of(image, V45_CURATED, 1.0)) is None


def test_an_encoding_only_file_is_cached_under_its_id(tmp_path: Path) -> None:
    image = png()
    vibe = make_vibe_file(image, [(V45, 0.6, b"enc")], include_image=False)
    assert (vibe.image, vibe.thumbnail, vibe.id) == (None, None, hashlib.sha256(image).hexdigest())
    cache = VibeCache(tmp_path)
    assert cache.import_vibe(vibe) == 1
    assert cache.get(VibeKey.of(image, V45, 0.6)) == b"enc"
