"""The CivitAI sandbox's account: kept apart from the server so `peropix --help` can name it without loading it."""

from __future__ import annotations

from typing import Final

SANDBOX_API_KEY: Final = "peropix-civitai-sandbox-key"
"""The API key the default sandbox accepts."""
SANDBOX_USERNAME: Final = "sandbox_user"
"""The creator `/api/v1/me` names for that key."""
