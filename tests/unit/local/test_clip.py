"""The CLIP text encoders against transformers' CLIPTextModel / CLIPTextModelWithProjection with identical
weights (every parameter randomised, biases and LayerNorms included, so a wrong q/k/v slice, head split,
activation or pooling position shows), and the OpenCLIP → HF renaming against diffusers' converter."""

from __future__ import annotations

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from peropix_tui.core.clip_tokenizer import BOS, EOS, clip_tokenizer
from peropix_tui.engine.local.clip import ClipTextConfig, ClipTextModel, openclip_to_hf
from peropix_tui.engine.local.errors import LocalEngineError

SGM_G = "conditioner.embedders.1.model."
WIDTH = 128  # two 64-wide heads
LAYERS = 3
PROJECTION = 96


def hf_config(*, act: str, width: int = WIDTH, layers: int = LAYERS, projection: int = PROJECTION) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=width * 2 + 8,
        num_attention_heads=width // 64,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        eos_token_id=EOS,
        bos_token_id=BOS,
        pad_token_id=EOS,
    )


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Replace the default init (zero biases, unit LayerNorms) with random values that make every term count."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.1
            param.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)


@pytest.fixture(scope="module")
def hf_l() -> CLIPTextModel:
    model = CLIPTextModel(hf_config(act="quick_gelu")).eval()
    randomise(model, 1)
    return model


@pytest.fixture(scope="module")
def hf_g() -> CLIPTextModelWithProjection:
    model = CLIPTextModelWithProjection(hf_config(act="gelu")).eval()
    randomise(model, 2)
    return model


def g_state_dict(model: CLIPTextModelWithProjection) -> dict[str, Tensor]:
    """The HF-layout dict of a projected model, without the `text_model.` wrapper prefix."""
    return {key.removeprefix("text_model."): value for key, value in model.state_dict().items()}


def openclip_layout(model: CLIPTextModelWithProjection) -> dict[str, Tensor]:
    """The tower as an SDXL checkpoint stores it (OpenCLIP names, fused in_proj, `x @ W` projection)."""
    sd = g_state_dict(model)
    out: dict[str, Tensor] = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T.contiguous(),
        "logit_scale": torch.tensor(4.6),
    }
    names = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    for n in range(model.config.num_hidden_layers):
        hf = f"encoder.layers.{n}."
        oc = f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            parts = [sd[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat(parts)
            for openclip_name, hf_name in names.items():
                out[f"{oc}{openclip_name}.{kind}"] = sd[f"{hf}{hf_name}.{kind}"]
    return out


def token_batch(prompts: list[str], pad: int) -> Tensor:
    tokenizer = clip_tokenizer()
    rows = []
    for prompt in prompts:
        ids = [BOS, *tokenizer.encode(prompt), EOS]
        rows.append(ids + [pad] * (77 - len(ids)))
    return torch.tensor(rows)


PROMPTS = ["a photo of a cat", "masterpiece, best quality, 1girl, red dress, looking at viewer", ""]


def test_config_detected_from_clip_l(hf_l: CLIPTextModel) -> None:
    config = ClipTextConfig.from_state_dict(hf_l.state_dict())
    assert config == ClipTextConfig(
        vocab=49408,
        width=WIDTH,
        layers=LAYERS,
        heads=2,
        intermediate=WIDTH * 2 + 8,
        activation="quick_gelu",
        positions=77,
        projection=None,
    )


def test_config_detected_from_projected_tower() -> None:
    model = CLIPTextModelWithProjection(hf_config(act="gelu", width=192, layers=2, projection=64))
    config = ClipTextConfig.from_state_dict(g_state_dict(model))
    assert (config.width, config.heads, config.layers, config.projection, config.activation) == (
        192,
        3,
        2,
        64,
        "gelu",
    )


@torch.inference_mode()
def test_clip_l_matches_transformers(hf_l: CLIPTextModel) -> None:
    sd = dict(hf_l.state_dict())
    sd["embeddings.position_ids"] = torch.arange(77).float()[None]  # some files carry it; it is ignored
    ours = ClipTextModel.from_state_dict(sd, dtype=torch.float32, device="cpu")
    tokens = token_batch(PROMPTS, pad=EOS)
    ref = hf_l(input_ids=tokens, output_hidden_states=True)
    out = ours(tokens)
    torch.testing.assert_close(out.hidden, ref.hidden_states[-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-5, rtol=1e-5)
    for layer in (0, 1, -1, -LAYERS - 1):
        torch.testing.assert_close(
            ours(tokens, hidden_layer=layer).hidden, ref.hidden_states[layer], atol=1e-5, rtol=1e-5
        )


@torch.inference_mode()
def test_pooled_reads_the_first_eos(hf_l: CLIPTextModel) -> None:
    """With EOS padding the first EOS is not the last one; the pooled row must come from the first."""
    ours = ClipTextModel.from_state_dict(hf_l.state_dict(), dtype=torch.float32, device="cpu")
    tokens = token_batch(["a photo of a cat"], pad=EOS)
    out = ours(tokens)
    torch.testing.assert_close(out.pooled[0], out.last[0, 6])
    assert not torch.allclose(out.pooled[0], out.last[0, 7])


@torch.inference_mode()
def test_bigg_from_openclip_layout_matches_transformers(hf_g: CLIPTextModelWithProjection) -> None:
    ours = ClipTextModel.from_state_dict(openclip_to_hf(openclip_layout(hf_g)), dtype=torch.float32, device="cpu")
    assert ours.config.activation == "gelu"
    tokens = token_batch(PROMPTS, pad=0)
    ref = hf_g(input_ids=tokens, output_hidden_states=True)
    out = ours(tokens)
    torch.testing.assert_close(out.hidden, ref.hidden_states[-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, ref.text_embeds, atol=1e-5, rtol=1e-5)


def test_openclip_to_hf_agrees_with_diffusers() -> None:
    """An independently made OpenCLIP dict: our renaming equals diffusers', which a strict load validates."""
    generator = torch.Generator().manual_seed(3)
    width, layers, inner = WIDTH, 2, WIDTH * 2 + 8
    shapes = {
        "token_embedding.weight": (49408, width),
        "positional_embedding": (77, width),
        "ln_final.weight": (width,),
        "ln_final.bias": (width,),
        "text_projection": (width, PROJECTION),
        "logit_scale": (),
    }
    for n in range(layers):
        block = f"transformer.resblocks.{n}."
        shapes |= {
            block + "attn.in_proj_weight": (3 * width, width),
            block + "attn.in_proj_bias": (3 * width,),
            block + "attn.out_proj.weight": (width, width),
            block + "attn.out_proj.bias": (width,),
            block + "ln_1.weight": (width,),
            block + "ln_1.bias": (width,),
            block + "ln_2.weight": (width,),
            block + "ln_2.bias": (width,),
            block + "mlp.c_fc.weight": (inner, width),
            block + "mlp.c_fc.bias": (inner,),
            block + "mlp.c_proj.weight": (width, inner),
            block + "mlp.c_proj.bias": (width,),
        }
    openclip = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    reference_model = CLIPTextModelWithProjection(hf_config(act="gelu", layers=layers))
    reference = convert_open_clip_checkpoint(
        reference_model, {SGM_G + key: value for key, value in openclip.items()}, prefix=SGM_G
    )
    reference_model.load_state_dict(reference, strict=True)
    ours = openclip_to_hf(openclip)
    assert set(ours) == {key.removeprefix("text_model.") for key in reference}
    for key, value in reference.items():
        torch.testing.assert_close(ours[key.removeprefix("text_model.")], value, atol=0, rtol=0)
    model = ClipTextModel.from_state_dict(ours, dtype=torch.float32, device="cpu")
    tokens = token_batch(PROMPTS, pad=0)
    with torch.inference_mode():
        expected = reference_model.eval()(input_ids=tokens).text_embeds
        torch.testing.assert_close(model(tokens).pooled, expected, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_swapped_qkv_slices_change_the_output(hf_g: CLIPTextModelWithProjection) -> None:
    """The oracle comparison is sensitive to the q/k/v order of the fused projection."""
    layout = openclip_layout(hf_g)
    weight = layout["transformer.resblocks.0.attn.in_proj_weight"]
    q, k, v = weight.chunk(3)
    layout["transformer.resblocks.0.attn.in_proj_weight"] = torch.cat([k, q, v])
    ours = ClipTextModel.from_state_dict(openclip_to_hf(layout), dtype=torch.float32, device="cpu")
    tokens = token_batch(PROMPTS[:1], pad=0)
    assert not torch.allclose(ours(tokens).hidden, hf_g(input_ids=tokens, output_hidden_states=True).hidden_states[-2])


def test_load_adopts_tensors_without_copies(hf_l: CLIPTextModel) -> None:
    sd = hf_l.state_dict()
    model = ClipTextModel.from_state_dict(sd, dtype=torch.float32, device="cpu")
    weight = model.encoder.layers[1].self_attn.q_proj.weight
    assert weight.data_ptr() == sd["encoder.layers.1.self_attn.q_proj.weight"].data_ptr()
    assert not any(p.is_meta or p.requires_grad for p in model.parameters())
    assert not model.training


@torch.inference_mode()
def test_bfloat16_load_runs_close_to_float32(hf_l: CLIPTextModel) -> None:
    sd = hf_l.state_dict()
    full = ClipTextModel.from_state_dict(sd, dtype=torch.float32, device="cpu")
    half = ClipTextModel.from_state_dict(sd, dtype=torch.bfloat16, device="cpu")
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    tokens = token_batch(PROMPTS[:1], pad=EOS)
    torch.testing.assert_close(half(tokens).hidden.float(), full(tokens).hidden, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("encoder.layers.1.mlp.fc2.bias"), "missing tensor 'encoder.layers.1.mlp.fc2.bias'"),
        (lambda sd: sd.pop("embeddings.token_embedding.weight"), "missing tensor 'embeddings.token_embedding.weight'"),
        (
            lambda sd: sd.update({"encoder.layers.0.extra": torch.zeros(1)}),
            "unexpected tensor 'encoder.layers.0.extra'",
        ),
        (
            lambda sd: sd.update({"final_layer_norm.bias": torch.zeros(5)}),
            "tensor 'final_layer_norm.bias' has shape (5,), expected (128,)",
        ),
        (
            lambda sd: sd.update({"embeddings.token_embedding.weight": torch.zeros(10, 100)}),
            "width 100 is not a multiple of 64",
        ),
    ],
)
def test_mismatched_checkpoint_is_one_line_error(hf_l: CLIPTextModel, edit: object, message: str) -> None:
    sd = dict(hf_l.state_dict())
    assert callable(edit)
    edit(sd)
    with pytest.raises(LocalEngineError) as error:
        ClipTextModel.from_state_dict(sd, dtype=torch.float32, device="cpu", component="CLIP-L")
    assert str(error.value) == f"CLIP-L: {message}"


def test_unknown_openclip_keys_pass_through_and_are_reported() -> None:
    converted = openclip_to_hf({"transformer.resblocks.0.attn.weird": torch.zeros(2), "visual.proj": torch.zeros(1)})
    assert set(converted) == {"transformer.resblocks.0.attn.weird", "visual.proj"}


def test_uneven_fused_projection_is_rejected() -> None:
    with pytest.raises(LocalEngineError, match="in_proj_weight"):
        openclip_to_hf({"transformer.resblocks.2.attn.in_proj_weight": torch.zeros(10, 4)})


def test_hidden_layer_out_of_range(hf_l: CLIPTextModel) -> None:
    model = ClipTextModel.from_state_dict(hf_l.state_dict(), dtype=torch.float32, device="cpu")
    with pytest.raises(LocalEngineError, match="outside"):
        model(token_batch([""], pad=EOS), hidden_layer=-LAYERS - 2)
