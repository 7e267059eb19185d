"""The sampler and scheduler names the local engine takes, without importing torch.

Requests are checked while a form is edited and a command line is parsed, long before (and often without) the
engine being loaded, so the names live here; the engine's registries (`engine/local/sampling.py`,
`engine/local/schedules.py`) are tested to hold exactly these. NovelAI's spellings are accepted too, so an image
made with NovelAI can be made again locally with the same sampler.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

LOCAL_SAMPLERS: Final = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde",
    "ddim",
)
LOCAL_SCHEDULERS: Final = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "kl_optimal",
)
SAMPLER_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {**{f"k_{name}": name for name in LOCAL_SAMPLERS if name != "ddim"}, "ddim_v3": "ddim"}
)
"""NovelAI's sampler names: k-diffusion samplers with a `k_` prefix, and V3's DDIM."""
SCHEDULER_ALIASES: Final[Mapping[str, str]] = MappingProxyType({"native": "normal", "polyexponential": "exponential"})
"""NovelAI's noise schedule names: "native" is the model's own discrete schedule."""

DEFAULT_LOCAL_SAMPLER: Final = "euler_ancestral"
DEFAULT_LOCAL_SCHEDULER: Final = "normal"


def local_sampler(name: str) -> str | None:
    """The local engine's name for sampler `name` (its own or NovelAI's, any case), or None when it has none."""
    key = name.strip().lower()
    key = SAMPLER_ALIASES.get(key, key)
    return key if key in LOCAL_SAMPLERS else None


def local_scheduler(name: str) -> str | None:
    """The local engine's name for scheduler `name` (its own or NovelAI's, any case), or None when it has none."""
    key = name.strip().lower()
    key = SCHEDULER_ALIASES.get(key, key)
    return key if key in LOCAL_SCHEDULERS else None
