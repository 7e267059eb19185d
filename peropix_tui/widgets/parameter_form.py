"""The generation parameters beside the prompt editors: model, size, steps, guidance, sampler, seed, batch.

Choices come from the NovelAI model table (samplers and schedules follow the chosen model), and `request()`
turns the form into a validated `GenerationRequest`, so the form can never hold a value the engine refuses
without saying which field is wrong. `apply()` fills it from an image's settings; the undesired-content preset
and dataset found in that image's prompts are kept for `request()`, so applying settings back reproduces them.
The image inputs (character prompts, vibes, character reference, img2img or inpaint source) are edited in their own
modal and held by the one-line summary at the top of the form; `request()` adds them and checks them against the
model with the engine's own rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Select, Switch

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.presets import BUILTIN_RESOLUTIONS, UC_AS_WRITTEN, ParameterPreset, snap64
from peropix_tui.engine.nai.models import DEFAULT_MODEL, MAX_SEED, MODELS, model_spec
from peropix_tui.engine.types import GenerationRequest, UcPreset
from peropix_tui.widgets.image_inputs import ImageInputs
from peropix_tui.widgets.image_inputs_bar import ImageInputsBar

if TYPE_CHECKING:
    from peropix_tui.core.metadata import ImageMetadata
    from peropix_tui.messages import ApplyWhat


SIZE_PRESETS = BUILTIN_RESOLUTIONS
CUSTOM = "custom"


class FormError(PeropixError):
    """A parameter field holds a value that is not a number or not allowed."""


@dataclass(slots=True)
class AppliedSettings:
    """What `ParameterForm.apply` did: the prompts for the editors, and what the form could not take over."""

    prompt: str | None = None
    """The image's prompt without the quality tags and dataset prefix the switches add (None: not asked for)."""
    negative: str | None = None
    skipped: list[str] = field(default_factory=list)
    """Settings of the image this form has no field for, one short phrase each ("3 character prompts")."""
    notes: list[str] = field(default_factory=list)
    """What was changed to fit NovelAI (an unknown model, a size snapped), one sentence each."""


class ParameterForm(VerticalScroll):
    uc_preset: UcPreset | None = UcPreset.HEAVY
    """The undesired-content preset for `request()`; `apply` sets the one found in an image's negative prompt."""
    dataset: str | None = None

    DEFAULT_CSS = """
    ParameterForm {
        width: 40; padding: 0 1; border-left: vkey $primary;
        layout: grid; grid-size: 2; grid-columns: 12 1fr; grid-rows: auto; grid-gutter: 1 0;
    }
    ParameterForm .param-label { color: $text-muted; }
    ParameterForm Switch { width: auto; }
    ParameterForm Input, ParameterForm Select { width: 1fr; }
    ParameterForm #param-size-custom { height: 1; }
    ParameterForm #param-size-custom Input { width: 1fr; }
    ParameterForm #param-size-custom .param-times { width: 3; content-align: center middle; }
    ParameterForm .-hidden { display: none; }
    ParameterForm #param-error { color: $error; height: auto; column-span: 2; }
    ParameterForm #param-inputs { column-span: 2; }
    """

    def compose(self) -> ComposeResult:
        yield ImageInputsBar(id="param-inputs")
        models = [(spec.label, spec.id) for spec in MODELS.values() if not spec.legacy]
        yield from self._row(
            "Model", Select(models, value=DEFAULT_MODEL, allow_blank=False, compact=True, id="param-model")
        )
        sizes = [(p.label, p.label) for p in SIZE_PRESETS] + [("Custom…", CUSTOM)]
        yield from self._row(
            "Size", Select(sizes, value=SIZE_PRESETS[0].label, allow_blank=False, compact=True, id="param-size")
        )
        yield Label("W × H", id="param-size-label", classes="param-label -hidden")
        with Horizontal(id="param-size-custom", classes="-hidden"):
            yield Input("832", compact=True, id="param-width", type="integer", max_length=5)
            yield Label("×", classes="param-times")
            yield Input("1216", compact=True, id="param-height", type="integer", max_length=5)
        yield from self._row("Steps", Input("28", compact=True, id="param-steps", type="integer", max_length=3))
        yield from self._row("Guidance", Input("5", compact=True, id="param-scale", type="number", max_length=6))
        yield from self._row("Rescale", Input("0", compact=True, id="param-rescale", type="number", max_length=6))
        spec = model_spec(DEFAULT_MODEL)
        samplers = [(s, s) for s in spec.samplers]
        schedules = [(s, s) for s in spec.schedules]
        yield from self._row(
            "Sampler", Select(samplers, value=spec.samplers[0], allow_blank=False, compact=True, id="param-sampler")
        )
        yield from self._row(
            "Schedule",
            Select(
                schedules,
                value=self._default_schedule(spec.schedules),
                allow_blank=False,
                compact=True,
                id="param-schedule",
            ),
        )
        yield from self._row(
            "Seed", Input("", placeholder="random", compact=True, id="param-seed", type="integer", max_length=10)
        )
        yield from self._row("Images", Input("1", compact=True, id="param-n", type="integer", max_length=1))
        yield from self._row("Variety+", Switch(False, id="param-variety"))
        # SMEA exists on V3 models only: `_model_changed` shows these rows for them.
        yield Label("SMEA", classes="param-label param-smea -hidden")
        yield Switch(False, id="param-smea", classes="param-smea -hidden")
        yield Label("SMEA DYN", classes="param-label param-smea -hidden")
        yield Switch(False, id="param-smea-dyn", classes="param-smea -hidden")
        yield from self._row("Quality tags", Switch(True, id="param-quality"))
        yield Label("", id="param-error", markup=False)

    @staticmethod
    def _default_schedule(schedules: tuple[str, ...]) -> str:
        return "karras" if "karras" in schedules else schedules[0]

    def _row(self, label: str, widget: Any) -> ComposeResult:
        yield Label(label, classes="param-label")
        yield widget

    def on_mount(self) -> None:
        self._model_changed(DEFAULT_MODEL)

    @on(Select.Changed, "#param-model")
    def _on_model(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self._model_changed(event.value)

    def _model_changed(self, model: str) -> None:
        spec = model_spec(model)
        sampler = self.query_one("#param-sampler", Select)
        schedule = self.query_one("#param-schedule", Select)
        keep_sampler, keep_schedule = sampler.value, schedule.value
        sampler.set_options([(s, s) for s in spec.samplers])
        schedule.set_options([(s, s) for s in spec.schedules])
        sampler.value = keep_sampler if keep_sampler in spec.samplers else spec.samplers[0]
        schedule.value = keep_schedule if keep_schedule in spec.schedules else self._default_schedule(spec.schedules)
        self.query_one("#param-scale", Input).value = f"{spec.default_scale:g}"
        for widget in self.query(".param-smea"):
            widget.set_class(not spec.smea, "-hidden")
        if not spec.smea:
            self._set_smea(False, False)
        self.query_one(ImageInputsBar).show(self.image_inputs, model)

    def _set_smea(self, smea: bool, dyn: bool) -> None:
        with self.prevent(Switch.Changed):
            self.query_one("#param-smea", Switch).value = smea or dyn
            self.query_one("#param-smea-dyn", Switch).value = dyn

    @on(Switch.Changed, "#param-smea")
    def _on_smea(self, event: Switch.Changed) -> None:
        if not event.value:  # DYN is a variant of SMEA: it goes off with it
            self.query_one("#param-smea-dyn", Switch).value = False

    @on(Switch.Changed, "#param-smea-dyn")
    def _on_smea_dyn(self, event: Switch.Changed) -> None:
        if event.value:
            self.query_one("#param-smea", Switch).value = True

    @property
    def image_inputs(self) -> ImageInputs:
        """Characters, vibes, character reference and img2img/inpaint source, as `request()` adds them."""
        return self.query_one(ImageInputsBar).inputs

    def set_image_inputs(self, inputs: ImageInputs) -> None:
        """Use `inputs` from now on; a new img2img source sets the size to the NovelAI size nearest to its own."""
        source, earlier = inputs.source, self.image_inputs.source
        if source is not None and (earlier is None or earlier.path != source.path):
            self._apply_size(*source.fit)
        self.query_one(ImageInputsBar).show(inputs, str(self.query_one("#param-model", Select).value))

    @on(Select.Changed, "#param-size")
    def _on_size(self, event: Select.Changed) -> None:
        for widget in self.query("#param-size-custom, #param-size-label"):
            widget.set_class(event.value != CUSTOM, "-hidden")
        for preset in SIZE_PRESETS:
            if preset.label == event.value:
                self.query_one("#param-width", Input).value = str(preset.width)
                self.query_one("#param-height", Input).value = str(preset.height)

    @on(Input.Blurred, "#param-width, #param-height")
    def _snap(self, event: Input.Blurred) -> None:
        try:
            value = int(event.input.value)
        except ValueError:
            return
        event.input.value = str(snap64(value))

    def _number(self, field_id: str, label: str, kind: type[int] | type[float]) -> Any:
        text = self.query_one(f"#{field_id}", Input).value.strip()
        try:
            return kind(text)
        except ValueError:
            raise FormError(f"{label}: {text!r} is not a {'whole ' if kind is int else ''}number") from None

    def request(self, prompt: str, negative: str) -> GenerationRequest:
        """The form as a validated request; raises PeropixError naming the field at fault."""
        seed_text = self.query_one("#param-seed", Input).value.strip()
        try:
            request = GenerationRequest(
                prompt=prompt,
                negative=negative,
                model=str(self.query_one("#param-model", Select).value),
                width=self._number("param-width", "Width", int),
                height=self._number("param-height", "Height", int),
                steps=self._number("param-steps", "Steps", int),
                scale=self._number("param-scale", "Guidance", float),
                cfg_rescale=self._number("param-rescale", "Rescale", float),
                sampler=str(self.query_one("#param-sampler", Select).value),
                scheduler=str(self.query_one("#param-schedule", Select).value),
                seed=self._number("param-seed", "Seed", int) if seed_text else None,
                n=self._number("param-n", "Images", int),
                variety=self.query_one("#param-variety", Switch).value,
                smea=self.query_one("#param-smea", Switch).value,
                smea_dyn=self.query_one("#param-smea-dyn", Switch).value,
                quality_tags=self.query_one("#param-quality", Switch).value,
                uc_preset=self.uc_preset,
                dataset=self.dataset,
            )
            request = self.image_inputs.applied_to(request)
            self.image_inputs.check(request.model)
        except PeropixError as exc:
            self.query_one("#param-error", Label).update(str(exc))
            raise
        self.query_one("#param-error", Label).update("")
        return request

    # Presets -------------------------------------------------------------------------------------------------

    def image_size(self) -> tuple[int, int]:
        """Width and height as typed; raises FormError when one is not a whole number."""
        return self._number("param-width", "Width", int), self._number("param-height", "Height", int)

    def set_size(self, width: int, height: int) -> None:
        """Show a size: the built-in choice that matches it, else the custom fields."""
        self._apply_size(width, height)

    def parameter_preset(self, name: str) -> ParameterPreset:
        """The form's parameters (not its size, seed or image count) as a preset named `name`; raises
        PeropixError naming the field at fault."""
        uc = self.uc_preset
        model = str(self.query_one("#param-model", Select).value)
        smea = model_spec(model).smea  # only V3 models have SMEA: a preset of another model leaves it out
        return ParameterPreset(
            name,
            model=model,
            steps=self._number("param-steps", "Steps", int),
            scale=self._number("param-scale", "Guidance", float),
            cfg_rescale=self._number("param-rescale", "Rescale", float),
            sampler=str(self.query_one("#param-sampler", Select).value),
            scheduler=str(self.query_one("#param-schedule", Select).value),
            variety=self.query_one("#param-variety", Switch).value,
            smea=self.query_one("#param-smea", Switch).value if smea else None,
            smea_dyn=self.query_one("#param-smea-dyn", Switch).value if smea else None,
            quality_tags=self.query_one("#param-quality", Switch).value,
            uc_preset=UC_AS_WRITTEN if uc is None else uc.value,
        )

    def apply_parameter_preset(self, preset: ParameterPreset) -> list[str]:
        """Set the fields `preset` holds (the model first: it decides the samplers on offer); returns what the
        form could not take, one short phrase each."""
        from peropix_tui.engine.nai.presets import available_uc_presets

        skipped: list[str] = []
        model = str(self.query_one("#param-model", Select).value)
        if preset.model is not None:
            spec = MODELS.get(preset.model)
            if spec is None or spec.legacy:
                skipped.append(f"model {preset.model}")
            elif spec.id != model:
                model = spec.id
                with self.prevent(Select.Changed):
                    self.query_one("#param-model", Select).value = model
                self._model_changed(model)
        spec = model_spec(model)
        for field_id, number in (
            ("param-steps", preset.steps),
            ("param-scale", preset.scale),
            ("param-rescale", preset.cfg_rescale),
        ):
            if number is not None:
                self.query_one(f"#{field_id}", Input).value = f"{number:g}"
        for select_id, label, choice, allowed in (
            ("param-sampler", "sampler", preset.sampler, spec.samplers),
            ("param-schedule", "schedule", preset.scheduler, spec.schedules),
        ):
            if choice in allowed:
                self.query_one(f"#{select_id}", Select).value = choice
            elif choice is not None:
                skipped.append(f"{label} {choice} (not offered by {spec.label})")
        for switch_id, flag in (("param-variety", preset.variety), ("param-quality", preset.quality_tags)):
            if flag is not None:
                self.query_one(f"#{switch_id}", Switch).value = flag
        if preset.uc_preset == UC_AS_WRITTEN:
            self.uc_preset = None
        elif preset.uc_preset is not None:
            uc = UcPreset(preset.uc_preset)
            if uc in available_uc_presets(model):
                self.uc_preset = uc
            else:
                skipped.append(f"undesired-content preset {uc.value} (not offered by {spec.label})")
        if preset.smea is not None or preset.smea_dyn is not None:
            if spec.smea:
                self._set_smea(bool(preset.smea), bool(preset.smea_dyn))
            elif preset.smea or preset.smea_dyn:
                skipped.append(f"SMEA (not offered by {spec.label})")
        return skipped

    # Applying an image's settings ----------------------------------------------------------------------------

    def apply(self, meta: ImageMetadata, what: ApplyWhat) -> AppliedSettings:
        """Fill the form from `meta`: every setting (`all`), the prompts' flags (`prompt`) or the seed (`seed`).

        The settings come from `settings_from_metadata`, as for `peropix generate --from-image`: NovelAI's
        quality tags and undesired-content preset become the switch and preset again instead of text that would
        be added a second time. Raises PeropixError when the image holds no settings.
        """
        applied = AppliedSettings()
        if what == "seed":
            if meta.seed is None or not 1 <= meta.seed <= MAX_SEED:
                raise FormError(f"the image has no NovelAI seed to reuse (recorded: {meta.seed})")
            self.query_one("#param-seed", Input).value = str(meta.seed)
            return applied
        # Imported here: it pulls in the image codec, which the first frame of the app does not need.
        from peropix_tui.engine.nai.image_settings import settings_from_metadata

        settings = settings_from_metadata(meta)
        fields = settings.fields
        applied.prompt, applied.negative = fields["prompt"], fields["negative"]
        self.query_one("#param-quality", Switch).value = fields["quality_tags"]
        self.uc_preset = fields["uc_preset"]
        self.dataset = fields["dataset"]
        # Character prompts are prompts: they come back with the prompt, and an image without any clears them.
        self.set_image_inputs(self.image_inputs.with_characters(fields.get("characters", ())))
        if what == "all":
            applied.notes.extend(settings.warnings)
            self._apply_parameters(fields, applied.skipped)
        return applied

    def _apply_parameters(self, fields: dict[str, Any], skipped: list[str]) -> None:
        spec = model_spec(fields["model"])
        if spec.legacy:
            skipped.append(f"model {spec.label}")
            spec = model_spec(str(self.query_one("#param-model", Select).value))
        else:
            with self.prevent(Select.Changed):
                self.query_one("#param-model", Select).value = spec.id
            self._model_changed(spec.id)
        if "width" in fields and "height" in fields:
            self._apply_size(fields["width"], fields["height"])
        for field_id, name in (("param-steps", "steps"), ("param-scale", "scale"), ("param-rescale", "cfg_rescale")):
            if name in fields:
                self.query_one(f"#{field_id}", Input).value = f"{fields[name]:g}"
        for select_id, name, allowed in (
            ("param-sampler", "sampler", spec.samplers),
            ("param-schedule", "scheduler", spec.schedules),
        ):
            if fields.get(name) in allowed:
                self.query_one(f"#{select_id}", Select).value = fields[name]
            elif name in fields:
                skipped.append(f"{name} {fields[name]}")
        if spec.variety_sigma is not None:
            self.query_one("#param-variety", Switch).value = bool(fields.get("variety"))
        self.query_one("#param-seed", Input).value = str(fields.get("seed", ""))
        if spec.smea:
            self._set_smea(bool(fields.get("smea")), bool(fields.get("smea_dyn")))
        elif fields.get("smea"):
            skipped.append("SMEA")
        if fields.get("vibes"):
            skipped.append("vibes")

    def _apply_size(self, width: int, height: int) -> None:
        preset = next((p.label for p in SIZE_PRESETS if (p.width, p.height) == (width, height)), CUSTOM)
        with self.prevent(Select.Changed):
            self.query_one("#param-size", Select).value = preset
        for widget in self.query("#param-size-custom, #param-size-label"):
            widget.set_class(preset != CUSTOM, "-hidden")
        self.query_one("#param-width", Input).value = str(width)
        self.query_one("#param-height", Input).value = str(height)
