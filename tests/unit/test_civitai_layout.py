from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.civitai.layout import (
    MAX_NAME_BYTES,
    LayoutError,
    claim_name,
    inside,
    is_own_file_name,
    model_file_name,
    model_folder_name,
    safe_filename,
    safe_name,
    user_dir,
    with_id,
)

FORBIDDEN = set('<>:"/\\|?*')
RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"COM{n}" for n in range(1, 10)} | {f"LPT{n}" for n in range(1, 10)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Crazy Girlfriend Mix [XL/PONY]", "Crazy Girlfriend Mix [XL_PONY]"),
        ("../../x", "_.._x"),
        ("..", "fallback"),
        (".hidden", "hidden"),
        ("trailing dots...", "trailing dots"),
        ("  spaced   out \t name ", "spaced out name"),
        ('a<b>c:d"e|f?g*h\\i', "a_b_c_d_e_f_g_h_i"),
        ("bell\x07and\x10ctl", "bell_and_ctl"),
        ("rtl\u202eevil", "rtl_evil"),
        ("CON", "CON_"),
        ("con.txt", "con_.txt"),
        ("LPT9", "LPT9_"),
        ("CONSOLE", "CONSOLE"),
        ("", "fallback"),
        ("???", "___"),
        ("布川 ミク pony版 / Fukawa Miku", "布川 ミク pony版 _ Fukawa Miku"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name, fallback="fallback") == expected


def test_length_is_cut_in_bytes_without_splitting_characters() -> None:
    name = "ミ" * 200  # 3 bytes each
    cut = safe_name(name, fallback="f")
    assert len(cut.encode("utf-8")) <= MAX_NAME_BYTES
    assert cut == "ミ" * (MAX_NAME_BYTES // 3)


def test_file_names_keep_their_extension_when_cut() -> None:
    name = "a" * 400 + ".safetensors"
    cut = safe_filename(name, fallback="file_1")
    assert cut.endswith(".safetensors")
    assert len(cut.encode()) == MAX_NAME_BYTES
    assert safe_filename("../../etc/passwd", fallback="f") == "_.._etc_passwd"
    assert safe_filename("NUL.safetensors", fallback="f") == "NUL_.safetensors"
    assert safe_filename(".safetensors", fallback="file_9") == "safetensors"
    assert safe_filename("weird.ext with space", fallback="f") == "weird.ext with space"


def test_ids_are_appended_before_the_extension_and_fit() -> None:
    assert with_id("lora.safetensors", 42, keep_suffix=True) == "lora_42.safetensors"
    assert with_id("Model Name", 7, keep_suffix=False) == "Model Name_7"
    long = with_id("b" * 300 + ".safetensors", 123456, keep_suffix=True)
    assert long.endswith("_123456.safetensors") and len(long.encode()) == MAX_NAME_BYTES


def test_collisions_ignore_case_and_get_the_id() -> None:
    assert claim_name("Style", 5, ["other"], keep_suffix=False) == "Style"
    assert claim_name("Style", 5, ["STYLE"], keep_suffix=False) == "Style_5"
    assert claim_name("Style", 5, ["style", "Style_5"], keep_suffix=False) == "Style_5_2"


def test_model_folders_are_stable_and_unique() -> None:
    assigned: dict[int, str] = {}
    for model_id, name in [(10, "My LoRA"), (11, "my lora"), (12, "My/LoRA"), (13, "My_LoRA")]:
        assigned[model_id] = model_folder_name(model_id, name, assigned)
    assert assigned == {10: "My LoRA", 11: "my lora_11", 12: "My_LoRA", 13: "My_LoRA_13"}
    # A rerun keeps what the log remembers, whatever order the listing comes in.
    assert model_folder_name(13, "My_LoRA", assigned) == "My_LoRA_13"
    assert model_folder_name(14, "my lora", assigned) == "my lora_14"


def test_model_files_never_take_the_collector_own_names() -> None:
    assert is_own_file_name("model.json")
    assert is_own_file_name("123.txt") and is_own_file_name("456.PNG") and is_own_file_name("1.jpeg.part")
    assert not is_own_file_name("123.safetensors")
    assert model_file_name(9, "model.json", []) == "model_9.json"
    assert model_file_name(9, "400001.txt", []) == "400001_9.txt"
    assert model_file_name(9, "lora.safetensors", ["LORA.safetensors"]) == "lora_9.safetensors"
    assert model_file_name(9, "", []) == "file_9"


def test_paths_stay_under_the_root(tmp_path: Path) -> None:
    assert user_dir(tmp_path, "../../etc") == tmp_path / "Users" / "_.._etc"
    assert user_dir(tmp_path, "..") == tmp_path / "Users" / "user"
    for bad in ("..", ".", "a/b", "", "a\\b", "nul\0"):
        with pytest.raises(LayoutError):
            inside(tmp_path, bad)


def _reserved(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in RESERVED


@given(st.text(max_size=300))
def test_any_name_becomes_one_harmless_component(name: str) -> None:
    for made in (safe_name(name, fallback="fb"), safe_filename(name, fallback="fb")):
        assert made
        assert made not in (".", "..")
        assert not made.startswith(".")
        assert not made.endswith((".", " "))
        assert not FORBIDDEN.intersection(made)
        assert all(unicodedata.category(c) not in ("Cc", "Cs") for c in made)
        assert len(made.encode("utf-8")) <= MAX_NAME_BYTES
        assert not _reserved(made)
        root = Path("/library")
        assert inside(root, made).parent == root


@given(st.text(min_size=1, max_size=40), st.lists(st.text(max_size=40), max_size=8), st.integers(1, 10**9))
def test_claimed_names_never_collide(wanted: str, taken: list[str], ident: int) -> None:
    safe = safe_name(wanted, fallback="x")
    claimed = claim_name(safe, ident, taken, keep_suffix=False)
    assert claimed.casefold() not in {t.casefold() for t in taken}
