"""The error base every layer raises for problems a user can fix.

Messages are one line and say what went wrong and where; the CLI prints them as they are and the TUI shows them
in a notification. Anything that is not a `PeropixError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class PeropixError(Exception):
    """A user-facing failure with a one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) if "\n" in message else message)


class ConfigError(PeropixError):
    """A settings or secrets file that cannot be read or written."""


class DiskFullError(PeropixError):
    """No space left where a file had to be written; the previous file is untouched."""
