"""Reading a whole small file under a size cap.

Settings-like files and images are read into memory whole; a file that grew past what its reader takes (a wrong
path, a damaged or hostile file) is refused after `limit + 1` bytes instead of filling memory. Every failure is
one line naming the file, raised as the caller's own error kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from peropix_tui.core.errors import PeropixError


def describe_size(limit: int) -> str:
    """`limit` as people read it: whole MiB when it is a whole number of them, else bytes."""
    mib, rest = divmod(limit, 1 << 20)
    return f"{mib} MiB" if mib and not rest else f"{limit:,} bytes"


def read_capped(
    path: Path,
    limit: int,
    error: Callable[[str], PeropixError],
    *,
    what: str = "a file",
    missing: str | None = None,
) -> bytes:
    """The bytes of `path`, at most `limit` of them; otherwise `error(message)` is raised.

    `what` names the kind of file in the messages ("a presets file"); `missing` replaces the message for a file
    that does not exist, for callers that name the thing rather than the path.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(missing or f"{path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not {what}") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{path}: larger than the {describe_size(limit)} {what} may take")
    return data
