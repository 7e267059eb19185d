"""Provider-neutral request/result types: validation messages name the field, seeds resolve, inputs load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.core.metadata import ImageMetadata
from peropix_tui.engine.types import (
    MAX_IMAGE_BYTES,
    RANDOM_SEED_MAX,
    Action,
    CharacterPrompt,
    CharacterReference,
    GeneratedImage,
    GenerationRequest,
    ProgressEvent,
    RequestError,
    VibeRef,
    read_image_input,
)

PNG = b"\x89PNG\r\n\x1a\nrest"


def test_defaults_are_a_valid_v4_5_request() -> None:
    request = GenerationRequest("1girl")
    assert (request.model, request.width, request.height, request.steps) == (
        "nai-diffusion-4-5-full",
        832,
        1216,
        28,
    )
    assert request.action is Action.GENERATE
    assert request.seed is None


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"width": 830}, "width", "multiple of 64"),
        ({"height": 0}, "height", "between 64 and"),
        ({"width": True}, "width", "whole number"),
        ({"steps": 0}, "steps", "between 1 and"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"scale": float("nan")}, "scale", "must be a number"),
        ({"cfg_rescale": 1.5}, "cfg_rescale", "between 0 and 1"),
        ({"seed": -1}, "seed", "between 0 and"),
        ({"seed": 1 << 64}, "seed", "between 0 and"),
        ({"n": 0}, "n", "between 1 and"),
        ({"sampler": ""}, "sampler", "must not be empty"),
        ({"model": " "}, "model", "must not be empty"),
        ({"smea_dyn": True}, "smea_dyn", "only together with SMEA"),
        ({"mask": PNG}, "mask", "needs a source image"),
        ({"image": "photo.png"}, "image", "bytes or a file path"),
        ({"strength": 0.0}, "strength", "between 0.01 and 1"),
        ({"noise": -0.1}, "noise", "between 0 and 1"),
        ({"uc_preset": "heavy"}, "uc_preset", "must be one of"),
        ({"characters": ("girl",)}, "characters", "CharacterPrompt"),
        ({"vibes": (b"x",)}, "vibes", "VibeRef"),
        ({"character_reference": PNG}, "character_reference", "CharacterReference"),
        ({"extra": {1: 2}}, "extra", "text keys"),
        ({"prompt": None}, "prompt", "must be text"),
    ],
)
def test_invalid_settings_name_the_field_in_one_line(kwargs: dict[str, Any], field: str, words: str) -> None:
    arguments = {"prompt": "1girl", **kwargs}
    with pytest.raises(RequestError, match=words) as caught:
        GenerationRequest(**arguments)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert "\n" not in str(caught.value)


def test_character_positions_are_grid_cells_normalised_to_upper_case() -> None:
    assert CharacterPrompt("girl", position=" c3 ").position == "C3"
    assert CharacterPrompt("girl").position is None
    for bad in ("F1", "A6", "A", "AA1", "3C"):
        with pytest.raises(RequestError, match="not a grid cell"):
            CharacterPrompt("girl", position=bad)


def test_vibe_and_character_reference_validation() -> None:
    with pytest.raises(RequestError, match="vibe: needs an image or an encoding"):
        VibeRef()
    with pytest.raises(RequestError, match="vibe strength"):
        VibeRef(encoding=b"e", strength=1.5)
    with pytest.raises(RequestError, match="vibe encoding"):
        VibeRef(encoding=b"")
    with pytest.raises(RequestError, match="fidelity"):
        CharacterReference(PNG, fidelity=2.0)
    assert VibeRef(image=Path("a.png")).information_extracted == 1.0


def test_action_follows_image_and_mask() -> None:
    assert GenerationRequest("x", image=PNG).action is Action.IMG2IMG
    assert GenerationRequest("x", image=PNG, mask=PNG).action is Action.INPAINT


def test_resolved_picks_a_seed_once_and_batches_count_up_from_it() -> None:
    request = GenerationRequest("x", n=3)
    resolved = request.resolved()
    assert resolved.seed is not None and 1 <= resolved.seed <= RANDOM_SEED_MAX
    assert resolved.resolved() is resolved
    assert resolved.sample_seeds() == [resolved.seed, resolved.seed + 1, resolved.seed + 2]
    assert all(s < 1 << 32 for s in GenerationRequest("x", n=8, seed=RANDOM_SEED_MAX).sample_seeds())
    with pytest.raises(RequestError, match="not resolved"):
        request.sample_seeds()
    seeds = {GenerationRequest("x").resolved().seed for _ in range(20)}
    assert len(seeds) > 1


def test_read_image_input_from_bytes_and_files(tmp_path: Path) -> None:
    assert read_image_input(PNG, "image") == PNG
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    assert read_image_input(path, "image") == PNG
    with pytest.raises(RequestError, match=r"mask: cannot read .*nope\.png"):
        read_image_input(tmp_path / "nope.png", "mask")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(RequestError, match="image: the image is empty"):
        read_image_input(empty, "image")
    with pytest.raises(RequestError, match="cannot read"):
        read_image_input(tmp_path, "image")


def test_oversized_image_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as handle:
        handle.truncate(MAX_IMAGE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(RequestError, match="more than the"):
        read_image_input(huge, "image")


def test_image_format_is_sniffed_by_magic() -> None:
    assert sniff_image_format(PNG) == "png"
    assert sniff_image_format(b"RIFF\x10\x00\x00\x00WEBPVP8L") == "webp"
    assert sniff_image_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_image_format(b"PK\x03\x04") is None
    assert sniff_image_format(b"") is None


def test_progress_and_result() -> None:
    assert ProgressEvent(7, 28).fraction == 0.25
    assert ProgressEvent(30, 28).fraction == 1.0
    assert ProgressEvent(0, 0).fraction == 0.0
    request = GenerationRequest("x", seed=5)
    image = GeneratedImage(PNG, "png", 5, ImageMetadata(prompt="x", seed=5), request)
    assert (image.seed, image.metadata.seed, image.request.seed, image.index) == (5, 5, 5, 0)
