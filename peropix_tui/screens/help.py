"""Help: every key binding of the screen it was opened from, grouped by where it applies, and terminal hints."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

TERMINAL_HINTS = """\
Terminal tips
• tmux: set -sg escape-time 10 — Escape reacts at once
• tmux: set -g allow-passthrough on — kitty images inside tmux
• tmux: set -g set-clipboard on — copy prompt/seed (OSC 52)
• tmux: set -ga terminal-features ',*:RGB' — true colour
• sixel inside tmux needs tmux ≥ 3.4 built with sixel
• without graphics, previews use half-cell blocks
• slow SSH: raise ESCDELAY (ms) if keys arrive split
• --no-mouse leaves the mouse to the terminal
• NO_COLOR=1 turns colours off"""


def _owner(node: DOMNode) -> str:
    if isinstance(node, Screen):
        return "screen"
    if node is node.app:
        return "global"
    return node.id or type(node).__name__


def collect_bindings(screen: Screen[object]) -> list[tuple[str, str, str]]:
    """(keys, description, where) for the app, the screen and every widget on it that declares bindings."""
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    nodes: list[DOMNode] = [screen.app, screen, *screen.query("*")]
    for node in nodes:
        for bindings in node._bindings.key_to_bindings.values():
            for binding in bindings:
                if not binding.description:
                    continue
                where = _owner(node)
                if (binding.action, where) in seen:
                    # one row per action, listing every key bound to it
                    for i, (keys, desc, w) in enumerate(rows):
                        if w == where and desc == binding.description:
                            display = binding.key_display or screen.app.get_key_display(binding)
                            if display not in keys.split(" / "):
                                rows[i] = (f"{keys} / {display}", desc, w)
                    continue
                seen.add((binding.action, where))
                rows.append((binding.key_display or screen.app.get_key_display(binding), binding.description, where))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss", "Close help")]

    def __init__(self, for_screen: Screen[object]) -> None:
        super().__init__()
        self.for_screen = for_screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            title = getattr(self.for_screen, "TITLE", None) or type(self.for_screen).__name__
            yield Static(Text(f"Keys — {title}", style="bold"), id="help-title")
            table: DataTable[str] = DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("Key", "Action", "Where")
            for keys, description, where in collect_bindings(self.for_screen):
                table.add_row(keys, description, where)
            yield table
            yield Static(Text(TERMINAL_HINTS), id="help-hints")
            yield Static(Text(self._diagnostics()), id="help-diagnostics")

    def _diagnostics(self) -> str:
        from peropix_tui.widgets.image_preview import describe_capabilities

        return "Image preview: " + describe_capabilities(str(getattr(self.app, "image_widget", "auto")))
