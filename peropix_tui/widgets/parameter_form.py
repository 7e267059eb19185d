"""The generation parameters beside the prompt editors: model, size, steps, guidance, sampler, seed, batch.

Choices come from the NovelAI model table (samplers and schedules follow the chosen model), and `request()`
turns the form into a validated `GenerationRequest`, so the form can never hold a value the engine refuses
without saying which field is wrong. `apply()` fills it from an image's settings; the undesired-content preset
and dataset found in that image's prompts are kept for `request()`, so applying settings back reproduces them.
The image inputs (character prompts, vibes, character reference, img2img or inpaint source) are edited in their own
modal and held by the one-line summary at the top of the form; `request()` adds them and checks them against the
model with the engine's own rules.

When checkpoint folders are configured a Provider row offers the local engine: its checkpoints are listed by a
scan in a thread (the first one imports torch), the samplers and schedules become the local engine's, and the
NovelAI-only controls (model, Variety+, SMEA, quality tags) make way for a checkpoint choice and a hint. Presets
and an image's settings bring their provider back: a checkpoint name or an image made locally chooses Local, a
NovelAI model or image chooses NovelAI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Switch

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.presets import BUILTIN_RESOLUTIONS, UC_AS_WRITTEN, ParameterPreset, snap64
from peropix_tui.engine.local_names import (
    DEFAULT_LOCAL_SAMPLER,
    DEFAULT_LOCAL_SCHEDULER,
    LOCAL_SAMPLERS,
    LOCAL_SCHEDULERS,
    local_sampler,
    local_scheduler,
)
from peropix_tui.engine.nai.models import DEFAULT_MODEL, MAX_SEED, MODELS, model_spec
from peropix_tui.engine.types import LOCAL, NOVELAI, SEED_LIMIT, GenerationRequest, Provider, UcPreset
from peropix_tui.widgets.image_inputs import ImageInputs
from peropix_tui.widgets.image_inputs_bar import ImageInputsBar

if TYPE_CHECKING:
    from peropix_tui.core.metadata import ImageMetadata
    from peropix_tui.engine.local_provider import CheckpointScan
    from peropix_tui.messages import ApplyWhat

log = logging.getLogger(__name__)

SIZE_PRESETS = BUILTIN_RESOLUTIONS
CUSTOM = "custom"
PROVIDER_CHOICES = (("NovelAI", NOVELAI), ("Local", LOCAL))
LOCAL_HINT = "Free · NovelAI settings hidden"


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

    class CheckpointsScanned(Message):
        """The checkpoint folders were read: `scan` holds what they hold, or `problem` why they cannot be."""

        def __init__(self, folders: tuple[Path, ...], scan: CheckpointScan | None, problem: str = "") -> None:
            super().__init__()
            self.folders = folders
            self.scan = scan
            self.problem = problem

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._folders: tuple[Path, ...] = ()
        self._scan: CheckpointScan | None = None
        self._scanned: tuple[Path, ...] | None = None
        """The folders `_scan` (or the refusal shown) is for; None while none has finished."""
        self._scan_problem = ""
        """Why the checkpoint folders could not be read at all (torch missing...), for `request()` to say."""
        self._wanted_checkpoint: str | None = None
        """A checkpoint asked for (by a preset or an image) before the scan has listed it."""
        self._choices: dict[Provider, tuple[object, object]] = {LOCAL: (DEFAULT_LOCAL_SAMPLER, DEFAULT_LOCAL_SCHEDULER)}
        """The sampler and schedule last chosen for each provider, restored when switching back to it."""
        self._shown: Provider = NOVELAI
        """The provider the fields are set up for."""

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
    ParameterForm .param-local { display: none; }
    ParameterForm.-local .param-local { display: block; }
    ParameterForm.-local .param-nai { display: none; }
    ParameterForm #param-local-hint { color: $text-muted; height: auto; column-span: 2; }
    """

    def compose(self) -> ComposeResult:
        yield ImageInputsBar(id="param-inputs")
        # Shown while checkpoint folders are configured (`set_checkpoint_folders`).
        yield Label("Provider", classes="param-label param-provider -hidden")
        yield Select(
            PROVIDER_CHOICES,
            value=NOVELAI,
            allow_blank=False,
            compact=True,
            id="param-provider",
            classes="param-provider -hidden",
        )
        models = [(spec.label, spec.id) for spec in MODELS.values() if not spec.legacy]
        yield from self._row(
            "Model",
            Select(models, value=DEFAULT_MODEL, allow_blank=False, compact=True, id="param-model"),
            classes="param-nai",
        )
        yield from self._row(
            "Checkpoint",
            Select[str]([], prompt="(scanning…)", compact=True, id="param-checkpoint"),
            classes="param-local",
        )
        yield Label(LOCAL_HINT, id="param-local-hint", classes="param-local", markup=False)
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
        # 20 digits: the local engine takes 64-bit seeds.
        yield from self._row(
            "Seed", Input("", placeholder="random", compact=True, id="param-seed", type="integer", max_length=20)
        )
        yield from self._row("Images", Input("1", compact=True, id="param-n", type="integer", max_length=1))
        yield from self._row("Variety+", Switch(False, id="param-variety"), classes="param-nai")
        # SMEA exists on V3 models only: `_model_changed` shows these rows for them.
        yield Label("SMEA", classes="param-label param-smea param-nai -hidden")
        yield Switch(False, id="param-smea", classes="param-smea param-nai -hidden")
        yield Label("SMEA DYN", classes="param-label param-smea param-nai -hidden")
        yield Switch(False, id="param-smea-dyn", classes="param-smea param-nai -hidden")
        yield from self._row("Quality tags", Switch(True, id="param-quality"), classes="param-nai")
        yield Label("", id="param-error", markup=False)

    @staticmethod
    def _default_schedule(schedules: tuple[str, ...]) -> str:
        return "karras" if "karras" in schedules else schedules[0]

    def _row(self, label: str, widget: Any, *, classes: str = "") -> ComposeResult:
        yield Label(label, classes=f"param-label {classes}".strip())
        if classes:
            widget.add_class(*classes.split())
        yield widget

    def on_mount(self) -> None:
        self._model_changed(DEFAULT_MODEL)

    # Provider ------------------------------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        """The provider the form's request is for: "local" only while Local is chosen."""
        return LOCAL if self.query_one("#param-provider", Select).value == LOCAL else NOVELAI

    @property
    def local_available(self) -> bool:
        """Whether checkpoint folders are configured, so that Local can be chosen."""
        return bool(self._folders)

    def set_checkpoint_folders(self, folders: Sequence[str | Path]) -> None:
        """Offer Local when `folders` (the `paths.checkpoint_dirs` setting) name any; a list that changed while
        Local is shown is read again."""
        expanded = tuple(Path(folder).expanduser() for folder in folders)
        if expanded == self._folders:
            return
        self._folders = expanded
        for widget in self.query(".param-provider"):
            widget.set_class(not expanded, "-hidden")
        if not expanded:
            self.set_provider(NOVELAI)
        elif self.provider == LOCAL:
            self._start_scan()

    def set_provider(self, provider: Provider) -> None:
        """Choose `provider` (Local only when checkpoint folders are configured)."""
        if provider == LOCAL and not self.local_available:
            return
        select = self.query_one("#param-provider", Select)
        if select.value != provider:
            with self.prevent(Select.Changed):
                select.value = provider
            self._provider_changed(provider)

    @on(Select.Changed, "#param-provider")
    def _on_provider(self, event: Select.Changed) -> None:
        self._provider_changed(LOCAL if event.value == LOCAL else NOVELAI)

    def _provider_changed(self, provider: Provider) -> None:
        if provider == self._shown:
            return  # the select announces its first value too
        self._shown = provider
        local = provider == LOCAL
        sampler = self.query_one("#param-sampler", Select)
        schedule = self.query_one("#param-schedule", Select)
        self._choices[NOVELAI if local else LOCAL] = (sampler.value, schedule.value)
        self.set_class(local, "-local")
        if not local:
            keep_sampler, keep_schedule = self._choices.get(NOVELAI, (None, None))
            model = str(self.query_one("#param-model", Select).value)
            spec = model_spec(model)
            self._model_changed(model, keep_scale=True)
            if keep_sampler in spec.samplers:
                sampler.value = keep_sampler
            if keep_schedule in spec.schedules:
                schedule.value = keep_schedule
            return
        keep_sampler, keep_schedule = self._choices[LOCAL]
        sampler.set_options([(s, s) for s in LOCAL_SAMPLERS])
        schedule.set_options([(s, s) for s in LOCAL_SCHEDULERS])
        sampler.value = keep_sampler if keep_sampler in LOCAL_SAMPLERS else DEFAULT_LOCAL_SAMPLER
        schedule.value = keep_schedule if keep_schedule in LOCAL_SCHEDULERS else DEFAULT_LOCAL_SCHEDULER
        self._start_scan()  # headers only: cheap, and it finds the files added since the last time

    def _start_scan(self) -> None:
        self.query_one("#param-local-hint", Label).update("Reading the checkpoint folders…")
        self._scan_folders(self._folders)

    @work(thread=True, exclusive=True, group="checkpoint-scan", exit_on_error=False)
    def _scan_folders(self, folders: tuple[Path, ...]) -> None:
        """List the checkpoints off the UI thread: headers only, but the first scan imports torch."""
        from peropix_tui.engine.local_provider import scan_checkpoints

        try:
            scan = scan_checkpoints(folders)
        except PeropixError as exc:
            self.post_message(self.CheckpointsScanned(folders, None, str(exc)))
            return
        self.post_message(self.CheckpointsScanned(folders, scan))

    @on(CheckpointsScanned)
    def _show_checkpoints(self, event: CheckpointsScanned) -> None:
        event.stop()
        if event.folders != self._folders:
            return  # the folders changed meanwhile; a newer scan is on its way
        self._scanned = event.folders
        self._scan = event.scan
        self._scan_problem = event.problem
        select = self.query_one("#param-checkpoint", Select)
        hint = self.query_one("#param-local-hint", Label)
        if event.scan is None:
            select.set_options([])
            hint.update(event.problem)
            return
        for problem in event.scan.problems:
            log.info("checkpoint scan: %s", problem)
        names = event.scan.names
        keep = self._wanted_checkpoint or (select.value if isinstance(select.value, str) else None)
        found = event.scan.find(keep) if keep is not None else None
        select.set_options([(c.name, c.name) for c in event.scan.checkpoints])
        if found is not None:
            select.value = found.name
        elif names:
            select.value = names[0]
        self._wanted_checkpoint = None
        if not names:
            hint.update("No checkpoint found (peropix models says why)")
        elif event.scan.problems:
            hint.update(f"{LOCAL_HINT}\n{len(event.scan.problems)} unusable (peropix models)")
        else:
            hint.update(LOCAL_HINT)

    def _choose_checkpoint(self, name: str) -> bool:
        """Select the checkpoint `name` stands for; once the scan has run, False when it found none such."""
        if self._scanned != self._folders or self._scan is None:
            self._wanted_checkpoint = name
            return True
        found = self._scan.find(name)
        if found is None:
            return False
        self.query_one("#param-checkpoint", Select).value = found.name
        return True

    def focus_first(self) -> None:
        """Focus the first field: the provider when it is offered, else the model or checkpoint."""
        if self.local_available:
            self.query_one("#param-provider").focus()
        else:
            self.query_one("#param-checkpoint" if self.provider == LOCAL else "#param-model").focus()

    @on(Select.Changed, "#param-model")
    def _on_model(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self._model_changed(event.value)

    def _model_changed(self, model: str, *, keep_scale: bool = False) -> None:
        spec = model_spec(model)
        sampler = self.query_one("#param-sampler", Select)
        schedule = self.query_one("#param-schedule", Select)
        keep_sampler, keep_schedule = sampler.value, schedule.value
        sampler.set_options([(s, s) for s in spec.samplers])
        schedule.set_options([(s, s) for s in spec.schedules])
        sampler.value = keep_sampler if keep_sampler in spec.samplers else spec.samplers[0]
        schedule.value = keep_schedule if keep_schedule in spec.schedules else self._default_schedule(spec.schedules)
        if not keep_scale:
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
        try:
            request = (
                self._local_request(prompt, negative) if self.provider == LOCAL else self._nai_request(prompt, negative)
            )
        except PeropixError as exc:
            self.query_one("#param-error", Label).update(str(exc))
            raise
        self.query_one("#param-error", Label).update("")
        return request

    def _shared_fields(self) -> dict[str, Any]:
        """The settings both providers read the same way."""
        return {
            "width": self._number("param-width", "Width", int),
            "height": self._number("param-height", "Height", int),
            "steps": self._number("param-steps", "Steps", int),
            "scale": self._number("param-scale", "Guidance", float),
            "cfg_rescale": self._number("param-rescale", "Rescale", float),
            "sampler": str(self.query_one("#param-sampler", Select).value),
            "scheduler": str(self.query_one("#param-schedule", Select).value),
            "seed": self._seed(),
            "n": self._number("param-n", "Images", int),
        }

    def _seed(self) -> int | None:
        return self._number("param-seed", "Seed", int) if self.query_one("#param-seed", Input).value.strip() else None

    def _nai_request(self, prompt: str, negative: str) -> GenerationRequest:
        request = GenerationRequest(
            prompt=prompt,
            negative=negative,
            model=str(self.query_one("#param-model", Select).value),
            **self._shared_fields(),
            variety=self.query_one("#param-variety", Switch).value,
            smea=self.query_one("#param-smea", Switch).value,
            smea_dyn=self.query_one("#param-smea-dyn", Switch).value,
            quality_tags=self.query_one("#param-quality", Switch).value,
            uc_preset=self.uc_preset,
            dataset=self.dataset,
        )
        request = self.image_inputs.applied_to(request)
        self.image_inputs.check(request.model)
        return request

    def _local_request(self, prompt: str, negative: str) -> GenerationRequest:
        """The local engine's request: the checkpoint chosen, with the characters and img2img source of the image
        inputs (vibes and a character reference are NovelAI's)."""
        checkpoint = self.query_one("#param-checkpoint", Select).value
        if not isinstance(checkpoint, str):
            if self._scanned != self._folders:
                why = "the checkpoint folders are still being read"
            else:
                why = self._scan_problem or "none found in paths.checkpoint_dirs"
            raise FormError(f"Checkpoint: none chosen ({why})")
        inputs = self.image_inputs
        if inputs.vibes or inputs.reference is not None:
            raise FormError(
                "Images & characters: vibes and character references are NovelAI's; remove them (ctrl+t) or "
                "choose NovelAI"
            )
        fields: dict[str, Any] = {"characters": inputs.characters}
        if inputs.source is not None:
            fields |= {
                "image": inputs.source.path,
                "mask": inputs.source.mask,
                "strength": inputs.source.strength,
                "noise": inputs.source.noise,
            }
        return GenerationRequest(
            prompt=prompt,
            negative=negative,
            provider=LOCAL,
            model=checkpoint,
            **self._shared_fields(),
            **fields,
        )

    # Presets -------------------------------------------------------------------------------------------------

    def image_size(self) -> tuple[int, int]:
        """Width and height as typed; raises FormError when one is not a whole number."""
        return self._number("param-width", "Width", int), self._number("param-height", "Height", int)

    def set_size(self, width: int, height: int) -> None:
        """Show a size: the built-in choice that matches it, else the custom fields."""
        self._apply_size(width, height)

    def parameter_preset(self, name: str) -> ParameterPreset:
        """The form's parameters (not its size, seed or image count) as a preset named `name`; raises
        PeropixError naming the field at fault. A local preset holds the checkpoint as its model and none of
        NovelAI's switches."""
        if self.provider == LOCAL:
            checkpoint = self.query_one("#param-checkpoint", Select).value
            return ParameterPreset(
                name,
                model=checkpoint if isinstance(checkpoint, str) else None,
                steps=self._number("param-steps", "Steps", int),
                scale=self._number("param-scale", "Guidance", float),
                cfg_rescale=self._number("param-rescale", "Rescale", float),
                sampler=str(self.query_one("#param-sampler", Select).value),
                scheduler=str(self.query_one("#param-schedule", Select).value),
            )
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
        """Set the fields `preset` holds (the model first: it decides the provider and the samplers on offer);
        returns what the form could not take, one short phrase each."""
        from peropix_tui.engine.nai.presets import available_uc_presets

        skipped: list[str] = []
        model = str(self.query_one("#param-model", Select).value)
        chosen = model
        if preset.model is not None:
            spec = MODELS.get(preset.model)
            if spec is not None and not spec.legacy:
                self.set_provider(NOVELAI)
                chosen = spec.id
            elif spec is None and self.local_available:
                self.set_provider(LOCAL)
                if not self._choose_checkpoint(preset.model):
                    skipped.append(f"checkpoint {preset.model} (not in the checkpoint folders)")
            else:
                skipped.append(f"model {preset.model}")
        if chosen != model:
            model = chosen
            with self.prevent(Select.Changed):
                self.query_one("#param-model", Select).value = model
            self._model_changed(model)  # before the numbers: it sets the model's default guidance
        for field_id, number in (
            ("param-steps", preset.steps),
            ("param-scale", preset.scale),
            ("param-rescale", preset.cfg_rescale),
        ):
            if number is not None:
                self.query_one(f"#{field_id}", Input).value = f"{number:g}"
        if self.provider == LOCAL:
            return skipped + self._apply_local_preset(preset)
        spec = model_spec(model)
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

    def _apply_local_preset(self, preset: ParameterPreset) -> list[str]:
        skipped: list[str] = []
        for select_id, label, choice, canonical in (
            ("param-sampler", "sampler", preset.sampler, local_sampler),
            ("param-schedule", "schedule", preset.scheduler, local_scheduler),
        ):
            if choice is None:
                continue
            known = canonical(choice)
            if known is None:
                skipped.append(f"{label} {choice} (not offered by the local engine)")
            else:
                self.query_one(f"#{select_id}", Select).value = known
        novelai_only = (
            ("Variety+", preset.variety),
            ("SMEA", preset.smea or preset.smea_dyn),
            ("quality tags", preset.quality_tags),
            ("undesired-content preset", preset.uc_preset not in (None, UC_AS_WRITTEN)),
        )
        skipped += [f"{label} (NovelAI only)" for label, used in novelai_only if used]
        return skipped

    # Applying an image's settings ----------------------------------------------------------------------------

    def apply(self, meta: ImageMetadata, what: ApplyWhat) -> AppliedSettings:
        """Fill the form from `meta`: every setting (`all`), the prompts' flags (`prompt`) or the seed (`seed`).

        The settings come from `settings_from_metadata`, as for `peropix generate --from-image`: NovelAI's
        quality tags and undesired-content preset become the switch and preset again instead of text that would
        be added a second time. An image the local engine made brings Local back (when checkpoint folders are
        configured) with its prompts exactly as recorded. Raises PeropixError when the image holds no settings.
        """
        applied = AppliedSettings()
        made_locally = meta.peropix.get("provider") == LOCAL
        if what == "seed":
            local = self.provider == LOCAL
            low, high = (0, SEED_LIMIT - 1) if local else (1, MAX_SEED)
            if meta.seed is None or not low <= meta.seed <= high:
                engine = "local engine" if local else "NovelAI"
                raise FormError(f"the image has no {engine} seed to reuse (recorded: {meta.seed})")
            self.query_one("#param-seed", Input).value = str(meta.seed)
            return applied
        if made_locally and (what == "prompt" or self.local_available):
            return self._apply_local_image(meta, what, applied)
        if what == "all":
            self.set_provider(NOVELAI)
            if made_locally:
                applied.notes.append(
                    "The image was made by the local engine: set paths.checkpoint_dirs to make it again locally."
                )
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

    def _apply_local_image(self, meta: ImageMetadata, what: ApplyWhat, applied: AppliedSettings) -> AppliedSettings:
        """An image the local engine made: its prompts as recorded and, for `all`, Local with its settings."""
        from peropix_tui.engine.local_provider import local_settings_from_metadata

        settings = local_settings_from_metadata(meta)
        fields = settings.fields
        applied.prompt, applied.negative = fields["prompt"], fields["negative"]
        self.set_image_inputs(self.image_inputs.with_characters(()))
        if what != "all":
            return applied
        self.set_provider(LOCAL)
        applied.notes.extend(settings.warnings)
        model = fields.get("model")
        if model is not None and not self._choose_checkpoint(model):
            applied.skipped.append(f"checkpoint {model} (not in the checkpoint folders)")
        if "width" in fields and "height" in fields:
            self._apply_size(fields["width"], fields["height"])
        for field_id, name in (("param-steps", "steps"), ("param-scale", "scale"), ("param-rescale", "cfg_rescale")):
            if name in fields:
                self.query_one(f"#{field_id}", Input).value = f"{fields[name]:g}"
        for select_id, name in (("param-sampler", "sampler"), ("param-schedule", "scheduler")):
            if name in fields:
                self.query_one(f"#{select_id}", Select).value = fields[name]
        self.query_one("#param-seed", Input).value = str(fields.get("seed", ""))
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
