"""The one error kind the metadata codec raises: a file it cannot read or write, said in one line."""

from __future__ import annotations

from peropix_tui.core.errors import PeropixError


class MetadataError(PeropixError):
    """An image whose container is damaged, unsupported or too large to handle safely."""
