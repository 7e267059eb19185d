"""Command palette (ctrl+p): every mode switch and every bound action of the current screen, by name.

Actions are discovered from bindings rather than listed by hand, so a key added to a screen is searchable here
at once and the palette can never offer something the keyboard cannot do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode
from textual.screen import Screen

from peropix_tui.navigation import MODE_INFO


@dataclass(frozen=True, slots=True)
class PaletteEntry:
    title: str
    help: str
    run: Callable[[], object]


def palette_entries(screen: Screen[object]) -> list[PaletteEntry]:
    app = screen.app
    entries = [
        PaletteEntry(f"Go to {info.title}", f"{info.help} ({info.key.upper()})", partial(app.switch_mode, info.name))
        for info in MODE_INFO
    ]
    seen = {"request_quit", "help"} | {f"switch_mode('{info.name}')" for info in MODE_INFO}
    nodes: list[DOMNode] = [screen, *screen.query("*"), app]
    for node in nodes:
        for bindings in node._bindings.key_to_bindings.values():
            for binding in bindings:
                if not binding.description or binding.action in seen:
                    continue
                seen.add(binding.action)
                key = binding.key_display or app.get_key_display(binding)
                entries.append(
                    PaletteEntry(binding.description, f"{key}", partial(app.run_action, binding.action, node))
                )
    entries.append(PaletteEntry("Help", "Every key of this screen (F1)", partial(app.run_action, "help")))
    entries.append(PaletteEntry("Quit", "Leave peropix (ctrl+q)", partial(app.run_action, "request_quit")))
    return entries


class PeropixCommands(Provider):
    async def discover(self) -> Hits:
        for entry in palette_entries(self.screen):
            yield DiscoveryHit(entry.title, entry.run, help=entry.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in palette_entries(self.screen):
            score = matcher.match(entry.title)
            if score > 0:
                yield Hit(score, matcher.highlight(entry.title), entry.run, help=entry.help)
