"""Build the student and solution notebooks from their sources in tools/notebook_src/*.py.

The sources are plain text in the "percent" format, read by jupytext (and VS Code):

    # %% [markdown]
    # # A title
    # Some text.

    # %%
    print("a code cell")

jupytext turns a source into cells; this script adds only what is the kit's own:
- `{{BADGE}}` in a markdown cell becomes the "Open in Colab" badge of that notebook;
- the code cell headed `# %% [setup]` becomes the set-up cell (installs skinlib in Colab).
  Both take the repository address from `[project.urls] Repository` in pyproject.toml.
- Exercises, marked as nbgrader marks them. Every region

      # TODO: what to write, in one line
      ### BEGIN SOLUTION
      ...the answer...
      ### END SOLUTION

  is kept whole in the **solution** notebook (solutions/NAME.ipynb; nbgrader and otter-grader
  read these markers, so it is also an instructor's source notebook) and taken out of the
  **student** notebook (notebooks/NAME.ipynb, what the badges open), where the TODO line stays.
  No student cell raises, so Colab's "Run all" goes through a notebook whose exercises are not
  written yet (it stops at the first cell that raises; nbval and nbclient would too):
  - a region inside a function or method becomes `raise NotImplementedError(<the TODO>)`:
    defining the function runs nothing; calling it, as the check cell below does, says what is
    missing. An indented region anywhere else is an error (it would run with its cell);
  - a region at a cell's top level becomes nothing: the line before its TODO gives the name a
    value its check reads as "not done yet" (`FC1_INPUTS = None`); a name without one is an error.
  A comment that reads like a marker but is not one exactly (`### Begin Solution`) is an error too:
  it would leave the answer in the student notebook.
  So an exercise cell only defines things; what runs the student's code goes in its check cell.
- Stored outputs: only cells tagged `nbval-check-output` keep outputs (and an execution count,
  which nbval needs to compare them), in the solution notebooks only: in a student notebook an
  output shown before the student runs anything could give an exercise's answer away (01's
  "32 channels x 53 x 53 = 89,888 inputs to fc1"), so student notebooks have no stored output. The tag is written in the source's cell header,
  `# %% tags=["nbval-check-output"]`, and read by nbval, so the student sees no test marker.
  nbval compares these outputs on every test run, so they must print facts that depend
  neither on the data, the machine, the mode nor the exercises.

Usage:
    python tools/build_notebooks.py            # write both versions, keeping checked outputs
    python tools/build_notebooks.py --execute  # also run them (smoke mode, SYNTHETIC data, CPU) and store
                                               # the outputs of the `nbval-check-output` cells
    python tools/build_notebooks.py --check    # exit 1 if a notebook differs from its source, or
                                               # holds two cells with one id (a merge can do that)
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "tools" / "notebook_src"
VERSIONS = {"student": ROOT / "notebooks", "solution": ROOT / "solutions"}
CHECK_TAG = "nbval-check-output"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
TODO = "# TODO: "

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


class SourceError(ValueError):
    """A notebook source the builder cannot turn into notebooks (names the file and line)."""


def _pyproject_value(pyproject: Path, section: str, key: str) -> str:
    """The string `key = "..."` under `[section]` of pyproject.toml."""
    text = pyproject.read_text(encoding="utf-8")
    found = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = found and re.search(rf'^{key}\s*=\s*"([^"]+)"', found.group(1), re.M)
    if not match:
        raise SystemExit(f"error: {pyproject}: no `{key} = \"...\"` under [{section}]")
    return match.group(1)


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`[project.urls] Repository` of pyproject.toml, the one place the kit's address is written.

    It must be a GitHub address, https://github.com/OWNER/REPO: the badges open notebooks through
    Colab's GitHub loader (from the branch `main`), and pip installs from it over https."""
    url = _pyproject_value(pyproject, "project.urls", "Repository").rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"error: {pyproject}: [project.urls] Repository is {url!r}; write it as "
                         "https://github.com/OWNER/REPO (Colab opens the badges' notebooks from GitHub)")
    return url


def package_version(init: Path = ROOT / "skinlib" / "__init__.py") -> str:
    """skinlib's `__version__`, the one place the version is written (pyproject.toml reads it too):
    the set-up cell installs the tag v<version>. Read from the source, so that no install is needed."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return ast.literal_eval(node.value)
    raise SystemExit(f"error: {init}: no `__version__ = \"...\"`")


def colab_url(repo_url: str, notebook_name: str, folder: str = "notebooks") -> str:
    """The Colab address that opens <folder>/<notebook_name> from the main branch on GitHub."""
    owner_repo = re.sub(r"^https://github\.com/", "", repo_url).removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/{folder}/{notebook_name}"


def student_code(source: str, where: str) -> str:
    """`source` without its solution regions: inside a function, each becomes
    `raise NotImplementedError(<its TODO>)`; at the top level, nothing (see the module's docstring).

    The TODO line stays, so the student reads what to write where the answer was.
    """
    lines: list[str] = []
    raises: dict[int, int] = {}  # line in the student code -> line of its BEGIN in the source
    inside, answer = False, []
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        _refuse_near_markers(stripped, f"{where}, line {number}")
        if stripped == BEGIN:
            todo = lines[-1].strip() if lines else ""
            if inside or not todo.startswith(TODO):
                raise SourceError(f"{where}, line {number}: {BEGIN} must follow a `{TODO}...` line "
                                  "(and not sit inside another region)")
            inside, indent, begin, answer = True, line[: len(line) - len(line.lstrip())], number, []
            if indent:
                lines.append(f"{indent}raise NotImplementedError({todo.removeprefix(TODO)!r})")
                raises[len(lines)] = number
        elif stripped == END:
            if not inside:
                raise SourceError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
            if not indent:
                _refuse_unset_names(answer, lines, f"{where}, line {begin}")
        elif not inside:
            lines.append(line)
        else:
            answer.append(line)
    if inside:
        raise SourceError(f"{where}: {BEGIN} without {END}")
    code = "\n".join(lines)
    _raise_only_in_functions(code, raises, where)
    return code


def student_markdown(source: str, where: str) -> str:
    """A markdown cell without its solution regions (nbgrader's written answers): each region,
    markers included, is left out of the student notebook, where a line asks for the answer."""
    lines, inside = [], False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        _refuse_near_markers(stripped, f"{where}, line {number}")
        if stripped == BEGIN:
            if inside:
                raise SourceError(f"{where}, line {number}: {BEGIN} inside another region")
            inside = True
            lines.append("_Your answer here._")
        elif stripped == END:
            if not inside:
                raise SourceError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise SourceError(f"{where}: {BEGIN} without {END}")
    return "\n".join(lines)


def _refuse_syntax_errors(code: str, where: str, version: str) -> None:
    """A SourceError naming the cell and line unless `code` compiles as Python (after IPython's
    own translation of `%magic` and `!shell` lines): a notebook must not be built, or pass
    `--check`, with a cell that can only fail."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        compile(TransformerManager().transform_cell(code), where, "exec")
    except SyntaxError as error:
        raise SourceError(f"{where}, line {error.lineno} of the cell: the {version} version is not valid Python "
                          f"({error.msg})") from None


def _refuse_near_markers(stripped: str, where: str) -> None:
    """A comment that reads like a solution marker but is not one exactly would be kept in the
    student notebook with the answer it was meant to hide."""
    words = " ".join(stripped.replace("#", " ").split()).lower()
    if (stripped.startswith("#") and stripped not in (BEGIN, END)
            and ("begin solution" in words or "end solution" in words)):
        raise SourceError(f"{where}: `{stripped}` reads like a solution marker but is not one; write "
                          f"`{BEGIN}` or `{END}` exactly")


def _bound_names(code: str) -> set[str] | None:
    """The names that `code`'s top-level statements give a value; None if it does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    names: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in statement.names)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names.update(node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name))
    return names


def _refuse_unset_names(answer: list[str], before: list[str], where: str) -> None:
    """A top-level region is left out of the student notebook whole, so every name its answer
    sets must already have a "not done yet" value above its TODO (`FC1_INPUTS = None`): without
    one, the check cell below would stop Run all with a NameError."""
    wanted, given = _bound_names("\n".join(answer)), _bound_names("\n".join(before))
    missing = sorted(wanted - given) if wanted is not None and given is not None else []
    if missing:
        raise SourceError(f"{where}: the answer sets {', '.join(missing)}, which the student version "
                          f"never defines; give it a value above the TODO (`{missing[0]} = None`)")


def _raise_only_in_functions(code: str, raises: dict[int, int], where: str) -> None:
    """A SourceError unless every line in `raises` lies in the body of a function: anywhere else
    the raise would run with its cell and stop the notebook."""
    if not raises:
        return
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise SourceError(f"{where}: the student version is not valid Python ({error.msg}, "
                          f"line {error.lineno})") from None
    in_functions = {node.lineno for function in ast.walk(tree)
                    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for statement in function.body for node in ast.walk(statement) if hasattr(node, "lineno")}
    for line, number in raises.items():
        if line not in in_functions:
            raise SourceError(f"{where}, line {number}: an indented region must lie in a function's body; "
                              "elsewhere its `raise NotImplementedError` would run with the cell")


def build(source: Path, repo_url: str, version: str = "student") -> nbformat.NotebookNode:
    """The `version` ("student" or "solution") notebook described by `source`, with no outputs."""
    name = source.with_suffix(".ipynb").name
    badge = BADGE.format(colab_url=colab_url(repo_url, name, VERSIONS[version].name))
    parsed = jupytext.read(source, fmt="py:percent")
    cells = []
    for index, cell in enumerate(parsed.cells):
        where = f"{source.relative_to(ROOT)}, cell {index}"
        if cell.cell_type == "markdown":
            student = student_markdown(cell.source, where)  # the same errors in both versions
            text = cell.source if version == "solution" else student
            cells.append(nbformat.v4.new_markdown_cell(text.replace("{{BADGE}}", badge)))
        elif cell.metadata.get("title") == "[setup]":  # jupytext reads `# %% [setup]` as a title
            cells.append(nbformat.v4.new_code_cell(SETUP_CELL.format(repo_url=repo_url, kit_version=package_version())))
        else:
            student = student_code(cell.source, where)  # the same errors in both versions
            for text, which in ((cell.source, "solution"), (student, "student")):
                _refuse_syntax_errors(text, where, which)
            code = nbformat.v4.new_code_cell(student if version == "student" else cell.source)
            if _source_tags(cell) and version == "solution":  # a student's stored output could give answers away
                code.metadata = {"tags": _source_tags(cell)}
            cells.append(code)
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                         **COLAB_METADATA}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{source.stem[:2]}-{index:02d}"  # stable ids: rebuilding changes nothing
    return notebook


def _source_tags(cell) -> list[str]:
    """The tags written in a source cell's header that the builder keeps (only nbval's check tag)."""
    return [tag for tag in cell.metadata.get("tags", []) if tag == CHECK_TAG]


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and CHECK_TAG in cell.metadata.get("tags", [])


def keep_checked_outputs(notebook) -> None:
    """Drop every output except those of cells tagged nbval-check-output.

    nbval compares only cells that were run in the stored notebook, so checked cells get an
    execution count: 1, 2, 3 ... in order, the same on every rebuild. Other cells get none.
    Cell metadata is the builder's own (the check tag), not what a kernel added.
    """
    count = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = [tag for tag in cell.metadata.get("tags", []) if tag == CHECK_TAG]
        cell.metadata = {"tags": tags} if tags else {}
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
    """Run `notebook` in smoke mode on the SYNTHETIC set, on CPU, in a scratch folder.

    Every cell must run without raising, in the student version too (exercises not written).
    """
    from nbclient import NotebookClient

    env = {key: value for key, value in os.environ.items() if key != "SKINLIB_DATA"}
    env.update(SKINLIB_SMOKE="1", SKINLIB_PRETRAINED="0", CUDA_VISIBLE_DEVICES="")
    with tempfile.TemporaryDirectory() as scratch:
        print(f"executing {name} ...", flush=True)
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute(env=env)


def checked_outputs(notebook) -> dict[str, list]:
    return {cell.source: cell.outputs for cell in notebook.cells if is_checked(cell) and cell.outputs}


def render(source: Path, version: str, repo_url: str, execute_it: bool) -> str:
    """The text of `source`'s `version` notebook; checked outputs run now or kept from the stored one."""
    target = VERSIONS[version] / source.with_suffix(".ipynb").name
    notebook = build(source, repo_url, version)
    if execute_it:
        metadata = copy.deepcopy(notebook.metadata)  # nbclient adds to the notebook's own in place
        execute(notebook, f"{VERSIONS[version].name}/{target.name}")
        notebook.metadata = metadata  # the kernel's additions (language version...) are not kept
    else:
        # Keep the stored outputs of checked cells whose code did not change (in this version
        # first: checked cells print facts that hold in both versions).
        old: dict[str, list] = {}
        for folder in sorted(VERSIONS.values(), key=lambda f: f == VERSIONS[version]):
            stored = folder / target.name
            if stored.exists():
                old |= checked_outputs(nbformat.read(stored, as_version=4))
        for cell in notebook.cells:
            if is_checked(cell):
                cell.outputs = old.get(cell.source, [])
    keep_checked_outputs(notebook)
    return nbformat.writes(notebook) + "\n"


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
        if not sources:
            parser.error(f"no source in {SOURCES.relative_to(ROOT)} matches {args.names}")
    stale = []
    for source in sources:
        for version, folder in VERSIONS.items():
            target = folder / source.with_suffix(".ipynb").name
            try:
                text = render(source, version, repo_url, args.execute and not args.check)
            except SourceError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if args.check:
                stored = target.read_text(encoding="utf-8") if target.exists() else None
                if stored is None or _without_outputs(stored) != _without_outputs(text):
                    stale.append(f"{folder.name}/{target.name}")
                elif duplicate_ids(stored):
                    stale.append(f"{folder.name}/{target.name} (two cells with the id "
                                 f"{', '.join(duplicate_ids(stored))})")
                continue
            folder.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {folder.name}/{target.name}")
    if args.check and not args.names:
        stale += [f"{path.parent.name}/{path.name} (no source)" for path in orphans(sources)]
    if stale:
        print("out of date with tools/notebook_src (run `python tools/build_notebooks.py`): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def orphans(sources: list[Path]) -> list[Path]:
    """Notebooks in the built folders that no source describes (a renamed or deleted source)."""
    names = {source.with_suffix(".ipynb").name for source in sources}
    return sorted(path for folder in VERSIONS.values() for path in folder.glob("*.ipynb")
                  if path.name not in names)


def duplicate_ids(text: str) -> list[str]:
    """Cell ids that more than one cell of a notebook carries (a line-based merge of two versions
    can leave both copies of a cell): Jupyter then refuses or renumbers them."""
    ids = [cell.get("id") for cell in json.loads(text).get("cells", [])]
    return sorted({cell_id for cell_id in ids if cell_id is not None and ids.count(cell_id) > 1})


def _without_outputs(text: str) -> list[tuple[str, str]]:
    """What a notebook's source is made of: its metadata and (cell type, tags, source) triples."""
    notebook = nbformat.reads(text, as_version=4)
    return [("metadata", repr(dict(notebook.metadata)))] + [
        (cell.cell_type, repr(cell.metadata.get("tags", [])), cell.source) for cell in notebook.cells]


if __name__ == "__main__":
    sys.exit(main())
