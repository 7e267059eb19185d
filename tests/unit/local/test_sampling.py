"""Denoiser, guidance, seeded noise, samplers and the sampling wrapper of the local engine.

The samplers run on an analytic problem: data ~ N(MU, S²) per element, whose exact denoiser is
D(x, σ) = (S²x + σ²MU)/(S² + σ²) and whose probability-flow ODE is solved in closed form:
x(σ) − MU = (x(σ_max) − MU)·sqrt(S² + σ²)/sqrt(S² + σ_max²).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from peropix_tui.engine.local.sampling import (
    SAMPLER_ALIASES,
    SAMPLERS,
    Denoiser,
    GuidedDenoiser,
    NoiseSource,
    Prediction,
    SamplingError,
    build_sigmas,
    inpaint_denoiser,
    noised_latent,
    resolve_sampler,
    run_sampling,
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2m_sde_heun,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
    sigmas_for_denoise,
)
from peropix_tui.engine.local.schedules import DiscreteSigmas, ddim_uniform_sigmas, karras_sigmas

SDXL = DiscreteSigmas()
MU, S = 0.3, 0.5
STOCHASTIC = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_2m_sde_heun", "dpmpp_3m_sde")  # fmt: skip


def gaussian_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    assert type(sigma) is float, f"sigma reached the denoiser as {type(sigma).__name__}"
    return (x * (S * S) + MU * sigma * sigma) / (S * S + sigma * sigma)


def standard_normal(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def start_from_pure_noise(z: torch.Tensor, sigma_max: float) -> torch.Tensor:
    return MU + math.sqrt(S * S + sigma_max * sigma_max) * z


def exact_flow(x_start: torch.Tensor, sigma_start: float, sigma: float) -> torch.Tensor:
    return MU + (x_start - MU) * math.sqrt(S * S + sigma * sigma) / math.sqrt(S * S + sigma_start * sigma_start)


# --- the hand-computed Euler result -------------------------------------------------------------------------


def test_euler_two_steps_by_hand() -> None:
    """D(x, σ) = x/(1 + σ²), x = 3 at σ = 2: D = 0.6, d = 1.2, x = 1.8 at σ = 1; D = 0.9, d = 0.9, x = 0.9."""
    seen: list[tuple[int, int, float, float]] = []
    result = sample_euler(
        lambda x, sigma: x / (1.0 + sigma * sigma),
        torch.tensor([3.0], dtype=torch.float64),
        [2.0, 1.0, 0.0],
        noise=NoiseSource(0),
        callback=lambda step, total, x, denoised: seen.append((step, total, float(x), float(denoised))),
    )
    assert float(result) == pytest.approx(0.9, abs=1e-15)
    assert seen == [(1, 2, pytest.approx(1.8), pytest.approx(0.6)), (2, 2, pytest.approx(0.9), pytest.approx(0.9))]


# --- deterministic samplers converge to the exact ODE solution -----------------------------------------------


def _ode_error(sampler: Callable[..., torch.Tensor], steps: int, *, exact_to_zero: bool) -> float:
    sigmas = karras_sigmas(SDXL, steps)
    x = start_from_pure_noise(standard_normal((1, 4, 16, 16)), sigmas[0])
    out = sampler(gaussian_denoiser, x, sigmas, noise=NoiseSource(1))
    if exact_to_zero:
        reference = exact_flow(x, sigmas[0], 0.0)
    else:
        # Every sampler but LMS ends with x = D(x, σ_min): apply that same last step to the exact solution, so
        # what remains is the integration error over [σ_min, σ_max].
        reference = gaussian_denoiser(exact_flow(x, sigmas[0], sigmas[-2]), sigmas[-2])
    return float((out - reference).abs().max())


@pytest.mark.parametrize(
    ("sampler", "max_error", "min_ratio", "max_ratio"),
    [
        (sample_euler, 0.08, 1.8, 2.3),
        (sample_heun, 0.01, 3.5, 6.0),
        (sample_dpm_2, 0.01, 3.5, 6.0),
        (sample_dpmpp_2m, 0.01, 3.5, 6.0),
        (functools.partial(sample_euler_ancestral, eta=0.0), 0.08, 1.8, 2.3),
        (functools.partial(sample_dpm_2_ancestral, eta=0.0), 0.01, 3.5, 6.0),
        (functools.partial(sample_dpmpp_2s_ancestral, eta=0.0), 0.01, 3.5, 6.0),
        (functools.partial(sample_dpmpp_sde, eta=0.0), 0.01, 3.5, 6.0),
        (functools.partial(sample_dpmpp_2m_sde, eta=0.0), 0.01, 3.5, 6.0),
        (functools.partial(sample_dpmpp_2m_sde_heun, eta=0.0), 0.01, 3.5, 6.0),
        (functools.partial(sample_dpmpp_3m_sde, eta=0.0), 0.003, 2.8, 8.0),
    ],
    ids=[
        "euler",
        "heun",
        "dpm_2",
        "dpmpp_2m",
        "euler_a_eta0",
        "dpm_2_a_eta0",
        "dpmpp_2s_a_eta0",
        "dpmpp_sde_eta0",
        "dpmpp_2m_sde_eta0",
        "dpmpp_2m_sde_heun_eta0",
        "dpmpp_3m_sde_eta0",
    ],
)
def test_deterministic_samplers_converge_at_their_order(
    sampler: Callable[..., torch.Tensor], max_error: float, min_ratio: float, max_ratio: float
) -> None:
    coarse = _ode_error(sampler, 20, exact_to_zero=False)
    fine = _ode_error(sampler, 40, exact_to_zero=False)
    assert fine < max_error
    assert min_ratio <= coarse / fine <= max_ratio


def test_lms_converges_at_high_order_all_the_way_to_zero() -> None:
    coarse = _ode_error(sample_lms, 20, exact_to_zero=True)
    fine = _ode_error(sample_lms, 40, exact_to_zero=True)
    assert fine < 2e-3
    assert coarse / fine > 6.0


@pytest.mark.parametrize(
    ("ancestral", "plain"),
    [
        (sample_euler_ancestral, sample_euler),
        (sample_dpm_2_ancestral, sample_dpm_2),
        (sample_dpmpp_2m_sde, sample_dpmpp_2m),
    ],
)
def test_ancestral_samplers_without_noise_are_their_ode_samplers(
    ancestral: Callable[..., torch.Tensor], plain: Callable[..., torch.Tensor]
) -> None:
    sigmas = karras_sigmas(SDXL, 12)
    x = start_from_pure_noise(standard_normal((1, 4, 8, 8)), sigmas[0])
    expected = plain(gaussian_denoiser, x, sigmas, noise=NoiseSource(1))
    actual = ancestral(gaussian_denoiser, x, sigmas, noise=NoiseSource(1), eta=0.0)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


# --- stochastic samplers sample the right distribution -------------------------------------------------------


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_land_on_the_data_distribution(name: str) -> None:
    sigmas = karras_sigmas(SDXL, 100)
    x = start_from_pure_noise(standard_normal((1, 4, 64, 64), seed=11), sigmas[0])
    out = SAMPLERS[name].function(gaussian_denoiser, x, sigmas, noise=NoiseSource(5))
    assert float(out.mean()) == pytest.approx(MU, abs=0.02)
    assert float(out.std()) == pytest.approx(S, abs=0.03)


def test_dpmpp_sde_noises_of_one_step_share_their_brownian_path() -> None:
    """With the two noises of a step drawn independently the spread falls to about 0.45 at 30 steps."""
    sigmas = karras_sigmas(SDXL, 30)
    x = start_from_pure_noise(standard_normal((1, 4, 64, 64), seed=11), sigmas[0])
    out = sample_dpmpp_sde(gaussian_denoiser, x, sigmas, noise=NoiseSource(5))
    assert float(out.std()) == pytest.approx(S, abs=0.015)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde"])
def test_stochastic_samplers_without_fresh_noise_lose_the_spread(name: str) -> None:
    """The distribution check above is sharp enough to notice missing noise."""
    sigmas = karras_sigmas(SDXL, 100)
    x = start_from_pure_noise(standard_normal((1, 4, 64, 64), seed=11), sigmas[0])
    out = SAMPLERS[name].function(gaussian_denoiser, x, sigmas, noise=NoiseSource(5), s_noise=0.0)  # type: ignore[call-arg]
    assert abs(float(out.std()) - S) > 0.1


@pytest.mark.parametrize("name", STOCHASTIC)
def test_same_seed_same_result_other_seed_other_result(name: str) -> None:
    sigmas = karras_sigmas(SDXL, 8)
    x = start_from_pure_noise(standard_normal((1, 4, 8, 8)), sigmas[0])
    sampler = SAMPLERS[name].function
    first = sampler(gaussian_denoiser, x, sigmas, noise=NoiseSource(42))
    again = sampler(gaussian_denoiser, x, sigmas, noise=NoiseSource(42))
    other = sampler(gaussian_denoiser, x, sigmas, noise=NoiseSource(43))
    assert torch.equal(first, again)
    assert float((first - other).abs().max()) > 1e-3


def test_deterministic_samplers_ignore_the_seed() -> None:
    sigmas = karras_sigmas(SDXL, 8)
    x = start_from_pure_noise(standard_normal((1, 4, 8, 8)), sigmas[0])
    assert torch.equal(
        sample_dpmpp_2m(gaussian_denoiser, x, sigmas, noise=NoiseSource(1)),
        sample_dpmpp_2m(gaussian_denoiser, x, sigmas, noise=NoiseSource(2)),
    )


def test_each_batch_item_follows_its_own_seed() -> None:
    sigmas = karras_sigmas(SDXL, 6)
    x = start_from_pure_noise(standard_normal((2, 4, 8, 8)), sigmas[0])
    together = sample_dpmpp_sde(gaussian_denoiser, x, sigmas, noise=NoiseSource([7, 8]))
    alone = [sample_dpmpp_sde(gaussian_denoiser, x[i : i + 1], sigmas, noise=NoiseSource(7 + i)) for i in (0, 1)]
    assert torch.equal(together, torch.cat(alone))


# --- the noise source ----------------------------------------------------------------------------------------


def test_noise_is_the_cpu_stream_of_the_seed() -> None:
    latent = torch.zeros(1, 4, 8, 8)
    source = NoiseSource(1234)
    generator = torch.Generator().manual_seed(1234)
    assert torch.equal(source.like(latent), torch.randn((1, 4, 8, 8), generator=generator))
    assert torch.equal(source.like(latent), torch.randn((1, 4, 8, 8), generator=generator))


def test_noise_takes_the_target_dtype_after_drawing_in_float32() -> None:
    half = NoiseSource(9).like(torch.zeros(1, 4, 8, 8, dtype=torch.float16))
    assert half.dtype == torch.float16
    assert torch.equal(half, NoiseSource(9).like(torch.zeros(1, 4, 8, 8)).to(torch.float16))


def test_noise_of_a_batch_is_the_noise_of_each_seed() -> None:
    both = NoiseSource([5, 6]).like(torch.zeros(2, 4, 8, 8))
    assert torch.equal(both[1:], NoiseSource(6).like(torch.zeros(1, 4, 8, 8)))
    assert torch.equal(both[:1], NoiseSource(5).like(torch.zeros(1, 4, 8, 8)))


@pytest.mark.parametrize("seeds", [[], -1, 1 << 64, True, [1, "2"]])
def test_bad_seeds_are_refused(seeds: Any) -> None:
    with pytest.raises(SamplingError, match="seed"):
        NoiseSource(seeds)


def test_noise_batch_must_match_the_seeds() -> None:
    with pytest.raises(SamplingError, match="2 seed"):
        NoiseSource([1, 2]).like(torch.zeros(3, 4, 8, 8))


# --- the denoiser --------------------------------------------------------------------------------------------


class OracleUNet:
    """Knows the clean latent and the noise of its input, so it returns the exact eps or v."""

    def __init__(self, x0: torch.Tensor, eps: torch.Tensor, sigma: float, prediction: Prediction) -> None:
        self.x0, self.eps, self.sigma, self.prediction = x0, eps, sigma, prediction
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_in: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.inputs.append((x_in, timesteps))
        if self.prediction is Prediction.EPS:
            return self.eps
        root = math.sqrt(1.0 + self.sigma**2)
        return self.eps / root - self.x0 * (self.sigma / root)


@pytest.mark.parametrize("prediction", [Prediction.EPS, Prediction.V])
@pytest.mark.parametrize("sigma", [0.05, 1.3, 14.0, 4000.0])
def test_denoiser_recovers_the_clean_latent(prediction: Prediction, sigma: float) -> None:
    x0, eps = standard_normal((2, 4, 8, 8), seed=1), standard_normal((2, 4, 8, 8), seed=2)
    x = x0 + sigma * eps
    unet = OracleUNet(x0, eps, sigma, prediction)
    schedule = DiscreteSigmas(zsnr=sigma > 100)
    denoised = Denoiser(unet, schedule, prediction)(x, sigma, {})
    torch.testing.assert_close(denoised, x0, rtol=0, atol=1e-9 * max(1.0, sigma))
    ((x_in, timesteps),) = unet.inputs
    torch.testing.assert_close(x_in, x / math.sqrt(sigma * sigma + 1.0), rtol=0, atol=1e-12)
    assert timesteps.dtype == torch.float32 and timesteps.shape == (2,)
    assert timesteps.tolist() == [float(schedule.timestep(sigma))] * 2


def test_v_denoiser_is_not_the_eps_formula() -> None:
    sigma = 2.0
    x0, eps = standard_normal((1, 4, 4, 4), seed=1), standard_normal((1, 4, 4, 4), seed=2)
    unet = OracleUNet(x0, eps, sigma, Prediction.V)
    wrong = Denoiser(unet, SDXL, Prediction.EPS)(x0 + sigma * eps, sigma, {})
    assert float((wrong - x0).abs().max()) > 0.1


def test_denoiser_appends_the_inpaint_concat_unscaled() -> None:
    seen: list[torch.Tensor] = []

    def unet(x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
        seen.append(x_in)
        return x_in[:, :4] * 0.0 + context.mean()

    x = standard_normal((1, 4, 8, 8))
    concat = standard_normal((1, 5, 8, 8), seed=3)
    Denoiser(unet, SDXL)(x, 3.0, {"context": torch.ones(1, 7, 2, dtype=torch.float64)}, concat=concat)
    assert seen[0].shape == (1, 9, 8, 8)
    assert torch.equal(seen[0][:, 4:], concat)
    torch.testing.assert_close(seen[0][:, :4], x / math.sqrt(10.0))


# --- classifier-free guidance --------------------------------------------------------------------------------


class ContextUNet:
    """eps = x_in·0.1 + mean of the context per sample; records each call's batch size."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
        self.batches.append(x_in.shape[0])
        return x_in * 0.1 + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def _contexts(batch: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (
        {"context": torch.full((batch, 77, 8), 2.0, dtype=torch.float64)},
        {"context": torch.full((batch, 77, 8), -1.0, dtype=torch.float64)},
    )


def test_scale_one_skips_the_uncond_half() -> None:
    unet = ContextUNet()
    cond, uncond = _contexts()
    guided = GuidedDenoiser(Denoiser(unet, SDXL), cond, uncond, scale=1.0)
    sigmas = karras_sigmas(SDXL, 5)
    x = standard_normal((1, 4, 8, 8))
    out = sample_euler(guided, x, sigmas, noise=NoiseSource(0))
    assert not guided.guided
    assert unet.batches == [1] * 5
    reference = sample_euler(lambda x, s: Denoiser(ContextUNet(), SDXL)(x, s, cond), x, sigmas, noise=NoiseSource(0))
    torch.testing.assert_close(out, reference, rtol=0, atol=0)


def test_guidance_is_one_batched_call_per_step() -> None:
    unet = ContextUNet()
    cond, uncond = _contexts(batch=2)
    guided = GuidedDenoiser(Denoiser(unet, SDXL), cond, uncond, scale=5.0)
    sample_euler(guided, standard_normal((2, 4, 8, 8)), karras_sigmas(SDXL, 5), noise=NoiseSource([0, 1]))
    assert guided.guided
    assert unet.batches == [4] * 5


def test_guidance_mixes_cond_and_uncond_by_the_scale() -> None:
    cond, uncond = _contexts()
    x, sigma = standard_normal((1, 4, 8, 8)), 2.5
    plain = Denoiser(ContextUNet(), SDXL)
    positive, negative = plain(x, sigma, cond), plain(x, sigma, uncond)
    guided = GuidedDenoiser(Denoiser(ContextUNet(), SDXL), cond, uncond, scale=7.0)(x, sigma)
    torch.testing.assert_close(guided, negative + 7.0 * (positive - negative))


def _wavy_unet(x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
    """eps whose spread depends on the context, so guidance changes the standard deviation."""
    return torch.sin(x_in * context.mean(dim=(1, 2)).view(-1, 1, 1, 1))


def test_rescale_zero_is_plain_guidance_and_one_matches_the_cond_spread() -> None:
    cond, uncond = _contexts(batch=2)
    x, sigma = standard_normal((2, 4, 8, 8)), 1.7
    denoiser = Denoiser(_wavy_unet, SDXL)
    positive, negative = denoiser(x, sigma, cond), denoiser(x, sigma, uncond)
    plain = negative + 6.0 * (positive - negative)

    no_rescale = GuidedDenoiser(denoiser, cond, uncond, scale=6.0, rescale=0.0)(x, sigma)
    full = GuidedDenoiser(denoiser, cond, uncond, scale=6.0, rescale=1.0)(x, sigma)
    half = GuidedDenoiser(denoiser, cond, uncond, scale=6.0, rescale=0.5)(x, sigma)

    torch.testing.assert_close(no_rescale, plain, rtol=0, atol=0)
    dims = (1, 2, 3)
    torch.testing.assert_close(full.std(dim=dims), positive.std(dim=dims))
    assert not torch.allclose(plain.std(dim=dims), positive.std(dim=dims), rtol=0.05)
    # Each sample is a scaled copy of the plain guided x0, with its own factor.
    factor = full[:, :1, :1, :1] / plain[:, :1, :1, :1]
    torch.testing.assert_close(full, plain * factor)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)


def _attention_unet(x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
    """Cross-attention of the latent pixels (queries) over the context tokens."""
    batch, channels, height, width = x_in.shape
    queries = x_in.flatten(2).transpose(1, 2)
    attended = torch.nn.functional.scaled_dot_product_attention(queries, context, context)
    return attended.transpose(1, 2).reshape(batch, channels, height, width)


@pytest.mark.parametrize(("cond_tokens", "uncond_tokens", "calls"), [(154, 77, 1), (231, 154, 1), (7, 5, 2)])
def test_token_sequences_of_different_length_are_guided_exactly(
    cond_tokens: int, uncond_tokens: int, calls: int
) -> None:
    cond = {"context": standard_normal((1, cond_tokens, 4), seed=4)}
    uncond = {"context": standard_normal((1, uncond_tokens, 4), seed=5)}
    x, sigma = standard_normal((1, 4, 6, 6)), 3.0
    counted: list[int] = []

    def unet(x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
        counted.append(x_in.shape[0])
        return _attention_unet(x_in, timesteps, context=context)

    guided = GuidedDenoiser(Denoiser(unet, SDXL), cond, uncond, scale=4.0)(x, sigma)
    assert len(counted) == calls
    plain = Denoiser(_attention_unet, SDXL)
    positive, negative = plain(x, sigma, cond), plain(x, sigma, uncond)
    torch.testing.assert_close(guided, negative + 4.0 * (positive - negative), rtol=0, atol=1e-12)


def test_guidance_concat_is_doubled_with_the_batch() -> None:
    seen: list[torch.Tensor] = []

    def unet(x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
        seen.append(x_in)
        return x_in[:, :4] * 0.0

    cond, uncond = _contexts()
    concat = standard_normal((1, 5, 8, 8), seed=3)
    GuidedDenoiser(Denoiser(unet, SDXL), cond, uncond, scale=3.0, concat=concat)(standard_normal((1, 4, 8, 8)), 1.0)
    assert seen[0].shape == (2, 9, 8, 8)
    assert torch.equal(seen[0][:1, 4:], concat) and torch.equal(seen[0][1:, 4:], concat)


def test_guidance_refuses_mismatched_conditioning() -> None:
    denoiser = Denoiser(ContextUNet(), SDXL)
    cond, uncond = _contexts()
    with pytest.raises(SamplingError, match="different inputs"):
        GuidedDenoiser(denoiser, {**cond, "y": torch.zeros(1, 16)}, uncond, scale=5.0)
    with pytest.raises(SamplingError, match="cannot be batched"):
        GuidedDenoiser(denoiser, cond, {"context": torch.zeros(1, 77, 9)}, scale=5.0)
    with pytest.raises(SamplingError, match="rescale"):
        GuidedDenoiser(denoiser, cond, uncond, scale=5.0, rescale=1.5)
    with pytest.raises(SamplingError, match="scale"):
        GuidedDenoiser(denoiser, cond, uncond, scale=math.nan)


# --- no host-device syncs: the whole path runs on the meta device --------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampling_never_reads_a_tensor_value(name: str) -> None:
    """Meta tensors have no values: `.item()`, `bool(tensor)` or `float(tensor)` anywhere would raise."""
    meta = torch.device("meta")

    def unet(x_in: torch.Tensor, timesteps: torch.Tensor, *, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert x_in.device == meta and timesteps.device == meta
        return x_in * 0.5 + context.mean() + y.mean()

    cond = {"context": torch.zeros(2, 154, 8, device=meta), "y": torch.zeros(2, 16, device=meta)}
    uncond = {"context": torch.zeros(2, 77, 8, device=meta), "y": torch.zeros(2, 16, device=meta)}
    guided = GuidedDenoiser(Denoiser(unet, SDXL, Prediction.V), cond, uncond, scale=6.0, rescale=0.7)
    steps: list[tuple[int, int]] = []
    sigmas = build_sigmas(SDXL, sampler=name, scheduler="karras", steps=6, denoise=0.8)
    out = run_sampling(
        guided,
        torch.zeros(2, 4, 8, 8, device=meta, dtype=torch.float16),
        sigmas,
        sampler=name,
        noise=NoiseSource([3, 4]),
        sigma_max=SDXL.sigma_max,
        mask=torch.ones(1, 1, 8, 8, device=meta, dtype=torch.float16),
        callback=lambda step, total, x, denoised: steps.append((step, total)),
    )
    assert out.device == meta and out.shape == (2, 4, 8, 8) and out.dtype == torch.float16
    total = len(sigmas) - 1
    assert steps == [(step, total) for step in range(1, total + 1)]


# --- the sampling wrapper ------------------------------------------------------------------------------------


def _recording(denoise: Callable[[torch.Tensor, float], torch.Tensor], seen: list[torch.Tensor]) -> Any:
    def wrapped(x: torch.Tensor, sigma: float) -> torch.Tensor:
        seen.append(x.clone())
        return denoise(x, sigma)

    return wrapped


def test_txt2img_starts_from_the_seeds_first_noise_at_full_variance() -> None:
    latent = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    sigmas = build_sigmas(SDXL, sampler="k_euler", scheduler="karras", steps=4)
    seen: list[torch.Tensor] = []
    run_sampling(
        _recording(gaussian_denoiser, seen), latent, sigmas, sampler="euler", noise=NoiseSource(77),
        sigma_max=SDXL.sigma_max,
    )  # fmt: skip
    assert sigmas[0] == pytest.approx(SDXL.sigma_max)
    expected = NoiseSource(77).like(latent) * math.sqrt(1.0 + sigmas[0] ** 2)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)


def test_img2img_starts_part_way_down_from_the_source_latent() -> None:
    latent = standard_normal((1, 4, 8, 8), seed=9)
    sigmas = build_sigmas(SDXL, sampler="euler", scheduler="karras", steps=10, denoise=0.5)
    seen: list[torch.Tensor] = []
    run_sampling(
        _recording(gaussian_denoiser, seen), latent, sigmas, sampler="euler", noise=NoiseSource(5),
        sigma_max=SDXL.sigma_max,
    )  # fmt: skip
    assert len(seen) == 10
    torch.testing.assert_close(seen[0], latent + NoiseSource(5).like(latent) * sigmas[0], rtol=0, atol=0)


def test_noised_latent_uses_the_full_variance_only_from_pure_noise() -> None:
    latent, noise = torch.ones(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    assert float(noised_latent(latent, noise, 14.6, sigma_max=14.6)[0, 0, 0, 0]) == pytest.approx(
        1.0 + math.sqrt(1.0 + 14.6**2)
    )
    assert float(noised_latent(latent, noise, 3.0, sigma_max=14.6)[0, 0, 0, 0]) == pytest.approx(4.0)


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_2m", "heun"])
def test_inpainting_keeps_the_unmasked_latent_exactly(name: str) -> None:
    latent = standard_normal((1, 4, 8, 8), seed=9)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., :, 4:] = 1.0
    sigmas = build_sigmas(SDXL, sampler=name, scheduler="karras", steps=8)
    seen: list[torch.Tensor] = []
    out = run_sampling(
        _recording(gaussian_denoiser, seen), latent, sigmas, sampler=name, noise=NoiseSource(3),
        sigma_max=SDXL.sigma_max, mask=mask,
    )  # fmt: skip
    assert torch.equal(out[..., :4], latent[..., :4])
    assert float((out[..., 4:] - latent[..., 4:]).abs().max()) > 0.1
    # Before the second model call the kept half was the source latent noised to the second sigma with the
    # initial noise of the seed.
    initial = NoiseSource(3).like(latent)
    torch.testing.assert_close(seen[1][..., :4], (latent + initial * sigmas[1])[..., :4], rtol=0, atol=1e-12)


def test_inpaint_denoiser_blends_before_and_after_the_model() -> None:
    latent = torch.full((1, 1, 1, 2), 5.0)
    noise = torch.full((1, 1, 1, 2), 2.0)
    mask = torch.tensor([[[[1.0, 0.0]]]])
    seen: list[torch.Tensor] = []
    masked = inpaint_denoiser(_recording(lambda x, sigma: x * 0.0 - 1.0, seen), latent=latent, noise=noise, mask=mask)
    out = masked(torch.full((1, 1, 1, 2), 100.0), 3.0)
    assert seen[0].flatten().tolist() == [100.0, 11.0]
    assert out.flatten().tolist() == [-1.0, 5.0]


# --- schedules per sampler and img2img strength --------------------------------------------------------------


def test_dpm2_schedules_drop_the_penultimate_sigma() -> None:
    for name in ("dpm_2", "dpm_2_ancestral", "k_dpm_2"):
        longer = karras_sigmas(SDXL, 11)
        assert build_sigmas(SDXL, sampler=name, scheduler="karras", steps=10) == longer[:-2] + longer[-1:]


def test_ddim_always_runs_on_the_ddim_grid() -> None:
    for name in ("ddim", "ddim_v3", "DDIM"):
        assert build_sigmas(SDXL, sampler=name, scheduler="karras", steps=20) == ddim_uniform_sigmas(SDXL, 20)
    assert resolve_sampler("ddim").function is sample_euler


def test_denoise_strength_takes_the_tail_of_a_longer_schedule() -> None:
    sigmas = build_sigmas(SDXL, sampler="euler", scheduler="karras", steps=10, denoise=0.5)
    assert sigmas == karras_sigmas(SDXL, 20)[-11:]
    assert (
        build_sigmas(SDXL, sampler="euler", scheduler="karras", steps=10, denoise=0.3) == karras_sigmas(SDXL, 33)[-11:]
    )
    assert build_sigmas(SDXL, sampler="euler", scheduler="karras", steps=10, denoise=1.0) == karras_sigmas(SDXL, 10)
    assert build_sigmas(SDXL, sampler="euler", scheduler="karras", steps=10, denoise=0.99995) == karras_sigmas(SDXL, 10)


@pytest.mark.parametrize(("steps", "strength"), [(10, 0.0), (10, 1.5), (10, math.nan), (0, 0.5), (1000, 0.001)])
def test_bad_denoise_settings_are_refused(steps: int, strength: float) -> None:
    with pytest.raises(SamplingError):
        sigmas_for_denoise(lambda count: karras_sigmas(SDXL, count), steps, strength)


# --- names ---------------------------------------------------------------------------------------------------


def test_novelai_sampler_names_resolve() -> None:
    from peropix_tui.engine.nai.models import V3_SAMPLERS
    from peropix_tui.engine.types import GenerationRequest

    for name in (*V3_SAMPLERS, "k_lms", "k_heun", "k_dpm_2_ancestral", "k_dpmpp_3m_sde", "ddim"):
        assert resolve_sampler(name) in SAMPLERS.values()
    assert resolve_sampler("k_euler_ancestral") is SAMPLERS["euler_ancestral"]
    assert resolve_sampler(" K_DPMPP_2M ") is SAMPLERS["dpmpp_2m"]
    request = GenerationRequest(prompt="1girl")
    sigmas = build_sigmas(SDXL, sampler=request.sampler, scheduler=request.scheduler, steps=request.steps)
    assert len(sigmas) == request.steps + 1


def test_every_alias_names_a_sampler() -> None:
    assert all(target in SAMPLERS for target in SAMPLER_ALIASES.values())


def test_unknown_sampler_is_a_one_line_error() -> None:
    with pytest.raises(SamplingError, match="unknown sampler 'plms'") as info:
        resolve_sampler("plms")
    assert "\n" not in str(info.value) and "dpmpp_2m" in str(info.value)


@pytest.mark.parametrize("sigmas", [[1.0], [1.0, 2.0, 0.0], [2.0, 2.0, 0.0], [math.nan, 0.0], [1.0, -0.5]])
def test_bad_sigmas_are_refused(sigmas: list[float]) -> None:
    with pytest.raises(SamplingError, match="sigma"):
        sample_euler(gaussian_denoiser, torch.zeros(1), sigmas, noise=NoiseSource(0))
