"""A1111-style `parameters` text: prompt, `Negative prompt:` block, and one `Key: value, ...` settings line.

Values containing a comma, colon or newline are JSON-quoted (`Lora hashes: "a: 123, b: 456"`), which is why
the settings line is tokenised rather than split on ", ". Sampler and schedule names are translated between
A1111 display names and the NovelAI ids used across the app.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_NEGATIVE = "Negative prompt:"

# Key: anything but separators; value: a JSON string or everything up to the next comma.
_PAIR = re.compile(r'\s*([^:,\n"]+?):\s*("(?:\\.|[^\\"])*"|[^,]*?)\s*(?:,|$)')

MAX_SETTINGS_LINE = 256 * 1024
"""Longer last lines are prompt text: real settings lines stay far below this, and it bounds parsing time."""

# Keys that mark a line as a settings line even when it holds fewer than three pairs.
_SETTINGS_KEYS = frozenset({"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Model hash"})

SAMPLERS_TO_A1111: dict[str, str] = {
    "k_euler": "Euler",
    "k_euler_ancestral": "Euler a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpmpp_3m_sde": "DPM++ 3M SDE",
    "k_lms": "LMS",
    "k_dpm_2": "DPM2",
    "k_heun": "Heun",
    "k_dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun",
    "k_dpm_2_ancestral": "DPM2 a",
    "k_dpm_fast": "DPM fast",
    "k_dpm_adaptive": "DPM adaptive",
    "ddim_v3": "DDIM",
    "plms": "PLMS",
}
SAMPLERS_FROM_A1111: dict[str, str] = {v: k for k, v in SAMPLERS_TO_A1111.items()}

SCHEDULES_TO_A1111: dict[str, str] = {
    "native": "Automatic",
    "karras": "Karras",
    "exponential": "Exponential",
    "polyexponential": "Polyexponential",
    # The local engine's schedules, by the names A1111 shows for them.
    "normal": "Normal",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "kl_optimal": "KL Optimal",
}
SCHEDULES_FROM_A1111: dict[str, str] = {v: k for k, v in SCHEDULES_TO_A1111.items()}


def sampler_to_nai(name: str) -> str:
    """NovelAI id for an A1111 display name; unknown names (UniPC, ...) pass through unchanged."""
    return SAMPLERS_FROM_A1111.get(name, name)


def sampler_to_a1111(sampler: str) -> str:
    if sampler == "ddim":
        return "DDIM"
    return SAMPLERS_TO_A1111.get(sampler, sampler)


def schedule_to_nai(name: str) -> str:
    return SCHEDULES_FROM_A1111.get(name, name)


def schedule_to_a1111(schedule: str) -> str:
    return SCHEDULES_TO_A1111.get(schedule, schedule)


def split_legacy_sampler(name: str) -> tuple[str, str | None]:
    """Old A1111 folded the schedule into the sampler name (`DPM++ 2M Karras`); split it back out."""
    for display in SCHEDULES_FROM_A1111:
        suffix = " " + display
        if name.endswith(suffix) and name[: -len(suffix)] in SAMPLERS_FROM_A1111:
            return name[: -len(suffix)], display
    return name, None


@dataclass(slots=True)
class A1111Parameters:
    prompt: str = ""
    negative_prompt: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def _quote(value: str) -> str:
    if any(c in value for c in ",:\n") or value.startswith('"') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def parse_settings(line: str) -> dict[str, str] | None:
    """The pairs of a settings line, or None when the line is not entirely `Key: value` pairs."""
    if len(line) > MAX_SETTINGS_LINE:
        return None
    settings: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        match = _PAIR.match(line, pos)
        if match is None or match.end() == pos:
            return None
        settings[match.group(1).strip()] = _unquote(match.group(2))
        pos = match.end()
    if not settings or line.rstrip().endswith(","):
        return None
    return settings


def _is_settings(settings: dict[str, str] | None) -> bool:
    return settings is not None and (len(settings) >= 3 or not _SETTINGS_KEYS.isdisjoint(settings))


def parse_parameters(text: str) -> A1111Parameters:
    """Split A1111 `parameters` text. Never fails: text without settings is all prompt."""
    head, sep, last = text.rpartition("\n")
    settings = parse_settings(last) if sep else parse_settings(text)
    if _is_settings(settings):
        assert settings is not None
        body = head
    else:
        settings, body = {}, text
    if body.startswith(_NEGATIVE):
        prompt, negative = "", body[len(_NEGATIVE) :]
    else:
        prompt, sep, negative = body.partition("\n" + _NEGATIVE)
        if not sep:
            return A1111Parameters(prompt, "", settings)
    return A1111Parameters(prompt, negative.removeprefix(" "), settings)


def format_parameters(params: A1111Parameters) -> str:
    """The text A1111 writes for `params`; `parse_parameters` reads it back to the same value."""
    parts = [params.prompt]
    if params.negative_prompt:
        parts.append(f"{_NEGATIVE} {params.negative_prompt}")
    if params.settings:
        parts.append(", ".join(f"{key}: {_quote(value)}" for key, value in params.settings.items()))
    return "\n".join(parts)
