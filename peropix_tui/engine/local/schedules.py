"""Noise levels: the 1000 discrete training sigmas of SD1.5/SDXL and the step schedules drawn from them.

Everything here is plain Python floats and numpy on the CPU. Samplers branch on sigma values every step, and a
sigma held in a GPU tensor would make each branch wait for the device; schedules are therefore built once, here,
as lists of floats ending in 0.0 (descending, one entry more than the number of steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from peropix_tui.engine.local.errors import LocalEngineError

FloatArray = npt.NDArray[np.float64]

BETA_START: Final = 0.00085
BETA_END: Final = 0.012
TRAIN_TIMESTEPS: Final = 1000
ZTSNR_FINAL_ALPHA_BAR: Final = 4.8973451890853435e-08
"""ᾱ of the last timestep after the zero-terminal-SNR rescale: kept above 0 so that sigma stays finite."""
MAX_SCHEDULE_STEPS: Final = 100_000
"""Longest schedule built (1000 steps at img2img strength 0.01); keeps a typo from allocating without bound."""
_BETA_CF_TERMS: Final = 200


class ScheduleError(LocalEngineError):
    """A schedule that cannot be built: unknown name, step count or beta settings out of range."""


class DiscreteSigmas:
    """The noise level of each training timestep of a discrete (DDPM-trained) model, ascending with the timestep.

    Built from the scaled-linear beta schedule (linear in sqrt(beta)) that SD1.5 and SDXL were trained with:
    ᾱ = cumprod(1 − β), σ = sqrt((1 − ᾱ)/ᾱ). `zsnr` applies the zero-terminal-SNR rescale that v-prediction
    models trained that way (NoobAI-XL V-pred and similar) expect: sqrt(ᾱ) is shifted and scaled so that the
    last timestep carries (almost) no signal, which lifts σ_max from 14.6 to about 4518.8.
    """

    __slots__ = ("_log_sigmas", "_sigmas")

    def __init__(
        self,
        *,
        beta_start: float = BETA_START,
        beta_end: float = BETA_END,
        timesteps: int = TRAIN_TIMESTEPS,
        zsnr: bool = False,
    ) -> None:
        if not 0.0 < beta_start < beta_end < 1.0:
            raise ScheduleError(f"beta schedule needs 0 < beta_start < beta_end < 1, not {beta_start}..{beta_end}")
        if not 2 <= timesteps <= 100_000:
            raise ScheduleError(f"training timesteps must be between 2 and 100000, not {timesteps}")
        betas = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), timesteps, dtype=np.float64) ** 2
        alpha_bar: FloatArray = np.cumprod(1.0 - betas, dtype=np.float64)
        if zsnr:
            alpha_bar = _zero_terminal_snr(alpha_bar)
        sigmas = np.sqrt((1.0 - alpha_bar) / alpha_bar)
        sigmas.flags.writeable = False
        log_sigmas = np.log(sigmas)
        log_sigmas.flags.writeable = False
        self._sigmas: FloatArray = sigmas
        self._log_sigmas: FloatArray = log_sigmas

    @property
    def sigmas(self) -> FloatArray:
        """The sigma of every training timestep (read-only), index = timestep."""
        return self._sigmas

    @property
    def sigma_min(self) -> float:
        return float(self._sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self._sigmas[-1])

    def timestep(self, sigma: float) -> int:
        """The training timestep whose sigma is nearest in log space: the integer the UNet is conditioned on."""
        if sigma <= 0.0:
            return 0
        return int(np.argmin(np.abs(self._log_sigmas - math.log(sigma))))

    def sigma(self, t: float) -> float:
        """The sigma at a (fractional) timestep, interpolating log sigma linearly between its two neighbours."""
        return float(self.sigmas_at(np.array([t], dtype=np.float64))[0])

    def sigmas_at(self, ts: FloatArray) -> FloatArray:
        """`sigma(t)` for an array of timesteps at once (clamped to the trained range)."""
        t = np.clip(ts, 0.0, len(self._sigmas) - 1)
        low = np.floor(t).astype(np.intp)
        high = np.ceil(t).astype(np.intp)
        weight = t - low
        return np.exp((1.0 - weight) * self._log_sigmas[low] + weight * self._log_sigmas[high])


def _zero_terminal_snr(alpha_bar: FloatArray) -> FloatArray:
    root = np.sqrt(alpha_bar)
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    rescaled: FloatArray = root**2
    rescaled[-1] = ZTSNR_FINAL_ALPHA_BAR
    return rescaled


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_SCHEDULE_STEPS:
        raise ScheduleError(f"schedule steps must be a whole number from 1 to {MAX_SCHEDULE_STEPS}, not {steps!r}")


def _with_zero(sigmas: FloatArray) -> list[float]:
    values: list[float] = sigmas.tolist()
    values.append(0.0)
    return values


def _first_of_runs(indices: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """The indices with consecutive repeats dropped, so that no schedule has a step of length zero."""
    keep = np.concatenate(([True], indices[1:] != indices[:-1]))
    return indices[keep]


def normal_sigmas(model: DiscreteSigmas, steps: int) -> list[float]:
    """Timesteps evenly spaced from the last to the first training step (both included), as sigmas."""
    _check_steps(steps)
    start, end = model.timestep(model.sigma_max), model.timestep(model.sigma_min)
    return _with_zero(model.sigmas_at(np.linspace(start, end, steps, dtype=np.float64)))


def sgm_uniform_sigmas(model: DiscreteSigmas, steps: int) -> list[float]:
    """Like `normal_sigmas` over steps + 1 points with the last dropped (the SGM/LCM spacing)."""
    _check_steps(steps)
    start, end = model.timestep(model.sigma_max), model.timestep(model.sigma_min)
    return _with_zero(model.sigmas_at(np.linspace(start, end, steps + 1, dtype=np.float64)[:-1]))


def karras_sigmas(model: DiscreteSigmas, steps: int, *, rho: float = 7.0) -> list[float]:
    """Karras et al. (2022): sigmas evenly spaced in sigma^(1/rho), denser at low noise."""
    _check_steps(steps)
    low, high = model.sigma_min ** (1.0 / rho), model.sigma_max ** (1.0 / rho)
    ramp = np.linspace(0.0, 1.0, steps, dtype=np.float64)
    return _with_zero((high + ramp * (low - high)) ** rho)


def exponential_sigmas(model: DiscreteSigmas, steps: int) -> list[float]:
    """Sigmas evenly spaced in log sigma (NovelAI's "polyexponential" at its usual rho of 1 is the same curve)."""
    _check_steps(steps)
    return _with_zero(np.exp(np.linspace(math.log(model.sigma_max), math.log(model.sigma_min), steps)))


def simple_sigmas(model: DiscreteSigmas, steps: int) -> list[float]:
    """Every (1000/steps)-th training sigma, counted down from the top. Asked for more steps than there are
    training steps, it gives each training sigma once rather than repeating sigmas (a zero-length step)."""
    _check_steps(steps)
    stride = len(model.sigmas) / steps
    indices = len(model.sigmas) - 1 - (np.arange(steps, dtype=np.float64) * stride).astype(np.intp)
    return _with_zero(model.sigmas[_first_of_runs(indices)])


def ddim_uniform_sigmas(model: DiscreteSigmas, steps: int) -> list[float]:
    """The DDIM grid: training timesteps 1, 1 + k, 1 + 2k, ... with k = 1000 // steps, highest first.

    When 1000 is not a multiple of `steps` this grid has a step or two more than asked (30 steps give 31), as in
    ComfyUI's ddim_uniform.
    """
    _check_steps(steps)
    stride = max(len(model.sigmas) // steps, 1)
    return _with_zero(model.sigmas[1::stride][::-1])


def beta_sigmas(model: DiscreteSigmas, steps: int, *, alpha: float = 0.6, beta: float = 0.6) -> list[float]:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (arXiv 2407.12173), rounded to training steps.

    With alpha = beta < 1 the steps crowd at both ends of the trajectory. Rounded timesteps that repeat are
    kept once, so a large step count can give a shorter schedule.
    """
    _check_steps(steps)
    if not (0.0 < alpha <= 1000.0 and 0.0 < beta <= 1000.0):
        raise ScheduleError(f"beta schedule shape must be positive, not alpha={alpha} beta={beta}")
    last = len(model.sigmas) - 1
    quantiles = 1.0 - np.linspace(0.0, 1.0, steps, endpoint=False, dtype=np.float64)
    # round(ppf(q) * last) == k  <=>  cdf((k - 0.5)/last) <= q < cdf((k + 0.5)/last): one CDF evaluation per
    # training step replaces inverting the CDF for every quantile.
    edges = beta_cdf((np.arange(last, dtype=np.float64) + 0.5) / last, alpha, beta)
    timesteps = np.searchsorted(edges, quantiles, side="right")
    return _with_zero(model.sigmas[_first_of_runs(timesteps)])


def kl_optimal_sigmas(model: DiscreteSigmas, steps: int) -> list[float]:
    """The KL-optimal schedule of "Align Your Steps": evenly spaced in arctan(sigma)."""
    _check_steps(steps)
    if steps == 1:
        return [model.sigma_max, 0.0]
    ramp = np.arange(steps, dtype=np.float64) / (steps - 1)
    return _with_zero(np.tan(ramp * math.atan(model.sigma_min) + (1.0 - ramp) * math.atan(model.sigma_max)))


def beta_cdf(x: FloatArray, a: float, b: float) -> FloatArray:
    """The regularised incomplete beta function I_x(a, b) for x in [0, 1], elementwise.

    Evaluated by its continued fraction (modified Lentz) on the side of the mean where it converges fast, and
    by the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) on the other; the engine needs no scipy for this one use.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    low_side = x < (a + 1.0) / (a + b + 2.0)
    direct = _beta_cdf_lower(np.where(low_side, x, 0.5 * (a + 1.0) / (a + b + 2.0)), a, b)
    mirrored = 1.0 - _beta_cdf_lower(np.where(low_side, 0.5, 1.0 - x), b, a)
    return np.where(low_side, direct, mirrored)


def _beta_cdf_lower(x: FloatArray, a: float, b: float) -> FloatArray:
    tiny = 1e-300
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    with np.errstate(divide="ignore"):
        front = np.exp(a * np.log(x) + b * np.log1p(-x) - log_beta) / a
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    fraction = d.copy()
    for m in range(1, _BETA_CF_TERMS + 1):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + coefficient / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            fraction = fraction * d * c
    result: FloatArray = front * fraction
    return result


Scheduler = Callable[[DiscreteSigmas, int], list[float]]
"""Builds the sigmas of `steps` steps for a model: a descending list of steps + 1 floats ending in 0.0."""

SCHEDULERS: Final[Mapping[str, Scheduler]] = MappingProxyType(
    {
        "normal": normal_sigmas,
        "karras": karras_sigmas,
        "exponential": exponential_sigmas,
        "sgm_uniform": sgm_uniform_sigmas,
        "simple": simple_sigmas,
        "ddim_uniform": ddim_uniform_sigmas,
        "beta": beta_sigmas,
        "kl_optimal": kl_optimal_sigmas,
    }
)
SCHEDULER_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # NovelAI's noise_schedule names: "native" is the model's own discrete schedule.
        "native": "normal",
        "polyexponential": "exponential",
    }
)


def resolve_scheduler(name: str) -> Scheduler:
    """The scheduler called `name` (ComfyUI's names, or NovelAI's noise_schedule names), case-insensitively."""
    key = name.strip().lower()
    key = SCHEDULER_ALIASES.get(key, key)
    try:
        return SCHEDULERS[key]
    except KeyError:
        known = ", ".join([*SCHEDULERS, *SCHEDULER_ALIASES])
        raise ScheduleError(f"unknown scheduler {name!r} for the local engine; choose one of: {known}") from None
