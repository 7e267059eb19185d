"""The layer rules of the design, checked on the source (every import statement) and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "peropix_tui"
HEADLESS = ("core", "engine", "civitai", "sandbox", "commands")


def imported_roots(path: Path) -> set[str]:
    """Top-level module names a file imports, wherever the import statement sits (functions included)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def package_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10, "package not found"
    return files


@pytest.mark.parametrize("layer", HEADLESS)
def test_headless_layers_never_import_textual(layer: str) -> None:
    offenders = [
        str(f.relative_to(PACKAGE))
        for f in (PACKAGE / layer).rglob("*.py")
        if imported_roots(f) & {"textual", "textual_image"}
    ]
    assert offenders == []


def test_torch_only_inside_engine_local() -> None:
    local = PACKAGE / "engine" / "local"
    offenders = [
        str(f.relative_to(PACKAGE)) for f in package_files() if "torch" in imported_roots(f) and local not in f.parents
    ]
    assert offenders == []


def test_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import torch.nn\n    from textual.app import App\n")
    assert {"torch", "textual"} <= imported_roots(sample)


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


PROBE = "import sys\n{body}\nprint(sorted(m for m in ('torch', 'textual') if m in sys.modules))"


def test_peropix_help_imports_neither_torch_nor_textual() -> None:
    body = "from peropix_tui.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert run_python(PROBE.format(body=body)) == "[]"


def test_peropix_help_stays_light() -> None:
    # Every command builds the full parser first: it must not drag in image or array libraries.
    body = (
        "from peropix_tui.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('PIL', 'numpy', 'httpx', 'peropix_tui.sandbox.nai_server') if m in sys.modules))"
    )
    assert run_python("import sys\n" + body) == "[]"


def test_importing_the_app_does_not_import_torch() -> None:
    assert run_python(PROBE.format(body="import peropix_tui.app")) == "['textual']"


def test_headless_command_does_not_import_textual(tmp_path: Path) -> None:
    body = "from peropix_tui.cli import main\nmain(['config', 'path'])"
    assert run_python(PROBE.format(body=body)) == "[]"


def test_opening_the_tui_skips_the_command_modules() -> None:
    # The TUI's start-up asks the terminal about images as early as it can; the headless commands' modules (and
    # the parser they build) are not on its way.
    body = "import peropix_tui.cli\nprint(sorted(m for m in sys.modules if m.startswith('peropix_tui.commands')))"
    assert run_python("import sys\n" + body) == "[]"
