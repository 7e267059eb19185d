"""Generate: prompt and negative prompt editors, the generation parameters, the queue and the live preview.

F5 (or ctrl+enter) queues the current settings as a job in the app's job manager; jobs run one NovelAI request
at a time (and, beside them, one local engine generation at a time, on the app's one engine), each streamed step
shows in the preview, and every image is saved and indexed as it arrives. The line above the footer prices the
settings as they are edited (debounced) against the balance last read, or says the local engine is free.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Label, Select, Switch, TextArea
from textual.worker import get_current_worker

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.jobs import Job, JobContext, JobState
from peropix_tui.core.prompt.wildcards import WildcardLibrary, fresh_seed, recorded_templates
from peropix_tui.core.vocabulary import Candidate, Vocabulary, wildcard_candidates
from peropix_tui.engine.nai.models import MAX_SEED
from peropix_tui.engine.types import LOCAL
from peropix_tui.messages import ApplySettings, HistoryAdded, UseAs, UseImage
from peropix_tui.widgets.anlas_bar import AnlasBar
from peropix_tui.widgets.image_inputs_bar import ImageInputsBar
from peropix_tui.widgets.job_queue import JobQueue
from peropix_tui.widgets.parameter_form import ParameterForm
from peropix_tui.widgets.prompt_editor import PromptEditor, PromptField
from peropix_tui.widgets.stream_preview import StreamPreview

if TYPE_CHECKING:
    from peropix_tui.app import PeropixApp
    from peropix_tui.core.collected_vocabulary import Stamp
    from peropix_tui.core.danbooru import TagStyle
    from peropix_tui.core.slots import SlotSet
    from peropix_tui.engine.nai.cost import CostEstimate
    from peropix_tui.engine.run import ExpandedRequest, GenerationBackend, SavedOutput
    from peropix_tui.engine.types import GenerationRequest
    from peropix_tui.screens.use_image import UseChoice
    from peropix_tui.widgets.image_inputs import ImageInputs

GENERATION_KIND: Final = "nai-generate"
NEEDS_FORM: Final = frozenset(
    {
        "generate",
        "check",
        "roll_seed",
        "recall_last",
        "focus_parameters",
        "image_inputs",
        "use_file",
        "slots",
        "presets",
    }
)
"""The screen's actions that read or fill the parameter form."""
PRICE_DEBOUNCE_S: Final = 0.15
"""Quiet time after an edit before the price is worked out again."""


class GenerateScreen(Screen[None]):
    TITLE = "Generate"
    DEFAULT_CSS = """
    #generate-queue { height: 6; overflow-x: hidden; }
    #generate-side { width: 25%; min-width: 18; border-left: vkey $primary; padding: 0 1; }
    #generate-slots { display: none; height: 1; color: $text-muted; }
    #generate-slots.-shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5,ctrl+enter", "generate", "Generate", id="generate_queue"),
        Binding("ctrl+r", "roll_seed", "Roll seed", show=False, id="generate_roll_seed"),
        Binding("f8", "recall_last", "Last image's settings", show=False, id="generate_recall_last"),
        Binding("ctrl+s", "save_last", "Save last image", show=False, id="generate_save_last"),
        Binding("ctrl+l", "focus_prompt", "Prompt", id="generate_focus_prompt"),
        Binding("ctrl+g", "focus_negative", "Negative prompt", id="generate_focus_negative"),
        Binding("ctrl+o", "focus_parameters", "Parameters", id="generate_focus_parameters"),
        Binding("ctrl+b", "check", "Check settings", id="generate_check"),
        Binding("ctrl+t", "image_inputs", "Images & characters", show=False, id="generate_image_inputs"),
        Binding("ctrl+f", "use_file", "Use an image file", show=False, id="generate_use_file"),
        Binding("f9", "slots", "Slots", show=False, id="generate_slots"),
        Binding("f10", "presets", "Presets", show=False, id="generate_presets"),
    ]

    class VocabularyLoaded(Message):
        def __init__(self, vocabulary: Vocabulary) -> None:
            super().__init__()
            self.vocabulary = vocabulary

    class Prepared(Message):
        """The price and generation modules are imported: prices can be shown and the balance read."""

    class ImageSaved(Message):
        def __init__(self, output: SavedOutput) -> None:
            super().__init__()
            self.output = output

    def __init__(self) -> None:
        super().__init__()
        self._prepared = False
        self._side_mounted = False
        self._price_timer: Timer | None = None
        self._account_seen: int | None = None
        self._last_entry: int | None = None
        """The history entry of the last image saved here, for recalling its settings."""
        self.slot_set: SlotSet | None = None
        """The slots F9 edits and queues (made when first opened); kept here so they outlive the slots screen."""
        self._collected_path: Path | None = None
        self._collected_stamp: Stamp | None = None
        """The collected vocabulary's cache as last loaded (None: no cache then); compared with it on resume."""

    def compose(self) -> ComposeResult:
        app = self._peropix
        yield Header()
        # The preview, the price line, the parameter form (half the screen's widgets) and the footer (rebuilt each
        # time the bindings change, which start-up does several times) are mounted right after the first frame by
        # `_mount_side`, so the editors show, focused, as early as possible.
        with Horizontal(id="generate-body"), Vertical(id="generate-editors"):
            yield PromptField("Prompt", id="prompt")
            yield PromptField("Negative prompt", id="negative")
            yield Label("", id="generate-slots", markup=False)
            yield JobQueue(app.jobs, GENERATION_KIND, id="generate-queue")

    async def _mount_side(self) -> None:
        app = self._peropix
        side = Vertical(
            StreamPreview(app.image_widget, id="generate-preview"), AnlasBar(id="generate-anlas"), id="generate-side"
        )
        body = self.query_one("#generate-body")
        if not body.is_attached:  # the app quit before its first frame
            return
        form = ParameterForm(id="generate-params")
        await body.mount(side, form)
        if not self.is_attached:
            return
        await self.mount(Footer())
        form.set_checkpoint_folders(app.config.settings.paths.checkpoint_dirs)
        self._side_mounted = True
        self.refresh_bindings()
        # The price and generation modules are imported after the first frame of the app (not of this screen,
        # which a first-start modal may cover).
        self.app.call_after_refresh(self._prepare)

    @property
    def side_mounted(self) -> bool:
        """Whether the preview, the parameter form and the footer, mounted after the first frame, are there."""
        return self._side_mounted

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Keys that need the parameter form wait for it (a key pressed in the first frame does nothing).
        return self._side_mounted or action not in NEEDS_FORM

    def on_mount(self) -> None:
        self.query_one("#prompt-editor", PromptEditor).focus()
        # Textual holds back every frame until the app's start-up is over; going through the app's queue first
        # puts the side panel after the first frame that reaches the terminal, not before it.
        self.app.call_later(self.call_after_refresh, self._mount_side)
        # Also after the first frame: the tag list is decoded in Python, which would hold the GIL while the screen
        # is still being laid out.
        self.app.call_after_refresh(self._read_vocabulary)
        self._peropix.vocabulary_signal.subscribe(self, self._collected_changed)

    def _read_vocabulary(self, reload: bool = False) -> None:
        """Load the editors' vocabulary in a worker (a rerun replaces one still running), noting the stamp of the
        collected vocabulary's cache so that an update made elsewhere is seen on resume."""
        from peropix_tui.core.collected_vocabulary import cache_path, cache_stamp

        settings = self._peropix.config.settings
        style: TagStyle = "underscores" if settings.ui.underscores == "underscores" else "spaces"
        self._collected_path = cache_path(self._peropix.dirs.data_dir)
        self._collected_stamp = cache_stamp(self._collected_path)
        folders = [Path(p) for p in settings.paths.lora_dirs]
        self._load_vocabulary(folders, style, self._collected_path, reload=reload)

    def _collected_changed(self, path: Path) -> None:
        self._read_vocabulary(reload=True)

    @work(thread=True, exclusive=True, group="vocabulary", exit_on_error=False)
    def _load_vocabulary(self, folders: list[Path], style: TagStyle, collected_path: Path, *, reload: bool) -> None:
        """LoRA names, Danbooru tags, then the collected vocabulary. A first load shows each part as it is ready;
        a reload shows only the whole, so the editors never lose tags while it runs."""
        from peropix_tui.core.collected_vocabulary import CollectedVocabulary
        from peropix_tui.core.danbooru import danbooru_vocabulary
        from peropix_tui.core.lora_library import LoraScanner

        names: list[Candidate] = []
        for batch in LoraScanner(folders).batches():
            for entry in batch:
                if entry.error is None:
                    names.extend(Candidate(n, "lora", detail="LoRA file") for n in {entry.stem, entry.tag_name})
        names.extend(wildcard_candidates(self.wildcards.names()))
        worker = get_current_worker()

        def show(vocabulary: Vocabulary) -> None:
            if not worker.is_cancelled:  # a rerun replaced this load: its thread runs on, but says nothing
                self.post_message(self.VocabularyLoaded(vocabulary))

        loras = Vocabulary(names)
        if not reload:
            show(loras)  # LoRA names first: they are quick to read
        tags = loras.merged(danbooru_vocabulary(style))
        # The collected vocabulary comes from its cache only (an update on Prompt tools, after a collection, or
        # `peropix vocab update` rebuilds it).
        collected = CollectedVocabulary.load(collected_path)
        if not len(collected):
            show(tags)
            return
        if not reload:
            show(tags)
        show(tags.merged(Vocabulary(collected.candidates(style))))

    def on_generate_screen_vocabulary_loaded(self, event: GenerateScreen.VocabularyLoaded) -> None:
        for editor in self.query(PromptEditor):
            editor.vocabulary = event.vocabulary

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt-editor", PromptEditor).focus()

    def action_focus_negative(self) -> None:
        self.query_one("#negative-editor", PromptEditor).focus()

    def action_focus_parameters(self) -> None:
        self.query_one(ParameterForm).focus_first()

    def current_request(self) -> GenerationRequest:
        """The editors and the form as one validated request (raises PeropixError naming the field)."""
        if not self._side_mounted:
            raise PeropixError("the parameter form is still being shown; try again in a moment")
        prompt = self.query_one("#prompt-editor", PromptEditor).text
        negative = self.query_one("#negative-editor", PromptEditor).text
        return self.query_one(ParameterForm).request(prompt, negative)

    def action_check(self) -> None:
        try:
            request = self.current_request()
        except PeropixError as exc:
            self.notify(str(exc), title="Settings not valid", severity="error", markup=False)
            return
        seed = "random seed" if request.seed is None else f"seed {request.seed}"
        self.notify(
            f"{request.model}, {request.width}×{request.height}, {request.steps} steps, {seed}, "
            f"{request.n} image{'s' if request.n > 1 else ''}",
            title="Settings are valid",
            markup=False,
        )

    def on_apply_settings(self, message: ApplySettings) -> None:
        """Settings sent back from an image (History pane): fill the form, then the editors, keeping undo."""
        try:
            applied = self.query_one(ParameterForm).apply(message.metadata, message.what)
        except PeropixError as exc:
            self.notify(str(exc), title="Settings not applied", severity="warning", markup=False)
            return
        for editor_id, text in (("#prompt-editor", applied.prompt), ("#negative-editor", applied.negative)):
            if text is not None:
                editor = self.query_one(editor_id, PromptEditor)
                editor.replace(text, (0, 0), editor.document.end)
        self.query_one("#prompt-editor", PromptEditor).focus()
        taken = {"all": "Settings", "prompt": "Prompt", "seed": "Seed"}[message.what]
        lines = [f"{taken} of {message.source or 'the image'} applied."]
        if applied.prompt is not None:
            preset = self.query_one(ParameterForm).uc_preset
            lines.append(f"Undesired-content preset: {preset.value if preset is not None else 'none'}.")
        lines.extend(applied.notes)
        template = recorded_templates(message.metadata.peropix).get("prompt")
        if template is not None and applied.prompt is not None:
            shown = template if len(template) <= 60 else template[:59] + "…"
            lines.append(f"The prompt is as drawn from wildcards; its template ({shown}) is in the image's metadata.")
        if applied.skipped:
            lines.append("Not in the form: " + ", ".join(applied.skipped) + ".")
        self.notify("\n".join(lines), title="Generate", markup=False)

    # Image inputs ----------------------------------------------------------------------------------------------

    def action_image_inputs(self) -> None:
        """Edit the character prompts, vibes, character reference and img2img/inpaint source."""
        self._open_image_inputs()

    def on_use_image(self, message: UseImage) -> None:
        """An image to use as an input (History pane, or a file named here): it is read into its tab of the Images
        & characters modal, where it can be adjusted before Escape takes it."""
        self._open_image_inputs((message.path, message.use))

    def _open_image_inputs(self, load: tuple[Path, UseAs] | None = None) -> None:
        from peropix_tui.screens.image_inputs import ImageInputsScreen
        from peropix_tui.widgets.image_files import vibe_cache_of

        if isinstance(self.app.screen, ImageInputsScreen):
            if load is not None:
                self.app.screen.load(*load)
            return
        form = self.query_one(ParameterForm)
        try:
            size = form.image_size()
        except PeropixError as exc:
            self.notify(str(exc), title="Settings not valid", severity="error", markup=False)
            return
        screen = ImageInputsScreen(
            form.image_inputs,
            model=str(self.query_one("#param-model", Select).value),
            size=size,
            vocabulary=self.query_one("#prompt-editor", PromptEditor).vocabulary,
            vibe_cache=vibe_cache_of(self._peropix.nai),
            load=load,
        )

        def closed(inputs: ImageInputs | None) -> None:
            if inputs is not None:
                form.set_image_inputs(inputs)

        self.app.push_screen(screen, closed)

    def action_use_file(self) -> None:
        """Name an image file, then take its settings, prompt or seed, or use it as an input."""
        from peropix_tui.screens.use_image import UseImageScreen

        def chosen(choice: UseChoice | None) -> None:
            if choice is None:
                return
            if choice.apply is not None and choice.metadata is not None:
                self.app.post_message(ApplySettings(choice.metadata, choice.apply, choice.path.name))
            elif choice.use is not None:
                self._open_image_inputs((choice.path, choice.use))

        self.app.push_screen(UseImageScreen(), chosen)

    # Generating ------------------------------------------------------------------------------------------------

    @property
    def _peropix(self) -> PeropixApp:
        return cast("PeropixApp", self.app)

    @work(thread=True, exclusive=True, group="generate-prepare", exit_on_error=False)
    def _prepare(self) -> None:
        # The price and generation modules pull in numpy and the HTTP client: import them off the UI thread,
        # after the first frame, so neither start-up nor the first keystroke waits for them.
        import peropix_tui.engine.nai.cost
        import peropix_tui.engine.run  # noqa: F401

        self.post_message(self.Prepared())

    def on_generate_screen_prepared(self) -> None:
        self._prepared = True
        self._reprice()
        self._refresh_balance()

    def on_screen_resume(self) -> None:
        # The welcome screen or the settings may have set a token or started the sandbox meanwhile, or folders of
        # checkpoints for the local engine.
        if self._side_mounted:
            self.query_one(ParameterForm).set_checkpoint_folders(self._peropix.config.settings.paths.checkpoint_dirs)
        nai = self._peropix.nai
        if self._prepared and nai.account != self._account_seen:
            self._refresh_balance()
        # `peropix vocab update` in another terminal rewrites the collected vocabulary without telling the app.
        if self._collected_path is not None:
            from peropix_tui.core.collected_vocabulary import cache_stamp

            if cache_stamp(self._collected_path) != self._collected_stamp:
                self._read_vocabulary(reload=True)

    @on(TextArea.Changed)
    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    @on(ImageInputsBar.Changed)
    def _settings_changed(self) -> None:
        if self._price_timer is not None:
            self._price_timer.stop()
        self._price_timer = self.set_timer(PRICE_DEBOUNCE_S, self._reprice)

    def _estimate(self, request: GenerationRequest) -> CostEstimate | None:
        from peropix_tui.engine.nai.cost import CostError, estimate_cost

        subscription = self._peropix.nai.subscription
        try:
            account = subscription.account if subscription is not None else None
            # Vibes whose encoding is cached cost nothing to encode (the bar looks them up off the UI thread).
            return estimate_cost(request, account, uncached_vibes=self.query_one(ImageInputsBar).uncached_vibes)
        except CostError:
            return None

    def _reprice(self) -> None:
        self._price_timer = None
        if not self._prepared:
            return  # `on_generate_screen_prepared` prices the settings as soon as it can
        bar = self.query_one(AnlasBar)
        bar.show_local(self.query_one(ParameterForm).provider == LOCAL)
        try:
            request = self.current_request()
        except PeropixError:
            bar.show_price(None, "fix the settings first")
            return
        if request.provider != LOCAL:  # the local engine costs nothing: the bar says so
            bar.show_price(self._estimate(request))

    @work(exclusive=True, group="generate-balance", exit_on_error=False)
    async def _refresh_balance(self) -> None:
        nai = self._peropix.nai
        self._account_seen = nai.account
        bar = self.query_one(AnlasBar)
        bar.show_sandbox(nai.sandbox is not None)
        if not nai.has_token:
            bar.show_account(None, "No NovelAI token (F7 Settings)")
            return
        bar.show_account(nai.subscription, "Balance: checking…")
        try:
            subscription = await nai.client().subscription()
        except PeropixError as exc:
            bar.show_account(None, "Balance unknown")
            self.notify(str(exc), title="NovelAI account", severity="warning", markup=False, timeout=10)
            return
        bar.show_account(subscription)
        self._reprice()

    def action_generate(self) -> None:
        """Queue the current settings as a generation job (the queue runs one NovelAI request at a time)."""
        try:
            request = self.current_request()
        except PeropixError as exc:
            self.notify(str(exc), title="Settings not valid", severity="error", markup=False)
            return
        if self.ready_to_queue(request):
            self.queue_request(request)

    def ready_to_queue(self, request: GenerationRequest | None = None) -> bool:
        """Whether generations (`request`, else the form's) can be queued: the local engine needs nothing, NovelAI
        a token or the sandbox; says why not when they cannot."""
        provider = self.query_one(ParameterForm).provider if request is None else request.provider
        if provider == LOCAL or self._peropix.nai.has_token:
            return True
        self.notify(
            "No NovelAI token: save one in Settings (F7), or start peropix with --sandbox to try it offline",
            title="Cannot generate",
            severity="error",
            markup=False,
        )
        return False

    def action_slots(self) -> None:
        """Open the slots: prompt parts added to the prompt, queued all at once."""
        from peropix_tui.core.slots import SlotLibrary
        from peropix_tui.screens.slots import SlotsScreen

        library = SlotLibrary.in_config_dir(self._peropix.dirs.config_dir)
        self.app.push_screen(SlotsScreen(self, library), lambda _: self._show_slots())

    def _show_slots(self) -> None:
        label = self.query_one("#generate-slots", Label)
        label.update("" if self.slot_set is None else self.slot_set.summary())
        label.set_class(bool(self.slot_set), "-shown")

    def action_presets(self) -> None:
        """Open the presets: parameters, sizes and characters to apply to the form or save from it."""
        from peropix_tui.core.presets import PresetStore
        from peropix_tui.screens.presets import PresetsScreen

        store = PresetStore.in_config_dir(self._peropix.dirs.config_dir)
        self.app.push_screen(PresetsScreen(self.query_one(ParameterForm), store))

    @cached_property
    def wildcards(self) -> WildcardLibrary:
        """The wildcard files of `<config dir>/wildcards`, which `__name__` in a prompt draws from."""
        return WildcardLibrary.in_config_dir(self._peropix.dirs.config_dir)

    def queue_request(self, request: GenerationRequest, *, label: str | None = None) -> Job[list[SavedOutput]]:
        """Queue one generation job for `request`, priced in the queue table; every way of queueing (the key,
        slots, repeats) goes through here. `label` prefixes the job's name in the queue.

        Each job draws the wildcards of its prompts with a seed of its own, so a queue of twenty explores twenty
        variations; the queue shows the prompt drawn. When a wildcard cannot be drawn (a missing file...) the job
        fails with the reason when it runs, and a retry draws again."""
        from peropix_tui.engine.run import expand_request

        app = self._peropix
        seed = fresh_seed()
        try:
            drawn: ExpandedRequest | None = expand_request(request, self.wildcards, seed)
        except PeropixError:
            drawn = None
        shown = request if drawn is None else drawn.request
        price = "?"
        if request.provider == LOCAL:
            price = "local"
        elif self._prepared:
            estimate = self._estimate(shown)
            price = "?" if estimate is None else "FREE" if estimate.free else f"{estimate.total:,}"
        name = " ".join(shown.prompt.split()) or "(empty prompt)"
        if label:
            name = f"[{label}] {name}"
        # Local jobs queue apart from NovelAI's: each group runs one job at a time, the two side by side.
        group = "local" if request.provider == LOCAL else "nai"
        job = app.jobs.submit(self._generation(request, seed, drawn), name=name, kind=GENERATION_KIND, group=group)
        self.query_one(JobQueue).set_price(job.id, price)
        return job

    def _generation(
        self, request: GenerationRequest, seed: int, drawn: ExpandedRequest | None
    ) -> Callable[[JobContext], Awaitable[list[SavedOutput]]]:
        app = self._peropix
        library = self.wildcards

        async def generate(ctx: JobContext) -> list[SavedOutput]:
            from peropix_tui.engine.run import expand_request, run_generation

            ready = drawn if drawn is not None else await ctx.run_in("io", expand_request, request, library, seed)
            # Looked up when the job runs, so a retry after a new token, the sandbox or new settings uses them.
            backend: GenerationBackend
            if request.provider == LOCAL:
                # The engine is made on the first local job (importing torch takes seconds: not on the loop).
                backend, provider = await ctx.run_in("io", app.local_engine), LOCAL
            else:
                backend, provider = app.nai.client(), app.nai.provider
            return await run_generation(
                ctx,
                backend,
                ready.request,
                outputs_dir=app.config.outputs_dir,
                provider=provider,
                history=app.open_history,
                on_saved=self._saved,
                options=app.config.save_options(),
                unsaved_dir=None if app.config.settings.saving.auto_save else app.config.unsaved_dir,
                extra_peropix=ready.peropix_fields,
            )

        return generate

    def _saved(self, output: SavedOutput) -> None:
        self.post_message(self.ImageSaved(output))
        if output.entry_id is not None:
            self.app.post_message(HistoryAdded(output.entry_id))

    def on_generate_screen_image_saved(self, message: ImageSaved) -> None:
        output = message.output
        self._last_entry = output.entry_id if output.entry_id is not None else self._last_entry
        self.query_one(StreamPreview).show_frame(output.path)
        if output.problem is not None:
            self.notify(output.problem, title="History", severity="warning", markup=False)

    def on_job_queue_updated(self, message: JobQueue.Updated) -> None:
        event = message.event
        frame = event.extra.get("preview")
        if event.kind == "progress" and isinstance(frame, bytes):
            self.query_one(StreamPreview).show_frame(frame)
        if event.kind != "state":
            return
        if event.state is JobState.FAILED:
            self.notify(event.message, title=f"Generation #{event.job_id} failed", severity="error", markup=False)
            self._refresh_balance()
        elif event.state is JobState.DONE:
            # The client read the account again after the images came: no request needed for the balance.
            self.query_one(AnlasBar).show_account(self._peropix.nai.subscription)
            self._reprice()
            self.query_one(ImageInputsBar).recheck()  # the job may have encoded (and cached) vibes

    def action_roll_seed(self) -> None:
        """A new random seed in the form (the seed field otherwise stays as typed: locked)."""
        self.query_one("#param-seed", Input).value = str(secrets.randbelow(MAX_SEED) + 1)

    def action_save_last(self) -> None:
        """Save the last image into the outputs folder when auto-save is off (it waits in the unsaved folder)."""
        if self._last_entry is None:
            self.notify("No image yet: generate one first", title="Generate", severity="warning", markup=False)
            return
        self._peropix.save_unsaved_image(self._last_entry)

    def action_recall_last(self) -> None:
        """Fill the editors and the form from the last image's settings."""
        self._recall_last(self._last_entry)

    @work(thread=True, exclusive=True, group="generate-recall", exit_on_error=False)
    def _recall_last(self, entry_id: int | None) -> None:
        try:
            store = self._peropix.open_history()
            entry = store.get(entry_id) if entry_id is not None else None
            if entry is None:
                newest = store.page(0, 1)
                entry = newest[0] if newest else None
        except PeropixError as exc:
            self.notify(str(exc), title="History", severity="error", markup=False)
            return
        if entry is None:
            self.notify("No image yet: generate one first", title="Generate", severity="warning", markup=False)
            return
        self.app.post_message(ApplySettings(entry.metadata(), "all", entry.path.name))
