"""From a noise-predicting UNet to a finished latent: the denoiser, classifier-free guidance, seeded noise, the
k-diffusion samplers and the sampling wrapper (txt2img, img2img strength, inpainting with a 4-channel model).

Conventions, in k-diffusion's variables: `x = x0 + sigma * noise`, a sampler only ever sees `denoise(x, sigma)`,
the denoised estimate D, and `d = (x - D) / sigma` is the ODE slope. Sigmas are Python floats from
`schedules.py` and every scalar coefficient is computed in Python, so the step loops never wait on the GPU (no
`.item()`, no tensor comparisons). Each sampler calls `callback(step, total, x, denoised)` once per step, after
the step, with `step` counted from 1.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, Protocol

import numpy as np
import torch

from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.schedules import (
    MAX_SCHEDULE_STEPS,
    DiscreteSigmas,
    resolve_scheduler,
)

ModelFn = Callable[..., torch.Tensor]
"""`model(x_in, timesteps, **cond)`: the UNet, returning eps or v for the scaled input `x_in`."""
DenoiseFn = Callable[[torch.Tensor, float], torch.Tensor]
"""`denoise(x, sigma)`: the denoised estimate of `x` at noise level `sigma` (guidance already applied)."""
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""`callback(step, total, x, denoised)`, once per finished step; `denoised` is what a preview shows."""

SEED_LIMIT: Final = 1 << 64
STRENGTH_FULL: Final = 0.9999
"""Img2img strengths at or above this run the whole schedule from pure noise."""
MAX_CONTEXT_REPEAT: Final = 4
"""Cond and uncond token sequences are padded to a common length by repetition up to this factor; beyond it the
two halves of guidance run as two model calls rather than one twice-as-long one."""


class SamplingError(LocalEngineError):
    """Sampling settings the local engine cannot use: unknown sampler, bad sigmas, mismatched conditioning."""


class Prediction(enum.StrEnum):
    """What the UNet was trained to predict: the noise (SD1.5, SDXL base) or v (v-prediction finetunes)."""

    EPS = "eps"
    V = "v"


class Denoiser:
    """Turns a UNet that predicts eps or v into the denoiser D(x, sigma) the samplers integrate.

    The UNet sees `x / sqrt(sigma² + 1)` (its training inputs had unit variance) and the integer training
    timestep nearest to sigma. EPS: D = x − sigma·eps. V: D = x/(sigma² + 1) − v·sigma/sqrt(sigma² + 1).
    `concat` (inpainting models) is appended to the scaled input along the channels, unscaled.
    """

    __slots__ = ("model", "prediction", "schedule")

    def __init__(self, model: ModelFn, schedule: DiscreteSigmas, prediction: Prediction = Prediction.EPS) -> None:
        self.model = model
        self.schedule = schedule
        self.prediction = Prediction(prediction)

    def __call__(
        self, x: torch.Tensor, sigma: float, cond: Mapping[str, torch.Tensor], *, concat: torch.Tensor | None = None
    ) -> torch.Tensor:
        variance = sigma * sigma + 1.0
        model_in = x * (1.0 / math.sqrt(variance))
        if concat is not None:
            model_in = torch.cat((model_in, concat), dim=1)
        timesteps = torch.full(
            (x.shape[0],), float(self.schedule.timestep(sigma)), dtype=torch.float32, device=x.device
        )
        out = self.model(model_in, timesteps, **cond)
        if self.prediction is Prediction.V:
            return x * (1.0 / variance) - out * (sigma / math.sqrt(variance))
        return x - out * sigma


class GuidedDenoiser:
    """Classifier-free guidance over a `Denoiser`: `uncond + scale·(cond − uncond)`, as `denoise(x, sigma)`.

    Cond and uncond run as ONE model call on a batch of 2B (the conditioning is concatenated once, here, not per
    step). With scale 1 or no uncond the uncond half is skipped entirely. `rescale` φ is the guidance rescale of
    "Common Diffusion Noise Schedules and Sample Steps are Flawed" applied to the denoised estimates: the guided
    x0 is scaled so its per-sample standard deviation matches the cond x0, and the result is mixed with the
    plain guided x0 by φ (0 = plain CFG).
    """

    __slots__ = ("_concat", "_cond", "_denoiser", "_rescale", "_scale", "_uncond")

    def __init__(
        self,
        denoiser: Denoiser,
        cond: Mapping[str, torch.Tensor],
        uncond: Mapping[str, torch.Tensor] | None = None,
        *,
        scale: float = 1.0,
        rescale: float = 0.0,
        concat: torch.Tensor | None = None,
    ) -> None:
        if not math.isfinite(scale) or scale < 0.0:
            raise SamplingError(f"guidance scale must be a finite number >= 0, not {scale}")
        if not 0.0 <= rescale <= 1.0:
            raise SamplingError(f"guidance rescale must be between 0 and 1, not {rescale}")
        self._denoiser = denoiser
        self._scale = float(scale)
        self._rescale = float(rescale)
        self._concat = concat
        self._cond: dict[str, torch.Tensor] = dict(cond)
        self._uncond: dict[str, torch.Tensor] | None = None
        if uncond is None or scale == 1.0:
            self._scale = 1.0
            return
        batched = _batch_conditions(cond, uncond)
        if batched is None:
            self._uncond = dict(uncond)
        else:
            # One 2B batch: `_cond` holds both halves and `_uncond` stays None.
            self._cond, self._uncond = batched, None
            self._concat = None if concat is None else torch.cat((concat, concat))

    @property
    def guided(self) -> bool:
        """Whether each step evaluates the uncond half too (scale other than 1 with an uncond given)."""
        return self._scale != 1.0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if not self.guided:
            return self._denoiser(x, sigma, self._cond, concat=self._concat)
        if self._uncond is None:
            positive, negative = self._denoiser(torch.cat((x, x)), sigma, self._cond, concat=self._concat).chunk(2)
        else:
            positive = self._denoiser(x, sigma, self._cond, concat=self._concat)
            negative = self._denoiser(x, sigma, self._uncond, concat=self._concat)
        guided = negative + (positive - negative) * self._scale
        if self._rescale > 0.0:
            dims = tuple(range(1, guided.ndim))
            ratio = positive.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
            guided = guided * (ratio * self._rescale + (1.0 - self._rescale))
        return guided


def _batch_conditions(
    cond: Mapping[str, torch.Tensor], uncond: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor] | None:
    """Cond stacked on uncond per keyword, or None when token sequences would need too long a common length.

    Sequences that differ only in length (dim 1: a long prompt against a short negative) are repeated to their
    least common multiple; attention over a key/value sequence repeated k times gives exactly the same result.
    """
    if set(cond) != set(uncond):
        raise SamplingError(f"cond and uncond carry different inputs: {sorted(cond)} against {sorted(uncond)}")
    batched: dict[str, torch.Tensor] = {}
    for key, positive in cond.items():
        negative = uncond[key]
        if positive.shape[1:] != negative.shape[1:]:
            same_rank = positive.ndim == negative.ndim >= 2
            if not same_rank or positive.shape[2:] != negative.shape[2:]:
                raise SamplingError(
                    f"cond and uncond {key!r} shapes cannot be batched: "
                    f"{tuple(positive.shape)} against {tuple(negative.shape)}"
                )
            length = math.lcm(positive.shape[1], negative.shape[1])
            if length > MAX_CONTEXT_REPEAT * max(positive.shape[1], negative.shape[1]):
                return None
            positive = _repeat_tokens(positive, length)
            negative = _repeat_tokens(negative, length)
        batched[key] = torch.cat((positive, negative))
    return batched


def _repeat_tokens(tokens: torch.Tensor, length: int) -> torch.Tensor:
    times = length // tokens.shape[1]
    if times == 1:
        return tokens
    return tokens.repeat(1, times, *([1] * (tokens.ndim - 2)))


class NoiseSource:
    """Seeded Gaussian noise that is identical on every device, for the initial latent and every sampler step.

    Each batch item has its own CPU `torch.Generator` seeded with its own seed; every draw is made in float32 on
    the CPU and then copied to the sampling device and dtype, so a seed gives the same image on CPU and GPU and
    sample i of a batch equals a single generation with seed i. The first draw of a seed equals
    `torch.randn(shape, generator=torch.manual_seed(seed))`, the initial noise ComfyUI uses for a batch of one.

    The SDE samplers (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde) take their per-step noise from here too instead
    of from a Brownian tree. Increments over the disjoint intervals of successive steps are independent normals,
    as on a Brownian path, and dpmpp_sde correlates its two overlapping increments of one step exactly as a
    Brownian path would; what is lost is only the tree's property that one seed traces the same path at any step
    count, so images of one seed at different step counts differ more than with a tree.
    """

    __slots__ = ("_generators",)

    def __init__(self, seeds: int | Sequence[int]) -> None:
        seed_list = [seeds] if isinstance(seeds, int) else list(seeds)
        if not seed_list:
            raise SamplingError("noise needs at least one seed")
        for seed in seed_list:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
                raise SamplingError(f"noise seed must be a whole number from 0 to 2**64 - 1, not {seed!r}")
        self._generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seed_list]

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """Fresh standard-normal noise of x's shape, device and dtype (its batch size must match the seeds)."""
        if x.ndim == 0 or x.shape[0] != len(self._generators):
            raise SamplingError(
                f"noise for {len(self._generators)} seed(s) cannot fill a batch of shape {tuple(x.shape)}"
            )
        item_shape = (1, *x.shape[1:])
        draws = [torch.randn(item_shape, generator=generator, dtype=torch.float32) for generator in self._generators]
        noise = draws[0] if len(draws) == 1 else torch.cat(draws)
        if x.device.type == "cuda":
            # From pinned memory the copy is queued behind the running kernels instead of waiting for them.
            noise = noise.pin_memory()
        return noise.to(x.device, non_blocking=True).to(x.dtype)


class SamplerFn(Protocol):
    """What every `sample_<name>` function accepts; the extra tuning keywords (eta, s_noise...) have defaults."""

    def __call__(
        self,
        denoise: DenoiseFn,
        x: torch.Tensor,
        sigmas: Sequence[float],
        *,
        noise: NoiseSource,
        callback: StepCallback | None = None,
    ) -> torch.Tensor: ...


def _sigma_list(sigmas: Sequence[float]) -> list[float]:
    values = [float(sigma) for sigma in sigmas]
    if len(values) < 2:
        raise SamplingError(f"a sampler needs at least two sigmas, got {len(values)}")
    if not all(math.isfinite(sigma) for sigma in values) or values[-1] < 0.0:
        raise SamplingError(f"sigmas must be finite and non-negative, not {values[:3]}...{values[-2:]}")
    if any(low >= high for high, low in itertools.pairwise(values)):
        raise SamplingError("sigmas must be strictly decreasing")
    return values


def _ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add sigma_up of fresh noise, so
    that the variance lands on sigma_next². eta scales the share of fresh noise (0 = deterministic)."""
    if eta == 0.0 or sigma_next == 0.0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def _euler_to(x: torch.Tensor, denoised: torch.Tensor, sigma: float, target: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE from sigma to target along d = (x − D)/sigma; the step to
    sigma 0 lands exactly on D."""
    if target == 0.0:
        return denoised
    return x + (x - denoised) * ((target - sigma) / sigma)


def _report(callback: StepCallback | None, index: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback(index + 1, total, x, denoised)


def sample_euler(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn); also DDIM."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    for i in range(total):
        denoised = denoise(x, sig[i])
        x = _euler_to(x, denoised, sig[i], sig[i + 1])
        _report(callback, i, total, x, denoised)
    return x


def sample_euler_ancestral(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler steps down to sigma_down, then fresh noise back up to the next sigma."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    for i in range(total):
        denoised = denoise(x, sig[i])
        down, up = _ancestral_step(sig[i], sig[i + 1], eta)
        x = _euler_to(x, denoised, sig[i], down)
        if up > 0.0:
            x = x + noise.like(x) * (s_noise * up)
        _report(callback, i, total, x, denoised)
    return x


def sample_heun(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Heun's second-order method (two model calls per step; Euler for the last step to sigma 0)."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    for i in range(total):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(x, sigma)
        if sigma_next == 0.0:
            x = _euler_to(x, denoised, sigma, sigma_next)
        else:
            slope = (x - denoised) / sigma
            x_next = x + slope * (sigma_next - sigma)
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x = x + (slope + slope_next) * (0.5 * (sigma_next - sigma))
        _report(callback, i, total, x, denoised)
    return x


def _dpm2_step(
    denoise: DenoiseFn, x: torch.Tensor, denoised: torch.Tensor, sigma: float, target: float
) -> torch.Tensor:
    """DPM-Solver-2 in sigma: the slope is taken again at the geometric midpoint of sigma and target; a step to
    sigma 0 (no midpoint) is a plain Euler step."""
    if target == 0.0:
        return _euler_to(x, denoised, sigma, target)
    sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(target)))
    x_mid = _euler_to(x, denoised, sigma, sigma_mid)
    slope_mid = (x_mid - denoise(x_mid, sigma_mid)) / sigma_mid
    return x + slope_mid * (target - sigma)


def sample_dpm_2(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver-2 midpoint steps (two model calls per step; Euler for the last step to sigma 0)."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    for i in range(total):
        denoised = denoise(x, sig[i])
        x = _dpm2_step(denoise, x, denoised, sig[i], sig[i + 1])
        _report(callback, i, total, x, denoised)
    return x


def sample_dpm_2_ancestral(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-2 steps down to sigma_down, then fresh noise back up to the next sigma."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    for i in range(total):
        sigma = sig[i]
        denoised = denoise(x, sigma)
        down, up = _ancestral_step(sigma, sig[i + 1], eta)
        x = _dpm2_step(denoise, x, denoised, sigma, down)
        if up > 0.0:
            x = x + noise.like(x) * (s_noise * up)
        _report(callback, i, total, x, denoised)
    return x


def _lms_coefficients(sig: list[float], i: int, order: int) -> list[float]:
    """Weights of the last `order` slopes: each Lagrange basis polynomial through the sigmas of those slopes,
    integrated exactly from sig[i] to sig[i + 1]. Newest slope first. Polynomials are taken in sigma − sig[i],
    which keeps them well conditioned where the sigmas are large and close together."""
    nodes = [sig[i - k] - sig[i] for k in range(order)]
    step = sig[i + 1] - sig[i]
    weights = []
    for j in range(order):
        basis = np.polynomial.Polynomial([1.0])
        for k, other in enumerate(nodes):
            if k != j:
                basis = basis * np.polynomial.Polynomial([-other, 1.0]) / (nodes[j] - other)
        antiderivative = basis.integ()
        weights.append(float(antiderivative(step) - antiderivative(0.0)))
    return weights


def sample_lms(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep in sigma over the last `order` slopes (fewer at the start); one model call per step."""
    if not 1 <= order <= 8:
        raise SamplingError(f"lms order must be between 1 and 8, not {order}")
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    slopes: deque[torch.Tensor] = deque(maxlen=order)
    for i in range(total):
        denoised = denoise(x, sig[i])
        slopes.appendleft((x - denoised) / sig[i])
        for weight, slope in zip(_lms_coefficients(sig, i, len(slopes)), slopes, strict=True):
            x = x + slope * weight
        _report(callback, i, total, x, denoised)
    return x


def sample_dpmpp_2s_ancestral(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2S) single-step second order down to sigma_down, then fresh noise (two calls per step).

    In t = −log sigma with h = t_down − t, the data prediction is taken again at t + h/2. A first-order
    DPM-Solver++ step `(σ'/σ)·x − expm1(−h)·D` is algebraically the Euler step to σ', and is written as one.
    """
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    for i in range(total):
        sigma = sig[i]
        denoised = denoise(x, sigma)
        down, up = _ancestral_step(sigma, sig[i + 1], eta)
        if down == 0.0:
            x = _euler_to(x, denoised, sigma, down)
        else:
            sigma_mid = math.sqrt(sigma * down)
            x_mid = _euler_to(x, denoised, sigma, sigma_mid)
            x = _euler_to(x, denoise(x_mid, sigma_mid), sigma, down)
        if up > 0.0:
            x = x + noise.like(x) * (s_noise * up)
        _report(callback, i, total, x, denoised)
    return x


def sample_dpmpp_sde(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
) -> torch.Tensor:
    """DPM-Solver++ stochastic second order (two calls per step): an ancestral step to t + r·h (t = −log sigma),
    then the full ancestral step with D mixed from both evaluations; Euler for the last step to sigma 0."""
    if not 0.0 < r < 1.0:
        raise SamplingError(f"dpmpp_sde r must be between 0 and 1, not {r}")
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    mix = 1.0 / (2.0 * r)
    for i in range(total):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(x, sigma)
        if sigma_next == 0.0:
            x = _euler_to(x, denoised, sigma, sigma_next)
        else:
            # sigma_s sits at t + r·h in t = −log sigma.
            sigma_s = sigma ** (1.0 - r) * sigma_next**r
            down, up = _ancestral_step(sigma, sigma_s, eta)
            x_s = _euler_to(x, denoised, sigma, down)
            first = noise.like(x) if up > 0.0 else None
            if first is not None:
                x_s = x_s + first * (s_noise * up)
            denoised_s = denoise(x_s, sigma_s)
            down, up = _ancestral_step(sigma, sigma_next, eta)
            x = _euler_to(x, denoised * (1.0 - mix) + denoised_s * mix, sigma, down)
            if first is not None and up > 0.0:
                # Both noises are normalised Brownian increments over [sigma_s, sigma] and [sigma_next, sigma]:
                # the second interval contains the first, so the second noise shares that part of the path.
                share = (sigma - sigma_s) / (sigma - sigma_next)
                second = first * math.sqrt(share) + noise.like(x) * math.sqrt(1.0 - share)
                x = x + second * (s_noise * up)
        _report(callback, i, total, x, denoised)
    return x


def sample_dpmpp_2m(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep on the data prediction, one model call per step.

    The step `(σ'/σ)·x − expm1(−h)·D'` is written as the equal Euler step towards D'.
    """
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    previous: torch.Tensor | None = None
    for i in range(total):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(x, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            target = denoised
            if previous is not None:
                # r = h_last / h in t = −log sigma; D' = (1 + 1/2r)·D − (1/2r)·D_previous.
                half_inverse_ratio = 0.5 * math.log(sigma / sigma_next) / math.log(sig[i - 1] / sigma)
                target = denoised * (1.0 + half_inverse_ratio) - previous * half_inverse_ratio
            x = _euler_to(x, target, sigma, sigma_next)
        previous = denoised
        _report(callback, i, total, x, denoised)
    return x


def sample_dpmpp_2m_sde(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver: Literal["midpoint", "heun"] = "midpoint",
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the 2M step with eta·h of the log-SNR step re-noised; one call per step."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    previous: torch.Tensor | None = None
    h_last = 0.0
    for i in range(total):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(x, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            decay = -math.expm1(-h - eta_h)
            x = x * (sigma_next / sigma * math.exp(-eta_h)) + denoised * decay
            if previous is not None:
                inverse_ratio = h / h_last
                if solver == "heun":
                    weight = (decay / (-h - eta_h) + 1.0) * inverse_ratio
                else:
                    weight = 0.5 * decay * inverse_ratio
                x = x + (denoised - previous) * weight
            if eta_h > 0.0:
                x = x + noise.like(x) * (sigma_next * math.sqrt(-math.expm1(-2.0 * eta_h)) * s_noise)
            h_last = h
        previous = denoised
        _report(callback, i, total, x, denoised)
    return x


def sample_dpmpp_2m_sde_heun(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE with the Heun-type second-order correction instead of the midpoint one."""
    return sample_dpmpp_2m_sde(
        denoise, x, sigmas, noise=noise, callback=callback, eta=eta, s_noise=s_noise, solver="heun"
    )


def sample_dpmpp_3m_sde(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep on the data prediction (first and second order on the first
    two steps), with eta·h re-noised; one call per step."""
    sig = _sigma_list(sigmas)
    total = len(sig) - 1
    denoised_1: torch.Tensor | None = None
    denoised_2: torch.Tensor | None = None
    h_1: float | None = None
    h_2: float | None = None
    for i in range(total):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(x, sigma)
        h: float | None = None
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (eta + 1.0)
            x = x * math.exp(-h_eta) + denoised * -math.expm1(-h_eta)
            phi_2 = math.expm1(-h_eta) / h_eta + 1.0
            if denoised_1 is not None and h_1 is not None:
                r0 = h_1 / h
                d1_0 = (denoised - denoised_1) * (1.0 / r0)
                if denoised_2 is not None and h_2 is not None:
                    r1 = h_2 / h
                    d1_1 = (denoised_1 - denoised_2) * (1.0 / r1)
                    d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                    d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1))
                    phi_3 = phi_2 / h_eta - 0.5
                    x = x + d1 * phi_2 - d2 * phi_3
                else:
                    x = x + d1_0 * phi_2
            if eta > 0.0:
                x = x + noise.like(x) * (sigma_next * math.sqrt(-math.expm1(-2.0 * h * eta)) * s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        _report(callback, i, total, x, denoised)
    return x


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """A sampler by name, with how its schedule is built.

    `discard_penultimate`: the schedule is built for one step more and its next-to-last sigma dropped (DPM2's
    two-call steps otherwise spend a whole step between sigma_min and a sigma barely above it).
    `scheduler`: a schedule the sampler always uses whatever the request says (DDIM is Euler on the DDIM grid;
    NovelAI likewise ignores the noise schedule for DDIM).
    """

    name: str
    function: SamplerFn
    discard_penultimate: bool = False
    scheduler: str | None = None


SAMPLERS: Final[Mapping[str, SamplerSpec]] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            SamplerSpec("euler", sample_euler),
            SamplerSpec("euler_ancestral", sample_euler_ancestral),
            SamplerSpec("heun", sample_heun),
            SamplerSpec("dpm_2", sample_dpm_2, discard_penultimate=True),
            SamplerSpec("dpm_2_ancestral", sample_dpm_2_ancestral, discard_penultimate=True),
            SamplerSpec("lms", sample_lms),
            SamplerSpec("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral),
            SamplerSpec("dpmpp_sde", sample_dpmpp_sde),
            SamplerSpec("dpmpp_2m", sample_dpmpp_2m),
            SamplerSpec("dpmpp_2m_sde", sample_dpmpp_2m_sde),
            SamplerSpec("dpmpp_2m_sde_heun", sample_dpmpp_2m_sde_heun),
            SamplerSpec("dpmpp_3m_sde", sample_dpmpp_3m_sde),
            SamplerSpec("ddim", sample_euler, scheduler="ddim_uniform"),
        )
    }
)
SAMPLER_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # NovelAI's names: k-diffusion samplers carry a "k_" prefix, and V3's DDIM is "ddim_v3".
        **{f"k_{name}": name for name in SAMPLERS if name != "ddim"},
        "ddim_v3": "ddim",
    }
)


def resolve_sampler(name: str) -> SamplerSpec:
    """The sampler called `name` (ComfyUI's names or NovelAI's), case-insensitively."""
    key = name.strip().lower()
    key = SAMPLER_ALIASES.get(key, key)
    try:
        return SAMPLERS[key]
    except KeyError:
        raise SamplingError(
            f"unknown sampler {name!r} for the local engine; choose one of: {', '.join(SAMPLERS)} "
            "(or NovelAI's k_... names)"
        ) from None


def sigmas_for_denoise(schedule: Callable[[int], list[float]], steps: int, strength: float) -> list[float]:
    """The sigmas for img2img at `strength` (denoise): the last steps + 1 sigmas of a schedule built for
    int(steps / strength) steps, so that exactly `steps` steps run, starting part-way down (ComfyUI's rule).
    Strength 1 is the plain schedule from pure noise."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SamplingError(f"steps must be a whole number of at least 1, not {steps!r}")
    if not (math.isfinite(strength) and 0.0 < strength <= 1.0):
        raise SamplingError(f"denoising strength must be above 0 and at most 1, not {strength}")
    if strength >= STRENGTH_FULL:
        return schedule(steps)
    longer = int(steps / strength)
    if longer > MAX_SCHEDULE_STEPS:
        raise SamplingError(
            f"{steps} steps at strength {strength:g} need a {longer}-step schedule, more than {MAX_SCHEDULE_STEPS}"
        )
    return schedule(longer)[-(steps + 1) :]


def build_sigmas(
    model: DiscreteSigmas, *, sampler: str, scheduler: str, steps: int, denoise: float = 1.0
) -> list[float]:
    """The sigmas one generation runs through, as Python floats, from the request's sampler and scheduler names,
    its step count and its img2img strength."""
    spec = resolve_sampler(sampler)
    make = resolve_scheduler(spec.scheduler or scheduler)

    def full(count: int) -> list[float]:
        if not spec.discard_penultimate:
            return make(model, count)
        longer = make(model, count + 1)
        return longer[:-2] + longer[-1:]

    return sigmas_for_denoise(full, steps, denoise)


def noised_latent(latent: torch.Tensor, noise: torch.Tensor, sigma: float, *, sigma_max: float) -> torch.Tensor:
    """The sampler's starting point at `sigma`: latent + noise·sigma for img2img, and
    latent + noise·sqrt(1 + sigma²) when starting from pure noise (sigma at the model's sigma_max), the variance
    the model's last training timestep actually had."""
    from_pure_noise = sigma >= sigma_max or math.isclose(sigma, sigma_max, rel_tol=1e-5)
    return latent + noise * (math.sqrt(1.0 + sigma * sigma) if from_pure_noise else sigma)


def inpaint_denoiser(denoise: DenoiseFn, *, latent: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> DenoiseFn:
    """Inpainting with an ordinary 4-channel model: `mask` (latent-sized, 1 = regenerate) keeps the rest.

    Before every model call the kept region of x is replaced by the source latent noised to the current sigma
    with the job's initial noise, `x = x·m + (latent + noise·sigma)·(1 − m)`; after it, the kept region of the
    estimate is the source latent itself, `D = D·m + latent·(1 − m)`. The final step to sigma 0 returns D, so the
    kept region comes back exactly as the source latent.
    """
    keep = 1.0 - mask
    kept_latent = latent * keep
    kept_noise = noise * keep

    def masked(x: torch.Tensor, sigma: float) -> torch.Tensor:
        blended = x * mask + kept_latent + kept_noise * sigma
        return denoise(blended, sigma) * mask + kept_latent

    return masked


def run_sampling(
    denoise: DenoiseFn,
    latent: torch.Tensor,
    sigmas: Sequence[float],
    *,
    sampler: str,
    noise: NoiseSource,
    sigma_max: float,
    mask: torch.Tensor | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample a latent: txt2img (`latent` zeros), img2img (`latent` the scaled VAE latent and `sigmas` from
    `build_sigmas(..., denoise=strength)`), or inpainting with a 4-channel model (`mask` given).

    The initial noise is the first draw of `noise`; the sampler's own per-step noise follows it from the same
    generators. Returns the denoised latent (still scaled by the VAE's scale factor).
    """
    spec = resolve_sampler(sampler)
    sig = _sigma_list(sigmas)
    initial = noise.like(latent)
    x = noised_latent(latent, initial, sig[0], sigma_max=sigma_max)
    if mask is not None:
        denoise = inpaint_denoiser(denoise, latent=latent, noise=initial, mask=mask)
    return spec.function(denoise, x, sig, noise=noise, callback=callback)
