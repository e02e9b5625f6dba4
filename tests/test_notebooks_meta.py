"""The course notebooks: how they are stored, and that they run.

Stored: each source in tools/notebook_src is built (tools/build_notebooks.py) into a student
notebook (notebooks/, exercises taken out: their cells only define things) and a solution notebook
(solutions/); kernel python3, an "Open in Colab" badge and one set-up cell that agree with
`[project.urls] Repository` in pyproject.toml, no outputs except those of the cells tagged
`nbval-check-output`, no absolute paths, nothing that waits for input, unique cell ids, and no
solution code in a student notebook.

Run: every student notebook with exercises is executed under nbval in smoke mode on CPU, on the
embedded SYNTHETIC data, with no exercise written: no cell may raise (nbval fails on any error), as
Colab's "Run all" stops at the first cell that raises. The solution notebooks run under
nbval in tests/test_journey.py, as the chain of fresh Colab runtimes a student plays, once on the
SYNTHETIC data and once on a mirror of the 70 real sample images. nbval compares the outputs of
the checked cells with the stored ones, so those facts (parameter counts, shapes, class indices)
hold on both datasets and in both versions.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402  (tools/ is not a package)
from nbval_runs import RUN_LIMIT_S, run_under_nbval  # noqa: E402

NOTEBOOK_DIR, SOLUTION_DIR = ROOT / "notebooks", ROOT / "solutions"
SOURCES = sorted((ROOT / "tools" / "notebook_src").glob("[0-9][0-9]_*.py"))
EXPECTED = [source.with_suffix(".ipynb").name for source in SOURCES]
STUDENT = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOLUTIONS = sorted(SOLUTION_DIR.glob("*.ipynb"))
NOTEBOOKS = STUDENT + SOLUTIONS


def name_of(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def read(path: Path):
    return nbformat.read(path, as_version=4)


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module")
def repo_url() -> str:
    return build_notebooks.repository_url(ROOT / "pyproject.toml")


def test_every_source_has_a_student_and_a_solution_notebook_and_nothing_else():
    assert len(EXPECTED) >= 4
    assert [path.name for path in STUDENT] == EXPECTED
    assert [path.name for path in SOLUTIONS] == EXPECTED


def test_notebooks_are_built_from_their_sources():
    assert build_notebooks.main(["--check"]) == 0, "run `python tools/build_notebooks.py` and commit"


def test_check_fails_when_either_version_differs_or_has_no_source(tmp_path, monkeypatch, capsys):
    versions = {}
    for version, folder in build_notebooks.VERSIONS.items():
        versions[version] = tmp_path / folder.name
        shutil.copytree(folder, versions[version])
    monkeypatch.setattr(build_notebooks, "VERSIONS", versions)
    assert build_notebooks.main(["--check"]) == 0

    solution = versions["solution"] / EXPECTED[1]
    notebook = read(solution)
    next(cell for cell in notebook.cells if cell.cell_type == "code").source += "\nx = 1"
    nbformat.write(notebook, solution)
    assert build_notebooks.main(["--check"]) == 1
    assert f"solutions/{EXPECTED[1]}" in capsys.readouterr().err

    shutil.copy(NOTEBOOK_DIR / EXPECTED[1], solution.parent / EXPECTED[1])  # a student notebook as the solution
    assert build_notebooks.main(["--check"]) == 1
    shutil.copy(SOLUTION_DIR / EXPECTED[1], solution)
    shutil.copy(NOTEBOOK_DIR / EXPECTED[0], versions["student"] / "99_renamed.ipynb")
    assert build_notebooks.main(["--check"]) == 1
    assert "99_renamed.ipynb (no source)" in capsys.readouterr().err


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_kernel_is_python3(path):
    assert read(path).metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_only_checked_cells_carry_outputs_and_execution_counts(path):
    checked = 0
    for index, cell in enumerate(code_cells(read(path))):
        if build_notebooks.is_checked(cell):
            checked += 1
            assert cell.execution_count == checked, f"{path.name} code cell {index}: checked cells count 1, 2, ..."
            assert cell.outputs, f"{path.name} code cell {index} is checked but has no stored output"
            assert all(out.output_type == "stream" and out.name == "stdout" for out in cell.outputs), \
                f"{path.name} code cell {index}: a checked cell should only print"
        else:
            assert cell.execution_count is None, f"{path.name} code cell {index} has an execution count"
            assert not cell.outputs, f"{path.name} code cell {index} carries a stale output"
    if path in SOLUTIONS:
        assert checked, f"{path.name} has no cell tagged nbval-check-output"
    else:  # a stored output would show a student answers before they run anything (01: fc1's 89,888 inputs)
        assert not checked, f"{path.name}: a student notebook stores no output"


def test_the_check_marker_is_a_tag_students_do_not_see():
    for path in NOTEBOOKS + SOURCES:
        assert "NBVAL_CHECK_OUTPUT" not in path.read_text(encoding="utf-8"), path.name


def test_only_cells_tagged_for_checking_keep_their_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(build_notebooks, "ROOT", tmp_path)
    source = tmp_path / "98_tags.py"
    source.write_text('# %% tags=["nbval-check-output"]\nprint(1)\n\n# %%\nprint(2)\n', encoding="utf-8")
    student = build_notebooks.build(source, "https://github.com/o/r", "student")
    assert [cell.metadata for cell in student.cells] == [{}, {}]  # nothing stored for students
    notebook = build_notebooks.build(source, "https://github.com/o/r", "solution")
    for cell in notebook.cells:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=cell.source[6:7] + "\n")]
    build_notebooks.keep_checked_outputs(notebook)
    checked, plain = notebook.cells
    assert checked.metadata == {"tags": ["nbval-check-output"]} and checked.source == "print(1)"
    assert [out.text for out in checked.outputs] == ["1\n"] and checked.execution_count == 1
    assert plain.metadata == {} and plain.outputs == [] and plain.execution_count is None


@pytest.mark.filterwarnings("ignore::nbformat.warnings.DuplicateCellId")  # nbformat renumbers as it reads
def test_check_catches_two_cells_with_one_id(tmp_path, monkeypatch, capsys):
    versions = {version: tmp_path / folder.name for version, folder in build_notebooks.VERSIONS.items()}
    for version, folder in build_notebooks.VERSIONS.items():
        shutil.copytree(folder, versions[version])
    monkeypatch.setattr(build_notebooks, "VERSIONS", versions)
    stored = versions["student"] / EXPECTED[1]
    text = stored.read_text(encoding="utf-8")
    first, second = (cell["id"] for cell in read(stored).cells[2:4])
    stored.write_text(text.replace(f'"id": "{second}"', f'"id": "{first}"'), encoding="utf-8")  # as a merge can
    assert build_notebooks.main(["--check"]) == 1
    assert f"notebooks/{EXPECTED[1]} (two cells with the id {first})" in capsys.readouterr().err


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_title_cell_has_the_colab_badge_for_this_notebook(path, repo_url):
    first = read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    expected = (f"https://colab.research.google.com/github/{repo_url.removeprefix('https://github.com/')}"
                f"/blob/main/{path.parent.name}/{path.name}")
    assert f"(https://colab.research.google.com/assets/colab-badge.svg)]({expected})" in first.source


def test_readme_lists_every_notebook_with_its_colab_badge(repo_url):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    colab_links = set(re.findall(r"\(https://colab\.research\.google\.com/github/([^)]*)\)", readme))
    slug = repo_url.removeprefix("https://github.com/")
    assert colab_links == {f"{slug}/blob/main/{folder}/{name}" for name in EXPECTED
                           for folder in ("notebooks", "solutions")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_one_setup_cell_installs_skinlib_from_the_repository_in_colab(path, repo_url):
    cells = code_cells(read(path))
    setup = [cell for cell in cells if "google.colab" in cell.source and "pip" in cell.source]
    assert len(setup) == 1 and setup[0] is cells[0], "the first code cell, and only it, is the set-up"
    source = setup[0].source
    assert re.search(r'^REPO_URL = "(.*)"$', source, re.M).group(1) == repo_url
    assert '"-m", "pip", "install", "-q", f"skinlib @ git+{REPO_URL}@v{KIT_VERSION}"' in source
    assert 'IN_COLAB = "google.colab" in sys.modules' in source and "if IN_COLAB:" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_setup_cell_warns_without_a_gpu_and_does_not_stop(path):
    source = code_cells(read(path))[0].source
    assert "torch.cuda.is_available()" in source
    assert "Runtime > Change runtime type" in source
    assert not re.search(r"\b(raise|exit|assert)\b", source)


def test_setup_cell_does_nothing_outside_colab(capsys):
    source = code_cells(read(NOTEBOOKS[0]))[0].source
    namespace: dict = {}
    exec(compile(source, "setup cell", "exec"), namespace)  # no google.colab here
    assert namespace["IN_COLAB"] is False
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_imports_cell_ends_by_announcing_versions_and_device(path):
    imports = code_cells(read(path))[1].source
    assert "torch.__version__" in imports and "skinlib.__version__" in imports
    assert imports.rstrip().endswith("device = select_device()")


# An absolute path: "/name/" at the start of a string, or after a space, quote or parenthesis.
# Colab's own folder (/content) is the one allowed: it is where the notebooks run in Colab.
ABSOLUTE_PATH = re.compile(r"""(?:^|[\s"'(=])(/(?!content\b)[A-Za-z_.][\w.-]*/|[A-Za-z]:\\|~/)""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_no_absolute_paths(path):
    for index, cell in enumerate(read(path).cells):
        texts = [cell.source] + [out.get("text", "") for out in cell.get("outputs", [])]
        for text in texts:
            match = ABSOLUTE_PATH.search(text)
            assert not match, f"{path.name} cell {index}: absolute path {match.group(1)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name_of)
def test_nothing_waits_for_input(path):
    for index, cell in enumerate(code_cells(read(path))):
        found = re.search(r"\binput\(|getpass|plt\.pause", cell.source)
        assert not found, f"{path.name} code cell {index} waits for the user: {found.group(0)}"


def test_absolute_path_check_finds_paths():
    assert ABSOLUTE_PATH.search('DATA = "/home/me/isic"')
    assert ABSOLUTE_PATH.search("see /tmp/run/x")
    assert not ABSOLUTE_PATH.search('Path("/content/isic2019")')
    assert not ABSOLUTE_PATH.search("https://github.com/owner/repo/blob/main/x")
    assert not ABSOLUTE_PATH.search("train/val/test")


# ------------------------------------------------------------------ exercises: two versions
def solution_regions(source: Path) -> tuple[set[str], set[str]]:
    """Code lines of `source` inside solution regions, and those outside (stripped, no comments)."""
    inside, regions, given = False, set(), set()
    for line in source.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped in (build_notebooks.BEGIN, build_notebooks.END):
            inside = stripped == build_notebooks.BEGIN
        elif stripped and not stripped.startswith("#"):
            (regions if inside else given).add(stripped)
    return regions, given


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.stem)
def test_student_notebook_holds_no_solution_code(source):
    regions, given = solution_regions(source)
    student = read(NOTEBOOK_DIR / source.with_suffix(".ipynb").name)
    lines = {line.strip() for cell in code_cells(student) for line in cell.source.splitlines()}
    assert not lines & (regions - given), f"solution code in the student {source.stem}: {lines & (regions - given)}"
    text = "".join(cell.source for cell in student.cells)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text


def _runs_only_definitions(code: str) -> bool:
    """Whether running `code` only defines names: imports, functions, classes, `NAME = <constant>`."""
    return all(isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
               or (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant))
               for node in ast.parse(code).body)


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.stem)
def test_student_exercise_cells_only_define_things_and_nothing_is_tagged_to_raise(source):
    """Colab's Run all stops at the first cell that raises: an exercise cell must not run the student's code
    (its check cell does), and no cell is tagged `raises-exception` (which would let nbval pass one that does)."""
    student = code_cells(read(NOTEBOOK_DIR / source.with_suffix(".ipynb").name))
    solution = code_cells(read(SOLUTION_DIR / source.with_suffix(".ipynb").name))
    for index, (mine, answer) in enumerate(zip(student, solution, strict=True)):
        exercise = build_notebooks.BEGIN in answer.source
        assert "raises-exception" not in mine.metadata.get("tags", []) + answer.metadata.get("tags", [])
        if exercise:
            assert _runs_only_definitions(mine.source), f"{source.stem} code cell {index} runs code at its top level"
        else:
            assert "NotImplementedError" not in mine.source


def test_only_definitions_are_recognised():
    assert _runs_only_definitions("import torch\nX = None\ndef f():\n    raise NotImplementedError('x')\n")
    assert not _runs_only_definitions("def f():\n    pass\nprint(f())")
    assert not _runs_only_definitions("X = 32 * 53 * 53")  # an expression: the answer itself


def test_the_lab_notebooks_have_exercises():
    for name in ("01_simple_cnn", "02_training_and_testing", "03_resnet50_transfer_learning"):
        regions, _ = solution_regions(ROOT / "tools" / "notebook_src" / f"{name}.py")
        assert regions, f"{name} has no exercise"


def test_student_code_replaces_each_region_by_its_todo_as_an_error():
    source = ("def forward(self, x):\n"
              "    # TODO: conv1, ReLU, pool\n"
              "    ### BEGIN SOLUTION\n"
              "    return self.pool(F.relu(self.conv1(x)))\n"
              "    ### END SOLUTION\n")
    assert build_notebooks.student_code(source, "x.py") == (
        "def forward(self, x):\n"
        "    # TODO: conv1, ReLU, pool\n"
        "    raise NotImplementedError('conv1, ReLU, pool')")


def test_a_top_level_region_becomes_nothing_so_the_cell_does_not_raise():
    source = ("FC1_INPUTS = None\n"
              "# TODO: FC1_INPUTS = the number of values\n"
              "### BEGIN SOLUTION\n"
              "FC1_INPUTS = 32 * 53 * 53\n"
              "### END SOLUTION\n")
    assert build_notebooks.student_code(source, "x.py") == "FC1_INPUTS = None\n# TODO: FC1_INPUTS = the number of values"


def test_an_indented_region_outside_a_function_is_an_error():
    source = "if True:\n    # TODO: x\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION\n"
    with pytest.raises(build_notebooks.SourceError, match=r"99_x.py, cell 3, line 3: an indented region must lie in "
                                                         r"a function's body"):
        build_notebooks.student_code(source, "tools/notebook_src/99_x.py, cell 3")
    method = "class A:\n    def f(self):\n        # TODO: x\n        ### BEGIN SOLUTION\n        x = 1\n        ### END SOLUTION\n"
    assert build_notebooks.student_code(method, "x.py").endswith("        raise NotImplementedError('x')")


@pytest.mark.parametrize("broken, message", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "must follow a `# TODO: ...` line"),
    ("# TODO: x\n### BEGIN SOLUTION\nx = 1", "without ### END SOLUTION"),
    ("x = 1\n### END SOLUTION", "line 2: ### END SOLUTION without"),
    # a pair of misspelt markers would keep the answer in the student notebook
    ("x = None\n# TODO: x\n### Begin Solution\nx = 1\n### End Solution", "line 3: `### Begin Solution` reads like"),
    ("x = None\n# TODO: x\n### BEGIN SOLUTION\nx = 1\n#END SOLUTION", "line 5: `#END SOLUTION` reads like"),
    # a top-level answer whose name has no value above it: the check cell would raise NameError
    ("# TODO: x\n### BEGIN SOLUTION\nx, y = 1, 2\n### END SOLUTION", "line 2: the answer sets x, y, which"),
    ("x = None\n# TODO: x\n### BEGIN SOLUTION\nx = 1\ndef f():\n    pass\n### END SOLUTION", "sets f, which"),
])
def test_a_malformed_region_is_an_error_naming_the_place(broken, message):
    with pytest.raises(build_notebooks.SourceError, match=re.escape(message)):
        build_notebooks.student_code(broken, "tools/notebook_src/99_x.py, cell 3")


@pytest.mark.parametrize("address", ["https://gitlab.com/me/kit", "git@github.com:me/kit.git",
                                     "https://github.com/me", "http://github.com/me/kit"])
def test_a_repository_address_colab_cannot_open_is_one_error_line(address, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nversion = "1.0"\n\n[project.urls]\nRepository = "{address}"\n')
    with pytest.raises(SystemExit, match=re.escape(f"Repository is {address!r}; write it as https://github.com/OWNER/REPO")):
        build_notebooks.repository_url(pyproject)
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/me/my-kit.git/"\n')
    assert build_notebooks.repository_url(pyproject) == "https://github.com/me/my-kit.git"


def test_execute_keeps_the_builders_metadata_so_check_passes_after_it(monkeypatch):
    """nbclient adds the kernel's language_info to the notebook it runs; --execute must not keep it."""
    def kernel_run(notebook, name):
        notebook.metadata["language_info"].update(version="3.11.7", pygments_lexer="ipython3")
    monkeypatch.setattr(build_notebooks, "execute", kernel_run)
    source = build_notebooks.SOURCES / "01_simple_cnn.py"
    for version in build_notebooks.VERSIONS:
        executed = build_notebooks.render(source, version, build_notebooks.repository_url(), True)
        built = build_notebooks.render(source, version, build_notebooks.repository_url(), False)
        assert build_notebooks._without_outputs(executed) == build_notebooks._without_outputs(built)


# ------------------------------------------------------------------ executing them under nbval
@pytest.fixture(scope="session")
def notebook_scratch(tmp_path_factory) -> Path:
    """Shared by the runs of one test session: the generated SYNTHETIC set is made once."""
    return tmp_path_factory.mktemp("notebook-runs")


SMOKE_ENV = {"SKINLIB_SMOKE": "1", "SKINLIB_PRETRAINED": "0", "CUDA_VISIBLE_DEVICES": ""}


def _same_cells(student: Path) -> bool:
    """A notebook without exercises: its student version runs the same code as its solution."""
    solution = SOLUTION_DIR / student.name
    return solution.exists() and [c.source for c in code_cells(read(student))] == \
        [c.source for c in code_cells(read(solution))]


# The solutions run in tests/test_journey.py; a student notebook identical to its solution (no exercises)
# would only repeat that run.
RUN_ON_SYNTHETIC = [path for path in STUDENT if not _same_cells(path)]


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN_ON_SYNTHETIC, ids=name_of)
def test_notebook_runs_on_the_synthetic_data(path, notebook_scratch):
    """No exercise is written, and no cell may raise: the checks say "not done yet" and the notebook goes on."""
    env = {key: value for key, value in os.environ.items() if key != "SKINLIB_DATA"}
    env.update(SMOKE_ENV, SKINLIB_CACHE=str(notebook_scratch / "cache"))
    run = run_under_nbval(path, notebook_scratch / f"synthetic-{path.parent.name}", env)
    assert run.code == 0, f"{name_of(path)} failed under nbval on the synthetic data:\n{run.output[-6000:]}"
    assert run.seconds < RUN_LIMIT_S, f"{name_of(path)} took {run.seconds:.0f} s"


@pytest.mark.slow
def test_run_notebooks_keeps_an_executed_copy_with_outputs(tmp_path, notebook_scratch, monkeypatch):
    import run_notebooks

    monkeypatch.delenv("SKINLIB_DATA", raising=False)
    monkeypatch.setenv("SKINLIB_CACHE", str(notebook_scratch / "cache"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert run_notebooks.main(["--out", str(tmp_path), "--smoke", "01_simple_cnn"]) == 0
    executed = read(tmp_path / "01_simple_cnn.ipynb")
    assert all(cell.execution_count is not None for cell in code_cells(executed))
    printed = "".join(out.get("text", "") for cell in code_cells(executed) for out in cell.outputs)
    # The student version as a student first runs it: no cell raises, each check says "not done yet", and
    # the notebook goes on with skinlib's SimpleCNN to the end.
    errors = [out.ename for cell in code_cells(executed) for out in cell.outputs if out.output_type == "error"]
    assert errors == []
    assert "fc1's input size: not done yet" in printed and "SimpleCNN: not done yet" in printed
    assert "use skinlib's SimpleCNN" in printed
    assert "108,896,416" in printed and "same outputs on the batch: True" in printed
    assert (tmp_path / "01_simple_cnn.html").stat().st_size > 0


def tqdm_bar_widgets(model_id: str, left: str, value: float, total: float, right: str) -> dict:
    """The widget state nbclient saves for one tqdm.notebook bar: a box of (HTML, progress, HTML)."""
    ids = [f"{model_id}-{part}" for part in ("left", "bar", "right")]
    return {model_id: {"model_name": "HBoxModel", "state": {"children": [f"IPY_MODEL_{i}" for i in ids]}},
            ids[0]: {"model_name": "HTMLModel", "state": {"value": left}},
            ids[1]: {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}},
            ids[2]: {"model_name": "HTMLModel", "state": {"value": right}}}


def test_saved_progress_bars_show_their_last_state_not_zero(tmp_path):
    import run_notebooks

    def view(model_id, first_frame):
        return nbformat.v4.new_output("display_data", data={
            run_notebooks.WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
            "text/plain": first_frame})

    cell = nbformat.v4.new_code_cell("fit(...)")
    cell.outputs = [view("bar", "train:   0%|          | 0/2 [00:00<?, ?it/s]"), view("slider", "IntSlider(value=3)"),
                    view("hidden", "eval:   0%|          | 0/2 [00:00<?, ?it/s]")]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    state = {**tqdm_bar_widgets("bar", "train:\u2007100%", 2.0, 2.0, "\u20072/2\u2007[00:22&lt;00:00,\u200710.96s/it]"),
             **tqdm_bar_widgets("hidden", "eval:\u2007100%", 2.0, 2.0, "\u20072/2"),
             "slider": {"model_name": "IntSliderModel", "state": {"value": 3}},
             "hidden-layout": {"model_name": "LayoutModel", "state": {"visibility": "hidden"}}}
    state["hidden"]["state"]["layout"] = "IPY_MODEL_hidden-layout"  # tqdm hides a leave=False bar when done
    notebook.metadata["widgets"] = {run_notebooks.WIDGET_STATE: {"state": state}}
    run_notebooks.settle_progress_bars(notebook)
    bar, slider = cell.outputs  # the hidden bar is gone
    assert bar.data == {"text/plain": "train: 100%|██████████| 2/2 [00:22<00:00, 10.96s/it]"}
    assert run_notebooks.WIDGET_VIEW in slider.data  # other widgets (notebook 05's) stay as they are


def test_run_notebooks_keeps_the_ipynb_when_nbconvert_cannot_render_html(tmp_path, monkeypatch, capsys):
    import nbconvert
    import run_notebooks

    class NoTemplates:
        def from_notebook_node(self, notebook):
            raise ValueError("No template sub-directory with name 'lab' found in the following paths")

    class Ran:  # stands in for the kernel: the notebook "runs" without executing anything
        def __init__(self, notebook, **options):
            pass

        def execute(self, env):
            pass

    monkeypatch.setattr(nbconvert, "HTMLExporter", NoTemplates)
    monkeypatch.setattr(run_notebooks, "NotebookClient", Ran)
    assert run_notebooks.main(["--out", str(tmp_path), "--smoke", EXPECTED[0], EXPECTED[1]]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [*EXPECTED[:2], "skinlib-folder.json"]
    printed = capsys.readouterr().out
    assert f"warning: no {Path(EXPECTED[1]).with_suffix('.html')}: nbconvert could not render HTML (ValueError: " \
        "No template sub-directory" in printed and "the executed .ipynb is kept" in printed


def test_run_notebooks_refuses_an_out_it_did_not_write_in_one_line(tmp_path, capsys):
    import run_notebooks

    afile = tmp_path / "afile"
    afile.write_text("mine")
    mine = tmp_path / "mine"
    for out, message in [(ROOT / "solutions", "holds files skinlib did not write"),
                         (afile, "is a file, not a folder; choose another --out")]:
        before = {path: path.read_bytes() for path in ([out] if out.is_file() else sorted(out.iterdir()))}
        assert run_notebooks.main(["--out", str(out), "--solutions", "01_simple_cnn"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert {path: path.read_bytes() for path in before} == before  # nothing written, nothing replaced
    assert not (ROOT / "solutions" / "skinlib-folder.json").exists()
    # A folder the script marked, where the user has since saved a file under an executed copy's name:
    run_notebooks.claim_folder(mine / "ours", "notebooks")
    (mine / "ours" / "01_simple_cnn.html").write_text("my notes")
    assert run_notebooks.main(["--out", str(mine / "ours"), "01_simple_cnn"]) == 1
    assert "01_simple_cnn.html is not a file run_notebooks.py wrote" in capsys.readouterr().err
    assert (mine / "ours" / "01_simple_cnn.html").read_text() == "my notes"


def test_smoke_mode_never_downloads_weights_unless_told(monkeypatch):
    import run_notebooks

    monkeypatch.delenv("SKINLIB_PRETRAINED", raising=False)
    assert run_notebooks.notebook_env(smoke=True) == {"SKINLIB_SMOKE": "1", "SKINLIB_PRETRAINED": "0"}
    assert run_notebooks.notebook_env(smoke=False) == {"SKINLIB_SMOKE": "0"}
    monkeypatch.setenv("SKINLIB_PRETRAINED", "1")
    assert run_notebooks.notebook_env(smoke=True) == {"SKINLIB_SMOKE": "1"}
