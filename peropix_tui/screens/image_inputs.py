"""Images & characters: the modal where a generation's character prompts, vibes, character reference and img2img or
inpaint source are edited, one tab each, opened from the Generate screen (F9) and by "use this image".

The screen works on a copy of the inputs and hands the result back when closed (Escape). Files are read and checked
in thread workers; what the model cannot take (a character past its limit, vibes with a character reference or with
inpainting, a reference on a model without one) is refused when it is added, in the engine's own words.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Footer, Input, Label, TabbedContent, TabPane

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.nai.models import VibeSupport, model_spec
from peropix_tui.widgets.character_list import CharacterList
from peropix_tui.widgets.image_entries import ReferenceEntry, SourceEntry, VibeEntry
from peropix_tui.widgets.image_inputs import IMAGE_SUFFIXES, ImageInputs
from peropix_tui.widgets.path_input import PathInput
from peropix_tui.widgets.vibe_list import VibeList, parse_fraction

if TYPE_CHECKING:
    from peropix_tui.core.vocabulary import Vocabulary
    from peropix_tui.engine.nai.vibe_cache import VibeCache
    from peropix_tui.messages import UseAs
    from peropix_tui.widgets.image_entries import VibeState

TABS: Final = ("tab-characters", "tab-vibes", "tab-reference", "tab-source")
TAB_OF: Final[dict[str, str]] = {
    "img2img": "tab-source",
    "inpaint": "tab-source",
    "vibe": "tab-vibes",
    "reference": "tab-reference",
}
MIN_STRENGTH: Final = 0.01
"""The smallest img2img strength NovelAI takes."""


class ImageInputsScreen(ModalScreen[ImageInputs]):
    DEFAULT_CSS = """
    ImageInputsScreen { align: center middle; }
    #inputs-box {
        width: 100%; max-width: 110; height: 100%; max-height: 36;
        border: round $primary; background: $surface; padding: 0 1;
    }
    #inputs-title { color: $text-muted; height: 1; }
    #inputs-tabs { height: 1fr; }
    #inputs-tabs TabPane { padding: 0; height: 1fr; }
    #inputs-error { color: $error; height: auto; width: 100%; }
    .inputs-row { height: 1; }
    .inputs-label { width: 10; color: $text-muted; }
    .inputs-gap { width: 3; }
    .inputs-number { width: 8; }
    .inputs-path { width: 1fr; }
    .inputs-note { color: $text-muted; height: auto; width: 100%; margin-top: 1; }
    .inputs-current { height: auto; width: 100%; margin-bottom: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "done", "Done", id="image_inputs_done"),
        Binding("f9", "next_tab", "Next tab", id="image_inputs_next_tab"),
        Binding("f8", "clear", "Clear tab", id="image_inputs_clear"),
    ]

    class Loaded(Message):
        """A file was read for `kind` in a worker: `result` is what it became, `error` why it could not be used."""

        def __init__(self, kind: str, result: object = None, error: str = "") -> None:
            super().__init__()
            self.kind = kind
            self.result = result
            self.error = error

    class StatesChecked(Message):
        def __init__(self, vibes: tuple[VibeEntry, ...], states: tuple[VibeState, ...], note: str) -> None:
            super().__init__()
            self.vibes = vibes
            self.states = states
            self.note = note

    def __init__(
        self,
        inputs: ImageInputs,
        *,
        model: str,
        size: tuple[int, int],
        vocabulary: Vocabulary | None = None,
        vibe_cache: VibeCache | None = None,
        load: tuple[Path, UseAs] | None = None,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.model = model
        self._form_size = size
        self._initial_source = inputs.source
        self._vocabulary = vocabulary
        self._vibe_cache = vibe_cache
        self._load_request = load
        self._invalid: dict[str, str] = {}
        """Values typed that cannot be used, by field id: closing waits until they are fixed."""

    # layout ------------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        spec = model_spec(self.model)
        width, height = self._form_size
        tab = TAB_OF[self._load_request[1]] if self._load_request else TABS[0]
        with Vertical(id="inputs-box"):
            yield Label(f"Images & characters · {spec.label} · {width}×{height}", id="inputs-title", markup=False)
            with TabbedContent(initial=tab, id="inputs-tabs"):
                with TabPane("Characters", id="tab-characters"):
                    yield CharacterList(self.inputs.characters, vocabulary=self._vocabulary, id="inputs-characters")
                with TabPane("Vibes", id="tab-vibes"):
                    yield VibeList(self.inputs.vibes, id="inputs-vibes")
                with TabPane("Reference", id="tab-reference"):
                    yield from self._reference_pane()
                with TabPane("Image", id="tab-source"):
                    yield from self._source_pane()
            yield Label("", id="inputs-error", markup=False)
        yield Footer()

    def _row(self, label: str, *widgets: Input | Label | Checkbox) -> Horizontal:
        return Horizontal(Label(label, classes="inputs-label"), *widgets, classes="inputs-row")

    def _reference_pane(self) -> ComposeResult:
        reference = self.inputs.reference
        yield self._row(
            "File",
            PathInput(suffixes=IMAGE_SUFFIXES, placeholder="image path; → completes, Enter sets", id="ref-path"),
        )
        yield Label("", id="ref-current", classes="inputs-current", markup=False)
        yield self._row(
            "Fidelity",
            self._number("ref-fidelity", reference.fidelity if reference else 1.0),
            Label("", classes="inputs-gap"),
            Checkbox("Style aware", reference.style_aware if reference else True, compact=True, id="ref-style"),
        )
        yield Label("", id="ref-note", classes="inputs-note", markup=False)

    def _source_pane(self) -> ComposeResult:
        source = self.inputs.source
        yield self._row(
            "Image",
            PathInput(suffixes=IMAGE_SUFFIXES, placeholder="image path; → completes, Enter sets", id="source-path"),
        )
        yield Label("", id="source-current", classes="inputs-current", markup=False)
        yield self._row(
            "Strength",
            self._number("source-strength", source.strength if source else 0.7),
            Label("", classes="inputs-gap"),
            Label("Noise", classes="inputs-label"),
            self._number("source-noise", source.noise if source else 0.0),
        )
        yield self._row(
            "Mask",
            PathInput(
                suffixes=IMAGE_SUFFIXES, placeholder="white repaints; Enter sets, empty Enter clears", id="mask-path"
            ),
        )
        yield Label("", id="mask-current", classes="inputs-note", markup=False)

    @staticmethod
    def _number(field_id: str, value: float) -> Input:
        return Input(f"{value:g}", compact=True, id=field_id, type="number", max_length=5, classes="inputs-number")

    def on_mount(self) -> None:
        self._show_reference()
        self._show_source()
        self._check_vibe_states()
        if self._load_request is not None:
            path, use = self._load_request
            self.load(path, use)
        else:
            self.query_one("#char-table").focus()

    # helpers -----------------------------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        self.query_one("#inputs-error", Label).update(message)

    def _target_size(self) -> tuple[int, int]:
        """The size the image will be made at: a newly chosen source sets it to the NovelAI size nearest its own."""
        source = self.inputs.source
        if source is not None and (self._initial_source is None or self._initial_source.path != source.path):
            return source.fit
        return self._form_size

    def _accept(self, candidate: ImageInputs) -> bool:
        """Take `candidate` unless it brings a refusal the inputs did not have (shown instead)."""
        problem = candidate.problem(self.model)
        if problem is not None and problem != self.inputs.problem(self.model):
            self._error(problem)
            return False
        self.inputs = candidate
        self._error("")
        return True

    def load(self, path: Path, use: UseAs) -> None:
        """Read `path` as `use` (as if typed in its tab): "use this image" lands here."""
        self.query_one(TabbedContent).active = TAB_OF[use]
        field = {"img2img": "#source-path", "inpaint": "#source-path", "vibe": "#vibe-path", "reference": "#ref-path"}
        self.query_one(field[use], Input).value = str(path)
        self._read(use, str(path))

    # reading files -----------------------------------------------------------------------------------------

    @work(thread=True, group="image-inputs-read", exit_on_error=False)
    def _read(self, kind: str, text: str) -> None:
        from peropix_tui.widgets import image_files

        try:
            path = image_files.resolve_path(text)
            result: object
            if kind == "vibe":
                result = image_files.load_vibe_entries(path, self._vibe_cache)
            elif kind == "reference":
                result = image_files.load_reference(path)
            elif kind == "mask":
                image_files.check_mask(path, *self._target_size())
                result = path
            else:
                result = image_files.load_source(path)
        except PeropixError as exc:
            self.post_message(self.Loaded(kind, error=str(exc)))
            return
        self.post_message(self.Loaded(kind, result))

    def on_image_inputs_screen_loaded(self, event: ImageInputsScreen.Loaded) -> None:
        if event.error:
            self._error(event.error)
            return
        kind, result = event.kind, event.result
        if kind == "vibe":
            assert isinstance(result, list)
            vibes = list(self.inputs.vibes) + result
            if self._accept(replace(self.inputs, vibes=tuple(vibes))):
                pane = self.query_one(VibeList)
                pane.show(self.inputs.vibes, select=len(vibes) - 1)
                pane.path_added()
                self._check_vibe_states()
        elif kind == "reference":
            assert isinstance(result, ReferenceEntry)
            reference = self.inputs.reference
            if reference is not None:
                result = replace(result, fidelity=reference.fidelity, style_aware=reference.style_aware)
            if self._accept(replace(self.inputs, reference=result)):
                self._show_reference()
        elif kind == "mask":
            assert isinstance(result, Path) and self.inputs.source is not None
            if self._accept(replace(self.inputs, source=replace(self.inputs.source, mask=result))):
                self._show_source()
        else:
            assert isinstance(result, SourceEntry)
            source = self.inputs.source
            if source is not None:
                result = replace(result, strength=source.strength, noise=source.noise)
            if self._accept(replace(self.inputs, source=result)):
                self._show_source()
                if kind == "inpaint":
                    self.query_one("#mask-current", Label).update("Now the mask: white marks what is repainted.")
                    self.query_one("#mask-path", Input).focus()

    # characters --------------------------------------------------------------------------------------------

    @on(CharacterList.Changed)
    def _characters_changed(self, event: CharacterList.Changed) -> None:
        candidate = replace(self.inputs, characters=event.characters)
        if event.added:
            if not self._accept(candidate):
                pane = self.query_one(CharacterList)
                pane.show(self.inputs.characters, select=len(self.inputs.characters) - 1)
                pane.table.focus()
            return
        self.inputs = candidate

    # vibes -------------------------------------------------------------------------------------------------

    @on(VibeList.FileChosen)
    def _vibe_file(self, event: VibeList.FileChosen) -> None:
        self._read("vibe", event.text)

    @on(VibeList.Changed)
    def _vibes_changed(self, event: VibeList.Changed) -> None:
        self.inputs = replace(self.inputs, vibes=event.vibes)
        self._check_vibe_states()

    @on(VibeList.Invalid)
    def _vibe_invalid(self, event: VibeList.Invalid) -> None:
        self._set_invalid("vibe-values", event.message)

    def _check_vibe_states(self) -> None:
        spec = model_spec(self.model)
        pane = self.query_one(VibeList)
        if spec.vibes is VibeSupport.ENCODED:
            from peropix_tui.engine.nai.cost import VIBE_BATCH_COST, VIBE_ENCODE_COST, VIBES_INCLUDED

            pane.encode_cost = VIBE_ENCODE_COST
            note = (
                f"{spec.label} takes encoded vibes: one not cached costs {VIBE_ENCODE_COST} Anlas to encode, once "
                f"per information-extracted value. Beyond {VIBES_INCLUDED} vibes each costs {VIBE_BATCH_COST} more."
            )
        elif spec.vibes is VibeSupport.RAW:
            note = f"{spec.label} takes the images themselves: nothing to encode, no extra cost."
        else:
            note = f"{spec.label} has no vibe transfer."
        self._vibe_states(self.inputs.vibes, self.model, note)

    @work(thread=True, exclusive=True, group="image-inputs-vibe-states", exit_on_error=False)
    def _vibe_states(self, vibes: tuple[VibeEntry, ...], model: str, note: str) -> None:
        from peropix_tui.widgets.image_files import vibe_states

        self.post_message(self.StatesChecked(vibes, vibe_states(vibes, model, self._vibe_cache), note))

    def on_image_inputs_screen_states_checked(self, event: ImageInputsScreen.StatesChecked) -> None:
        self.query_one(VibeList).show_states(event.vibes, event.states, event.note)

    # character reference ----------------------------------------------------------------------------------

    @on(Input.Submitted, "#ref-path")
    def _reference_path(self, event: Input.Submitted) -> None:
        event.stop()
        self._read("reference", event.value)

    def _show_reference(self) -> None:
        reference = self.inputs.reference
        current = self.query_one("#ref-current", Label)
        if reference is None:
            current.update("No character reference.")
        else:
            current.update(
                f"{reference.path.name} ({reference.width}×{reference.height}) · F8 clears · {reference.path}"
            )
        probe = ImageInputs(reference=ReferenceEntry(Path("reference"), 1, 1))
        refusal = probe.problem(self.model)
        if refusal is None:
            from peropix_tui.engine.nai.cost import CHARACTER_REFERENCE_COST

            refusal = (
                f"Fidelity 1 follows the character most closely; style aware carries its drawing style over too. "
                f"Costs {CHARACTER_REFERENCE_COST} Anlas per image, also on Opus; not with vibes or inpainting."
            )
        self.query_one("#ref-note", Label).update(refusal)

    @on(Checkbox.Changed, "#ref-style")
    def _style_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if self.inputs.reference is not None:
            self.inputs = replace(self.inputs, reference=replace(self.inputs.reference, style_aware=event.value))

    # img2img / inpaint -------------------------------------------------------------------------------------

    @on(Input.Submitted, "#source-path")
    def _source_path(self, event: Input.Submitted) -> None:
        event.stop()
        self._read("img2img", event.value)

    @on(Input.Submitted, "#mask-path")
    def _mask_path(self, event: Input.Submitted) -> None:
        event.stop()
        source = self.inputs.source
        if not event.value.strip():
            if source is not None and source.mask is not None:
                self.inputs = replace(self.inputs, source=replace(source, mask=None))
                self._show_source()
            return
        if source is None:
            self._error("Choose the image to inpaint first, then its mask.")
            return
        self._read("mask", event.value)

    def _show_source(self) -> None:
        source = self.inputs.source
        current = self.query_one("#source-current", Label)
        mask = self.query_one("#mask-current", Label)
        if source is None:
            current.update("No source image: the image is made from the prompt alone.")
            mask.update("")
            return
        width, height = self._target_size()
        resized = "" if (source.width, source.height) == (width, height) else f", sent resized to {width}×{height}"
        current.update(f"{source.path.name} ({source.width}×{source.height}{resized}) · F8 clears · {source.path}")
        if source.mask is None:
            mask.update("No mask: img2img changes the whole image.")
        else:
            mask.update(f"Inpaint: {source.mask.name} marks what is repainted (empty Enter in Mask clears it).")

    # typed values ------------------------------------------------------------------------------------------

    def _set_invalid(self, field_id: str, message: str) -> None:
        if message:
            self._invalid[field_id] = message
        else:
            self._invalid.pop(field_id, None)
        self._error(message or next(iter(self._invalid.values()), ""))

    @on(Input.Changed, "#ref-fidelity, #source-strength, #source-noise")
    def _number_changed(self, event: Input.Changed) -> None:
        event.stop()
        field_id = event.input.id or ""
        label = {"ref-fidelity": "Fidelity", "source-strength": "Strength", "source-noise": "Noise"}[field_id]
        try:
            value = parse_fraction(event.value, label)
            if field_id == "source-strength" and value < MIN_STRENGTH:
                raise ValueError(f"{label}: must be at least {MIN_STRENGTH:g}, not {event.value.strip()}")
        except ValueError as exc:
            self._set_invalid(field_id, str(exc))
            return
        self._set_invalid(field_id, "")
        reference, source = self.inputs.reference, self.inputs.source
        if field_id == "ref-fidelity" and reference is not None:
            self.inputs = replace(self.inputs, reference=replace(reference, fidelity=value))
        elif field_id == "source-strength" and source is not None:
            self.inputs = replace(self.inputs, source=replace(source, strength=value))
        elif field_id == "source-noise" and source is not None:
            self.inputs = replace(self.inputs, source=replace(source, noise=value))

    # actions -----------------------------------------------------------------------------------------------

    def action_next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = TABS[(TABS.index(tabs.active) + 1) % len(TABS)] if tabs.active in TABS else TABS[0]

    def action_clear(self) -> None:
        active = self.query_one(TabbedContent).active
        if active == "tab-characters":
            self.inputs = replace(self.inputs, characters=())
            self.query_one(CharacterList).show(())
        elif active == "tab-vibes":
            self.inputs = replace(self.inputs, vibes=())
            self.query_one(VibeList).show(())
        elif active == "tab-reference":
            self.inputs = replace(self.inputs, reference=None)
            self._show_reference()
        else:
            self.inputs = replace(self.inputs, source=None)
            self._show_source()
        self._error("")

    def action_done(self) -> None:
        if self._invalid:
            self._error(next(iter(self._invalid.values())) + " (fix it, or F8 clears the tab)")
            return
        for number, character in enumerate(self.inputs.characters, start=1):
            if not character.prompt.strip():
                self.query_one(TabbedContent).active = "tab-characters"
                self._error(f"Character {number} has no prompt: type one, or d removes it.")
                return
        self.dismiss(self.inputs)
