"""Under the preview: what the current settings cost, the Anlas balance, and the FREE and SANDBOX badges.

The price follows the settings as they are edited; the balance is the one last read from the account. A badge
says in words what applies (FREE when the Opus free image applies, SANDBOX when nothing real is charged), so it
reads the same without colours. While the local engine is chosen, one line says it is free instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

if TYPE_CHECKING:
    from peropix_tui.engine.nai.client import Subscription
    from peropix_tui.engine.nai.cost import CostEstimate

LOCAL_TEXT = "local · free"


def price_text(estimate: CostEstimate | None, problem: str | None = None) -> str:
    """The price part of the line: the Anlas total, or why there is none."""
    if problem is not None:
        return f"Price: {problem}"
    if estimate is None:
        return "Price: unknown for this model"
    return f"Price {estimate.total:,} Anlas"


def balance_text(subscription: Subscription | None, note: str = "") -> str:
    """The balance part: Anlas left and the tier, or a note (no token, checking, refused)."""
    if subscription is None:
        return note or "Balance unknown"
    return f"Balance {subscription.balance:,} Anlas ({subscription.tier_name})"


class AnlasBar(Vertical):
    DEFAULT_CSS = """
    AnlasBar { height: auto; width: 1fr; }
    AnlasBar > Label { width: 1fr; height: auto; }
    AnlasBar #anlas-balance { color: $text-muted; }
    AnlasBar #anlas-badges { height: auto; }
    AnlasBar .anlas-badge { width: auto; text-style: bold; padding: 0 1; margin-right: 1; }
    AnlasBar #anlas-free { background: $success; color: $text; }
    AnlasBar #anlas-sandbox { background: $warning; color: $text; }
    AnlasBar .-hidden { display: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._local = False
        self._free = False
        self._sandbox = False

    def compose(self) -> ComposeResult:
        yield Label("Price …", id="anlas-price", markup=False)
        yield Label("Balance …", id="anlas-balance", markup=False)
        yield Label(LOCAL_TEXT, id="anlas-local", markup=False, classes="-hidden")
        with Horizontal(id="anlas-badges"):
            yield Label("FREE", id="anlas-free", classes="anlas-badge -hidden")
            yield Label("SANDBOX", id="anlas-sandbox", classes="anlas-badge -hidden")

    def show_price(self, estimate: CostEstimate | None, problem: str | None = None) -> None:
        self.query_one("#anlas-price", Label).update(price_text(estimate, problem))
        self._free = problem is None and estimate is not None and estimate.opus_free
        self.query_one("#anlas-free", Label).set_class(self._local or not self._free, "-hidden")

    def show_local(self, local: bool) -> None:
        """ "local · free" in place of the price and the balance while the local engine is chosen."""
        self._local = local
        for label_id in ("#anlas-price", "#anlas-balance"):
            self.query_one(label_id, Label).set_class(local, "-hidden")
        self.query_one("#anlas-local", Label).set_class(not local, "-hidden")
        self.query_one("#anlas-free", Label).set_class(local or not self._free, "-hidden")
        self.query_one("#anlas-sandbox", Label).set_class(local or not self._sandbox, "-hidden")

    def show_account(self, subscription: Subscription | None, note: str = "") -> None:
        self.query_one("#anlas-balance", Label).update(balance_text(subscription, note))

    def show_sandbox(self, sandbox: bool) -> None:
        self._sandbox = sandbox
        self.query_one("#anlas-sandbox", Label).set_class(self._local or not sandbox, "-hidden")

    @property
    def text(self) -> str:
        """The line as shown, badges included (for tests and screen readers)."""
        parts = [str(label.content) for label in self.query(Label) if not label.has_class("-hidden")]
        return "  ".join(parts)
