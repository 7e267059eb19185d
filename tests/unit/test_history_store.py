"""HistoryStore on real files: CRUD, paging, text filter, favourites, trash/undo, export, import, damage, migrations."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from peropix_tui.core.history import (
    SCHEMA_VERSION,
    HistoryError,
    HistoryStore,
    make_thumbnail,
    metadata_from_json,
    metadata_to_json,
)
from peropix_tui.core.metadata import CharacterPrompt, ImageMetadata, read_metadata, write_metadata
from peropix_tui.core.outputs import save_image

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V3 = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
NAI_V45 = FIXTURES / "nai__enslo_sd-metadata__novelai-full-3char.png"
A1111_JPEG = FIXTURES / "other__d3x-at_sd-parsers__automatic1111_cropped.jpg"


def png(color: tuple[int, int, int] = (200, 30, 40), size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def meta(prompt: str, seed: int = 1, **more: object) -> ImageMetadata:
    values: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": "lowres, bad hands",
        "model": "nai-diffusion-4-5-full",
        "seed": seed,
        "steps": 28,
        "cfg": 5.0,
        "sampler": "k_euler_ancestral",
        "width": 832,
        "height": 1216,
    }
    values.update(more)
    return ImageMetadata(**values)  # type: ignore[arg-type]


def image_file(folder: Path, name: str, m: ImageMetadata, color: tuple[int, int, int] = (200, 30, 40)) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(write_metadata(png(color), m, stealth=False))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "data" / "history.sqlite3") as opened:
        yield opened


def comparable(m: ImageMetadata) -> ImageMetadata:
    m.raw.clear()
    m.warnings.clear()
    return m


# --- CRUD ------------------------------------------------------------------------------------------------------


def test_add_and_get_keep_every_key_field(store: HistoryStore, tmp_path: Path) -> None:
    m = meta("1girl, silver hair", seed=1234, cfg=5.5)
    path = image_file(tmp_path / "out", "00001_1234.png", m)
    thumb = make_thumbnail(path.read_bytes())
    entry_id = store.add(path, m, provider="nai", thumbnail=thumb, created=1700000000.5)
    entry = store.get(entry_id)
    assert entry is not None
    assert (entry.path, entry.provider, entry.created) == (path.resolve(), "nai", 1700000000.5)
    assert (entry.model, entry.seed, entry.width, entry.height) == ("nai-diffusion-4-5-full", 1234, 832, 1216)
    assert (entry.steps, entry.cfg, entry.sampler) == (28, 5.5, "k_euler_ancestral")
    assert (entry.prompt, entry.negative) == ("1girl, silver hair", "lowres, bad hands")
    assert (entry.favourite, entry.deleted, entry.trash_path, entry.location) == (False, False, None, path.resolve())
    assert store.thumbnail(entry_id) == thumb
    assert store.get(entry_id + 100) is None
    assert store.thumbnail(entry_id + 100) is None


def test_adding_a_known_path_refreshes_it(store: HistoryStore, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    first = store.add(path, meta("old prompt"), provider="nai")
    store.set_favourite(first, True)
    second = store.add(path, meta("new prompt", seed=9), provider="local")
    assert first == second
    entry = store.get(first)
    assert entry is not None
    assert (entry.prompt, entry.seed, entry.provider, entry.favourite) == ("new prompt", 9, "local", True)
    assert store.count() == 1


def test_nai_fixture_settings_come_back_exactly(store: HistoryStore) -> None:
    original = read_metadata(NAI_V45)
    assert len(original.characters) == 3
    entry_id = store.add(NAI_V45, original, provider="nai")
    entry = store.get(entry_id)
    assert entry is not None
    assert entry.metadata() == comparable(read_metadata(NAI_V45))
    assert entry.seed == original.seed
    assert entry.prompt == original.prompt


def test_seeds_use_the_full_unsigned_64_bit_range(store: HistoryStore, tmp_path: Path) -> None:
    big = store.add(tmp_path / "big.png", meta("x", seed=2**64 - 1), provider="local")
    zero = store.add(tmp_path / "zero.png", meta("x", seed=0), provider="local")
    odd = store.add(tmp_path / "odd.png", meta("x", seed=2**64 + 5), provider="local")
    assert [store.get(i).seed for i in (big, zero, odd)] == [2**64 - 1, 0, None]  # type: ignore[union-attr]
    assert store.get(odd).metadata().seed == 2**64 + 5  # type: ignore[union-attr]


def test_metadata_json_round_trip_and_damage() -> None:
    m = meta("<lora:style:0.8> 1girl", characters=[CharacterPrompt("girl", "bad", ((0.1, 0.9),))])
    m.loras = [("<lora:style:0.8>", "style")]
    m.peropix = {"provider": "nai", "job": 3}
    assert metadata_from_json(metadata_to_json(m)) == m
    broken = metadata_from_json("{not json")
    assert broken.prompt is None
    assert broken.warnings and "could not be read" in broken.warnings[0]


def test_bad_arguments_are_one_line_errors(store: HistoryStore, tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="unknown provider 'civitai'"):
        store.add(tmp_path / "a.png", meta("x"), provider="civitai")
    with pytest.raises(HistoryError, match="no history entry with id 77"):
        store.set_favourite(77, True)
    with pytest.raises(HistoryError, match="no history entry with id 77"):
        store.set_thumbnail(77, b"x")
    with pytest.raises(HistoryError, match="must not be negative"):
        store.page(-1, 10)
    with pytest.raises(HistoryError, match="cannot be stored"):
        store.add(tmp_path / "b.png", meta("x", peropix={"when": object()}), provider="nai")
    assert store.count() == 0


# --- paging and filters ----------------------------------------------------------------------------------------


def test_pages_are_newest_first_with_ties_broken_by_insertion(store: HistoryStore, tmp_path: Path) -> None:
    ids = []
    for i in range(130):
        created = 1000.0 + (i // 3)  # three entries share each second
        ids.append(store.add(tmp_path / f"{i:05d}.png", meta(f"prompt {i}", seed=i), provider="nai", created=created))
    expected = list(reversed(ids))
    pages = [store.page(offset, 50) for offset in (0, 50, 100)]
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [e.id for p in pages for e in p] == expected
    assert [e.id for e in store.page(125, 50)] == expected[125:]
    assert store.page(130, 50) == []
    assert store.page(0, 0) == []
    assert store.count() == 130


def test_text_filter_matches_every_word_across_fields(store: HistoryStore, tmp_path: Path) -> None:
    rows = {
        "a": meta("1girl, silvery white hair, long_hair", seed=111),
        "b": meta("1boy, black hair, (masterpiece:1.2)", seed=222, model="nai-diffusion-3"),
        "c": meta("landscape, mountains", seed=333, negative_prompt="people, text"),
        "d": meta("2girls", seed=444, characters=[CharacterPrompt("girl, cat ears"), CharacterPrompt("girl, fox")]),
        "e": meta("テスト, 東方", seed=555),
    }
    ids = {key: store.add(tmp_path / f"{key}.png", m, provider="nai") for key, m in rows.items()}

    def found(text: str) -> set[str]:
        hits = {e.id for e in store.page(0, 100, text=text)}
        assert store.count(text=text) == len(hits)
        return {key for key, entry_id in ids.items() if entry_id in hits}

    assert found("silv") == {"a"}  # word prefix
    assert found("HAIR") == {"a", "b"}  # case-insensitive
    assert found("hair black") == {"b"}  # every word must match
    assert found("long_hair") == {"a"}
    assert found("222") == {"b"}  # seed
    assert found("nai-diffusion-3") == {"b"}  # model
    assert found("people") == {"c"}  # negative
    assert found("fox") == {"d"}  # character prompt
    assert found("テスト") == {"e"}
    assert found("(masterpiece:1.2)") == {"b"}
    assert found(":") == {"b"}  # punctuation only: substring search
    assert found('"quoted') == set()
    assert found("zebra") == set()
    assert found("   ") == set(rows)


def test_favourites_filter(store: HistoryStore, tmp_path: Path) -> None:
    ids = [store.add(tmp_path / f"{i}.png", meta(f"p{i}"), provider="nai", created=float(i)) for i in range(10)]
    for entry_id in ids[2:8:2]:
        store.set_favourite(entry_id, True)
    store.set_favourite(ids[4], False)
    assert [e.id for e in store.page(0, 50, favourites=True)] == [ids[6], ids[2]]
    assert store.count(favourites=True) == 2
    assert all(e.favourite for e in store.page(0, 50, favourites=True))


# --- trash -----------------------------------------------------------------------------------------------------


def test_trash_and_undo_restore_the_file_byte_identical(store: HistoryStore, tmp_path: Path) -> None:
    path = image_file(tmp_path / "out" / "2025-03-09", "00001_5.png", meta("keep me", seed=5))
    original = path.read_bytes()
    other = store.add(tmp_path / "other.png", meta("other"), provider="nai", created=1.0)
    entry_id = store.add(path, read_metadata(path), provider="nai", created=2.0)
    trash_dir = tmp_path / "out" / ".trash"
    record = store.trash(entry_id, trash_dir)
    assert not path.exists()
    assert record.trashed is not None and record.trashed.parent == trash_dir.resolve()
    assert record.trashed.read_bytes() == original
    entry = store.get(entry_id)
    assert entry is not None and entry.deleted and entry.location == record.trashed
    assert [e.id for e in store.page(0, 10)] == [other]
    assert [e.id for e in store.page(0, 10, include_deleted=True)] == [entry_id, other]
    assert store.count() == 1
    with pytest.raises(HistoryError, match="already in the trash"):
        store.trash(entry_id, trash_dir)

    store.undo_trash(record)
    assert path.read_bytes() == original
    assert not record.trashed.exists()
    assert [e.id for e in store.page(0, 10)] == [entry_id, other]
    with pytest.raises(HistoryError, match="not in the trash"):
        store.undo_trash(record)


def test_trash_of_a_missing_file_still_marks_and_undoes(store: HistoryStore, tmp_path: Path) -> None:
    entry_id = store.add(tmp_path / "gone.png", meta("x"), provider="nai")
    record = store.trash(entry_id, tmp_path / "trash")
    assert record.trashed is None
    assert store.count() == 0
    store.undo_trash(record)
    assert store.count() == 1


def test_undo_refuses_to_overwrite_a_new_file(store: HistoryStore, tmp_path: Path) -> None:
    path = image_file(tmp_path, "00001_1.png", meta("x"))
    entry_id = store.add(path, meta("x"), provider="nai")
    record = store.trash(entry_id, tmp_path / "trash")
    path.write_bytes(b"someone else")
    with pytest.raises(HistoryError, match="already there"):
        store.undo_trash(record)
    assert path.read_bytes() == b"someone else"
    assert record.trashed is not None and record.trashed.exists()
    assert store.get(entry_id).deleted  # type: ignore[union-attr]


def test_purge_deletes_trashed_files_and_entries(store: HistoryStore, tmp_path: Path) -> None:
    paths = [image_file(tmp_path, f"0000{i}_1.png", meta(f"p{i}")) for i in range(3)]
    ids = [store.add(p, meta("x"), provider="nai", thumbnail=b"t") for p in paths]
    records = [store.trash(entry_id, tmp_path / "trash") for entry_id in ids[:2]]
    assert store.purge_trash() == 2
    assert all(r.trashed is not None and not r.trashed.exists() for r in records)
    assert [e.id for e in store.page(0, 10, include_deleted=True)] == [ids[2]]
    assert store.thumbnail(ids[0]) is None
    assert paths[2].exists()
    with pytest.raises(HistoryError, match="was purged"):
        store.undo_trash(records[0])
    assert store.purge_trash() == 0


# --- copies ----------------------------------------------------------------------------------------------------


def test_export_strips_metadata(store: HistoryStore, tmp_path: Path) -> None:
    source = tmp_path / "out" / "00001_1148692016.png"
    source.parent.mkdir(parents=True)
    source.write_bytes(NAI_V3.read_bytes())
    entry_id = store.add(source, read_metadata(source), provider="nai")
    exported = store.export(entry_id, tmp_path / "export")
    assert exported == tmp_path / "export" / source.name
    stripped = read_metadata(exported)
    assert stripped.is_empty and stripped.prompt is None and stripped.seed is None
    assert source.read_bytes() == NAI_V3.read_bytes()
    with Image.open(exported) as a, Image.open(source) as b:
        assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
    assert store.export(entry_id, tmp_path / "export").name == "00001_1148692016-2.png"


def test_favourite_copy_keeps_metadata_and_marks_favourite(store: HistoryStore, tmp_path: Path) -> None:
    source = image_file(tmp_path / "out", "00003_9.png", meta("favourite one", seed=9))
    entry_id = store.add(source, read_metadata(source), provider="nai")
    gallery = tmp_path / "gallery"
    copy = store.favourite_copy(entry_id, gallery)
    assert copy == gallery / "00003_9.png"
    assert copy.read_bytes() == source.read_bytes()
    assert store.get(entry_id).favourite  # type: ignore[union-attr]
    assert store.favourite_copy(entry_id, gallery) == copy
    assert sorted(p.name for p in gallery.iterdir()) == ["00003_9.png"]


def test_copies_of_a_vanished_file_are_one_line_errors(store: HistoryStore, tmp_path: Path) -> None:
    entry_id = store.add(tmp_path / "vanished.png", meta("x"), provider="nai")
    with pytest.raises(HistoryError, match="is gone"):
        store.export(entry_id, tmp_path / "export")
    with pytest.raises(HistoryError, match="is gone"):
        store.favourite_copy(entry_id, tmp_path / "gallery")
    with pytest.raises(HistoryError, match="no history entry"):
        store.export(999, tmp_path / "export")


# --- import and clean-up ---------------------------------------------------------------------------------------


def test_import_folder_indexes_new_images_once(store: HistoryStore, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    saved = save_image(
        write_metadata(png(), meta("from the app", seed=77), stealth=False),
        seed=77,
        outputs_dir=outputs,
        extra_peropix={"provider": "local"},
    )
    nai = outputs / "2024-01-01" / "00001_1148692016.png"
    nai.parent.mkdir(parents=True)
    nai.write_bytes(NAI_V3.read_bytes())
    (outputs / "2024-01-01" / "photo.jpg").write_bytes(A1111_JPEG.read_bytes())
    (outputs / "2024-01-01" / "broken.png").write_bytes(b"not an image at all")
    (outputs / "2024-01-01" / "00002_5.png").write_bytes(b"")
    (outputs / "2024-01-01" / "notes.txt").write_text("ignored")
    image_file(outputs / ".trash", "1_00009_1.png", meta("trashed"))
    already = store.add(nai, read_metadata(nai), provider="nai")
    calls: list[tuple[int, int]] = []

    report = store.import_folder(outputs, progress=lambda done, total: calls.append((done, total)))
    assert report.added == 2
    assert sorted(p.name for p, _ in report.skipped) == ["00002_5.png", "broken.png"]
    assert all("\n" not in reason for _, reason in report.skipped)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    by_name = {e.path.name: e for e in store.page(0, 50)}
    assert set(by_name) == {"00001_77.png", "00001_1148692016.png", "photo.jpg"}
    assert by_name["00001_77.png"].provider == "local"
    assert by_name["00001_77.png"].seed == 77 and by_name["00001_77.png"].path == saved.resolve()
    assert by_name["photo.jpg"].provider == "import"
    assert by_name["00001_1148692016.png"].id == already
    assert store.thumbnail(by_name["photo.jpg"].id) is not None
    assert store.import_folder(outputs).added == 0
    assert store.import_folder(tmp_path / "missing").added == 0


def test_import_without_thumbnails(store: HistoryStore, tmp_path: Path) -> None:
    image_file(tmp_path / "o", "00001_1.png", meta("x"))
    assert store.import_folder(tmp_path / "o", thumbnails=False).added == 1
    assert store.thumbnail(store.page(0, 1)[0].id) is None


def test_remove_missing_forgets_vanished_files(store: HistoryStore, tmp_path: Path) -> None:
    keep = image_file(tmp_path, "keep.png", meta("a"))
    lose = image_file(tmp_path, "lose.png", meta("b"))
    trashed = image_file(tmp_path, "trashed.png", meta("c"))
    ids = {p.name: store.add(p, meta("x"), provider="nai") for p in (keep, lose, trashed)}
    record = store.trash(ids["trashed.png"], tmp_path / "trash")
    lose.unlink()
    assert store.remove_missing() == 1
    assert store.get(ids["lose.png"]) is None
    assert record.trashed is not None
    record.trashed.unlink()
    assert store.remove_missing() == 1
    assert [e.id for e in store.page(0, 10, include_deleted=True)] == [ids["keep.png"]]


# --- thumbnails ------------------------------------------------------------------------------------------------


def test_thumbnails_are_small_and_keep_the_aspect() -> None:
    thumb = make_thumbnail(png(size=(1024, 512)))
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.size == (256, 128)
        assert image.mode == "RGB"
    with Image.open(io.BytesIO(make_thumbnail(NAI_V45.read_bytes(), max_side=64))) as image:
        assert max(image.size) == 64
        assert image.mode == "RGB"  # NovelAI's near-opaque alpha is dropped


def test_thumbnail_keeps_real_transparency_and_exif_rotation() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (40, 20), (255, 0, 0, 0)).save(buf, format="PNG")
    with Image.open(io.BytesIO(make_thumbnail(buf.getvalue()))) as image:
        assert image.mode == "RGBA"
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (400, 200), (0, 0, 255)).save(rotated, format="JPEG", exif=exif)
    with Image.open(io.BytesIO(make_thumbnail(rotated.getvalue()))) as image:
        assert image.size == (128, 256)


def test_thumbnail_of_garbage_is_a_history_error() -> None:
    with pytest.raises(HistoryError, match="cannot make a thumbnail"):
        make_thumbnail(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(HistoryError, match=r"not a PNG, WebP or JPEG image$"):
        make_thumbnail(b"GIF89a and then nothing")
    truncated = png(size=(64, 64))[:-40]
    with pytest.raises(HistoryError, match="cannot make a thumbnail") as info:
        make_thumbnail(truncated)
    assert "\n" not in str(info.value)


# --- damage, migrations, threads -------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_set_aside(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    garbage = b"this is not sqlite" * 100
    db.write_bytes(garbage)
    with HistoryStore(db) as store:
        assert store.recovered is not None and "\n" not in store.recovered
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.sqlite3.corrupt-")]
        assert len(aside) == 1 and aside[0].read_bytes() == garbage
        assert aside[0].name in store.recovered
        store.add(tmp_path / "a.png", meta("fresh"), provider="nai")
        assert [e.prompt for e in store.page(0, 5)] == ["fresh"]


def test_damage_found_later_sets_the_file_aside_and_carries_on(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    with HistoryStore(db) as store:
        for i in range(300):
            store.add(tmp_path / f"{i}.png", meta(f"tag{i} " * 40, seed=i), provider="nai", thumbnail=bytes(3000))
    data = bytearray(db.read_bytes())
    pages = len(data) // 4096
    for offset in range(pages * 3 // 4 * 4096, len(data), 4096):
        data[offset : offset + 4096] = b"\xab" * 4096
    db.write_bytes(bytes(data))
    with HistoryStore(db) as store:
        try:
            store.page(0, 300)
            store.count()
            [store.thumbnail(i) for i in range(1, 301)]
        except HistoryError as exc:
            assert "\n" not in str(exc)
            assert "rescan" in str(exc)
        assert store.recovered is not None
        assert any(p.name.startswith("history.sqlite3.corrupt-") for p in tmp_path.iterdir())
        store.add(tmp_path / "new.png", meta("after"), provider="nai")
        assert [e.prompt for e in store.page(0, 5, text="after")] == ["after"]


V1_SCHEMA = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, path TEXT NOT NULL UNIQUE, provider TEXT NOT NULL,
    model TEXT, seed INTEGER, width INTEGER, height INTEGER, steps INTEGER, cfg REAL, sampler TEXT,
    prompt TEXT NOT NULL DEFAULT '', negative TEXT NOT NULL DEFAULT '', characters TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}', favourite INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0,
    trash_path TEXT
);
CREATE INDEX entries_live ON entries (deleted, created DESC, id DESC);
CREATE INDEX entries_all ON entries (created DESC, id DESC);
CREATE INDEX entries_favourite ON entries (favourite, deleted, created DESC, id DESC);
CREATE TABLE thumbnails (id INTEGER PRIMARY KEY REFERENCES entries (id) ON DELETE CASCADE, data BLOB NOT NULL);
PRAGMA user_version = 1;
"""


def test_a_version_1_database_is_migrated_and_its_rows_searchable(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(V1_SCHEMA)
    conn.execute(
        "INSERT INTO entries (created, path, provider, seed, prompt, params) VALUES (?, ?, ?, ?, ?, ?)",
        (5.0, "/old/00001_1.png", "nai", 31337, "old silver prompt", metadata_to_json(meta("old silver prompt"))),
    )
    conn.commit()
    conn.close()
    with HistoryStore(db) as store:
        assert store.recovered is None
        assert [e.seed for e in store.page(0, 5, text="silver")] == [31337]
        assert store.page(0, 5)[0].metadata().prompt == "old silver prompt"
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    check.close()


def test_a_database_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(HistoryError, match="newer peropix") as info:
        HistoryStore(db)
    assert "\n" not in str(info.value)
    assert db.read_bytes() == before
    assert not any("corrupt" in p.name for p in tmp_path.iterdir())


def test_text_index_is_rebuilt_when_its_triggers_went_missing(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    with HistoryStore(db) as store:
        store.add(tmp_path / "a.png", meta("alpha"), provider="nai")
    conn = sqlite3.connect(db)
    for trigger in ("entries_fts_insert", "entries_fts_delete", "entries_fts_update"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute(
        "INSERT INTO entries (created, path, provider, prompt, params) VALUES (9, '/x/b.png', 'nai', 'bravo', '{}')"
    )
    conn.commit()
    conn.close()
    with HistoryStore(db) as store:
        assert [e.prompt for e in store.page(0, 5, text="bravo")] == ["bravo"]
        store.add(tmp_path / "c.png", meta("charlie"), provider="nai")
        assert store.count(text="charlie") == 1


def test_the_store_is_usable_from_many_threads(store: HistoryStore, tmp_path: Path) -> None:
    def writer(n: int) -> int:
        for i in range(40):
            store.add(tmp_path / f"{n}-{i}.png", meta(f"thread{n} item{i}"), provider="local")
            assert all(e.prompt.startswith(f"thread{n} ") for e in store.page(0, 20, text=f"thread{n}"))
        return n

    with ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(writer, range(6))) == list(range(6))
    assert store.count() == 240
    assert all(store.count(text=f"thread{n}") == 40 for n in range(6))
