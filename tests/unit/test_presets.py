"""Presets: the three kinds, their files in the config dir, and export/import between config dirs."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.presets import (
    BUILTIN_RESOLUTIONS,
    MAX_FILE_BYTES,
    MAX_NAME,
    UC_AS_WRITTEN,
    UC_PRESETS,
    CharacterPreset,
    P,
    ParameterPreset,
    Preset,
    PresetError,
    PresetKind,
    PresetStore,
    ResolutionPreset,
    document_from_json,
    document_to_json,
    snap64,
)
from peropix_tui.engine.types import UcPreset

names = st.text(min_size=1, max_size=MAX_NAME).filter(
    lambda s: s.strip() == s and s != "" and not any(unicodedata.category(c) == "Cc" for c in s)
)
words = st.text(alphabet=st.characters(categories=["L", "N"], include_characters="-_"), min_size=1, max_size=30)
parameter_presets = st.builds(
    ParameterPreset,
    names,
    model=st.none() | words,
    steps=st.none() | st.integers(1, 1000),
    scale=st.none() | st.floats(0, 100),
    cfg_rescale=st.none() | st.floats(0, 1),
    sampler=st.none() | words,
    scheduler=st.none() | words,
    variety=st.none() | st.booleans(),
    smea=st.none() | st.booleans(),
    smea_dyn=st.none() | st.booleans(),
    quality_tags=st.none() | st.booleans(),
    uc_preset=st.none() | st.sampled_from(UC_PRESETS),
)
resolution_presets = st.builds(
    ResolutionPreset, names, st.integers(1, 256).map(lambda n: n * 64), st.integers(1, 256).map(lambda n: n * 64)
)
positions = st.builds(lambda c, r: f"{c}{r}", st.sampled_from("ABCDE"), st.integers(1, 5))
character_presets = st.builds(
    CharacterPreset, names, st.text(max_size=100), st.text(max_size=40), st.none() | positions
)


def unique(strategy: st.SearchStrategy[P]) -> st.SearchStrategy[list[P]]:
    return st.lists(strategy, max_size=6, unique_by=lambda p: p.name.casefold())


@given(unique(parameter_presets), unique(resolution_presets), unique(character_presets))
def test_document_round_trip(
    parameters: list[ParameterPreset], resolutions: list[ResolutionPreset], characters: list[CharacterPreset]
) -> None:
    presets: dict[PresetKind, Sequence[Preset]] = {
        PresetKind.PARAMETERS: parameters,
        PresetKind.RESOLUTIONS: resolutions,
        PresetKind.CHARACTERS: characters,
    }
    parsed = document_from_json(document_to_json(presets), "p.json")
    assert parsed.presets == presets
    assert parsed.count == len(parameters) + len(resolutions) + len(characters)


def test_unset_fields_are_left_out_and_unknown_keys_ignored() -> None:
    data = document_to_json({PresetKind.PARAMETERS: [ParameterPreset("Fast", steps=20)]})
    document = orjson.loads(data)
    assert document["parameters"] == [{"name": "Fast", "steps": 20}]
    document["parameters"][0]["sparkle"] = True
    document["wallpapers"] = [1, 2]
    parsed = document_from_json(orjson.dumps(document), "p.json")
    assert parsed.presets == {PresetKind.PARAMETERS: [ParameterPreset("Fast", steps=20)]}


def test_values_are_normalised() -> None:
    assert ResolutionPreset("Odd", 830, 1230) == ResolutionPreset("Odd", 832, 1216)
    assert ResolutionPreset("Tiny", 1, 20).label == "Tiny 64×64"
    assert ParameterPreset("  x  ", steps=28.0, scale=5).steps == 28  # type: ignore[arg-type]
    assert ParameterPreset("x", scale=5).scale == 5.0
    assert CharacterPreset("c", "girl", position=" b3 ").position == "B3"
    assert snap64(95) == 64 and snap64(96) == 128 and snap64(-5) == 64


def test_a_local_checkpoint_name_may_hold_spaces() -> None:
    preset = ParameterPreset("Local", model=" sdxl/Anime Mix v2 ")
    assert preset.model == "sdxl/Anime Mix v2"
    parsed = document_from_json(document_to_json({PresetKind.PARAMETERS: [preset]}), "p.json")
    assert parsed.presets == {PresetKind.PARAMETERS: [preset]}


def test_uc_presets_are_the_engines_plus_as_written() -> None:
    assert set(UC_PRESETS) == {p.value for p in UcPreset} | {UC_AS_WRITTEN}


def test_builtin_resolutions_are_on_the_grid_and_unique() -> None:
    assert BUILTIN_RESOLUTIONS[0].label == "Portrait 832×1216"
    assert all(p.width % 64 == 0 and p.height % 64 == 0 for p in BUILTIN_RESOLUTIONS)
    assert len({p.name.casefold() for p in BUILTIN_RESOLUTIONS}) == len(BUILTIN_RESOLUTIONS)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "p.json: must hold a JSON object, not a list"),
        ({"version": 1}, "p.json: not a peropix presets file"),
        ({"format": "peropix-presets"}, "p.json: needs a version number"),
        ({"format": "peropix-presets", "version": 9}, "p.json: version 9 was written by a newer peropix"),
        ({"format": "peropix-presets", "version": 1, "parameters": {}}, "p.json: 'parameters' must be a list"),
        (
            {"format": "peropix-presets", "version": 1, "parameters": [{"name": "A"}, {"name": "Fast", "steps": 0}]},
            "p.json: parameters[2] ('Fast'): steps must be a whole number from 1 to 1000, not 0",
        ),
        (
            {"format": "peropix-presets", "version": 1, "parameters": [{"name": "A", "scale": "high"}]},
            "p.json: parameters[1] ('A'): scale must be a number from 0 to 100, not 'high'",
        ),
        (
            {"format": "peropix-presets", "version": 1, "parameters": [{"name": "A", "uc_preset": "mild"}]},
            "p.json: parameters[1] ('A'): uc_preset must be one of heavy, light",
        ),
        (
            {"format": "peropix-presets", "version": 1, "parameters": [{"name": "A", "model": "two\nlines"}]},
            "p.json: parameters[1] ('A'): model must be one line",
        ),
        (
            {"format": "peropix-presets", "version": 1, "resolutions": [{"name": "R", "width": 512}]},
            "p.json: resolutions[1] ('R'): needs a width and a height",
        ),
        (
            {"format": "peropix-presets", "version": 1, "resolutions": [{"name": "R", "width": 0, "height": 64}]},
            "p.json: resolutions[1] ('R'): width must be a whole number from 1 to 16384, not 0",
        ),
        (
            {"format": "peropix-presets", "version": 1, "characters": [{"name": "C", "position": "F9"}]},
            "p.json: characters[1] ('C'): position must be a grid cell A1..E5",
        ),
        (
            {"format": "peropix-presets", "version": 1, "characters": [{"prompt": "girl"}]},
            "p.json: characters[1]: has no name",
        ),
        (
            {"format": "peropix-presets", "version": 1, "characters": ["girl"]},
            "p.json: characters[1]: must be an object, not str",
        ),
        (
            {"format": "peropix-presets", "version": 1, "characters": [{"name": "C"}, {"name": " c "}]},
            "p.json: characters[2] ('c'): a second characters preset of that name",
        ),
    ],
)
def test_bad_documents_are_refused_with_one_line(document: object, message: str) -> None:
    with pytest.raises(PresetError) as caught:
        document_from_json(orjson.dumps(document), "p.json")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_store_saves_replaces_lists_and_deletes(tmp_path: Path) -> None:
    store = PresetStore.in_config_dir(tmp_path)
    assert store.saved(ParameterPreset) == []
    assert store.listed(PresetKind.RESOLUTIONS) == list(BUILTIN_RESOLUTIONS)
    assert store.save(ParameterPreset("Fast", steps=20)) is False
    assert store.save(ParameterPreset("Slow", steps=50)) is False
    assert store.save(ParameterPreset("fast", steps=12)) is True  # same name, other case: replaced in place
    assert [(p.name, p.steps) for p in store.saved(ParameterPreset)] == [("fast", 12), ("Slow", 50)]
    assert (tmp_path / "presets" / "parameters.json").is_file()

    store.save(ResolutionPreset("Square", 512, 512))  # takes the built-in's place
    store.save(ResolutionPreset("Banner", 1536, 640))
    listed = store.resolutions()
    assert store.listed(PresetKind.RESOLUTIONS) == listed
    assert [p.label for p in listed[:3]] == ["Portrait 832×1216", "Landscape 1216×832", "Square 512×512"]
    assert listed[-1].label == "Banner 1536×640"
    assert len(listed) == len(BUILTIN_RESOLUTIONS) + 1
    store.delete(PresetKind.RESOLUTIONS, "square")
    assert store.resolutions()[2].label == "Square 1024×1024"
    with pytest.raises(PresetError, match="'Portrait' is a built-in size"):
        store.delete(PresetKind.RESOLUTIONS, "Portrait")
    with pytest.raises(PresetError, match="no parameters preset named 'Medium'"):
        store.delete(PresetKind.PARAMETERS, "Medium")
    store.delete(PresetKind.PARAMETERS, "FAST")
    assert [p.name for p in store.saved(ParameterPreset)] == ["Slow"]


def test_a_damaged_store_file_is_never_written_over(tmp_path: Path) -> None:
    store = PresetStore(tmp_path)
    path = store.path(PresetKind.CHARACTERS)
    path.write_bytes(b'{"format": "peropix-presets", "version": 1, "characters": [{"name": 3}]}')
    with pytest.raises(PresetError, match=r"characters\.json: characters\[1\]: name must be text, not int"):
        store.save(CharacterPreset("Alice", "1girl"))
    assert b'"name": 3' in path.read_bytes()
    export = tmp_path / "out.json"
    with pytest.raises(PresetError, match=r"characters\.json"):
        store.export(export)
    assert not export.exists()


def test_export_then_import_into_a_fresh_store(tmp_path: Path) -> None:
    source = PresetStore(tmp_path / "a")
    source.save(ParameterPreset("Fast", model="nai-diffusion-4-5-full", steps=20, scale=5.5, uc_preset=UC_AS_WRITTEN))
    source.save(ResolutionPreset("Banner", 1536, 640))
    source.save(CharacterPreset("Alice", "1girl, blonde", "hat", "C3"))
    target_file = tmp_path / "shared" / "presets.json"
    assert source.export(target_file) == 3
    exported = orjson.loads(target_file.read_bytes())
    assert [p["name"] for p in exported["resolutions"]] == ["Banner"]  # built-in sizes are not exported

    target = PresetStore(tmp_path / "b")
    target.save(ParameterPreset("Fast", steps=40))
    target.save(ParameterPreset("Keep", steps=30))
    report = target.import_file(target_file)
    assert report.added == ((PresetKind.RESOLUTIONS, "Banner"), (PresetKind.CHARACTERS, "Alice"))
    assert report.replaced == ((PresetKind.PARAMETERS, "Fast"),)
    assert report.describe() == "3 presets imported from presets.json: 2 new, 1 replaced (parameters 'Fast')"
    assert target.saved(ResolutionPreset) == source.saved(ResolutionPreset)
    assert target.saved(CharacterPreset) == source.saved(CharacterPreset)
    assert target.saved(ParameterPreset) == [source.saved(ParameterPreset)[0], ParameterPreset("Keep", steps=30)]


def test_a_store_file_imports_like_an_export(tmp_path: Path) -> None:
    source = PresetStore(tmp_path / "a")
    source.save(CharacterPreset("Bob", "1boy"))
    target = PresetStore(tmp_path / "b")
    report = target.import_file(source.path(PresetKind.CHARACTERS))
    assert report.added == ((PresetKind.CHARACTERS, "Bob"),)
    assert target.saved(CharacterPreset) == [CharacterPreset("Bob", "1boy")]


def test_bad_import_changes_nothing(tmp_path: Path) -> None:
    store = PresetStore(tmp_path / "store")
    store.save(ParameterPreset("Fast", steps=20))
    before = store.path(PresetKind.PARAMETERS).read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_bytes(
        orjson.dumps(
            {
                "format": "peropix-presets",
                "version": 1,
                "parameters": [{"name": "Fast", "steps": 10}],
                "resolutions": [{"name": "Wide", "width": 99999, "height": 64}],
            }
        )
    )
    with pytest.raises(PresetError) as caught:
        store.import_file(bad)
    assert str(caught.value) == (
        f"{bad}: resolutions[1] ('Wide'): width must be a whole number from 1 to 16384, not 99999"
    )
    assert store.path(PresetKind.PARAMETERS).read_bytes() == before
    assert not store.path(PresetKind.RESOLUTIONS).exists()
    with pytest.raises(PresetError, match=r"missing\.json does not exist"):
        store.import_file(tmp_path / "missing.json")
    with pytest.raises(PresetError, match="is a folder"):
        store.import_file(tmp_path)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(PresetError, match="larger than"):
        store.import_file(huge)
    text = tmp_path / "notes.json"
    text.write_text("not json")
    with pytest.raises(PresetError, match=r"notes\.json: not valid JSON"):
        store.import_file(text)


def test_export_never_overwrites_a_file_that_is_not_presets(tmp_path: Path) -> None:
    store = PresetStore(tmp_path / "store")
    store.save(ParameterPreset("Fast", steps=20))
    precious = tmp_path / "notes.json"
    precious.write_text('{"mine": true}')
    with pytest.raises(PresetError, match="exists and is not a peropix presets file; not overwritten"):
        store.export(precious)
    assert precious.read_text() == '{"mine": true}'
    with pytest.raises(PresetError, match="is a folder"):
        store.export(tmp_path)
    old_export = tmp_path / "old.json"
    assert store.export(old_export) == 1
    store.save(ParameterPreset("Slow", steps=50))
    assert store.export(old_export) == 2  # an earlier export is replaced
    assert len(orjson.loads(old_export.read_bytes())["parameters"]) == 2
