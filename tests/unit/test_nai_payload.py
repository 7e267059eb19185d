"""The NovelAI request body: hand-written golden bodies per model family and action, checked field by field,
plus the refusals, image preparation and invariants the web relies on."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nai_model_ids import CURRENT_MODELS, INPAINTING_IDS
from PIL import Image

from peropix_tui.engine.nai.imageprep import letterbox_v3_vibe, prepare_mask, prepare_source_image
from peropix_tui.engine.nai.payload import (
    build_payload,
    check_request,
    enhance_request,
    redacted_payload,
    snap_size,
)
from peropix_tui.engine.types import (
    CharacterPrompt,
    CharacterReference,
    GenerationRequest,
    RequestError,
    UcPreset,
    VibeRef,
)

GOLDEN_DIR = Path(__file__).parent.parent / "fixtures" / "nai_payloads"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.json"))


def gradient_png(width: int, height: int) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    rgb = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) / 2 % 256], axis=-1
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def box_mask_png(width: int, height: int) -> bytes:
    """Black with a white box whose edges are off the 8-pixel grid and anti-aliased grey."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[height // 4 + 3 : height // 2 + 5, width // 4 + 1 : width // 2 + 7] = 255
    pixels[height // 4 + 2, width // 4 + 1 : width // 2 + 7] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def _image(spec: str) -> bytes:
    kind, size = spec.split()
    width, height = (int(v) for v in size.split("x"))
    return gradient_png(width, height) if kind == "gradient" else box_mask_png(width, height)


def request_from(spec: dict[str, Any]) -> GenerationRequest:
    kwargs = dict(spec)
    if "characters" in kwargs:
        kwargs["characters"] = tuple(CharacterPrompt(**c) for c in kwargs["characters"])
    if "vibes" in kwargs:
        vibes = []
        for vibe in kwargs["vibes"]:
            vibe = dict(vibe)
            if "encoding" in vibe:
                vibe["encoding"] = vibe["encoding"].encode()
            if "image" in vibe:
                vibe["image"] = _image(vibe["image"])
            vibes.append(VibeRef(**vibe))
        kwargs["vibes"] = tuple(vibes)
    if "character_reference" in kwargs:
        ref = dict(kwargs["character_reference"])
        ref["image"] = _image(ref["image"])
        kwargs["character_reference"] = CharacterReference(**ref)
    for key in ("image", "mask"):
        if key in kwargs:
            kwargs[key] = _image(kwargs[key])
    if "uc_preset" in kwargs and kwargs["uc_preset"] is not None:
        kwargs["uc_preset"] = UcPreset(kwargs["uc_preset"])
    return GenerationRequest(**kwargs)


def _image_placeholder(expected: str, actual: object, path: str) -> list[str]:
    kind, size = expected.strip("<>").split()
    if not isinstance(actual, str):
        return [f"{path}: expected base64 {kind}, got {actual!r}"]
    data = base64.b64decode(actual, validate=True)
    image = Image.open(io.BytesIO(data))
    found = f"{(image.format or '').lower()} {image.width}x{image.height}"
    wanted = f"{kind} {size}"
    return [] if found == wanted else [f"{path}: expected {wanted}, got {found}"]


def field_differences(expected: Any, actual: Any, path: str = "body") -> list[str]:
    """Every field where `actual` differs from `expected`, by path; types must match too (1 vs true)."""
    if isinstance(expected, str) and expected.startswith("<") and expected.endswith(">"):
        return _image_placeholder(expected, actual, path)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        diffs = [f"{path}.{key}: missing" for key in expected if key not in actual]
        diffs += [f"{path}.{key}: unexpected field" for key in actual if key not in expected]
        for key in expected.keys() & actual.keys():
            diffs += field_differences(expected[key], actual[key], f"{path}.{key}")
        return diffs
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r}"]
        diffs = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            diffs += field_differences(want, got, f"{path}[{index}]")
        return diffs
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda p: p.stem)
def test_body_matches_the_hand_written_web_shape_field_by_field(golden: Path) -> None:
    case = json.loads(golden.read_text(encoding="utf-8"))
    body = build_payload(request_from(case["request"]))
    diffs = field_differences(case["body"], body)
    assert not diffs, "\n".join(diffs)


def test_there_is_a_golden_file_for_every_current_model_family_and_action() -> None:
    bodies = [json.loads(p.read_text(encoding="utf-8"))["body"] for p in GOLDEN_FILES]
    models = {b["model"].removesuffix("-inpainting") for b in bodies}
    assert models >= {*CURRENT_MODELS, "nai-diffusion-2"}
    assert {b["action"] for b in bodies} == {"generate", "img2img", "infill"}


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda p: p.stem)
def test_prompt_mirrors_are_kept_equal(golden: Path) -> None:
    body = build_payload(request_from(json.loads(golden.read_text(encoding="utf-8"))["request"]))
    params = body["parameters"]
    if "v4_prompt" in params:
        assert body["input"] == params["v4_prompt"]["caption"]["base_caption"]
        assert params["negative_prompt"] == params["v4_negative_prompt"]["caption"]["base_caption"]
    json.dumps(body, allow_nan=False)  # plain JSON, nothing a server could not parse


# --- characters -----------------------------------------------------------------------------------------

_POSITIONS = st.one_of(st.none(), st.sampled_from([f"{c}{r}" for c in "ABCDE" for r in "12345"]))
_TEXT = st.text(alphabet="abc ,:{}[]", max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    characters=st.lists(
        st.builds(CharacterPrompt, prompt=_TEXT, negative=_TEXT, position=_POSITIONS, enabled=st.booleans()),
        max_size=8,
    )
)
def test_character_arrays_always_have_equal_length_and_centers(characters: list[CharacterPrompt]) -> None:
    enabled = [c for c in characters if c.enabled]
    request = GenerationRequest("1girl", seed=1, characters=tuple(characters))
    if len(enabled) > 6:
        with pytest.raises(RequestError, match="at most 6 characters"):
            build_payload(request)
        return
    params = build_payload(request)["parameters"]
    positive = params["v4_prompt"]["caption"]["char_captions"]
    negative = params["v4_negative_prompt"]["caption"]["char_captions"]
    assert len(positive) == len(negative) == len(params["characterPrompts"]) == len(enabled)
    assert all(len(entry["centers"]) == 1 for entry in positive + negative)
    expected_coords = any(c.position is not None for c in enabled)
    assert params["use_coords"] is params["v4_prompt"]["use_coords"] is expected_coords
    for entry, neg, character in zip(positive, negative, enabled, strict=True):
        assert entry["centers"] == neg["centers"]
        if character.position is None:
            assert entry["centers"] == [{"x": 0.5, "y": 0.5}]


def test_character_comma_spacing_is_normalised_like_the_web() -> None:
    request = GenerationRequest("a", seed=1, characters=(CharacterPrompt("girl ,red eyes", "blurry,lowres"),))
    params = build_payload(request)["parameters"]
    assert params["characterPrompts"][0]["prompt"] == "girl, red eyes"
    assert params["v4_negative_prompt"]["caption"]["char_captions"][0]["char_caption"] == "blurry, lowres"


# --- refusals -------------------------------------------------------------------------------------------

_IMG = gradient_png(832, 1216)
_ENC = VibeRef(encoding=b"enc")


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"model": "nai-diffusion-9"}, "model", "unknown NovelAI model"),
        ({"width": 2048, "height": 2048}, "size", "more than 3145728 pixels"),
        ({"steps": 51}, "steps", "at most 50"),
        ({"scale": 11.0}, "scale", "at most 10"),
        ({"seed": 0}, "seed", "0 would be a random"),
        ({"seed": 1 << 32}, "seed", "go from 1 to 4294967295"),
        ({"n": 5}, "n", "at most 4 images"),
        ({"sampler": "ddim_v3"}, "sampler", "not offered"),
        ({"scheduler": "native"}, "scheduler", "not offered"),
        ({"smea": True}, "smea", "only on V3"),
        ({"model": "nai-diffusion-3", "sampler": "ddim", "smea": True}, "smea", "DDIM"),
        ({"model": "nai-diffusion-5-full", "variety": True}, "variety", "not offered"),
        ({"model": "nai-diffusion-4-curated-preview", "dataset": "fur"}, "dataset", "not offered"),
        ({"model": "nai-diffusion-3", "characters": (CharacterPrompt("x"),)}, "characters", "no character"),
        ({"characters": tuple(CharacterPrompt(str(i)) for i in range(7))}, "characters", "at most 6"),
        (
            {"model": "nai-diffusion-2", "scale": 10, "uc_preset": None, "image": _IMG, "mask": _IMG},
            "model",
            "no inpainting",
        ),
        ({"model": "nai-diffusion-5-full", "vibes": (_ENC,)}, "vibes", "no vibe transfer"),
        ({"image": _IMG, "mask": _IMG, "vibes": (_ENC,)}, "vibes", "inpainting"),
        (
            {"vibes": (_ENC,), "character_reference": CharacterReference(_IMG)},
            "vibes",
            "cannot be used together",
        ),
        ({"vibes": (_ENC,) * 17}, "vibes", "at most 16"),
        ({"vibes": (VibeRef(image=_IMG),)}, "vibes", "not encoded"),
        (
            {"vibes": (VibeRef(encoding=b"e", encoding_model="nai-diffusion-4-full"),)},
            "vibes",
            "encoded for nai-diffusion-4-full",
        ),
        ({"model": "nai-diffusion-3", "vibes": (_ENC,)}, "vibes", "needs the reference image"),
        (
            {"model": "nai-diffusion-4-full", "character_reference": CharacterReference(_IMG)},
            "character_reference",
            "only V4.5",
        ),
        (
            {"image": _IMG, "mask": _IMG, "character_reference": CharacterReference(_IMG)},
            "character_reference",
            "inpainting",
        ),
        ({"extra": {"seed": 5}}, "extra", "seed come from the request"),
        ({"model": "nai-diffusion-4-full", "uc_preset": UcPreset.HUMAN_FOCUS}, "uc_preset", "not offered"),
    ],
)
def test_requests_the_server_would_refuse_are_refused_with_the_field_named(
    kwargs: dict[str, Any], field: str, words: str
) -> None:
    request = GenerationRequest("1girl", **{"seed": 1, **kwargs})
    with pytest.raises(RequestError, match=words) as caught:
        build_payload(request)
    assert caught.value.field == field
    assert "\n" not in str(caught.value)


def test_unresolved_seed_is_refused_and_resolved_seed_is_sent() -> None:
    with pytest.raises(RequestError, match="resolved"):
        build_payload(GenerationRequest("1girl"))
    resolved = GenerationRequest("1girl").resolved()
    assert resolved.seed is not None
    assert build_payload(resolved)["parameters"]["seed"] == resolved.seed


def test_check_request_catches_presets_the_model_lacks() -> None:
    with pytest.raises(RequestError, match="not offered"):
        check_request(GenerationRequest("x", seed=1, model="nai-diffusion-2", uc_preset=UcPreset.HEAVY, scale=10))


def test_check_request_does_not_read_images(tmp_path: Path) -> None:
    # Validation alone (used for --dry-run cost display) must not need the files yet.
    request = GenerationRequest("1girl", seed=1, image=tmp_path / "later.png")
    assert check_request(request).id == "nai-diffusion-4-5-full"


# --- model-specific rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "infill"),
    [*INPAINTING_IDS, ("nai-diffusion-4-5-full-inpainting", "nai-diffusion-4-5-full-inpainting")],
)
def test_infill_names_the_inpainting_model(model: str, infill: str) -> None:
    mask = box_mask_png(832, 1216)
    # No undesired-content preset: the V1 models offer none, and the infill id is what is tested here.
    request = GenerationRequest("x", model=model, seed=1, image=_IMG, mask=mask, uc_preset=UcPreset.NONE)
    body = build_payload(request)
    assert body["model"] == infill
    assert body["action"] == "infill"
    assert "reference_image_multiple" not in body["parameters"]


def test_v3_pseudo_samplers_become_euler_ancestral_with_smea() -> None:
    params = build_payload(GenerationRequest("x", model="nai-diffusion-3", seed=1, sampler="nai_smea_dyn"))[
        "parameters"
    ]
    assert (params["sampler"], params["sm"], params["sm_dyn"]) == ("k_euler_ancestral", True, True)


def test_img2img_turns_smea_off_and_euler_native_has_no_brownian_flags() -> None:
    request = GenerationRequest(
        "x", model="nai-diffusion-3", seed=9, smea=True, scheduler="native", image=gradient_png(64, 64)
    )
    params = build_payload(request)["parameters"]
    assert (params["sm"], params["sm_dyn"]) == (False, False)
    assert "prefer_brownian" not in params
    assert "deliberate_euler_ancestral_bug" not in params


def test_variety_sigma_scales_with_size_on_v4_5() -> None:
    params = build_payload(GenerationRequest("x", seed=1, width=1024, height=1024, variety=True))["parameters"]
    assert params["skip_cfg_above_sigma"] == 59.04722600415217  # 58 * sqrt(1048576 / 1011712), as NovelAI sends


def test_extra_fields_pass_through() -> None:
    body = build_payload(GenerationRequest("x", seed=1, extra={"dynamic_thresholding": True, "image_format": "webp"}))
    assert body["parameters"]["dynamic_thresholding"] is True
    assert body["parameters"]["image_format"] == "webp"


def test_images_can_come_from_files(tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(gradient_png(100, 100))
    body = build_payload(GenerationRequest("x", seed=1, width=64, height=128, image=source))
    decoded = Image.open(io.BytesIO(base64.b64decode(body["parameters"]["image"])))
    assert decoded.size == (64, 128)
    missing = GenerationRequest("x", seed=1, image=tmp_path / "missing.png")
    with pytest.raises(RequestError, match=r"image: cannot read .*missing\.png"):
        build_payload(missing)


def test_non_image_source_gives_a_one_line_error() -> None:
    with pytest.raises(RequestError, match="image: not an image") as caught:
        build_payload(GenerationRequest("x", seed=1, image=b"not a picture"))
    assert "\n" not in str(caught.value)


# --- image preparation ----------------------------------------------------------------------------------


def test_source_of_the_right_size_is_sent_untouched_and_others_are_resized() -> None:
    exact = gradient_png(832, 1216)
    assert prepare_source_image(exact, 832, 1216) == exact
    resized = Image.open(io.BytesIO(prepare_source_image(gradient_png(300, 200), 832, 1216)))
    assert (resized.format, resized.size) == ("PNG", (832, 1216))
    jpeg = io.BytesIO()
    Image.new("RGB", (832, 1216), (10, 20, 30)).save(jpeg, format="JPEG")
    converted = Image.open(io.BytesIO(prepare_source_image(jpeg.getvalue(), 832, 1216)))
    assert converted.format == "PNG"


def _mask_array(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGBA"
    return np.asarray(image)


def test_mask_is_pure_black_and_white_opaque_and_on_the_8x8_grid() -> None:
    mask = _mask_array(prepare_mask(box_mask_png(256, 192), 256, 192))
    assert mask.shape == (192, 256, 4)
    assert set(np.unique(mask[..., :3])) <= {0, 255}
    assert (mask[..., 3] == 255).all()
    assert (mask[..., 0] == mask[..., 1]).all() and (mask[..., 1] == mask[..., 2]).all()
    cells = mask[..., 0].reshape(24, 8, 32, 8)
    assert (cells.min(axis=(1, 3)) == cells.max(axis=(1, 3))).all(), "a cell is half painted"
    # The anti-aliased grey row and off-grid edges are covered, never cut.
    source = np.asarray(Image.open(io.BytesIO(box_mask_png(256, 192))))
    assert (mask[..., 0][source >= 128] == 255).all()


def test_mask_from_a_brush_layer_on_transparency() -> None:
    layer = np.zeros((64, 64, 4), dtype=np.uint8)
    layer[8:16, 8:16] = (255, 255, 255, 255)
    layer[40:48, 40:48] = (255, 255, 255, 0)  # invisible white: not painted
    buffer = io.BytesIO()
    Image.fromarray(layer, "RGBA").save(buffer, format="PNG")
    mask = _mask_array(prepare_mask(buffer.getvalue(), 64, 64))
    assert (mask[8:16, 8:16, 0] == 255).all()
    assert mask[..., 0].sum() == 64 * 255


def test_mask_of_another_size_is_scaled_and_an_empty_mask_is_refused() -> None:
    assert _mask_array(prepare_mask(box_mask_png(104, 152), 832, 1216)).shape == (1216, 832, 4)
    with pytest.raises(RequestError, match="mask: marks nothing"):
        prepare_mask(_black_png(64, 64), 64, 64)


def _black_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def test_v3_vibe_is_letterboxed_to_448() -> None:
    image = Image.open(io.BytesIO(letterbox_v3_vibe(gradient_png(300, 600))))
    assert image.size == (448, 448)
    alpha = np.asarray(image)[..., 3]
    assert alpha[:, :100].max() == 0 and alpha[:, 200].min() == 255  # 224 wide, centred


# --- redaction, sizes, enhance --------------------------------------------------------------------------


def test_redacted_payload_elides_every_image_and_keeps_the_rest() -> None:
    request = GenerationRequest(
        "1girl",
        seed=1,
        image=_IMG,
        character_reference=CharacterReference(gradient_png(500, 500)),
    )
    body = build_payload(request)
    redacted = redacted_payload(body)
    text = json.dumps(redacted)
    assert body["parameters"]["image"] not in text
    assert body["parameters"]["director_reference_images"][0] not in text
    assert redacted["parameters"]["image"].startswith("<image data, ")
    assert redacted["parameters"]["seed"] == 1
    assert redacted["input"] == body["input"]
    assert body["parameters"]["image"].startswith("iVBOR")  # the original is untouched
    size = len(base64.b64decode(body["parameters"]["image"]))
    assert redacted["parameters"]["image"] == f"<image data, {size} bytes>"


def test_snap_size_takes_the_nearest_grid_size_within_the_pixel_limit() -> None:
    assert snap_size(1080, 1920) == (1088, 1920)
    assert snap_size(20, 20) == (64, 64)
    width, height = snap_size(1536, 2304)
    assert width * height <= 3_145_728 and width % 64 == 0 and height % 64 == 0


def test_enhance_is_img2img_at_one_and_a_half_times_with_the_magnitude_preset() -> None:
    request = GenerationRequest("1girl", seed=3, image=gradient_png(832, 1216), mask=box_mask_png(832, 1216))
    enhanced = enhance_request(request, upscale=True, magnitude=5)
    assert (enhanced.width, enhanced.height) == (1280, 1856)  # 1248 x 1824 is 19.5 x 28.5 cells: halves round up
    assert (enhanced.strength, enhanced.noise) == (0.7, 0.1)
    assert enhanced.mask is None and enhanced.quality_tags is False
    assert enhanced.prompt == "1girl, very aesthetic, masterpiece, no text, -2::upscaled, blurry::,"
    body = build_payload(enhanced)
    assert body["action"] == "img2img"
    assert enhance_request(request, upscale=False, magnitude=1).width == 832
    with pytest.raises(RequestError, match="magnitude"):
        enhance_request(request, magnitude=6)
    with pytest.raises(RequestError, match="needs the image"):
        enhance_request(GenerationRequest("x"))
