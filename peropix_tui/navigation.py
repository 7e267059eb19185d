"""The app's modes: one screen each, reached by a function key, listed in help and the command palette."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModeInfo:
    name: str
    title: str
    key: str
    help: str


MODE_INFO: tuple[ModeInfo, ...] = (
    ModeInfo("generate", "Generate", "f2", "Prompt editor and generation parameters"),
    ModeInfo("history", "History", "f3", "Image history: filter, favourites, trash, apply settings back"),
    ModeInfo("downloads", "Downloads", "f4", "CivitAI download queue and logs"),
    ModeInfo("prompts", "Prompt tools", "f6", "LoRA reconciliation, word filters, vocabulary"),
    ModeInfo("settings", "Settings", "f7", "Paths, endpoints, secrets, renderer, theme"),
)
