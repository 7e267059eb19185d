"""Image inputs as the parameter form holds them: the request fields they become, the engine's refusals they carry,
the one-line summary, and reading the files they name (sources, masks, references, vibe images and vibe files)."""

from __future__ import annotations

import io
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.engine.nai.models import MODELS, VibeSupport, model_spec
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.nai.vibe_files import (
    BUNDLE_SUFFIX,
    VIBE_SUFFIX,
    VibeFileError,
    make_vibe_file,
    save_vibes,
    sha256_hex,
)
from peropix_tui.engine.types import Action, CharacterPrompt, GenerationRequest, RequestError
from peropix_tui.widgets.image_entries import ReferenceEntry, SourceEntry, VibeEntry
from peropix_tui.widgets.image_files import (
    ImageFileError,
    check_mask,
    load_reference,
    load_source,
    load_vibe_entries,
    resolve_path,
    vibe_states,
)
from peropix_tui.widgets.image_inputs import VIBE_FILE_SUFFIXES, ImageInputs
from peropix_tui.widgets.path_input import complete_path

V45 = "nai-diffusion-4-5-full"
V4 = "nai-diffusion-4-full"
V3 = "nai-diffusion-3"
V5 = "nai-diffusion-5-full"
MODERN = sorted(spec.id for spec in MODELS.values() if not spec.legacy)


def png(path: Path, size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (200, 40, 90)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def vibe(path: Path, strength: float = 0.6, information_extracted: float = 1.0) -> VibeEntry:
    return VibeEntry(path, path.name, "ab" * 32, strength, information_extracted)


def source(path: Path, mask: Path | None = None) -> SourceEntry:
    return SourceEntry(path, 100, 100, (128, 128), strength=0.5, noise=0.1, mask=mask)


# --- request fields and refusals -----------------------------------------------------------------------------


def test_inputs_become_the_request_fields(tmp_path: Path) -> None:
    characters = (CharacterPrompt("1girl", "bad", "B2"), CharacterPrompt("1boy", enabled=False))
    inputs = ImageInputs(characters, (vibe(tmp_path / "v.png", strength=0.4, information_extracted=0.8),))
    request = inputs.applied_to(GenerationRequest("x", seed=5))
    assert request.characters == characters
    [ref] = request.vibes
    assert (ref.image, ref.strength, ref.information_extracted, ref.encoding) == (tmp_path / "v.png", 0.4, 0.8, None)
    assert request.action is Action.GENERATE and request.seed == 5

    with_source = ImageInputs(source=source(tmp_path / "s.png"))
    request = with_source.applied_to(GenerationRequest("x", characters=characters))
    assert request.characters == ()  # the inputs replace what the request had
    assert (request.action, request.image, request.strength, request.noise) == (
        Action.IMG2IMG,
        tmp_path / "s.png",
        0.5,
        0.1,
    )
    inpaint = ImageInputs(source=source(tmp_path / "s.png", tmp_path / "m.png")).applied_to(GenerationRequest("x"))
    assert inpaint.action is Action.INPAINT and inpaint.mask == tmp_path / "m.png"

    reference = ImageInputs(reference=ReferenceEntry(tmp_path / "r.png", 10, 10, fidelity=0.25, style_aware=False))
    charref = reference.applied_to(GenerationRequest("x")).character_reference
    assert charref is not None and (charref.fidelity, charref.style_aware) == (0.25, False)
    assert ImageInputs().applied_to(GenerationRequest("x")) == GenerationRequest("x")


@pytest.mark.parametrize(
    ("model", "inputs", "refusal"),
    [
        (
            V45,
            ImageInputs(vibes=(vibe(Path("v")),), reference=ReferenceEntry(Path("r"), 1, 1)),
            "cannot be used together",
        ),
        (V45, ImageInputs(vibes=(vibe(Path("v")),), source=source(Path("s"), Path("m"))), "combined with inpainting"),
        (V45, ImageInputs(reference=ReferenceEntry(Path("r"), 1, 1), source=source(Path("s"), Path("m"))), "inpaint"),
        (V4, ImageInputs(reference=ReferenceEntry(Path("r"), 1, 1)), "only V4.5 models take a character reference"),
        (V5, ImageInputs(vibes=(vibe(Path("v")),)), "has no vibe transfer"),
        (V3, ImageInputs((CharacterPrompt("a"),)), "has no character prompts"),
        (V45, ImageInputs(vibes=tuple(vibe(Path(f"{i}")) for i in range(17))), "at most 16 vibes"),
    ],
)
def test_what_the_model_cannot_take_is_refused_in_the_engines_words(
    model: str, inputs: ImageInputs, refusal: str
) -> None:
    problem = inputs.problem(model)
    assert problem is not None and refusal in problem
    with pytest.raises(RequestError, match=refusal):
        inputs.check(model)


@pytest.mark.parametrize("model", MODERN)
def test_what_each_model_takes_is_not_refused(model: str) -> None:
    spec = model_spec(model)
    inputs = ImageInputs(
        characters=tuple(CharacterPrompt(f"c{i}", position="C3") for i in range(spec.max_characters)),
        vibes=(vibe(Path("v")),) if spec.vibes is not VibeSupport.NONE else (),
        source=source(Path("s")),
    )
    assert inputs.problem(model) is None
    assert ImageInputs(source=source(Path("s"), Path("m"))).problem(model) is None


@given(model=st.sampled_from(MODERN), count=st.integers(0, 40), enabled=st.booleans())
def test_the_character_limit_is_the_models(model: str, count: int, enabled: bool) -> None:
    characters = tuple(CharacterPrompt(f"c{i}", enabled=enabled) for i in range(count))
    problem = ImageInputs(characters).problem(model)
    limit = model_spec(model).max_characters
    # switched-off characters are not sent, so they never count against the limit
    assert (problem is None) == (not enabled or count <= limit)


def test_summary_line() -> None:
    assert ImageInputs().summary() == ""
    two = (CharacterPrompt("a"), CharacterPrompt("b", enabled=False))
    vibes = (vibe(Path("v1")), vibe(Path("v2")))
    inputs = ImageInputs(two, vibes, source=source(Path("s")))
    assert inputs.summary() == "2 characters (1 off) · 2 vibes · img2img 0.50"
    assert inputs.summary(lambda v: True) == "2 characters (1 off) · 2 vibes (cached) · img2img 0.50"
    assert inputs.summary(lambda v: v is vibes[0]) == "2 characters (1 off) · 2 vibes (1 cached) · img2img 0.50"
    assert inputs.summary(lambda v: False) == "2 characters (1 off) · 2 vibes (to encode) · img2img 0.50"
    assert inputs.summary(lambda v: None) == "2 characters (1 off) · 2 vibes · img2img 0.50"
    reference = ImageInputs(reference=ReferenceEntry(Path("r"), 1, 1, fidelity=0.5))
    assert reference.summary() == "reference 0.50, style"
    assert ImageInputs(source=source(Path("s"), Path("m"))).summary() == "inpaint 0.50"


# --- reading files -------------------------------------------------------------------------------------------


def test_resolve_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_path(" pics/a.png ") == tmp_path / "pics" / "a.png"
    assert resolve_path("~/a.png") == tmp_path / "home" / "a.png"
    assert resolve_path("/x/y.png") == Path("/x/y.png")
    with pytest.raises(ImageFileError, match="no file given"):
        resolve_path("  ")


def test_a_source_fits_the_nearest_novelai_size(tmp_path: Path) -> None:
    entry = load_source(png(tmp_path / "s.png", (1000, 1500)), strength=0.4)
    assert (entry.width, entry.height, entry.strength) == (1000, 1500, 0.4)
    assert entry.fit[0] % 64 == 0 and entry.fit[1] % 64 == 0
    assert abs(entry.fit[0] / entry.fit[1] - 1000 / 1500) < 0.05


def test_bad_files_are_one_line_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, words in (
        (tmp_path / "missing.png", "no such file"),
        (text, "not an image that can be read"),
        (empty, "the image is empty"),
    ):
        for load in (load_source, load_reference):
            with pytest.raises(ImageFileError) as caught:
                load(path)
            message = str(caught.value)
            assert str(path) in message and words in message and "\n" not in message
    with pytest.raises(ImageFileError, match="marks nothing to repaint"):
        check_mask(png(tmp_path / "black.png", colour=(0, 0, 0)), 128, 128)
    check_mask(png(tmp_path / "white.png", colour=(255, 255, 255)), 128, 128)


def test_vibe_images_and_vibe_files(tmp_path: Path) -> None:
    picture = png(tmp_path / "mood.png")
    [entry] = load_vibe_entries(picture, None)
    assert entry.file is None and entry.image_sha256 == sha256_hex(picture.read_bytes())
    assert entry.ref(V45).image == picture

    cache = VibeCache(tmp_path / "cache")
    image = png_bytes()
    one = make_vibe_file(image, [(V45, 0.7, b"encoded-v45")], strength=0.3, name="one")
    two = make_vibe_file(png_bytes((32, 32)), [(V4, 1.0, b"encoded-v4")], include_image=False, name="two")
    save_vibes(tmp_path / f"pair{BUNDLE_SUFFIX}", [one, two])
    entries = load_vibe_entries(tmp_path / f"pair{BUNDLE_SUFFIX}", cache)
    assert [(e.name, e.strength, e.information_extracted) for e in entries] == [("one", 0.3, 0.7), ("two", 0.6, 1.0)]
    # the file's encodings went into the cache: never paid for again
    assert cache.get(VibeKey.of(image, V45, 0.7)) == b"encoded-v45"
    assert entries[0].ref(V45).encoding == b"encoded-v45"
    with pytest.raises(RequestError, match="not for"):
        entries[1].ref(V45)  # encoding-only, made for V4 only

    assert vibe_states(entries, V45, cache) == (True, None)
    assert vibe_states(entries, V3, cache) == (None, None)  # V3 takes images, not encodings
    assert vibe_states(entries, V5, cache) == (None, None)
    assert vibe_states([entry], V45, None) == (False,)
    assert vibe_states([entry], V45, cache) == (False,)
    cache.put(VibeKey.of(picture.read_bytes(), V45, 1.0), b"made-earlier")
    assert vibe_states([entry], V45, cache) == (True,)
    assert vibe_states([entry], V4, cache) == (False,)  # another family needs its own encoding

    (tmp_path / f"broken{VIBE_SUFFIX}").write_text("{not json")
    with pytest.raises(VibeFileError, match="not JSON"):
        load_vibe_entries(tmp_path / f"broken{VIBE_SUFFIX}", cache)


def test_vibe_file_suffixes_are_the_engines() -> None:
    assert VIBE_FILE_SUFFIXES == (VIBE_SUFFIX, BUNDLE_SUFFIX)


# --- path completion -----------------------------------------------------------------------------------------


def test_path_completion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(b"")
    (tmp_path / "pics" / "cat.txt").write_bytes(b"")
    (tmp_path / "pics" / ".hidden.png").write_bytes(b"")
    (tmp_path / "pictures").mkdir()
    base = str(tmp_path) + os.sep
    assert complete_path(base + "pic") == base + "pics" + os.sep
    assert complete_path(base + "pict") == base + "pictures" + os.sep
    assert complete_path(base + "pics") == base + "pics" + os.sep
    assert complete_path(base + "pics/c", (".png",)) == base + "pics/cat.png"
    assert complete_path(base + "pics/cat.", (".txt",)) == base + "pics/cat.txt"
    assert complete_path(base + "pics/cat.png", (".png",)) is None  # nothing more to add
    assert complete_path(base + "pics/", (".png",)) == base + "pics/cat.png"  # hidden files only asked for
    assert complete_path(base + "pics/.", (".png",)) == base + "pics/.hidden.png"
    assert complete_path(base + "nowhere/x") is None
    assert complete_path("") is None
    monkeypatch.chdir(tmp_path)
    assert complete_path("pi") == "pics" + os.sep
    monkeypatch.setenv("HOME", str(tmp_path))
    assert complete_path("~/pict") == "~/pictures" + os.sep


@given(
    names=st.sets(st.text(string.ascii_lowercase + "._-", min_size=1, max_size=6), max_size=12),
    typed=st.text(string.ascii_lowercase + ".", max_size=3),
)
def test_completion_is_the_first_matching_name(names: set[str], typed: str) -> None:
    names = {n for n in names if n not in (".", "..")}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            (Path(folder) / name).write_bytes(b"")
        got = complete_path(folder + os.sep + typed)
        visible = [n for n in names if n.startswith(typed) and n != typed and (typed[:1] == "." or n[:1] != ".")]
        expected = folder + os.sep + min(visible) if visible else None
        assert got == expected
