"""Sandbox NovelAI accounts: the token allow-list, each token's tier and Anlas, and the subscription answer.

Two tokens exist out of the box so a newcomer can try both pricing rules: a Scroll account that pays for
every image, and an Opus account whose small images are free. Balances go down as the server charges them
and `/user/subscription` reports the current state, so a client can watch its balance refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from peropix_tui.engine.nai.cost import TIER_NAMES, Account
from peropix_tui.sandbox.nai_credentials import DEFAULT_BALANCE as DEFAULT_BALANCE
from peropix_tui.sandbox.nai_credentials import SANDBOX_OPUS_TOKEN as SANDBOX_OPUS_TOKEN
from peropix_tui.sandbox.nai_credentials import SANDBOX_TOKEN as SANDBOX_TOKEN

SCROLL_TIER: Final = 2
OPUS_TIER: Final = 3
# 2100-01-01: the sandbox subscription never runs out during a session.
EXPIRES_AT: Final = 4_102_444_800
CHARGES_KEPT: Final = 1000


@dataclass(slots=True)
class SandboxAccount:
    """One token's subscription state; the server mutates it under its own lock."""

    tier: int = SCROLL_TIER
    active: bool = True
    fixed_anlas: int = DEFAULT_BALANCE
    """Monthly subscription Anlas (`fixedTrainingStepsLeft`), spent first."""
    purchased_anlas: int = 0
    usage_exhausted: bool = False
    """The Opus usage allowance is spent (`usage.isNegative`): V5 images are no longer free."""
    charged: list[int] = field(default_factory=list)
    """The latest charges (up to `CHARGES_KEPT`), oldest first, so a test can tell what each request cost."""

    @property
    def balance(self) -> int:
        return self.fixed_anlas + self.purchased_anlas

    def pricing(self) -> Account:
        """The account as the price formula sees it."""
        return Account(self.tier, self.active, self.fixed_anlas, self.purchased_anlas, self.usage_exhausted)

    def charge(self, amount: int) -> None:
        """Take `amount` Anlas, monthly ones first; the caller has checked the balance covers it."""
        from_fixed = min(self.fixed_anlas, amount)
        self.fixed_anlas -= from_fixed
        self.purchased_anlas -= amount - from_fixed
        self.charged.append(amount)
        del self.charged[:-CHARGES_KEPT]

    def subscription(self) -> dict[str, Any]:
        """The `/user/subscription` body for this account."""
        opus = self.tier >= OPUS_TIER
        return {
            "tier": self.tier,
            "active": self.active,
            "expiresAt": EXPIRES_AT,
            "perks": {
                "maxPriorityActions": 1000 if opus else 200,
                "startPriority": 10,
                "moduleTrainingSteps": 10_000 if opus else 0,
                "unlimitedMaxPriority": opus,
                "voiceGeneration": True,
                "imageGeneration": True,
                "unlimitedImageGeneration": opus,
                "unlimitedImageGenerationLimits": (
                    [{"resolution": 4_194_304, "maxPrompts": 0}, {"resolution": 1_048_576, "maxPrompts": 1}]
                    if opus
                    else []
                ),
                "contextTokens": 8192,
            },
            "paymentProcessorData": None,
            "trainingStepsLeft": {
                "fixedTrainingStepsLeft": self.fixed_anlas,
                "purchasedTrainingSteps": self.purchased_anlas,
            },
            "accountType": 0,
            "isGracePeriod": False,
            "usage": {
                "percent": 0 if self.usage_exhausted else 100,
                "isNegative": self.usage_exhausted,
                "timeUntilNextPercent": 7888,
            },
        }

    def describe(self) -> str:
        return f"{TIER_NAMES.get(self.tier, f'tier {self.tier}')}, {self.balance} Anlas"


def default_accounts(token: str = SANDBOX_TOKEN, balance: int = DEFAULT_BALANCE) -> dict[str, SandboxAccount]:
    """The allow-list a sandbox starts with: `token` (Scroll, `balance` Anlas) and the Opus sandbox token."""
    accounts = {SANDBOX_OPUS_TOKEN: SandboxAccount(tier=OPUS_TIER, fixed_anlas=DEFAULT_BALANCE)}
    accounts[token] = SandboxAccount(fixed_anlas=balance)
    return accounts
