"""Which command lines open the TUI: the quick check before the full parser must agree with the full parser."""

from __future__ import annotations

import pytest

from peropix_tui.cli import build_parser, tui_arguments

TUI_LINES = [[], ["--sandbox"], ["--no-mouse"], ["-v"], ["--verbose", "--sandbox", "--no-mouse"], ["--sand"]]
OTHER_LINES = [["-h"], ["--help"], ["civitai", "get", "alice"], ["--sandbox", "generate", "cat"], ["--bogus"], ["x"]]


@pytest.mark.parametrize("argv", TUI_LINES, ids=lambda a: " ".join(a) or "(none)")
def test_global_options_alone_open_the_tui_with_the_full_parsers_values(argv: list[str]) -> None:
    quick = tui_arguments(argv)
    full = build_parser().parse_args(argv)
    assert quick is not None
    assert full.command is None
    assert vars(quick) == {k: v for k, v in vars(full).items() if k != "command"}


@pytest.mark.parametrize("argv", OTHER_LINES, ids=" ".join)
def test_commands_help_and_unknown_options_go_to_the_full_parser(argv: list[str]) -> None:
    assert tui_arguments(argv) is None


def test_version_is_answered_by_either_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        tui_arguments(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("peropix ")
