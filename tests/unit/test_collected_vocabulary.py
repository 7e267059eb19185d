from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peropix_tui.civitai.jsonio import dump_json
from peropix_tui.civitai.sidecars import ModelFileRef, SidecarContext, build_sidecar
from peropix_tui.core.collected_vocabulary import (
    MAX_SIDECAR_BYTES,
    MAX_TAG_CHARS,
    CollectedVocabulary,
    CollectedVocabularyError,
    UpdateReport,
    cache_path,
    prompt_tags,
)
from peropix_tui.core.prompt import WordFilter
from peropix_tui.core.vocabulary import Vocabulary

FILTERS = WordFilter.from_lines({"etc": ["score_9"]})
CONTEXT = SidecarContext(
    model_id=1,
    model_name="Numahana",
    model_type="LORA",
    version_id=10,
    version_name="v1",
    base_model="Illustrious",
    files=[ModelFileRef(100, "art_numahana.safetensors", "art_numahana.safetensors")],
)


def write_sidecar(root: Path, user: str, model: str, image_id: int, prompt: str) -> Path:
    """A sidecar as the collector writes it, built from a prompt as CivitAI reports it."""
    sidecar = build_sidecar(
        {"id": image_id, "username": user}, {"prompt": prompt}, CONTEXT, FILTERS, image_url="u", showcase=False
    )
    path = root / "Users" / user / model / f"{image_id}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_json(sidecar))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "civitai"
    write_sidecar(folder, "alice", "Numahana", 1, "masterpiece, 1girl, (Long_Hair:1.2), ((smile)), score_9")
    write_sidecar(folder, "alice", "Numahana", 2, "<lora:other_style:0.6>, 1girl, [blue eyes], smile, smile")
    write_sidecar(folder, "bob", "Other", 3, "1girl, solo, outdoors, \\(tag\\)")
    return folder


def updated(root: Path, tmp_path: Path) -> tuple[CollectedVocabulary, UpdateReport]:
    vocabulary = CollectedVocabulary.load(cache_path(tmp_path / "data"))
    report = vocabulary.update(root)
    vocabulary.save()
    return vocabulary, report


def test_counts_images_per_tag_without_weights_or_loras(root: Path, tmp_path: Path) -> None:
    vocabulary, report = updated(root, tmp_path)
    assert report == UpdateReport(added=3, changed=0, removed=0, skipped=0)
    assert vocabulary.images == 3
    assert vocabulary.count("1girl") == 3
    assert vocabulary.count("smile") == 2  # twice in one prompt is one image
    assert vocabulary.count("long hair") == 1
    assert vocabulary.count("Long_Hair") == 1
    assert vocabulary.count("blue eyes") == 1
    assert vocabulary.count("(tag)") == 1
    assert vocabulary.count("score 9") == 0  # removed by the word filter before the sidecar was written
    every = {tag for tag, _ in vocabulary.top()}
    assert not any("lora" in tag or "numahana" in tag or "other style" in tag for tag in every)
    assert not any(c in tag for tag in every for c in "[]:<>")
    assert vocabulary.top(2) == [("1girl", 3), ("smile", 2)]
    assert vocabulary.top(prefix="Blue_") == [("blue eyes", 1)]


def test_candidates_follow_the_tag_style(root: Path, tmp_path: Path) -> None:
    vocabulary, _ = updated(root, tmp_path)
    spaced = {c.text: c for c in vocabulary.candidates("spaces")}
    assert spaced["long hair"].rank == 1
    assert spaced["1girl"].rank == 3
    assert spaced["1girl"].detail == "collected · used in 3 images"
    assert spaced["long hair"].detail == "collected · used in 1 image"
    underscored = {c.text for c in vocabulary.candidates("underscores")}
    assert "long_hair" in underscored
    assert "long hair" not in underscored
    completion = Vocabulary(vocabulary.candidates("spaces")).complete("long_h", kind="tag")
    assert [c.text for c in completion] == ["long hair"]


def test_cache_round_trip(root: Path, tmp_path: Path) -> None:
    vocabulary, _ = updated(root, tmp_path)
    again = CollectedVocabulary.load(cache_path(tmp_path / "data"))
    assert again.problem is None
    assert again.top() == vocabulary.top()
    assert again.images == 3
    assert again.update(root) == UpdateReport(0, 0, 0, 0)


def test_incremental_update_changes_deletes_and_adds(root: Path, tmp_path: Path) -> None:
    updated(root, tmp_path)
    changed = write_sidecar(root, "alice", "Numahana", 1, "masterpiece, 2girls, outdoors, with extra words")
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse clocks
    (root / "Users" / "alice" / "Numahana" / "2.txt").unlink()
    write_sidecar(root, "carol", "Third", 4, "1girl, outdoors")
    vocabulary, report = updated(root, tmp_path)
    assert report == UpdateReport(added=1, changed=1, removed=1, skipped=0)
    assert vocabulary.count("smile") == 0
    assert vocabulary.count("long hair") == 0
    assert vocabulary.count("outdoors") == 3
    assert vocabulary.count("1girl") == 2
    assert vocabulary.count("2girls") == 1
    assert "smile" not in {c.text for c in vocabulary.candidates()}
    # The saved cache says the same.
    assert CollectedVocabulary.load(cache_path(tmp_path / "data")).top() == vocabulary.top()


def test_unchanged_collection_reads_no_sidecar(root: Path, tmp_path: Path) -> None:
    updated(root, tmp_path)
    for path in (root / "Users").rglob("*.txt"):
        path.chmod(0)  # a sidecar read again would now be skipped
    try:
        vocabulary, report = updated(root, tmp_path)
    finally:
        for path in (root / "Users").rglob("*.txt"):
            path.chmod(0o644)
    assert report == UpdateReport(0, 0, 0, 0)
    assert vocabulary.count("1girl") == 3


def test_malformed_sidecars_are_skipped_and_counted(root: Path, tmp_path: Path) -> None:
    model = root / "Users" / "mallory" / "Bad"
    model.mkdir(parents=True)
    (model / "10.txt").write_bytes(b"{not json")
    (model / "11.txt").write_bytes(b"[1, 2, 3]")
    (model / "12.txt").write_bytes(orjson.dumps({"prompt": 12}))
    (model / "13.txt").write_bytes(b"\xff\xfe\x00garbage")
    (model / "14.txt").write_bytes(orjson.dumps({"prompt": "huge, " * (MAX_SIDECAR_BYTES // 6 + 1)}))
    (model / "15.txt").mkdir()  # a folder named like a sidecar
    (model / "trigger_words_3.txt").write_text("not a sidecar, ignored")
    (model / "model.json").write_text("{}")
    vocabulary, report = updated(root, tmp_path)
    assert report == UpdateReport(added=8, changed=0, removed=0, skipped=5)
    assert vocabulary.images == 3
    assert vocabulary.count("huge") == 0
    assert vocabulary.count("ignored") == 0
    # Remembered: not read (nor counted) again until they change.
    _, again = updated(root, tmp_path)
    assert again == UpdateReport(0, 0, 0, 0)


def test_damaged_cache_loads_empty_and_is_rebuilt(root: Path, tmp_path: Path) -> None:
    path = cache_path(tmp_path / "data")
    path.parent.mkdir(parents=True)
    for damaged in (b"{broken", b'{"format": 1, "root": "/x", "tags": ["a"], "files": {"u/m/1.txt": [1, 2, [5]]}}'):
        path.write_bytes(damaged)
        vocabulary = CollectedVocabulary.load(path)
        assert len(vocabulary) == 0
        assert vocabulary.problem is not None and str(path) in vocabulary.problem
    report = vocabulary.update(root)
    assert report.added == 3
    vocabulary.save()
    assert CollectedVocabulary.load(path).problem is None


def test_missing_root_is_a_one_line_error(tmp_path: Path) -> None:
    vocabulary = CollectedVocabulary.load(cache_path(tmp_path / "data"))
    with pytest.raises(CollectedVocabularyError, match="does not exist") as caught:
        vocabulary.update(tmp_path / "nowhere")
    assert "\n" not in str(caught.value)


def test_another_root_starts_over(root: Path, tmp_path: Path) -> None:
    updated(root, tmp_path)
    other = tmp_path / "other"
    write_sidecar(other, "dave", "M", 7, "cat ears")
    vocabulary, report = updated(other, tmp_path)
    assert report == UpdateReport(added=1, changed=0, removed=0, skipped=0)
    assert vocabulary.top() == [("cat ears", 1)]


def test_progress_reports_reads(root: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    CollectedVocabulary.load(cache_path(tmp_path / "data")).update(root, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 3)
    assert calls[-1] == (3, 3)


def test_prompt_tags_drops_sentences() -> None:
    long = "a " * MAX_TAG_CHARS
    assert prompt_tags(f"cat, {long}, (dog:0.5), <lora:x:1>") == {"cat", "dog"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["1girl", "long hair", "smile", "(smile:1.3)", "[solo]", "<lora:a:1>"]), max_size=12))
def test_prompt_tags_are_the_plain_words(parts: list[str]) -> None:
    tags = prompt_tags(", ".join(parts))
    expected = {p.strip("()[]").split(":")[0] for p in parts if not p.startswith("<")}
    assert tags == expected
