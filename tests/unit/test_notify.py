"""Queue-finished notifications: the bell, OSC 9 and OSC 777 byte for byte, tmux passthrough, the summary text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.notify import (
    MAX_TEXT,
    QueueSummary,
    QueueTally,
    clean,
    desktop_notification,
    osc9,
    osc777,
    pick_escape,
    queue_finished,
    tmux_passthrough,
)

THREE_SAVED = QueueSummary(saved=3)


def test_osc9_byte_for_byte() -> None:
    assert osc9("peropix: 3 images saved") == "\x1b]9;peropix: 3 images saved\x07"


def test_osc777_byte_for_byte_and_the_title_cannot_split_the_fields() -> None:
    assert osc777("peropix", "3 images saved") == "\x1b]777;notify;peropix;3 images saved\x07"
    assert osc777("a;b", "x; y") == "\x1b]777;notify;a,b;x; y\x07"


def test_tmux_passthrough_doubles_every_escape() -> None:
    assert tmux_passthrough("\x1b]9;hi\x07") == "\x1bPtmux;\x1b\x1b]9;hi\x07\x1b\\"
    wrapped = desktop_notification("peropix", "done", "osc777", tmux=True)
    assert wrapped == "\x1bPtmux;\x1b\x1b]777;notify;peropix;done\x07\x1b\\"


def test_controls_in_the_text_cannot_end_or_start_an_escape() -> None:
    hostile = "a\x07b\x1b]52;c;Zm9v\x07c\x9cd\nline\ttab\x7f"
    sequence = osc9(hostile)
    body = sequence.removeprefix("\x1b]9;").removesuffix("\x07")
    assert body == "a b ]52;c;Zm9v c d line tab"
    assert clean("x" * 500) == "x" * (MAX_TEXT - 1) + "…"


@given(st.text())
def test_any_text_gives_one_well_formed_escape(text: str) -> None:
    for sequence, head in ((osc9(text), "\x1b]9;"), (osc777("t", text), "\x1b]777;notify;t;")):
        assert sequence.startswith(head) and sequence.endswith("\x07")
        inner = sequence[len(head) : -1]
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in inner)
        assert len(inner) <= MAX_TEXT


@given(st.text(alphabet=st.sampled_from("\x1b]\\;a9\x07P")))
def test_tmux_wrapping_is_reversible(sequence: str) -> None:
    wrapped = tmux_passthrough(sequence)
    assert wrapped.startswith("\x1bPtmux;") and wrapped.endswith("\x1b\\")
    assert wrapped[len("\x1bPtmux;") : -2].replace("\x1b\x1b", "\x1b") == sequence


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TERM": "xterm-kitty"}, "osc9"),
        ({"TERM_PROGRAM": "iTerm.app", "TERM": "xterm-256color"}, "osc9"),
        ({"TERM_PROGRAM": "WezTerm", "TERM": "xterm-256color"}, "osc9"),
        ({"TERM": "xterm-ghostty", "TERM_PROGRAM": "ghostty"}, "osc9"),
        ({"TERM": "foot"}, "osc777"),
        ({"TERM": "foot-extra"}, "osc777"),
        ({"TERM": "rxvt-unicode-256color"}, "osc777"),
        ({"TERM": "xterm-256color", "VTE_VERSION": "7600"}, "osc777"),
        ({"TERM": "tmux-256color", "TERM_PROGRAM": "tmux", "VTE_VERSION": "7600"}, "osc777"),
        ({"TERM": "xterm-256color", "VTE_VERSION": "7600", "TERM_PROGRAM": "WezTerm"}, "osc9"),
        ({}, "osc9"),
    ],
)
def test_auto_picks_the_escape_the_terminal_knows(environ: dict[str, str], expected: str) -> None:
    assert pick_escape(environ) == expected


def test_bell_and_auto_desktop_notification() -> None:
    text = queue_finished(THREE_SAVED, bell=True, desktop="auto", environ={"TERM": "xterm-kitty"})
    assert text == "\x07\x1b]9;peropix: queue finished: 3 images saved\x07"


def test_inside_tmux_only_the_notification_is_wrapped() -> None:
    environ = {"TERM": "tmux-256color", "TMUX": "/tmp/tmux-0/default,123,0"}
    text = queue_finished(THREE_SAVED, bell=True, desktop="osc777", environ=environ)
    assert text == "\x07\x1bPtmux;\x1b\x1b]777;notify;peropix: queue finished;3 images saved\x07\x1b\\"


def test_settings_turn_each_part_off() -> None:
    environ = {"TERM": "foot"}
    assert queue_finished(THREE_SAVED, bell=True, desktop="off", environ=environ) == "\x07"
    assert queue_finished(THREE_SAVED, bell=False, desktop="off", environ=environ) == ""
    only_desktop = queue_finished(THREE_SAVED, bell=False, desktop="osc9", environ=environ)
    assert only_desktop == "\x1b]9;peropix: queue finished: 3 images saved\x07"


def test_a_queue_that_was_only_cancelled_is_not_announced() -> None:
    assert queue_finished(QueueSummary(cancelled=2), bell=True, desktop="auto", environ={}) == ""


@pytest.mark.parametrize(
    ("summary", "text"),
    [
        (QueueSummary(saved=1), "1 image saved"),
        (QueueSummary(saved=4, failed=1), "4 images saved, 1 job failed"),
        (QueueSummary(failed=2), "0 images saved, 2 jobs failed"),
        (QueueSummary(unsaved=2), "2 images ready, not saved"),
        (
            QueueSummary(saved=1, unsaved=1, failed=1, cancelled=3),
            "1 image saved, 1 image ready, not saved, 1 job failed, 3 cancelled",
        ),
    ],
)
def test_summary_says_what_was_saved_and_what_failed(summary: QueueSummary, text: str) -> None:
    assert summary.text() == text


def test_tally_adds_up_a_busy_spell_then_starts_again() -> None:
    tally = QueueTally()
    tally.job_done(saved=2)
    tally.job_failed()
    tally.job_done(saved=0, unsaved=3)
    tally.job_cancelled()
    assert tally.take() == QueueSummary(saved=2, unsaved=3, failed=1, cancelled=1)
    assert tally.take() == QueueSummary()
    tally.job_done(saved=1)
    assert tally.take() == QueueSummary(saved=1)
