"""The prompt editor as a user drives it: typing, highlights, diagnostics, token counts, completion."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Input

from peropix_tui.core.prompt import Dialect
from peropix_tui.core.vocabulary import Candidate, Vocabulary
from peropix_tui.widgets.prompt_editor import PromptEditor, PromptField, completion_context


class EditorApp(App[None]):
    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def compose(self) -> ComposeResult:
        yield PromptField("Prompt", vocabulary=self.vocabulary, id="prompt")
        yield Input(id="next-field")


def names_at(editor: PromptEditor, row: int) -> dict[str, str]:
    """Highlighted text → highlight name, for one line."""
    line = editor.document.get_line(row).encode()
    return {line[s:e].decode(): str(name) for s, e, name in editor._highlights[row]}


async def test_typing_produces_highlight_spans() -> None:
    app = EditorApp()
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.focus()
        await pilot.press(*"1girl, {{silver hair}}, 1.5::night::, -1::blur::, <lora:détail v2:0.8>")
        await pilot.pause()
        spans = names_at(editor, 0)
        assert spans["détail v2"] == "lora.name"
        assert spans["0.8"] == "lora.weight"
        assert spans["1.5::"] == "weight.prefix"
        assert spans["-1::"] == "weight.prefix.negative"
        assert spans["::"] == "weight.close"
        # braces coloured by depth, outer and inner differ
        line = editor.document.get_line(0).encode()
        braces = [(line[s:e].decode(), str(n)) for s, e, n in editor._highlights[0] if "bracket" in str(n)]
        assert braces == [
            ("{", "bracket.open.0"),
            ("{", "bracket.open.1"),
            ("}", "bracket.close.1"),
            ("}", "bracket.close.0"),
        ]


async def test_unbalanced_bracket_marked_and_reported() -> None:
    app = EditorApp()
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.focus()
        await pilot.press(*"smile, {blush")
        await pilot.pause()
        assert ("{", "error") in {(k, v) for k, v in names_at(editor, 0).items()}
        status = str(app.query_one(".prompt-status").render())
        assert "never closed" in status
        await pilot.press("}")
        await pilot.pause(0.4)
        assert "error" not in names_at(editor, 0).values()


async def test_multiline_and_sd_dialect() -> None:
    app = EditorApp()
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.dialect = Dialect.SD
        editor.load_text("(masterpiece:1.2),\nBREAK (red dress)")
        await pilot.pause()
        assert names_at(editor, 0)[":1.2"] == "weight.suffix"
        assert names_at(editor, 1)["BREAK"] == "break"
        assert names_at(editor, 1)["("] == "bracket.open.0"


async def test_token_counts_follow_typing() -> None:
    app = EditorApp()
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.focus()
        await pilot.press(*"a photo of a cat")
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause()
        field = app.query_one(PromptField)
        assert field.stats is not None and field.stats.clip_tokens == 5
        assert "CLIP 5 tok · 1×75 │ NovelAI ≈5/512" in str(app.query_one(".prompt-status").render())


async def test_tab_completes_lora_names_and_tags() -> None:
    vocab = Vocabulary([Candidate("detail_tweaker", "lora"), Candidate("silver hair", "tag", 100)])
    app = EditorApp(vocab)
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.focus()
        await pilot.press(*"1girl, <lora:det")
        await pilot.pause()
        assert editor.suggestion == "ail_tweaker"
        await pilot.press("tab")
        await pilot.press(*", silv")
        await pilot.pause()
        assert editor.suggestion == "er hair"
        await pilot.press("tab")
        assert editor.text == "1girl, <lora:detail_tweaker:1>, silver hair"
        assert editor.has_focus
        await pilot.press("tab")  # nothing to complete: Tab moves on as usual
        assert app.focused is app.query_one("#next-field")


def test_completion_context() -> None:
    assert completion_context("1girl, <lora:foo") == ("lora", "foo")
    assert completion_context("a, {{silv") == ("tag", "silv")
    assert completion_context("a, 1.2::blu") == ("tag", "blu")
    assert completion_context("a, b") is None  # too short to be worth a suggestion
    assert completion_context("a, done ") is None
    assert completion_context("1girl, __hai") == ("wildcard", "hai")
    assert completion_context("{__outfits/sum") == ("wildcard", "outfits/sum")
    assert completion_context("a, __hair__, silv") == ("tag", "silv")  # a closed name is not completed again
    assert completion_context("a, <pick:silv") == ("tag", "silv")
    assert completion_context("a, <pick:red|blu") == ("tag", "blu")


async def test_generate_screen_checks_parameters() -> None:
    from peropix_tui.app import PeropixApp
    from peropix_tui.widgets.parameter_form import ParameterForm

    app = PeropixApp()
    async with app.run_test(size=(120, 34), notifications=True) as pilot:
        await pilot.pause(0.2)
        await pilot.press(*"1girl, solo")
        form = app.screen.query_one(ParameterForm)
        form.query_one("#param-seed").value = "42"  # type: ignore[attr-defined]
        await pilot.press("ctrl+b")
        await pilot.pause(0.2)
        request = app.screen.current_request()  # type: ignore[attr-defined]
        assert (request.prompt, request.seed, request.width, request.height) == ("1girl, solo", 42, 832, 1216)
        assert any(n.title == "Settings are valid" for n in app._notifications)
        form.query_one("#param-rescale").value = "2"  # type: ignore[attr-defined]
        await pilot.press("ctrl+b")
        await pilot.pause(0.2)
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert errors and "cfg_rescale" in errors[-1]
        assert "cfg_rescale" in str(form.query_one("#param-error").render())


async def test_alias_is_offered_in_the_status_line_and_tab_replaces_the_word() -> None:
    vocab = Vocabulary([Candidate("breasts", "tag", 3_439_214, detail="general · 3,439,214", match="boobs")])
    app = EditorApp(vocab)
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.focus()
        await pilot.press(*"1girl, boo")
        await pilot.pause()
        assert editor.suggestion == ""  # "breasts" does not continue "boo": no ghost text
        status = str(app.query_one(".prompt-status").render())
        assert "Tab → breasts · general · 3,439,214" in status
        await pilot.press("tab")
        assert editor.text == "1girl, breasts"
        assert editor.has_focus
