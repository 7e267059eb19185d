"""The first start: three ways to be able to make images, offered when nothing is set up yet.

A NovelAI token (checked against the account before it is saved), a local checkpoint (its folder is stored in
the settings), or the sandbox for this run (a fake NovelAI on this machine: nothing is charged). The screen is
shown once: however it is left, a marker in the config dir says the user has seen it, and the settings screen
holds the same choices afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Final, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from peropix_tui.core.atomicio import atomic_write_text
from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SecretStore, validate_secret
from peropix_tui.nai_access import NaiAccess

log = logging.getLogger(__name__)

WelcomeChoice = Literal["token", "checkpoint", "sandbox"]
MARKER_NAME: Final = "welcome-done"
CHECKPOINT_SUFFIXES: Final = (".safetensors", ".ckpt")
TOKEN_HELP: Final = "copy the persistent API token from novelai.net: User Settings → Account → Get Persistent API Token"


def welcome_marker(dirs: AppDirs) -> Path:
    return dirs.config_dir / MARKER_NAME


def needs_welcome(dirs: AppDirs, config: Config, nai: NaiAccess) -> bool:
    """Nothing to generate with (no token, no sandbox, no checkpoint folder) and the welcome never seen."""
    return not nai.has_token and not config.settings.paths.checkpoint_dirs and not welcome_marker(dirs).exists()


def mark_welcome_seen(dirs: AppDirs) -> None:
    """Remember that the welcome was shown; a failure only means it is offered again next time."""
    try:
        atomic_write_text(welcome_marker(dirs), "the first-start welcome was shown\n")
    except (OSError, PeropixError) as exc:
        log.warning("cannot record that the welcome was shown: %s", exc)


def checkpoint_folder(text: str) -> Path:
    """The folder to store for a typed checkpoint path: the folder itself, or the folder of a checkpoint file."""
    if not text.strip():
        raise PeropixError("type the path of a checkpoint file or of a folder of checkpoints")
    path = Path(text.strip()).expanduser()
    if path.is_dir():
        return path.resolve()
    if not path.exists():
        raise PeropixError(f"{path} does not exist")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise PeropixError(f"{path.name} is not a checkpoint (.safetensors or .ckpt) and not a folder")
    return path.parent.resolve()


class WelcomeScreen(ModalScreen[WelcomeChoice | None]):
    """Dismissed with the way chosen, or None when the user leaves it for now (escape)."""

    DEFAULT_CSS = """
    WelcomeScreen { align: center middle; background: $background 60%; }
    #welcome-box {
        width: 90%; max-width: 84; height: auto; max-height: 100%;
        padding: 1 2; border: thick $primary; background: $surface;
    }
    #welcome-title { text-style: bold; margin-bottom: 1; }
    .welcome-way { color: $accent; text-style: bold; margin-top: 1; }
    .welcome-row { height: 1; margin-top: 1; }
    .welcome-row Input { width: 1fr; }
    .welcome-row Button { margin-left: 2; }
    #welcome-sandbox { margin-top: 1; }
    .welcome-status { color: $text-muted; height: auto; }
    .welcome-status.-error { color: $error; }
    #welcome-hint { color: $text-muted; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "later", "Not now")]

    def __init__(self, config: Config, secrets: SecretStore, nai: NaiAccess) -> None:
        super().__init__()
        self._config = config
        self._secrets = secrets
        self._nai = nai

    def compose(self) -> ComposeResult:
        with Vertical(id="welcome-box"):
            yield Label("Welcome to peropix", id="welcome-title")
            yield Static(
                "Nothing is set up to make images yet. Pick one way to start; all of them can be changed "
                "later in Settings (F7).",
                markup=False,
            )
            yield Label("1. Your NovelAI token", classes="welcome-way")
            with Horizontal(classes="welcome-row"):
                yield Input(placeholder="pst-…", password=True, compact=True, id="welcome-token")
                yield Button("Check and save", id="welcome-token-save", variant="primary", compact=True)
            yield Label("", id="welcome-token-status", classes="welcome-status", markup=False)
            yield Label("2. A local checkpoint (a .safetensors file or a folder of them)", classes="welcome-way")
            with Horizontal(classes="welcome-row"):
                yield Input(placeholder="~/models/checkpoints", compact=True, id="welcome-checkpoint")
                yield Button("Use it", id="welcome-checkpoint-save", variant="primary", compact=True)
            yield Label("", id="welcome-checkpoint-status", classes="welcome-status", markup=False)
            yield Label("3. The sandbox: a fake NovelAI on this machine, nothing is charged", classes="welcome-way")
            yield Button("Try the sandbox", id="welcome-sandbox", variant="warning", compact=True)
            yield Label("Escape: not now (start with `peropix --sandbox` to try it later)", id="welcome-hint")

    def on_mount(self) -> None:
        self.query_one("#welcome-token", Input).focus()

    def action_later(self) -> None:
        self.dismiss(None)

    def _status(self, widget_id: str, text: str, *, error: bool = False) -> None:
        label = self.query_one(f"#{widget_id}", Label)
        label.update(text)
        label.set_class(error, "-error")

    # The token -------------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#welcome-token")
    @on(Button.Pressed, "#welcome-token-save")
    def _token_entered(self) -> None:
        try:
            token = validate_secret("nai_token", self.query_one("#welcome-token", Input).value)
        except PeropixError as exc:
            self._status("welcome-token-status", str(exc), error=True)
            return
        self._status("welcome-token-status", "Checking the token with NovelAI…")
        self._check_token(token)

    @work(exclusive=True, group="welcome-token", exit_on_error=False)
    async def _check_token(self, token: str) -> None:
        from peropix_tui.engine.nai.client import NovelAIClient
        from peropix_tui.engine.nai.errors import NaiAuthError

        try:
            client = NovelAIClient(
                token,
                base_url=self._config.get("endpoints.nai_base_url"),
                account_url=self._config.get("endpoints.nai_account_url"),
            )
            async with client:
                subscription = await client.subscription()
        except NaiAuthError:
            self._status("welcome-token-status", f"NovelAI refused this token: {TOKEN_HELP}", error=True)
            return
        except PeropixError as exc:
            self._status("welcome-token-status", f"The token could not be checked: {exc}", error=True)
            return
        try:
            self._secrets.set("nai_token", token)
        except PeropixError as exc:
            self._status("welcome-token-status", f"The token is good but cannot be saved: {exc}", error=True)
            return
        self.notify(
            f"NovelAI token saved: {subscription.tier_name}, {subscription.balance:,} Anlas",
            title="Welcome",
            markup=False,
        )
        self.dismiss("token")

    # The checkpoint --------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#welcome-checkpoint")
    @on(Button.Pressed, "#welcome-checkpoint-save")
    def _checkpoint_entered(self) -> None:
        try:
            folder = checkpoint_folder(self.query_one("#welcome-checkpoint", Input).value)
            folders = list(self._config.settings.paths.checkpoint_dirs)
            if str(folder) not in folders:
                self._config.set("paths.checkpoint_dirs", [*folders, str(folder)])
                self._config.save()
        except PeropixError as exc:
            self._status("welcome-checkpoint-status", str(exc), error=True)
            return
        self.notify(f"Checkpoint folder {folder} saved in the settings", title="Welcome", markup=False)
        self.dismiss("checkpoint")

    # The sandbox -----------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#welcome-sandbox")
    async def _sandbox_chosen(self) -> None:
        try:
            session = await self._nai.start_sandbox()
        except PeropixError as exc:
            self.notify(str(exc), title="Sandbox", severity="error", markup=False)
            return
        self.notify(
            f"Using the sandbox at {session.base_url} for this run: images are real files, Anlas are not",
            title="SANDBOX",
            markup=False,
        )
        self.dismiss("sandbox")
