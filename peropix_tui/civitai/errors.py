"""What can go wrong while collecting from CivitAI, as one-line errors a user can act on.

Per-item failures (one file that needs a key, one image the CDN lost) are not exceptions: they become log
entries and the run goes on. These classes are for what stops a request or a whole run.
"""

from __future__ import annotations

from peropix_tui.core.errors import PeropixError


class CivitaiError(PeropixError):
    """Base of every CivitAI collector failure."""


class CreatorRefError(CivitaiError):
    """Text that is neither a CivitAI creator URL nor a username, or a batch file that cannot be read."""


class ApiKeyRejected(CivitaiError):
    """The API key was refused by /api/v1/me; raised before anything is downloaded."""


class ApiError(CivitaiError):
    """An API call that failed for good (after the retries the policy allows).

    `status` is the HTTP status (None for a network failure), `reason` a short machine word for the log.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "api_error") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class PagingLimitError(ApiError):
    """The server refused deep page numbers; only cursor walks are allowed."""
