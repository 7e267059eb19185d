from __future__ import annotations

import json
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file
from safetensors_helpers import BOO, FIXTURES, PEPPER, kohya_metadata, raw_file

from peropix_tui.core.lora_library import (
    LoraFile,
    LoraLibrary,
    LoraScanner,
    describe_metadata,
    format_size,
    read_lora_details,
    read_lora_file,
    single_line,
    tag_frequency,
)
from peropix_tui.core.safetensors import SafetensorsError


def lora_tensors(rank: int = 4) -> dict[str, np.ndarray]:
    block = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
    return {
        f"{block}.lora_down.weight": np.zeros((rank, 64), dtype=np.float16),
        f"{block}.lora_up.weight": np.zeros((64, rank), dtype=np.float16),
        f"{block}.alpha": np.array(rank, dtype=np.float16),
    }


def make_lora(path: Path, metadata: dict[str, str] | None = None, rank: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora_tensors(rank), str(path), metadata=metadata)
    return path


def damaged(path: Path) -> Path:
    return raw_file(path, b"{not json}")


# Reading one file ------------------------------------------------------------------------------------------


def test_real_kohya_sdxl_header_gives_the_table_fields(tmp_path: Path) -> None:
    path = make_lora(tmp_path / "pepper_v3.safetensors", kohya_metadata(PEPPER))
    entry = read_lora_file(path, tmp_path)
    assert entry.error is None
    assert entry.output_name == "Pepper__Carrot"
    assert entry.tag_name == "Pepper__Carrot"
    assert entry.tag() == "<lora:Pepper__Carrot:1>"
    assert entry.base_model == "sdxl_base_v1-0"
    assert (entry.network_dim, entry.network_alpha) == ("32", "32")
    assert entry.network_module == "networks.lora"
    assert entry.stem == "pepper_v3"
    assert entry.stem_differs
    assert entry.size == path.stat().st_size
    assert entry.tensor_count == 3
    assert entry.names == {"pepper_v3", "pepper__carrot"}


def test_old_kohya_header_without_output_name_uses_the_file_stem(tmp_path: Path) -> None:
    path = make_lora(tmp_path / "sub" / "boo.safetensors", kohya_metadata(BOO))
    entry = read_lora_file(path, tmp_path)
    assert entry.output_name is None
    assert entry.tag_name == "boo"
    assert not entry.stem_differs
    assert entry.relative == str(Path("sub") / "boo.safetensors")
    assert (entry.network_dim, entry.network_alpha, entry.base_model) == ("4", "4.0", "")


def test_modelspec_architecture_when_kohya_base_is_missing(tmp_path: Path) -> None:
    meta = {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora", "ss_output_name": "  spaced  "}
    entry = read_lora_file(make_lora(tmp_path / "spaced.safetensors", meta), tmp_path)
    assert entry.base_model == "stable-diffusion-xl-v1-base/lora"
    assert entry.output_name == "spaced"
    assert not entry.stem_differs


def test_hostile_metadata_fields_become_one_short_line(tmp_path: Path) -> None:
    meta = {"ss_output_name": "evil\nname\x1b[2J", "ss_base_model_version": "  ", "ss_network_dim": "x" * 999}
    entry = read_lora_file(make_lora(tmp_path / "evil.safetensors", meta), tmp_path)
    assert entry.output_name == "evil name\\x1b[2J"
    assert entry.base_model == ""
    assert len(entry.network_dim) == 200 and entry.network_dim.endswith("…")


def test_rank_read_from_shapes_when_metadata_is_absent(tmp_path: Path) -> None:
    entry = read_lora_file(make_lora(tmp_path / "bare.safetensors", None, rank=12), tmp_path)
    assert entry.error is None
    assert entry.network_dim == "12"
    assert entry.network_alpha == ""
    assert entry.output_name is None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (struct.pack("<Q", 10) + b"{not json}", "not valid JSON"),
        (struct.pack("<Q", 1000) + b"{}", "runs past the end"),
        (b"abc", "only 3 bytes"),
        (struct.pack("<Q", 2) + b"[]", "does not start with '{'"),
    ],
)
def test_damaged_file_is_an_entry_with_one_line_error(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "deep" / "bad.safetensors"
    path.parent.mkdir()
    path.write_bytes(content)
    entry = read_lora_file(path, tmp_path)
    assert entry.error is not None and fragment in entry.error
    assert "\n" not in entry.error
    assert entry.short_error is not None and str(tmp_path) not in entry.short_error
    assert entry.size == len(content)
    assert entry.names == {"bad"}


# Scanning --------------------------------------------------------------------------------------------------


def test_scan_walks_recursively_in_order_and_reports_missing_folders(tmp_path: Path) -> None:
    root = tmp_path / "loras"
    make_lora(root / "b.safetensors")
    make_lora(root / "a" / "z.safetensors")
    make_lora(root / "a" / "UPPER.SAFETENSORS")
    (root / "notes.txt").write_text("not a lora")
    (root / "partial.safetensors.part").write_bytes(b"x")
    (root / "folder.safetensors").mkdir()
    missing = tmp_path / "nowhere"
    afile = tmp_path / "plain.txt"
    afile.write_text("x")

    library = LoraLibrary.scan([root, missing, afile])

    # a folder's own files first, then its subfolders, each by name
    assert [f.relative for f in library.files] == [
        "b.safetensors",
        str(Path("a") / "UPPER.SAFETENSORS"),
        str(Path("a") / "z.safetensors"),
    ]
    assert library.files[1].tag_name == "UPPER"
    assert [(p.path, p.message) for p in library.problems] == [
        (missing, "does not exist"),
        (afile, "is not a folder"),
    ]
    assert str(library.problems[0]) == f"{missing}: does not exist"


def test_overlapping_folders_and_links_list_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "loras"
    make_lora(root / "inner" / "one.safetensors")
    (root / "inner" / "loop").symlink_to(root, target_is_directory=True)  # a cycle back to the top
    (root / "alias.safetensors").symlink_to(root / "inner" / "one.safetensors")

    library = LoraLibrary.scan([root, root / "inner"])

    assert len(library.files) == 1
    assert library.colliding == []
    assert library.problems == []


def test_batches_split_and_stop_when_cancelled(tmp_path: Path) -> None:
    for i in range(7):
        make_lora(tmp_path / f"l{i}.safetensors")
    sizes = [len(b) for b in LoraScanner([tmp_path]).batches(size=3)]
    assert sizes == [3, 3, 1]

    seen: list[int] = []

    def cancelled() -> bool:
        return sum(seen) >= 2

    for batch in LoraScanner([tmp_path]).batches(size=2, cancelled=cancelled):
        seen.append(len(batch))
    assert seen == [2]


def test_dangling_link_is_listed_as_unreadable(tmp_path: Path) -> None:
    (tmp_path / "gone.safetensors").symlink_to(tmp_path / "deleted.safetensors")
    [entry] = LoraLibrary.scan([tmp_path]).files
    assert entry.error is not None and entry.error.startswith(f"cannot read {tmp_path / 'gone.safetensors'}")
    assert entry.short_error == "cannot read gone.safetensors: No such file or directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_subfolder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    make_lora(tmp_path / "ok.safetensors")
    locked = tmp_path / "locked"
    make_lora(locked / "hidden.safetensors")
    locked.chmod(0)
    try:
        library = LoraLibrary.scan([tmp_path])
    finally:
        locked.chmod(0o755)
    assert [f.relative for f in library.files] == ["ok.safetensors"]
    assert [p.path for p in library.problems] == [locked]


# Names and collisions --------------------------------------------------------------------------------------


def test_collisions_by_stem_and_by_output_name_ignoring_case(tmp_path: Path) -> None:
    a = make_lora(tmp_path / "alpha.safetensors", {"ss_output_name": "alpha"})
    b = make_lora(tmp_path / "x" / "beta_v2.safetensors", {"ss_output_name": "Alpha"})
    c = make_lora(tmp_path / "gamma.safetensors", {"ss_output_name": "beta_v2"})
    d = make_lora(tmp_path / "solo.safetensors")
    bad = damaged(tmp_path / "y" / "alpha.safetensors")

    library = LoraLibrary.scan([tmp_path])
    entries = {f.path: f for f in library.files}

    assert {o.path for o in library.collisions(entries[a])} == {b}
    assert {o.path for o in library.collisions(entries[b])} == {a, c}
    assert {o.path for o in library.collisions(entries[c])} == {b}
    assert library.collisions(entries[d]) == []
    assert library.collisions(entries[bad]) == []  # a damaged file answers to nothing
    assert [f.path for f in library.damaged] == [bad]
    assert {f.path for f in library.colliding} == {a, b, c}
    assert {f.path for f in library.answering_to(" ALPHA ")} == {a, b}


names = st.text(alphabet="abAB_", min_size=1, max_size=3)


@given(st.lists(st.tuples(names, st.none() | names), min_size=1, max_size=12, unique_by=lambda t: t[0]))
def test_collisions_match_a_brute_force_check(pairs: list[tuple[str, str | None]]) -> None:
    files = [
        LoraFile(Path(f"/l/{i}/{stem}.safetensors"), Path("/l"), 1, 0.0, output_name=out)
        for i, (stem, out) in enumerate(pairs)
    ]
    library = LoraLibrary(files)
    for entry in files:
        mine = {entry.stem.casefold()} | ({entry.output_name.casefold()} if entry.output_name else set())
        expected = set()
        for other in files:
            theirs = {other.stem.casefold()} | ({other.output_name.casefold()} if other.output_name else set())
            if other is not entry and mine & theirs:
                expected.add(other.path)
        assert {o.path for o in library.collisions(entry)} == expected


# Details ---------------------------------------------------------------------------------------------------


def test_details_of_real_header_summarise_tags_and_blobs(tmp_path: Path) -> None:
    metadata = kohya_metadata(PEPPER)
    metadata["modelspec.thumbnail"] = "data:image/png;base64," + "A" * 5000
    path = make_lora(tmp_path / "pepper.safetensors", metadata)

    details = read_lora_details(path, top=5)

    raw = json.loads((FIXTURES / PEPPER).read_text(encoding="utf-8"))["ss_tag_frequency"]
    expected: Counter[str] = Counter()
    for folder in raw.values():
        expected.update(folder)
    assert details.distinct_tags == len(expected)
    assert details.top_tags == sorted(expected.items(), key=lambda kv: -kv[1])[:5]
    assert details.top_tags[0] == ("1girl", 96)
    assert details.tensor_count == 3
    shown = dict(details.metadata)
    assert list(shown) == sorted(metadata)
    assert shown["ss_output_name"] == "Pepper__Carrot"
    assert shown["ss_tag_frequency"].startswith(f"{len(expected)} distinct tags over 1 folder(s)")
    assert shown["ss_datasets"].startswith("JSON list, 1 items")
    assert shown["modelspec.thumbnail"].startswith("embedded image/png, 4.9 KiB")
    assert shown["ss_training_started_at"] == "1726066908.2484195 (2024-09-11 15:01 UTC)"
    assert all(len(value) <= 160 and "\n" not in value for value in shown.values())


def test_details_of_a_damaged_file_raise_the_safetensors_error(tmp_path: Path) -> None:
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        read_lora_details(damaged(tmp_path / "bad.safetensors"))


def test_tag_frequency_falls_back_to_datasets_and_ignores_junk() -> None:
    datasets = [{"tag_frequency": {"5_a": {"smile": 2, "hat": 1}, "3_b": {"smile": 1, "bad": "x", "neg": -1}}}, 7]
    assert tag_frequency({"ss_datasets": json.dumps(datasets)}) == Counter({"smile": 3, "hat": 1})
    assert tag_frequency({"ss_tag_frequency": "{broken"}) == Counter()
    assert tag_frequency({"ss_tag_frequency": json.dumps({"d": {"x": True, " ": 4, "ok": 1}})}) == {"ok": 1}
    assert tag_frequency({}) == Counter()


def test_describe_keeps_short_values_and_folds_odd_ones() -> None:
    rows = dict(
        describe_metadata(
            {
                "ss_training_comment": "line one\nline\ttwo \x1b[31m",
                "ss_network_args": json.dumps({"conv_dim": "4"}),
                "ss_training_finished_at": "not a time",
                "long": "w" * 500,
            }
        )
    )
    assert rows["ss_training_comment"] == "line one line two \\x1b[31m"
    assert rows["ss_network_args"] == '{"conv_dim": "4"}'
    assert rows["ss_training_finished_at"] == "not a time"
    assert rows["long"] == "w" * 159 + "…"


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_single_line_is_printable_and_bounded(text: str, limit: int) -> None:
    line = single_line(text, limit)
    assert len(line) <= limit
    assert line.isprintable()


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (228_456_499, "217.9 MiB"), (7 * 2**30, "7.0 GiB")],
)
def test_format_size(size: int, shown: str) -> None:
    assert format_size(size) == shown
