"""File-name patterns: parsing and the refusals, rendering of every field, counters and unique names under races."""

from __future__ import annotations

import io
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.core.config import Config
from peropix_tui.core.errors import ConfigError
from peropix_tui.core.outputs import (
    DEFAULT_NAME_PATTERN,
    FIELDS,
    MAX_NAME_BYTES,
    NameFields,
    OutputError,
    SaveOptions,
    name_pattern_problem,
    next_counter,
    parse_name_pattern,
    save_image,
    slug,
)
from peropix_tui.core.paths import AppDirs

WHEN = datetime(2025, 3, 9, 14, 30, 5)
NAMES = NameFields(index=1, prompt="1girl, {silver hair}, [night] sky", model="nai-diffusion-4-5-full", provider="nai")


def png(colour: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def save(tmp_path: Path, pattern: str, seed: int = 42, names: NameFields = NAMES, data: bytes | None = None) -> Path:
    options = SaveOptions(pattern=parse_name_pattern(pattern))
    return save_image(data or png(), seed=seed, outputs_dir=tmp_path, when=WHEN, options=options, names=names)


def relative(tmp_path: Path, path: Path) -> str:
    return path.relative_to(tmp_path).as_posix()


# --- rendering -------------------------------------------------------------------------------------------------


def test_the_default_pattern_gives_the_day_folder_and_counter_names(tmp_path: Path) -> None:
    assert relative(tmp_path, save(tmp_path, DEFAULT_NAME_PATTERN)) == "2025-03-09/00001_42.png"
    assert relative(tmp_path, save(tmp_path, DEFAULT_NAME_PATTERN, seed=7)) == "2025-03-09/00002_7.png"


def test_every_field_is_rendered(tmp_path: Path) -> None:
    pattern = "{provider}/{date}/{model}/{counter}-{time}-{seed}-{index}-{prompt}"
    path = save(tmp_path, pattern)
    assert relative(tmp_path, path) == (
        "nai/2025-03-09/nai-diffusion-4-5-full/00001-143005-42-1-1girl_silver_hair_night_sky.png"
    )
    assert set(FIELDS) == {"date", "time", "counter", "seed", "index", "model", "prompt", "provider"}


def test_empty_fields_get_a_stand_in(tmp_path: Path) -> None:
    path = save(tmp_path, "{model}/{counter}_{prompt}", names=NameFields(prompt="{[ ]}, ::"))
    assert relative(tmp_path, path) == "unknown/00001_untitled.png"


def test_the_prompt_is_cut_at_a_byte_bound_without_splitting_a_character(tmp_path: Path) -> None:
    prompt = "初音ミク, " * 20
    path = save(tmp_path, "{counter}_{prompt}", names=NameFields(prompt=prompt))
    part = path.stem.split("_", 1)[1]
    assert part.startswith("初音ミク_初音ミク")
    assert len(part.encode()) <= 48
    assert part.encode().decode() == part


def test_a_long_prompt_is_cut_between_words() -> None:
    assert slug("1girl, silver hair, night, very aesthetic, masterpiece, no text", 48) == (
        "1girl_silver_hair_night_very_aesthetic"
    )
    assert slug("abcdefghij", 4) == "abcd"  # one long word is cut where it must be
    assert slug("ab cdefghijkl", 8) == "ab_cdefg"  # the word before would leave less than half


@given(st.text(), st.integers(1, 200))
def test_slugs_are_safe_name_parts(text: str, limit: int) -> None:
    result = slug(text, limit)
    assert len(result.encode()) <= limit
    assert "/" not in result and "\\" not in result and "\0" not in result
    assert not result.startswith((".", "-", "_")) and not result.endswith(("-", "_"))
    assert all(ch.isalnum() or ch in "_-" for ch in result)


# --- counters and unique names ---------------------------------------------------------------------------------


def test_counters_are_per_folder_whatever_else_the_name_holds(tmp_path: Path) -> None:
    pattern = "{date}/{prompt}_{counter}"
    first = save(tmp_path, pattern, names=NameFields(prompt="cat_00009"))
    second = save(tmp_path, pattern, names=NameFields(prompt="dog"))
    assert first.name == "cat_00009_00001.png"
    assert second.name == "dog_00002.png"
    assert next_counter(first.parent, parse_name_pattern(pattern)) == 3


def test_files_of_another_pattern_do_not_move_the_counter(tmp_path: Path) -> None:
    folder = tmp_path / "2025-03-09"
    folder.mkdir()
    (folder / "00050_1.png").write_bytes(b"x")  # the default pattern's name
    assert save(tmp_path, "{date}/img-{counter}").name == "img-00001.png"
    assert save(tmp_path, DEFAULT_NAME_PATTERN).name == "00051_42.png"


def test_without_a_counter_a_taken_name_gets_a_suffix(tmp_path: Path) -> None:
    pattern = "{date}/{seed}_{time}"
    names = [save(tmp_path, pattern).name for _ in range(3)]
    assert names == ["42_143005.png", "42_143005-2.png", "42_143005-3.png"]
    assert sorted(p.name for p in (tmp_path / "2025-03-09").iterdir()) == sorted(names)


@pytest.mark.parametrize("pattern", ["{date}/{model}/{counter}_{prompt}", "{seed}-{time}"])
def test_concurrent_savers_never_share_a_name(tmp_path: Path, pattern: str) -> None:
    threads, per_thread = 6, 8
    start = threading.Barrier(threads)

    def worker(worker_id: int) -> list[Path]:
        start.wait()
        return [save(tmp_path, pattern, data=png((worker_id, i, 0))) for i in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        saved = [path for paths in pool.map(worker, range(threads)) for path in paths]
    assert len(set(saved)) == threads * per_thread
    folder = saved[0].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in saved)  # no markers left


# --- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("/{date}/{counter}", "relative to the outputs folder"),
        ("../{counter}", "starting with '.'"),
        ("{date}/../{counter}", "starting with '.'"),
        ("{date}/.hidden/{counter}", "starting with '.'"),
        ("{date}//{counter}", "empty folder name"),
        ("{date}/{counter}/", "empty folder name"),
        ("{date}/{colour}_{counter}", "unknown field {colour}; known: {date}, {time}, {counter}"),
        ("{}_{counter}", "unknown field {}"),
        ("{0}_{counter}", "unknown field {0}"),
        ("{seed:08d}_{counter}", "field {seed} takes no format"),
        ("{prompt!r}_{counter}", "field {prompt} takes no format"),
        ("{counter}/{seed}", "{counter} in a folder name"),
        ("{counter}_{counter}", "{counter} more than once"),
        ("{date}/{seed}", "needs {counter}, or {seed} with {time}"),
        ("{date}/{time}_{prompt}", "needs {counter}"),
        ("{date}\\{counter}", "may not contain '\\\\'"),
        ("a:b/{counter}", "may not contain ':'"),
        ("{date}/{counter}_{seed", "unmatched { or }"),
        ("{date}/{counter}}", "unmatched { or }"),
        ("{counter} ", "ending in a space or a dot"),
        ("x" * 195 + "{counter}", f"longer than {MAX_NAME_BYTES} bytes"),
        ("{prompt}" * 5 + "{counter}", f"longer than {MAX_NAME_BYTES} bytes"),
    ],
)
def test_bad_patterns_are_refused_in_one_line(pattern: str, message: str) -> None:
    with pytest.raises(OutputError) as info:
        parse_name_pattern(pattern)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert name_pattern_problem(pattern) == str(info.value)


@pytest.mark.parametrize(
    "pattern", [DEFAULT_NAME_PATTERN, "{counter}", "{seed}_{time}", "{{x}}-{counter}", "a b/c-d_{counter}"]
)
def test_good_patterns_are_accepted(pattern: str) -> None:
    assert name_pattern_problem(pattern) is None


def test_literal_braces_are_written_doubled(tmp_path: Path) -> None:
    assert save(tmp_path, "{{x}}-{counter}").name == "{x}-00001.png"


@given(
    st.lists(st.sampled_from(["{date}", "{model}", "{prompt}", "{provider}", "a", "-", " b", "..x", "é"]), max_size=4),
    st.text(max_size=30),
    st.text(max_size=30),
)
def test_every_accepted_pattern_stays_inside_the_outputs_folder(folder: list[str], prompt: str, model: str) -> None:
    text = "/".join([*folder, "{counter}_{prompt}"])
    if name_pattern_problem(text) is not None:
        return
    with tempfile.TemporaryDirectory() as root:
        outputs = Path(root) / "outputs"
        path = save(outputs, text, names=NameFields(prompt=prompt, model=model))
        assert path.resolve().is_relative_to(outputs.resolve())
        assert len(path.parent.relative_to(outputs).parts) == len(folder)
        assert all(len(part.encode()) <= MAX_NAME_BYTES for part in path.relative_to(outputs).parts)


# --- settings --------------------------------------------------------------------------------------------------


def test_the_setting_refuses_a_bad_pattern_naming_key_and_field(tmp_path: Path) -> None:
    config = Config.load(AppDirs(tmp_path / "config", tmp_path / "data"))
    with pytest.raises(ConfigError) as info:
        config.set("saving.name_pattern", "{date}/{colour}")
    assert str(info.value).startswith("saving.name_pattern: has an unknown field {colour}")
    assert config.get("saving.name_pattern") == DEFAULT_NAME_PATTERN
    config.set("saving.name_pattern", "{date}/{model}/{counter}")
    config.set("saving.format", "jpeg")
    config.set("saving.quality", "80", from_text=True)
    options = config.save_options()
    assert (options.format, options.quality, options.pattern.text) == ("jpeg", 80, "{date}/{model}/{counter}")
    assert config.save_options(format="webp", quality=55).format == "webp"
    with pytest.raises(ConfigError, match=r"saving\.quality: must be at most 100"):
        config.set("saving.quality", 101)


def test_a_bad_pattern_in_the_file_is_reported_and_the_default_used(tmp_path: Path) -> None:
    dirs = AppDirs(tmp_path / "config", tmp_path / "data")
    dirs.config_file.parent.mkdir(parents=True)
    dirs.config_file.write_bytes(orjson.dumps({"saving": {"name_pattern": "../{counter}", "format": "gif"}}))
    config = Config.load(dirs)
    problems = [str(issue) for issue in config.issues]
    assert any("saving.name_pattern" in p and "starting with '.'" in p for p in problems), problems
    assert any("saving.format" in p and "'gif'" in p for p in problems), problems
    assert config.save_options().pattern.text == DEFAULT_NAME_PATTERN
    assert config.save_options().format == "png"
