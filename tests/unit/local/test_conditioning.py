"""Prompt → conditioning: windows (75-token chunks, BREAK, whole short words, pads, empty prompt), A1111
"Original" emphasis, SDXL/SD1.5 layer choice checked against transformers' CLIP models holding the same
weights, the prompt cache, and the CFG padding helper's invariance on a real attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from peropix_tui.core.clip_tokenizer import BOS, EOS, clip_tokenizer
from peropix_tui.engine.local.clip import ClipTextModel
from peropix_tui.engine.local.conditioning import (
    MAX_WINDOWS,
    PAD_G,
    PAD_L,
    ConditioningError,
    PromptCache,
    TextEncoders,
    Window,
    encode_prompt,
    pad_to_same_length,
    prompt_windows,
)

CAT = 2368
DOG = 1929


def hf_model(*, width: int, act: str, projection: bool, seed: int) -> CLIPTextModel | CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=width * 2,
        num_attention_heads=width // 64,
        num_hidden_layers=3,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=48,
        eos_token_id=EOS,
        bos_token_id=BOS,
        pad_token_id=EOS,
    )
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.1
            param.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)
    return model


@pytest.fixture(scope="module")
def hf_l() -> CLIPTextModel:
    model = hf_model(width=64, act="quick_gelu", projection=False, seed=11)
    assert isinstance(model, CLIPTextModel)
    return model


@pytest.fixture(scope="module")
def hf_g() -> CLIPTextModelWithProjection:
    model = hf_model(width=128, act="gelu", projection=True, seed=12)
    assert isinstance(model, CLIPTextModelWithProjection)
    return model


def ours(model: torch.nn.Module) -> ClipTextModel:
    sd = {key.removeprefix("text_model."): value for key, value in model.state_dict().items()}
    return ClipTextModel.from_state_dict(sd, dtype=torch.float32, device="cpu")


@pytest.fixture
def sd15(hf_l: CLIPTextModel) -> TextEncoders:
    return TextEncoders(clip_l=ours(hf_l))


@pytest.fixture
def sdxl(hf_l: CLIPTextModel, hf_g: CLIPTextModelWithProjection) -> TextEncoders:
    return TextEncoders(clip_l=ours(hf_l), clip_g=ours(hf_g))


def ids(windows: list[Window], pad: int) -> Tensor:
    return torch.tensor([window.ids(pad) for window in windows])


def emphasised(z: Tensor, windows: list[Window]) -> Tensor:
    """The documented rule, written out: z *= w, then z *= mean_before / mean_after, per window."""
    rows = []
    for row, window in zip(z, windows, strict=True):
        weights = torch.tensor(window.padded_weights())[:, None]
        scaled = row * weights
        rows.append(scaled * (row.mean() / scaled.mean()))
    return torch.stack(rows)


# --- windows -----------------------------------------------------------------------------------------------


def test_window_ids_pad_per_encoder() -> None:
    (window,) = prompt_windows("a photo of a cat")
    assert window.tokens == (320, 1125, 539, 320, CAT)
    assert window.ids(PAD_L) == [BOS, 320, 1125, 539, 320, CAT, EOS] + [EOS] * 70
    assert window.ids(PAD_G) == [BOS, 320, 1125, 539, 320, CAT, EOS] + [0] * 70
    assert window.padded_weights() == [1.0] * 77


def test_empty_prompt_is_one_real_window() -> None:
    assert prompt_windows("") == [Window((), ())]
    assert prompt_windows("   <lora:style:0.7>  ") == [Window((), ())]
    assert Window((), ()).ids(PAD_G) == [BOS, EOS] + [0] * 75


def test_75_tokens_fit_one_window_and_76_need_two() -> None:
    assert [len(w.tokens) for w in prompt_windows("cat " * 75)] == [75]
    windows = prompt_windows("cat " * 75 + "dog")
    assert [w.tokens for w in windows] == [(CAT,) * 75, (DOG,)]


def test_break_starts_a_new_window_as_a1111_does() -> None:
    assert [w.tokens for w in prompt_windows("cat BREAK dog")] == [(CAT,), (DOG,)]
    assert [w.tokens for w in prompt_windows("BREAK dog")] == [(), (DOG,)]
    assert [w.tokens for w in prompt_windows("cat BREAK")] == [(CAT,)]
    assert [w.tokens for w in prompt_windows("cat BREAK BREAK dog")] == [(CAT,), (), (DOG,)]
    assert [w.tokens for w in prompt_windows("BREAKfast")] != [(), ()]


def test_short_words_move_whole_long_words_are_cut() -> None:
    digits = clip_tokenizer().encode("1234567890")
    assert len(digits) == 10
    # 73 tokens, then a 3-token word: it does not fit, so it opens the next window.
    windows = prompt_windows("cat " * 73 + "123")
    assert [len(w.tokens) for w in windows] == [73, 3]
    assert windows[1].tokens == tuple(digits[:3])
    # 7 tokens is still a short word; 8 and more may be cut at the window's end.
    assert [len(w.tokens) for w in prompt_windows("cat " * 70 + "1234567")] == [70, 7]
    assert [len(w.tokens) for w in prompt_windows("cat " * 70 + "12345678")] == [75, 3]
    windows = prompt_windows("cat " * 70 + "1234567890 dog")
    assert [len(w.tokens) for w in windows] == [75, 6]
    assert windows[0].tokens[70:] + windows[1].tokens == (*digits, DOG)


def test_weights_follow_the_sd_dialect() -> None:
    (window,) = prompt_windows("(cat:1.5) dog [cat] ((dog)) <lora:x:0.8>cat")
    assert window.tokens == (CAT, DOG, CAT, DOG, CAT)
    assert window.weights == pytest.approx((1.5, 1.0, 1 / 1.1, 1.21, 1.0))
    assert window.padded_weights()[:7] == pytest.approx([1.0, 1.5, 1.0, 1 / 1.1, 1.21, 1.0, 1.0])


def test_too_many_windows_is_a_clear_error() -> None:
    assert len(prompt_windows("BREAK " * (MAX_WINDOWS - 1) + "cat")) == MAX_WINDOWS
    with pytest.raises(ConditioningError, match=f"more than {MAX_WINDOWS} windows"):
        prompt_windows("BREAK " * MAX_WINDOWS + "cat")
    with pytest.raises(ConditioningError):
        prompt_windows("cat " * (75 * MAX_WINDOWS + 1))


WORDS = st.sampled_from(["cat", "dog", "1girl", "123", "12345678", "1234567890123", "red dress", "a,b", "(cat:1.2)"])


@settings(max_examples=60, deadline=None)
@given(st.lists(WORDS, max_size=120))
def test_windows_keep_every_token_in_order(words: list[str]) -> None:
    prompt = " ".join(words)
    windows = prompt_windows(prompt)
    tokenizer = clip_tokenizer()
    plain = prompt.replace("(", "").replace(":1.2)", "")
    assert [t for w in windows for t in w.tokens] == tokenizer.encode(plain)
    assert all(len(w.tokens) == len(w.weights) <= 75 for w in windows)
    assert all(w.tokens for w in windows[:-1])
    # A short word is never cut: each window boundary falls between words or inside a long word.
    boundaries = set()
    position = 0
    for word in plain.split():
        position += len(tokenizer.encode(word))
        boundaries.add(position)
    cut = 0
    for window in windows[:-1]:
        cut += len(window.tokens)
        assert cut in boundaries or len(window.tokens) == 75


# --- encoding ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def test_sd15_clip_skip_1_and_2(sd15: TextEncoders, hf_l: CLIPTextModel) -> None:
    prompt = "a photo of a cat, " * 20  # 120 tokens: two windows
    windows = prompt_windows(prompt)
    assert len(windows) == 2
    ref = hf_l(input_ids=ids(windows, EOS), output_hidden_states=True)
    skip1 = encode_prompt(prompt, sd15, clip_skip=1)
    assert skip1.pooled is None
    assert skip1.context.shape == (1, 154, 64)
    torch.testing.assert_close(skip1.context, ref.last_hidden_state.reshape(1, 154, 64), atol=1e-5, rtol=1e-5)
    skip2 = encode_prompt(prompt, sd15, clip_skip=2)
    expected = hf_l.final_layer_norm(ref.hidden_states[-2]).reshape(1, 154, 64)
    torch.testing.assert_close(skip2.context, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(skip1.context, skip2.context)


@torch.inference_mode()
def test_sdxl_concatenates_penultimate_layers_and_pools_g(
    sdxl: TextEncoders, hf_l: CLIPTextModel, hf_g: CLIPTextModelWithProjection
) -> None:
    prompt = "masterpiece, best quality BREAK 1girl, red dress"
    windows = prompt_windows(prompt)
    ref_l = hf_l(input_ids=ids(windows, PAD_L), output_hidden_states=True)
    ref_g = hf_g(input_ids=ids(windows, PAD_G), output_hidden_states=True)
    result = encode_prompt(prompt, sdxl, clip_skip=2)  # clip skip does not apply to SDXL
    expected = torch.cat([ref_l.hidden_states[-2], ref_g.hidden_states[-2]], dim=-1).reshape(1, 154, 192)
    torch.testing.assert_close(result.context, expected, atol=1e-5, rtol=1e-5)
    assert result.pooled is not None
    torch.testing.assert_close(result.pooled, ref_g.text_embeds[:1], atol=1e-5, rtol=1e-5)
    # CLIP-G really sees zero padding: EOS padding gives another embedding.
    eos_padded = hf_g(input_ids=ids(windows, EOS), output_hidden_states=True).hidden_states[-2]
    assert not torch.allclose(result.context[0, :77, 64:], eos_padded[0], atol=1e-4)


@torch.inference_mode()
def test_empty_prompt_encodes_a_real_window(sdxl: TextEncoders, hf_g: CLIPTextModelWithProjection) -> None:
    result = encode_prompt("", sdxl)
    tokens = torch.tensor([[BOS, EOS] + [0] * 75])
    ref = hf_g(input_ids=tokens, output_hidden_states=True)
    assert result.context.shape == (1, 77, 192)
    torch.testing.assert_close(result.context[0, :, 64:], ref.hidden_states[-2][0], atol=1e-5, rtol=1e-5)
    assert result.pooled is not None
    assert result.pooled.abs().sum() > 0


@torch.inference_mode()
def test_a1111_original_emphasis(
    sdxl: TextEncoders, sd15: TextEncoders, hf_l: CLIPTextModel, hf_g: CLIPTextModelWithProjection
) -> None:
    prompt = "(cat:1.5), [dog], best quality"
    windows = prompt_windows(prompt)
    ref_l = hf_l(input_ids=ids(windows, PAD_L), output_hidden_states=True)
    ref_g = hf_g(input_ids=ids(windows, PAD_G), output_hidden_states=True)
    result = encode_prompt(prompt, sdxl)
    expected = torch.cat(
        [emphasised(ref_l.hidden_states[-2], windows), emphasised(ref_g.hidden_states[-2], windows)], dim=-1
    )
    torch.testing.assert_close(result.context, expected.reshape(1, 77, 192), atol=1e-5, rtol=1e-5)
    assert result.pooled is not None
    torch.testing.assert_close(result.pooled, ref_g.text_embeds, atol=1e-5, rtol=1e-5)  # pooled is not weighted
    # Written out for CLIP-L on the same tokens unweighted: the weighted token is scaled by 1.5 and every
    # row by the common factor that restores the window's mean.
    plain = encode_prompt("cat, dog, best quality", sdxl).context[0, :, :64]
    weighted = result.context[0, :, :64]
    weights = torch.tensor(windows[0].padded_weights())[:, None]
    factor = plain.mean() / (plain * weights).mean()
    torch.testing.assert_close(weighted[1], plain[1] * 1.5 * factor, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weighted[2], plain[2] * factor, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weighted.mean(), plain.mean(), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(weighted, plain, atol=1e-3)
    sd15_weighted = encode_prompt(prompt, sd15)
    torch.testing.assert_close(
        sd15_weighted.context, emphasised(ref_l.last_hidden_state, windows), atol=1e-5, rtol=1e-5
    )


@torch.inference_mode()
def test_emphasis_restores_each_window_mean(sd15: TextEncoders, hf_l: CLIPTextModel) -> None:
    prompt = "(cat:1.8), dog BREAK [[dog]], 1girl, (red dress:0.6)"
    windows = prompt_windows(prompt)
    assert len(windows) == 2
    ref = hf_l(input_ids=ids(windows, PAD_L)).last_hidden_state
    context = encode_prompt(prompt, sd15).context.reshape(2, 77, 64)
    torch.testing.assert_close(context, emphasised(ref, windows), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(context.mean(dim=(1, 2)), ref.mean(dim=(1, 2)), atol=1e-6, rtol=1e-5)


def test_bad_clip_skip(sd15: TextEncoders) -> None:
    for skip in (0, 4):
        with pytest.raises(ConditioningError, match=f"clip skip {skip} is outside 1..3"):
            encode_prompt("cat", sd15, clip_skip=skip)


# --- cache -------------------------------------------------------------------------------------------------


def test_cache_hits_until_weights_change(sd15: TextEncoders) -> None:
    first = encode_prompt("a photo of a cat", sd15)
    assert encode_prompt("a photo of a cat", sd15) is first
    assert encode_prompt("a photo of a cat", sd15, clip_skip=2) is not first
    version = sd15.version
    sd15.weights_changed()
    assert sd15.version == version + 1
    assert len(sd15.cache) == 0
    again = encode_prompt("a photo of a cat", sd15)
    assert again is not first
    torch.testing.assert_close(again.context, first.context)


def test_sdxl_cache_ignores_clip_skip(sdxl: TextEncoders) -> None:
    assert encode_prompt("cat", sdxl, clip_skip=1) is encode_prompt("cat", sdxl, clip_skip=2)


def test_prompt_cache_is_lru(sd15: TextEncoders) -> None:
    cache = PromptCache(size=2)
    a, b, c = (encode_prompt(text, sd15) for text in ("a", "b", "c"))
    cache.put(("a", 1, 0), a)
    cache.put(("b", 1, 0), b)
    assert cache.get(("a", 1, 0)) is a  # a is now the most recent
    cache.put(("c", 1, 0), c)
    assert cache.get(("b", 1, 0)) is None
    assert cache.get(("a", 1, 0)) is a
    assert cache.get(("c", 1, 0)) is c


# --- CFG batching --------------------------------------------------------------------------------------------


def cross_attention(query: Tensor, context: Tensor, wk: Tensor, wv: Tensor) -> Tensor:
    batch, length, _ = context.shape
    k = (context @ wk).view(batch, length, 2, -1).transpose(1, 2)
    v = (context @ wv).view(batch, length, 2, -1).transpose(1, 2)
    return F.scaled_dot_product_attention(query, k, v)


def test_padding_to_same_length_leaves_cross_attention_unchanged() -> None:
    generator = torch.Generator().manual_seed(5)
    cond = torch.randn(1, 77 * 2, 32, generator=generator)
    uncond = torch.randn(1, 77 * 3, 32, generator=generator)
    query = torch.randn(1, 2, 10, 8, generator=generator)
    wk, wv = torch.randn(2, 32, 16, generator=generator)
    padded = pad_to_same_length(cond, uncond)
    assert padded is not None
    a, b = padded
    assert a.shape == b.shape == (1, 77 * 6, 32)
    for original, repeated in ((cond, a), (uncond, b)):
        expected = cross_attention(query, original, wk, wv)
        torch.testing.assert_close(cross_attention(query, repeated, wk, wv), expected, atol=1e-6, rtol=1e-5)
    # Zero padding, the tempting shortcut, does change the result.
    zero_padded = F.pad(cond, (0, 0, 0, 77 * 4))
    assert not torch.allclose(cross_attention(query, zero_padded, wk, wv), cross_attention(query, cond, wk, wv))


def test_padding_equal_lengths_and_refusing_large_repeats() -> None:
    a, b = torch.zeros(1, 77, 4), torch.ones(1, 77, 4)
    assert pad_to_same_length(a, b) == (a, b)
    assert pad_to_same_length(torch.zeros(1, 77, 4), torch.zeros(1, 77 * 4, 4)) is not None
    assert pad_to_same_length(torch.zeros(1, 77, 4), torch.zeros(1, 77 * 5, 4)) is None
    assert pad_to_same_length(torch.zeros(1, 77 * 4, 4), torch.zeros(1, 77 * 5, 4)) is None
