"""Discrete SDXL sigmas and the step schedules built from them, against golden values and closed forms."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peropix_tui.engine.local.schedules import (
    SCHEDULER_ALIASES,
    SCHEDULERS,
    DiscreteSigmas,
    ScheduleError,
    beta_cdf,
    beta_sigmas,
    ddim_uniform_sigmas,
    exponential_sigmas,
    karras_sigmas,
    kl_optimal_sigmas,
    normal_sigmas,
    resolve_scheduler,
    sgm_uniform_sigmas,
    simple_sigmas,
)

SDXL = DiscreteSigmas()

# Golden SDXL schedules for 20 steps (local-engine spec, section 4.6).
GOLDEN_NORMAL = [14.6146, 10.7468, 8.0815, 6.2049, 4.8557, 3.8654, 3.1238, 2.5572, 2.1157, 1.7648,
                 1.4806, 1.2458, 1.0481, 0.8784, 0.7297, 0.5964, 0.4736, 0.3555, 0.2322, 0.0292, 0.0]  # fmt: skip
GOLDEN_SGM_UNIFORM = [14.6146, 10.9073, 8.3072, 6.4477, 5.0924, 4.0861, 3.3251, 2.7391, 2.2797, 1.9132,
                      1.6156, 1.3696, 1.1629, 0.9860, 0.8319, 0.6951, 0.5712, 0.4557, 0.3437, 0.2255, 0.0]  # fmt: skip
GOLDEN_KARRAS = [14.6146, 11.7254, 9.3402, 7.3836, 5.7894, 4.4998, 3.4647, 2.6408, 1.9909, 1.4832,
                 1.0908, 0.7909, 0.5647, 0.3964, 0.2730, 0.1842, 0.1213, 0.0779, 0.0485, 0.0292, 0.0]  # fmt: skip


def test_training_sigmas_span_the_sdxl_range() -> None:
    assert len(SDXL.sigmas) == 1000
    assert SDXL.sigma_min == pytest.approx(0.0291672, abs=5e-7)
    assert SDXL.sigma_max == pytest.approx(14.614641, abs=5e-6)
    assert np.all(np.diff(SDXL.sigmas) > 0)


def test_training_sigmas_follow_the_scaled_linear_betas() -> None:
    betas = [(math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * i / 999) ** 2 for i in (0, 1, 2)]
    alpha_bar = 1.0
    for index, beta in enumerate(betas):
        alpha_bar *= 1.0 - beta
        assert SDXL.sigmas[index] == pytest.approx(math.sqrt((1.0 - alpha_bar) / alpha_bar), rel=1e-12)


def test_zero_terminal_snr_lifts_sigma_max_and_keeps_sigma_min() -> None:
    zsnr = DiscreteSigmas(zsnr=True)
    assert zsnr.sigma_max == pytest.approx(4518.7637, abs=1e-3)
    assert zsnr.sigma_min == pytest.approx(SDXL.sigma_min, rel=1e-9)
    assert np.all(np.diff(zsnr.sigmas) > 0)
    assert karras_sigmas(zsnr, 10)[0] == pytest.approx(4518.7637, abs=1e-3)


def test_sigmas_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        SDXL.sigmas[0] = 1.0


@pytest.mark.parametrize("index", [0, 1, 17, 500, 998, 999])
def test_timestep_of_a_training_sigma_is_its_index(index: int) -> None:
    assert SDXL.timestep(float(SDXL.sigmas[index])) == index
    assert SDXL.sigma(index) == pytest.approx(SDXL.sigmas[index], rel=1e-12)


def test_timestep_is_the_nearest_in_log_sigma() -> None:
    low, high = float(SDXL.sigmas[400]), float(SDXL.sigmas[401])
    geometric_mean = math.sqrt(low * high)
    # Just below the log-midpoint is nearer to 400, just above to 401 (an arithmetic midpoint would not split here).
    assert SDXL.timestep(geometric_mean * (1 - 1e-9)) == 400
    assert SDXL.timestep(geometric_mean * (1 + 1e-9)) == 401
    assert SDXL.timestep(1e6) == 999
    assert SDXL.timestep(1e-6) == 0
    assert SDXL.timestep(0.0) == 0


def test_sigma_interpolates_log_sigma_between_timesteps() -> None:
    low, high = float(SDXL.sigmas[250]), float(SDXL.sigmas[251])
    assert SDXL.sigma(250.5) == pytest.approx(math.sqrt(low * high), rel=1e-12)
    assert SDXL.sigma(250.25) == pytest.approx(low**0.75 * high**0.25, rel=1e-12)
    assert SDXL.sigma(-3.0) == pytest.approx(SDXL.sigma_min)
    assert SDXL.sigma(5000.0) == pytest.approx(SDXL.sigma_max)


@pytest.mark.parametrize(
    ("scheduler", "golden"),
    [(normal_sigmas, GOLDEN_NORMAL), (sgm_uniform_sigmas, GOLDEN_SGM_UNIFORM), (karras_sigmas, GOLDEN_KARRAS)],
)
def test_golden_sdxl_schedules(scheduler: object, golden: list[float]) -> None:
    assert callable(scheduler)
    sigmas = scheduler(SDXL, 20)
    assert sigmas == pytest.approx(golden, abs=6e-5)
    assert all(isinstance(sigma, float) for sigma in sigmas)


def test_exponential_is_evenly_spaced_in_log_sigma() -> None:
    sigmas = exponential_sigmas(SDXL, 12)
    logs = np.log(sigmas[:-1])
    assert sigmas[0] == pytest.approx(SDXL.sigma_max) and sigmas[-2] == pytest.approx(SDXL.sigma_min)
    assert np.diff(logs) == pytest.approx(np.full(11, (logs[-1] - logs[0]) / 11))


def test_simple_takes_every_nth_training_sigma_from_the_top() -> None:
    sigmas = simple_sigmas(SDXL, 20)
    assert sigmas[:-1] == pytest.approx([SDXL.sigmas[999 - 50 * k] for k in range(20)], rel=1e-12)
    assert sigmas[-1] == 0.0


def test_simple_with_more_steps_than_training_steps_never_repeats_a_sigma() -> None:
    sigmas = simple_sigmas(SDXL, 2500)
    assert len(sigmas) == 1001
    assert np.all(np.diff(sigmas) < 0)


def test_ddim_uniform_uses_the_ddim_grid() -> None:
    sigmas = ddim_uniform_sigmas(SDXL, 20)
    assert sigmas[:-1] == pytest.approx([SDXL.sigmas[t] for t in range(951, 0, -50)], rel=1e-12)
    assert sigmas[-1] == 0.0
    # 1000 // 30 = 33 gives timesteps 1, 34, ..., 991: one step more than asked.
    assert len(ddim_uniform_sigmas(SDXL, 30)) == 32


def test_kl_optimal_is_evenly_spaced_in_arctan_sigma() -> None:
    sigmas = kl_optimal_sigmas(SDXL, 15)
    angles = np.arctan(sigmas[:-1])
    assert sigmas[0] == pytest.approx(SDXL.sigma_max) and sigmas[-2] == pytest.approx(SDXL.sigma_min)
    assert np.diff(angles) == pytest.approx(np.full(14, (angles[-1] - angles[0]) / 14))
    assert kl_optimal_sigmas(SDXL, 1) == [SDXL.sigma_max, 0.0]


def _mp_beta_cdf(x: float, a: float, b: float) -> float:
    return float(mpmath.betainc(a, b, 0, x, regularized=True))


@pytest.mark.parametrize(("alpha", "beta"), [(0.6, 0.6), (0.5, 0.5), (2.0, 5.0)])
def test_beta_schedule_picks_the_rounded_beta_quantiles(alpha: float, beta: float) -> None:
    steps = 25
    sigmas = beta_sigmas(SDXL, steps, alpha=alpha, beta=beta)
    timesteps = [SDXL.timestep(sigma) for sigma in sigmas[:-1]]
    expected: list[int] = []
    for k in range(steps):
        quantile = 1.0 - k / steps
        # The chosen timestep t is the one with cdf((t - 0.5)/999) <= q < cdf((t + 0.5)/999).
        t = next(t for t in range(1000) if t == 999 or quantile < _mp_beta_cdf((t + 0.5) / 999, alpha, beta))
        if not expected or expected[-1] != t:
            expected.append(t)
    assert timesteps == expected
    assert sigmas[-1] == 0.0


def test_beta_schedule_crowds_steps_at_both_ends() -> None:
    timesteps = [SDXL.timestep(sigma) for sigma in beta_sigmas(SDXL, 20)[:-1]]
    gaps = np.diff(timesteps)
    assert timesteps[0] == 999
    assert abs(gaps[0]) < abs(gaps[9]) and abs(gaps[-1]) < abs(gaps[9])


def test_beta_cdf_matches_closed_forms() -> None:
    x = np.linspace(0.0, 1.0, 101)
    assert beta_cdf(x, 0.5, 0.5) == pytest.approx(2 / np.pi * np.arcsin(np.sqrt(x)), abs=1e-12)
    assert beta_cdf(x, 3.0, 1.0) == pytest.approx(x**3, abs=1e-12)
    assert beta_cdf(x, 1.0, 4.0) == pytest.approx(1 - (1 - x) ** 4, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(min_value=0.0, max_value=1.0),
    a=st.floats(min_value=0.05, max_value=50.0),
    b=st.floats(min_value=0.05, max_value=50.0),
)
def test_beta_cdf_matches_mpmath(x: float, a: float, b: float) -> None:
    assert float(beta_cdf(np.array([x]), a, b)[0]) == pytest.approx(_mp_beta_cdf(x, a, b), abs=1e-10)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("steps", [1, 2, 7, 40])
def test_every_schedule_descends_to_zero(name: str, steps: int) -> None:
    sigmas = resolve_scheduler(name)(SDXL, steps)
    assert sigmas[-1] == 0.0
    assert all(isinstance(sigma, float) for sigma in sigmas)
    assert np.all(np.diff(sigmas) < 0)
    assert sigmas[0] <= SDXL.sigma_max * (1 + 1e-12)
    if name not in {"ddim_uniform", "beta"}:
        assert len(sigmas) == steps + 1
        assert sigmas[0] == pytest.approx(SDXL.sigma_max)


@pytest.mark.parametrize(("alias", "target"), sorted(SCHEDULER_ALIASES.items()))
def test_novelai_schedule_names_resolve(alias: str, target: str) -> None:
    assert resolve_scheduler(alias) is SCHEDULERS[target]
    assert resolve_scheduler(f" {alias.upper()} ") is SCHEDULERS[target]


def test_novelai_schedule_list_is_covered() -> None:
    from peropix_tui.engine.nai.models import ALL_SCHEDULES

    for name in ALL_SCHEDULES:
        assert resolve_scheduler(name) in SCHEDULERS.values()


def test_unknown_scheduler_is_a_one_line_error() -> None:
    with pytest.raises(ScheduleError, match="unknown scheduler 'cosine'") as info:
        resolve_scheduler("cosine")
    assert "\n" not in str(info.value) and "karras" in str(info.value)


@pytest.mark.parametrize("steps", [0, -3, 100_001, 2.5, True])
def test_bad_step_counts_are_refused(steps: object) -> None:
    with pytest.raises(ScheduleError, match="schedule steps"):
        karras_sigmas(SDXL, steps)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings_",
    [{"beta_start": 0.0}, {"beta_start": 0.02, "beta_end": 0.012}, {"beta_end": 1.0}, {"timesteps": 1}],
)
def test_bad_beta_settings_are_refused(settings_: dict[str, float]) -> None:
    with pytest.raises(ScheduleError):
        DiscreteSigmas(**settings_)  # type: ignore[arg-type]


def test_bad_beta_shape_is_refused() -> None:
    with pytest.raises(ScheduleError, match="beta schedule shape"):
        beta_sigmas(SDXL, 10, alpha=0.0)
