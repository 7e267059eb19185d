"""save_image: folder and counter naming, racing savers, NovelAI chunks kept with app fields added, atomicity."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.core.errors import DiskFullError, PeropixError
from peropix_tui.core.metadata import add_peropix_fields, read_metadata
from peropix_tui.core.metadata.pngchunks import (
    TEXT_TYPES,
    Chunk,
    build_png,
    decode_text_chunk,
    encode_text_chunk,
    read_all_chunks,
)
from peropix_tui.core.outputs import OutputError, next_counter, save_image

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V3 = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
NAI_V45 = FIXTURES / "nai__enslo_sd-metadata__novelai-full-3char.png"
NAI_WEBP = FIXTURES / "webp__enslo_sd-metadata__novelai-curated.webp"
WHEN = datetime(2025, 3, 9, 14, 30)


def plain_png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def comment_of(png: bytes) -> tuple[int, str]:
    for index, chunk in enumerate(read_all_chunks(png)):
        if chunk.type in TEXT_TYPES:
            text = decode_text_chunk(chunk)[0]
            if text.key == "Comment":
                return index, text.text
    raise AssertionError("no Comment chunk")


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- naming ----------------------------------------------------------------------------------------------------


def test_first_saves_are_numbered_from_one_in_the_day_folder(tmp_path: Path) -> None:
    first = save_image(plain_png(), seed=42, outputs_dir=tmp_path, when=WHEN)
    second = save_image(plain_png(), seed=7, outputs_dir=tmp_path, when=WHEN)
    assert first == tmp_path / "2025-03-09" / "00001_42.png"
    assert second == tmp_path / "2025-03-09" / "00002_7.png"
    assert first.read_bytes() == plain_png()
    assert names(first.parent) == ["00001_42.png", "00002_7.png"]


def test_the_day_folder_is_the_local_date_of_aware_times(tmp_path: Path) -> None:
    moment = datetime(2025, 3, 9, 23, 59, tzinfo=timezone(timedelta(hours=-12)))
    local = moment.astimezone()
    assert save_image(plain_png(), seed=1, outputs_dir=tmp_path, when=moment).parent == tmp_path / local.strftime(
        "%Y-%m-%d"
    )
    assert save_image(plain_png(), seed=1, outputs_dir=tmp_path).parent == tmp_path / datetime.now().strftime(
        "%Y-%m-%d"
    )


def test_counter_continues_after_gaps(tmp_path: Path) -> None:
    folder = tmp_path / "2025-03-09"
    folder.mkdir()
    (folder / "00003_1.png").write_bytes(b"x")
    (folder / "00010_2.webp").write_bytes(b"x")
    assert next_counter(folder) == 11
    assert save_image(plain_png(), seed=5, outputs_dir=tmp_path, when=WHEN).name == "00011_5.png"


def test_foreign_files_do_not_move_the_counter(tmp_path: Path) -> None:
    folder = tmp_path / "2025-03-09"
    folder.mkdir()
    for name in ("notes.txt", "abc_12.png", "12.png", "image.png", "0001_3.png", "00099_photo.jpg", "00050_1"):
        (folder / name).write_bytes(b"x")
    (folder / ".00077_1.png.k2j3.tmp").write_bytes(b"half")  # an atomic write in flight
    (folder / "00040_1.png.d").mkdir()
    assert next_counter(folder) == 1
    assert save_image(plain_png(), seed=9, outputs_dir=tmp_path, when=WHEN).name == "00001_9.png"


def test_a_stale_reservation_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "2025-03-09"
    folder.mkdir()
    (folder / "00001_1.png").write_bytes(b"x")
    (folder / ".00002.reserved").write_bytes(b"")  # left by a saver that crashed
    assert save_image(plain_png(), seed=3, outputs_dir=tmp_path, when=WHEN).name == "00003_3.png"


def test_counter_grows_past_five_digits(tmp_path: Path) -> None:
    folder = tmp_path / "2025-03-09"
    folder.mkdir()
    (folder / "99999_1.png").write_bytes(b"x")
    assert save_image(plain_png(), seed=1, outputs_dir=tmp_path, when=WHEN).name == "100000_1.png"
    assert next_counter(folder) == 100001


def test_concurrent_savers_never_share_a_number(tmp_path: Path) -> None:
    threads, per_thread = 8, 12
    start = threading.Barrier(threads)

    def worker(worker_id: int) -> list[Path]:
        start.wait()
        paths = []
        for i in range(per_thread):
            data = plain_png((worker_id, i, 0))
            path = save_image(data, seed=worker_id * 1000 + i, outputs_dir=tmp_path, when=WHEN)
            assert path.read_bytes() == data
            paths.append(path)
        return paths

    with ThreadPoolExecutor(threads) as pool:
        saved = [path for paths in pool.map(worker, range(threads)) for path in paths]
    counters = sorted(int(p.name.split("_")[0]) for p in saved)
    assert counters == list(range(1, threads * per_thread + 1))
    assert len(set(saved)) == threads * per_thread
    assert names(tmp_path / "2025-03-09") == sorted(p.name for p in saved)  # no markers or temp files left


# --- metadata --------------------------------------------------------------------------------------------------


def test_server_chunks_are_kept_byte_for_byte_and_peropix_added(tmp_path: Path) -> None:
    original = NAI_V45.read_bytes()
    fields = {"provider": "nai", "job_id": "job-17", "wildcards": {"hair": "silver"}}
    path = save_image(original, seed=1702945580, outputs_dir=tmp_path, when=WHEN, extra_peropix=fields)
    saved = path.read_bytes()
    before, after = read_all_chunks(original), read_all_chunks(saved)
    index, old_text = comment_of(original)
    assert comment_of(saved)[0] == index
    assert [c for i, c in enumerate(after) if i != index] == [c for i, c in enumerate(before) if i != index]
    new_text = comment_of(saved)[1]
    # The server's JSON text is kept verbatim; the app's object is spliced in before the closing brace.
    assert new_text.startswith(old_text[:-1])
    assert new_text.endswith("}")
    assert json.loads(new_text) == {**json.loads(old_text), "peropix": fields}
    meta, original_meta = read_metadata(path), read_metadata(original)
    assert meta.peropix == fields
    assert (meta.prompt, meta.seed, meta.characters) == (
        original_meta.prompt,
        original_meta.seed,
        original_meta.characters,
    )


def test_fields_merge_into_an_existing_peropix_object() -> None:
    once = add_peropix_fields(NAI_V3.read_bytes(), {"provider": "nai", "job_id": "a"})
    twice = add_peropix_fields(once, {"job_id": "b", "batch": 2})
    comment = json.loads(comment_of(twice)[1])
    assert comment["peropix"] == {"provider": "nai", "job_id": "b", "batch": 2}
    assert comment["seed"] == 1148692016


def test_png_without_comment_gets_one_holding_the_fields(tmp_path: Path) -> None:
    path = save_image(plain_png(), seed=5, outputs_dir=tmp_path, when=WHEN, extra_peropix={"provider": "local"})
    chunks = read_all_chunks(path.read_bytes())
    assert [c.type for c in chunks] == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    assert json.loads(comment_of(path.read_bytes())[1]) == {"peropix": {"provider": "local"}}
    assert read_metadata(path).peropix == {"provider": "local"}


def test_no_fields_and_webp_keep_the_bytes_exactly(tmp_path: Path) -> None:
    png = NAI_V3.read_bytes()
    assert save_image(png, seed=1, outputs_dir=tmp_path, when=WHEN).read_bytes() == png
    webp = NAI_WEBP.read_bytes()
    saved = save_image(webp, seed=2, outputs_dir=tmp_path, when=WHEN, fmt="webp", extra_peropix={"provider": "nai"})
    assert saved.name == "00002_2.webp"
    assert saved.read_bytes() == webp


def test_unmergeable_comment_still_saves_the_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chunks = read_all_chunks(plain_png())
    broken = build_png([chunks[0], encode_text_chunk("Comment", "not json {"), *chunks[1:]])
    with caplog.at_level(logging.WARNING, logger="peropix_tui.core.outputs"):
        path = save_image(broken, seed=8, outputs_dir=tmp_path, when=WHEN, extra_peropix={"provider": "nai"})
    assert path.read_bytes() == broken
    assert "not a JSON object" in caplog.text


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=20), st.booleans(), st.lists(st.integers(0, 9))),
        max_size=5,
    )
)
def test_added_fields_read_back_and_other_chunks_stay(fields: dict[str, object]) -> None:
    original = NAI_V3.read_bytes()
    result = add_peropix_fields(original, fields)
    index, text = comment_of(result)
    comment = json.loads(text)
    assert comment.pop("peropix") == fields
    assert comment == json.loads(comment_of(original)[1])
    kept: list[Chunk] = [c for i, c in enumerate(read_all_chunks(result)) if i != index]
    assert kept == [c for i, c in enumerate(read_all_chunks(original)) if i != index]


# --- bad input and failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "seed", "fmt", "message"),
    [
        (b"", 1, "png", "empty image"),
        (b"GIF89a....", 1, "png", "not a PNG"),
        (NAI_V3.read_bytes(), 1, "webp", "not a WEBP"),
        (NAI_V3.read_bytes(), -1, "png", "seed must be"),
        (NAI_V3.read_bytes(), True, "png", "seed must be"),
        (NAI_V3.read_bytes(), 1, "gif", "cannot save images as 'gif'"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, data: bytes, seed: int, fmt: str, message: str) -> None:
    with pytest.raises(OutputError, match=message) as info:
        save_image(data, seed=seed, outputs_dir=tmp_path, when=WHEN, fmt=fmt)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_and_frees_the_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(PeropixError, match=r"cannot write .*00001_4\.png"):
        save_image(NAI_V3.read_bytes(), seed=4, outputs_dir=tmp_path, when=WHEN, extra_peropix={"provider": "nai"})
    monkeypatch.undo()
    assert names(tmp_path / "2025-03-09") == []
    assert save_image(plain_png(), seed=4, outputs_dir=tmp_path, when=WHEN).name == "00001_4.png"


def test_disk_full_is_one_line_and_nothing_is_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "2025-03-09"
    folder.mkdir()
    (folder / "00001_1.png").write_bytes(b"earlier")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(DiskFullError, match=r"disk full while saving .*00002_6\.png; nothing was written") as info:
        save_image(NAI_V3.read_bytes(), seed=6, outputs_dir=tmp_path, when=WHEN)
    assert "\n" not in str(info.value)
    assert names(folder) == ["00001_1.png"]
    assert (folder / "00001_1.png").read_bytes() == b"earlier"
