"""Log set-up shared by the TUI and the CLI: a rotating file in the data dir, every record scrubbed of secrets."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from peropix_tui.core.redact import RedactingFilter

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_NAME = "peropix-file"


def setup_logging(log_file: Path, *, level: int = logging.INFO, stderr: bool = False) -> None:
    """Send peropix (and library) logs to `log_file`; idempotent so tests and re-entry do not stack handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() in (_HANDLER_NAME, _HANDLER_NAME + "-stderr"):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(min(level, root.level) if root.level else level)
    redactor = RedactingFilter()
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler: logging.Handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError:
        file_handler = logging.NullHandler()  # a read-only data dir must not stop the app; stderr still works
    file_handler.set_name(_HANDLER_NAME)
    file_handler.setLevel(level)
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    file_handler.addFilter(redactor)
    root.addHandler(file_handler)
    if stderr:
        err = logging.StreamHandler()
        err.set_name(_HANDLER_NAME + "-stderr")
        err.setLevel(level)
        err.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        err.addFilter(redactor)
        root.addHandler(err)
    # httpx logs every request line at INFO; keep that at WARNING unless debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
