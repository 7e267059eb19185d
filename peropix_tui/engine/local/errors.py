"""Errors of the local engine: a checkpoint, LoRA or setting it cannot use, said in one line."""

from __future__ import annotations

from peropix_tui.core.errors import PeropixError


class LocalEngineError(PeropixError):
    """A model file or setting the local engine cannot use; the message names the file, component or key."""
