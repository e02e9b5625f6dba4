"""The maps of the code stay true: every module listed once, and imports go one way with no cycle."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skinlib"
# A module's name is its path under skinlib/ without .py ("engine", "storage/cache"); checks/ is listed as one.
MODULES = sorted(str(p.relative_to(PACKAGE).with_suffix("")) for p in PACKAGE.glob("**/*.py")
                 if p.stem not in ("__init__", "__main__") and p.parent.name != "checks")


def skinlib_imports(module: str) -> set[str]:
    """The skinlib modules that `module` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skinlib"):
            base = node.module.split(".")[1:]
            names = ["/".join(base + [alias.name]) for alias in node.names]
            found |= {name for name in names if name in MODULES} or {"/".join(base)}
    return {name for name in found if name in MODULES} - {module}


def table_rows(document: str, start: str, end: str) -> list[list[str]]:
    """The modules named in each row of the table between two headings of `document`."""
    text = (ROOT / document).read_text()
    section = text[text.index(start):text.index(end)]
    return [re.findall(r"`(?:skinlib/)?([a-z_/]+)\.py`", line)
            for line in section.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("document, start, end", [
    ("ARCHITECTURE.md", "## The modules", "## From a data folder"),
    ("README.md", "## What is where", "## Data licence"),
])
def test_the_map_lists_every_module_once(document, start, end):
    listed = [module for row in table_rows(document, start, end) for module in row]
    assert sorted(listed) == MODULES


def test_architecture_lists_each_module_after_every_module_it_imports():
    # The table goes bottom to top, and so do the modules within a row: each imports only
    # modules named before it. With an import cycle no order could pass.
    before: set[str] = set()
    for module in (m for row in table_rows("ARCHITECTURE.md", "## The modules", "## From a data folder") for m in row):
        assert skinlib_imports(module) <= before, (module, sorted(skinlib_imports(module) - before))
        before.add(module)


def test_the_loop_a_student_reads_loads_at_most_eight_skinlib_modules():
    # Notebook 02 sends the student to engine.py: importing it must not drag in the data
    # folder's readers, the cache or the download (the package itself counts as one).
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, skinlib.engine; "
                               "print(*sorted(m for m in sys.modules if m.split('.')[0] == 'skinlib'))"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    assert "skinlib.engine" in loaded and len(loaded) <= 8, loaded


def test_no_function_of_the_kit_is_longer_than_sixty_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, long


def test_the_loops_take_at_most_eight_parameters():
    # Settings that travel together travel as one object (engine.LoopOptions, a TrainConfig).
    import inspect

    from skinlib import engine

    for loop in (engine.fit, engine.train_one_epoch, engine.evaluate):
        assert len(inspect.signature(loop).parameters) <= 8, loop.__name__
