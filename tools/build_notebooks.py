"""Build notebooks/*.ipynb from their sources in tools/notebook_src/*.py.

The sources are plain text in the "percent" format that jupytext and VS Code read:

    # %% [markdown]
    # # A title
    # Some text.

    # %%
    print("a code cell")

Two placeholders keep what every notebook shares in one place:
- `{{BADGE}}` in a markdown cell becomes the "Open in Colab" badge for that notebook;
- a cell whose whole source is `# %% [setup]` becomes the set-up cell (installs skinlib in Colab).
Both take the repository address from `[project.urls] Repository` in pyproject.toml.

Usage:
    python tools/build_notebooks.py            # write the notebooks, keeping checked outputs
    python tools/build_notebooks.py --execute  # also run them (smoke mode, SYNTHETIC data, CPU) and store
                                               # the outputs of the `# NBVAL_CHECK_OUTPUT` cells
    python tools/build_notebooks.py --check    # exit 1 if a notebook differs from its source

Only cells marked `# NBVAL_CHECK_OUTPUT` keep outputs (and an execution count, which nbval needs to
compare them): nbval compares them on every test run, so they must print facts that do not depend on
the data, the machine or the mode. Every other cell is stored empty, with no execution count.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "tools" / "notebook_src"
NOTEBOOKS = ROOT / "notebooks"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# Colab reads `accelerator` and `colab.gpuType` to open the notebook on a GPU runtime.
COLAB_METADATA = {"accelerator": "GPU", "colab": {"provenance": [], "gpuType": "T4"}}

SETUP_CELL = '''\
# Set-up. In Colab: install skinlib at the version this notebook was built for, and check that a GPU is on.
# Anywhere else this cell does nothing (install the kit with `make venv` or `pip install -e .`).
import sys
from importlib.metadata import PackageNotFoundError, version

IN_COLAB = "google.colab" in sys.modules
REPO_URL = "{repo_url}"
KIT_VERSION = "{kit_version}"  # the notebooks and skinlib are released together, as the tag v{kit_version}

if IN_COLAB:
    import subprocess

    try:
        installed = version("skinlib")
    except PackageNotFoundError:
        installed = None
    if installed != KIT_VERSION:  # a fresh runtime: install; running the cell again installs nothing
        # Colab's torch and numpy stay: skinlib asks only for versions at least as old as Colab's.
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"skinlib @ git+{{REPO_URL}}@v{{KIT_VERSION}}"],
                       check=True)
    import torch

    if not torch.cuda.is_available():
        print("WARNING: this runtime has no GPU, so training will be very slow.\\n"
              "Turn one on: Runtime > Change runtime type > Hardware accelerator: GPU (T4), "
              "then run the notebook again from the top.")'''

BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "({colab_url})")


def _pyproject_value(pyproject: Path, section: str, key: str) -> str:
    """The string `key = "..."` under `[section]` of pyproject.toml."""
    text = pyproject.read_text(encoding="utf-8")
    found = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = found and re.search(rf'^{key}\s*=\s*"([^"]+)"', found.group(1), re.M)
    if not match:
        raise SystemExit(f"{pyproject}: no `{key} = \"...\"` under [{section}]")
    return match.group(1)


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`[project.urls] Repository` of pyproject.toml, the one place the kit's address is written."""
    return _pyproject_value(pyproject, "project.urls", "Repository").rstrip("/")


def package_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`version` under [project] in pyproject.toml: the set-up cell installs the tag v<version>."""
    return _pyproject_value(pyproject, "project", "version")


def colab_url(repo_url: str, notebook_name: str) -> str:
    """The Colab address that opens notebooks/<notebook_name> from the main branch on GitHub."""
    owner_repo = re.sub(r"^https://github\.com/", "", repo_url).removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{notebook_name}"


def parse_cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) pairs from a percent-format file; kind is "markdown", "code" or "setup"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        header = re.fullmatch(r"# %%(?: \[(markdown|setup)\])?\s*", line)
        if header:
            cells.append((header.group(1) or "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first `# %%` cell marker: {line!r}")
    parsed = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        parsed.append((kind, "\n".join(lines).strip("\n")))
    return parsed


def build(source: Path, repo_url: str) -> nbformat.NotebookNode:
    """The notebook described by `source`, with no outputs."""
    name = source.with_suffix(".ipynb").name
    cells = []
    for kind, text in parse_cells(source.read_text(encoding="utf-8")):
        if kind == "setup":
            cells.append(nbformat.v4.new_code_cell(SETUP_CELL.format(repo_url=repo_url, kit_version=package_version())))
        elif kind == "markdown":
            badge = BADGE.format(colab_url=colab_url(repo_url, name))
            cells.append(nbformat.v4.new_markdown_cell(text.replace("{{BADGE}}", badge)))
        else:
            cells.append(nbformat.v4.new_code_cell(text))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                         **COLAB_METADATA}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{source.stem[:2]}-{index:02d}"  # stable ids: rebuilding changes nothing
    return notebook


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK)


def keep_checked_outputs(notebook) -> None:
    """Drop every output except those of NBVAL_CHECK_OUTPUT cells.

    nbval compares only cells that were run in the stored notebook, so checked cells get an
    execution count: 1, 2, 3 ... in order, the same on every rebuild. Other cells get none.
    """
    count = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata = {}
        if not is_checked(cell):
            cell.execution_count = None
            cell.outputs = []
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = _merge_streams(cell.outputs)
        for output in cell.outputs:
            if "execution_count" in output:
                output["execution_count"] = count


def _merge_streams(outputs: list) -> list:
    """Join consecutive prints to the same stream into one output, as nbval does before comparing:
    how the kernel happened to chunk them must not change the stored notebook."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None
                and previous.output_type == "stream" and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def execute(notebook, name: str) -> None:
    """Run `notebook` in smoke mode on the SYNTHETIC set, on CPU, in a scratch folder."""
    from nbclient import NotebookClient

    env = {key: value for key, value in os.environ.items() if key != "SKINLIB_DATA"}
    env.update(SKINLIB_SMOKE="1", SKINLIB_PRETRAINED="0", CUDA_VISIBLE_DEVICES="")
    with tempfile.TemporaryDirectory() as scratch:
        print(f"executing {name} ...", flush=True)
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute(env=env)


def checked_outputs(notebook) -> dict[str, list]:
    return {cell.source: cell.outputs for cell in notebook.cells if is_checked(cell)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true",
                        help="run each notebook and store the outputs of its checked cells")
    parser.add_argument("--check", action="store_true",
                        help="only compare the notebooks with their sources; exit 1 on a difference")
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all), e.g. 01_simple_cnn")
    args = parser.parse_args(argv)

    repo_url = repository_url()
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.names:
        sources = [s for s in sources if s.stem in args.names or s.name in args.names]
    stale = []
    for source in sources:
        target = NOTEBOOKS / source.with_suffix(".ipynb").name
        notebook = build(source, repo_url)
        if args.execute:
            metadata = notebook.metadata
            execute(notebook, target.name)
            notebook.metadata = metadata  # the kernel's additions (language version...) are not kept
        elif target.exists():
            # Keep the stored outputs of checked cells whose code did not change.
            old = checked_outputs(nbformat.read(target, as_version=4))
            for cell in notebook.cells:
                if is_checked(cell):
                    cell.outputs = old.get(cell.source, [])
        keep_checked_outputs(notebook)
        text = nbformat.writes(notebook) + "\n"
        if args.check:
            if not target.exists() or _without_outputs(target.read_text(encoding="utf-8")) != \
                    _without_outputs(text):
                stale.append(target.name)
            continue
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print("out of date with tools/notebook_src (run `python tools/build_notebooks.py`): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def _without_outputs(text: str) -> list[tuple[str, str]]:
    """What a notebook's source is made of: (cell type, source) pairs and its metadata."""
    notebook = nbformat.reads(text, as_version=4)
    return [("metadata", repr(dict(notebook.metadata)))] + [
        (cell.cell_type, cell.source) for cell in notebook.cells]


if __name__ == "__main__":
    sys.exit(main())
