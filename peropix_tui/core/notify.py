"""Terminal notifications for a finished queue: the bell and desktop-notification escapes, built as text.

Two escapes are in use: OSC 9 (`ESC ] 9 ; text BEL`; iTerm2, kitty, WezTerm, Ghostty) and OSC 777
(`ESC ] 777 ; notify ; title ; body BEL`; foot, urxvt, VTE-based terminals). A terminal ignores an OSC it does not
know, but several terminals know both, so only one is sent: "auto" picks it from the environment. Inside tmux an
OSC reaches the outer terminal only through tmux's DCS passthrough (`ESC P tmux; … ESC \\`, every ESC inside
doubled; tmux needs `set -g allow-passthrough on`); the bell needs no wrapping, tmux forwards it itself.
Everything here is pure: the app writes the result through its terminal driver, the CLI to its tty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal

DesktopEscape = Literal["osc9", "osc777"]
DesktopNotify = Literal["auto", "osc9", "osc777", "off"]

BEL: Final = "\a"
ESC: Final = "\x1b"
TITLE: Final = "peropix"
MAX_TEXT: Final = 200
"""Characters of a notification kept; terminals show one short line anyway."""

# C0 and C1 controls and DEL would end the escape early or start another one.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean(text: str) -> str:
    """`text` as one line safe inside an OSC string: controls become spaces, runs of spaces one, bounded."""
    flat = " ".join(_CONTROLS.sub(" ", text).split())
    return flat if len(flat) <= MAX_TEXT else flat[: MAX_TEXT - 1] + "…"


def osc9(message: str) -> str:
    """The OSC 9 notification. The text should start with a word: some terminals read `9;<digit>` as a command."""
    return f"{ESC}]9;{clean(message)}{BEL}"


def osc777(title: str, body: str) -> str:
    """The OSC 777 `notify` notification; `;` separates the fields, so the title cannot hold one."""
    return f"{ESC}]777;notify;{clean(title).replace(';', ',')};{clean(body)}{BEL}"


def tmux_passthrough(sequence: str) -> str:
    """`sequence` wrapped so tmux hands it to the terminal it runs in."""
    return f"{ESC}Ptmux;{sequence.replace(ESC, ESC + ESC)}{ESC}\\"


def pick_escape(environ: Mapping[str, str]) -> DesktopEscape:
    """OSC 777 for the terminals that only know it (foot, urxvt, VTE); OSC 9, the more widespread, otherwise."""
    term = environ.get("TERM", "")
    if term.startswith(("foot", "rxvt")):
        return "osc777"
    if environ.get("VTE_VERSION") and environ.get("TERM_PROGRAM", "") in ("", "tmux"):
        return "osc777"
    return "osc9"


def desktop_notification(title: str, body: str, kind: DesktopEscape, *, tmux: bool) -> str:
    """One desktop notification as the escape `kind`, wrapped for tmux when `tmux`."""
    sequence = osc777(title, body) if kind == "osc777" else osc9(f"{title}: {body}")
    return tmux_passthrough(sequence) if tmux else sequence


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """What one busy spell of the generation queue produced."""

    saved: int = 0
    """Images written into the outputs folder."""
    unsaved: int = 0
    """Images kept in the history only (auto-save off)."""
    failed: int = 0
    """Jobs that failed."""
    cancelled: int = 0
    """Jobs cancelled."""

    @property
    def worth_telling(self) -> bool:
        """Something ran to an end: a queue that was only cancelled is not announced."""
        return bool(self.saved or self.unsaved or self.failed)

    def text(self) -> str:
        parts = []
        if self.saved or not self.unsaved:
            parts.append(_count(self.saved, "image") + " saved")
        if self.unsaved:
            parts.append(_count(self.unsaved, "image") + " ready, not saved")
        if self.failed:
            parts.append(_count(self.failed, "job") + " failed")
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        return ", ".join(parts)


class QueueTally:
    """Adds up finished jobs until the queue is idle, then hands over the summary and starts again."""

    def __init__(self) -> None:
        self._summary = QueueSummary()

    def job_done(self, *, saved: int, unsaved: int = 0) -> None:
        now = self._summary
        self._summary = replace(now, saved=now.saved + saved, unsaved=now.unsaved + unsaved)

    def job_failed(self) -> None:
        self._summary = replace(self._summary, failed=self._summary.failed + 1)

    def job_cancelled(self) -> None:
        self._summary = replace(self._summary, cancelled=self._summary.cancelled + 1)

    def take(self) -> QueueSummary:
        summary, self._summary = self._summary, QueueSummary()
        return summary


def queue_finished(summary: QueueSummary, *, bell: bool, desktop: DesktopNotify, environ: Mapping[str, str]) -> str:
    """What to write when the queue runs dry: the bell and/or one desktop notification; "" for nothing."""
    if not summary.worth_telling:
        return ""
    out = BEL if bell else ""
    if desktop != "off":
        kind = pick_escape(environ) if desktop == "auto" else desktop
        heading = f"{TITLE}: queue finished"
        out += desktop_notification(heading, summary.text(), kind, tmux=bool(environ.get("TMUX")))
    return out
