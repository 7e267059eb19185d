"""The collected vocabulary's table on Prompt tools: the most used tags first, narrowed by a substring filter.

A large collection holds 100k+ tags. They are sorted once, off the UI thread, when the cache is read; a filter is
one pass of `in` over the sorted rows (tens of milliseconds for 100k tags, so the screen runs it in a worker), and
the table only ever holds the first `SHOWN_LIMIT` matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input

from peropix_tui.core.collected_vocabulary import MAX_TAG_CHARS
from peropix_tui.core.prompt import normalize_tag

if TYPE_CHECKING:
    from peropix_tui.core.danbooru import TagStyle

TagRow = tuple[str, int]
"""(tag in matching form, images using it)."""
SHOWN_LIMIT: Final = 500


def matching(rows: Sequence[TagRow], query: str, limit: int = SHOWN_LIMIT) -> tuple[list[TagRow], int]:
    """The first `limit` rows whose tag contains `query` in any spelling (`Long_Hair` finds `long hair`), in
    their order, and how many match in all."""
    wanted = normalize_tag(query)
    if not wanted:
        return list(rows[:limit]), len(rows)
    found = [row for row in rows if wanted in row[0]]
    return found[:limit], len(found)


def styled(tag: str, style: TagStyle) -> str:
    return tag.replace(" ", "_") if style == "underscores" else tag


class VocabularyTable(DataTable[Text]):
    """Image count and tag; row keys are the tags in matching form, whatever the style shown. Both columns have
    fixed widths (no tag is longer than `MAX_TAG_CHARS`): rows are replaced at every keystroke of the filter, and
    widths measured from the content would change under rows already drawn."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "screen.update_vocabulary", "Update the collected vocabulary", id="vocab_update"),
        Binding(
            "ctrl+r", "screen.update_vocabulary", "Update the collected vocabulary", show=False, id="vocab_update_ctrl"
        ),
        Binding("slash", "screen.filter_vocabulary", "Filter tags", id="vocab_filter"),
        Binding("c", "screen.copy_vocabulary_tag", "Copy the tag", id="vocab_copy_tag"),
    ]

    def on_mount(self) -> None:
        self.add_column(Text("Images", justify="right"), key="images", width=8)
        self.add_column("Tag", key="tag", width=MAX_TAG_CHARS)

    def show(self, rows: Sequence[TagRow], style: TagStyle) -> None:
        """Replace the rows, keeping the cursor on the tag it was on when that tag is still listed."""
        kept = self.selected_tag()
        with self.app.batch_update():
            self.clear()
            for tag, images in rows:
                self.add_row(Text(f"{images:,}", justify="right"), Text(styled(tag, style)), key=tag)
            if kept is not None and kept in self.rows:
                self.move_cursor(row=self.get_row_index(kept))

    def selected_tag(self) -> str | None:
        """The highlighted tag in matching form."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value


class VocabularyFilter(Input):
    """The filter field: Enter or Down goes to the table; ctrl+r updates as it does there."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down", "screen.focus_vocabulary", "Go to the tags", show=False, id="vocab_filter_down"),
        Binding(
            "ctrl+r",
            "screen.update_vocabulary",
            "Update the collected vocabulary",
            show=False,
            id="vocab_filter_update",
        ),
    ]
