from __future__ import annotations

from pathlib import Path

from peropix_tui.app import PeropixApp
from peropix_tui.civitai.jsonio import dump_json
from peropix_tui.core.collected_vocabulary import CollectedVocabulary, cache_path
from peropix_tui.core.paths import AppDirs
from peropix_tui.widgets.prompt_editor import PromptEditor


def write_sidecar(root: Path, image_id: int, prompt: str) -> None:
    path = root / "Users" / "alice" / "Model" / f"{image_id}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_json({"raw_prompt": prompt, "prompt": prompt, "lora": [], "image_id": image_id}))


async def test_generate_editor_offers_a_collected_tag(tmp_path: Path) -> None:
    root = tmp_path / "civitai"
    # Not a Danbooru tag: only the collected vocabulary can offer it.
    write_sidecar(root, 1, "1girl, (zyxqorb style:1.2), smile")
    write_sidecar(root, 2, "zyxqorb style, solo")
    vocabulary = CollectedVocabulary.load(cache_path(AppDirs.from_env().data_dir))
    vocabulary.update(root)
    vocabulary.save()

    app = PeropixApp()
    async with app.run_test(size=(120, 34)) as pilot:
        editor = app.screen.query_one("#prompt-editor", PromptEditor)
        editor.focus()
        for _ in range(100):  # the vocabulary loads in a worker after the first frames
            await pilot.pause(0.05)
            if len(editor.vocabulary) and editor.vocabulary.complete("zyxq", kind="tag"):
                break
        await pilot.press(*"1girl, zyxq")
        await pilot.pause()
        assert editor.suggestion == "orb style"
        assert editor.candidate is not None and editor.candidate.detail == "collected · used in 2 images"
        await pilot.press("tab")
        assert editor.text == "1girl, zyxqorb style"
