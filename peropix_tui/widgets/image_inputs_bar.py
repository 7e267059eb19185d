"""The one-line summary of a generation's image inputs on the parameter form ("2 characters · 1 vibe (cached) ·
img2img 0.70"), hidden while there are none.

Whether each vibe's encoding for the chosen model is cached decides what the vibes cost, so the bar looks the cache
up in a thread whenever the vibes or the model change (and when asked after a generation made new encodings),
then posts `Changed` so the screen prices the settings again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work
from textual.message import Message
from textual.widgets import Static

from peropix_tui.engine.nai.models import DEFAULT_MODEL, VibeSupport, model_spec
from peropix_tui.widgets.image_inputs import ImageInputs

if TYPE_CHECKING:
    from peropix_tui.engine.nai.vibe_cache import VibeCache
    from peropix_tui.widgets.image_entries import VibeEntry, VibeState


class ImageInputsBar(Static):
    DEFAULT_CSS = """
    ImageInputsBar { height: auto; color: $accent; }
    ImageInputsBar.-empty { display: none; }
    """

    class Changed(Message):
        """The inputs or what is known of their vibes' cache changed: the price may have changed."""

    class StatesChecked(Message):
        def __init__(self, vibes: tuple[VibeEntry, ...], model: str, states: tuple[VibeState, ...]) -> None:
            super().__init__()
            self.vibes = vibes
            self.model = model
            self.states = states

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes, markup=False)
        self.inputs = ImageInputs()
        self.model = DEFAULT_MODEL
        self._states: tuple[VibeState, ...] | None = None
        """Cache states of `inputs.vibes` for `model`, once looked up."""
        self.add_class("-empty")

    def show(self, inputs: ImageInputs, model: str) -> None:
        """Show `inputs` as used with `model`, looking their vibes up in the cache again when either changed."""
        changed_vibes = inputs.vibes != self.inputs.vibes or model != self.model
        changed = changed_vibes or inputs != self.inputs
        self.inputs, self.model = inputs, model
        if changed_vibes:
            self._states = None
            self.recheck()
        self._render_summary()
        if changed:
            self.post_message(self.Changed())

    def recheck(self) -> None:
        """Look the vibes up in the cache again (a generation may have encoded them meanwhile)."""
        vibes, model = self.inputs.vibes, self.model
        if not vibes or model_spec(model).vibes is not VibeSupport.ENCODED:
            self._states = tuple(None for _ in vibes)
            return
        from peropix_tui.nai_access import NaiAccess
        from peropix_tui.widgets.image_files import vibe_cache_of

        nai = getattr(self.app, "nai", None)
        self._check(vibes, model, vibe_cache_of(nai) if isinstance(nai, NaiAccess) else None)

    @work(thread=True, exclusive=True, group="vibe-states", exit_on_error=False)
    def _check(self, vibes: tuple[VibeEntry, ...], model: str, cache: VibeCache | None) -> None:
        from peropix_tui.widgets.image_files import vibe_states

        self.post_message(self.StatesChecked(vibes, model, vibe_states(vibes, model, cache)))

    def on_image_inputs_bar_states_checked(self, event: ImageInputsBar.StatesChecked) -> None:
        event.stop()
        if (event.vibes, event.model) != (self.inputs.vibes, self.model):
            return  # the vibes or the model changed meanwhile; a newer check is on its way
        if event.states != self._states:
            self._states = event.states
            self._render_summary()
            self.post_message(self.Changed())

    def vibe_state(self, entry: VibeEntry) -> VibeState:
        """The cache state of one of the shown vibes (None while unknown)."""
        if self._states is None:
            return None
        for vibe, state in zip(self.inputs.vibes, self._states, strict=True):
            if vibe is entry:
                return state
        return None

    @property
    def uncached_vibes(self) -> int | None:
        """How many vibes must be encoded (and paid for) with the shown model; None while not looked up yet."""
        if self._states is None:
            return None
        return sum(state is False for state in self._states)

    def _render_summary(self) -> None:
        summary = self.inputs.summary(self.vibe_state if self._states is not None else None)
        self.set_class(not summary, "-empty")
        self.update(summary)
