"""The course as a student plays it in Colab: a chain of fresh runtimes that share one Google Drive.

Every notebook (the solutions: the course as a student who did the exercises runs it) runs under
nbval, as CI runs notebooks, in its own fresh runtime: a new kernel with a new home folder, a new
working folder and an empty local disk ($SKINLIB_LOCAL_DISK, Colab's /content). `tests/fake_colab`
stands in for Colab's `google.colab` package: the kernel imports it at start (as Colab's does), so
the notebooks take their Colab branch, and its `drive.mount` links the mount point to one folder
that stands in for the student's Drive for the whole course. What the student would see (printed
text and each cell's result) is also kept in a file, for the asserts.

On the real data, a local HTTP server on 127.0.0.1 serves a subset mirror made by
`skinlib subset` from the 70 real sample images; notebook 00 downloads it once, and every later
notebook must restore the course bundle from Drive without a single request, and notebooks 04 and
05 must load the models that 02 and 03 saved on Drive. Notebook 03 is also killed during training
(SIGKILL to its nbval run and kernel: a runtime that disconnects) and run again from the top: it
must resume after its last finished epoch and end with the test metrics of a run that was never
interrupted. The same chain on the embedded SYNTHETIC set needs no server (and no second kill).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

import skinlib
from nbval_runs import run_under_nbval

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402  (tools/ is not a package)

FAKE_COLAB = Path(__file__).resolve().parent / "fake_colab"
COURSE = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
RESTORED = "restoring the course bundle from Drive"
FETCHING = "no course bundle on Drive"
SIMPLE_CNN_ROW = "SimpleCNN (notebook 02)"
SAVED_MODELS = ("02_simple_cnn/model.pt: simplecnn, trained on this data and split",
                "03_resnet50/model.pt: resnet50, trained on this data and split")
# Run by the kernel at start, as Colab's kernel imports google.colab. The screen: what the notebook
# prints, and the text form of each cell's result (a table shown by its last line), also kept in a file.
STARTUP = """\
import os
import sys

import google.colab


class Screen:
    def __init__(self, stream, path):
        self.stream, self.file = stream, open(path, "a", encoding="utf-8")

    def write(self, text):
        self.file.write(text)
        self.file.flush()
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.stdout = Screen(sys.stdout, os.environ["JOURNEY_SCREEN"])
get_ipython().events.register(
    "post_run_cell", lambda result: result.result is None or sys.stdout.write(repr(result.result) + "\\n"))
"""


def test_setup_cell_installs_the_version_the_notebooks_were_built_for():
    kit_version = build_notebooks.package_version()
    assert skinlib.__version__ == kit_version
    assert version("skinlib") == kit_version, "the installed skinlib is not pyproject's version: `make venv`"
    for path in COURSE:
        setup = next(cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
        assert f'KIT_VERSION = "{kit_version}"' in setup.source, path.name
        assert 'f"skinlib @ git+{REPO_URL}@v{KIT_VERSION}"' in setup.source, path.name


# ------------------------------------------------------------------ the pieces
class MirrorServer:
    """Serves a folder at http://127.0.0.1:PORT/ and records every path requested."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path.lstrip("/"))
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Course:
    """One student's course: a Drive stand-in and the fresh runtimes that share it."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.runtimes = root, 0
        self.drive = root / "drive"
        self.drive.mkdir(parents=True)
        self.env = env

    def run(self, notebook: Path, *, kill_when=None) -> tuple[str, bool]:
        """Run `notebook` under nbval in a fresh runtime; return (its screen, whether it was killed)."""
        self.runtimes += 1
        runtime = self.root / f"runtime-{self.runtimes}-{notebook.stem[:2]}"
        home, content = runtime / "home", runtime / "content"
        startup = home / ".ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text(STARTUP)
        content.mkdir()
        env = {key: value for key, value in os.environ.items()
               if key not in ("SKINLIB_DATA", "SKINLIB_CACHE", "SKINLIB_MIRROR", "SKINLIB_DATASET")}
        env.update(self.env, HOME=str(home), SKINLIB_LOCAL_DISK=str(content), FAKE_DRIVE=str(self.drive),
                   JOURNEY_SCREEN=str(runtime / "screen.txt"),
                   PYTHONPATH=os.pathsep.join([str(FAKE_COLAB), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   SKINLIB_SMOKE="1", SKINLIB_PRETRAINED="0", CUDA_VISIBLE_DEVICES="",
                   # Colab's image has its font cache built; a fresh home would rebuild it every runtime
                   MPLCONFIGDIR=str(self.root / "matplotlib"))
        run = run_under_nbval(notebook, content, env, kill_when=kill_when)
        print(f"{runtime.name}: {run.seconds:.0f} s under nbval{' (killed)' if run.killed else ''}")
        if not run.killed:
            assert run.code == 0, f"{notebook.name} failed under nbval in runtime {runtime}:\n{run.output[-6000:]}"
        screen = runtime / "screen.txt"
        return (screen.read_text(encoding="utf-8") if screen.is_file() else ""), run.killed


def _checkpoint_epoch(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _play(course: Course) -> dict:
    """The course in order; then 03 again, killed during training, and once more from the top."""
    outputs = {}
    for notebook in COURSE:
        outputs[notebook.stem[:2]], _ = course.run(notebook)
    drive_results = json.loads(next(course.drive.rglob("03_resnet50/results.json")).read_text())
    # Notebook 03 again from scratch (its run folder removed from Drive) ...
    notebook_03 = next(p for p in COURSE if p.stem.startswith("03"))
    for run_dir in course.drive.rglob("03_resnet50"):
        shutil.rmtree(run_dir)
    checkpoint = lambda: next(course.drive.rglob("03_resnet50/checkpoint.pt"), None)  # noqa: E731
    outputs["03-killed"], killed = course.run(notebook_03, kill_when=lambda: checkpoint() is not None)
    killed_at = _checkpoint_epoch(checkpoint())
    outputs["03-again"], _ = course.run(notebook_03)  # ... and run again from the top: it resumes
    resumed = json.loads(next(course.drive.rglob("03_resnet50/results.json")).read_text())
    return {"outputs": outputs, "uninterrupted": drive_results, "resumed": resumed, "killed": killed,
            "killed_at": killed_at}


# ------------------------------------------------------------------ the real data, from a mirror
@pytest.fixture(scope="module")
def real_course(real_sample_dir, tmp_path_factory):
    from skinlib.acquire.subset import make_subset

    root = tmp_path_factory.mktemp("journey-real")
    make_subset(real_sample_dir, root / "mirror", 0.8, seed=0)
    server = MirrorServer(root / "mirror")
    try:
        course = Course(root / "student", {"SKINLIB_MIRROR": server.url})
        played = _play(course)
        played["requests"] = list(server.requests)
        played["drive"] = course.drive
        yield played
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.real_data
def test_the_archive_is_downloaded_once_for_the_whole_course(real_course):
    assert real_course["requests"].count("ISIC_2019_Training_Input.zip") == 1
    assert FETCHING in real_course["outputs"]["00"]


@pytest.mark.slow
@pytest.mark.real_data
def test_every_later_notebook_restores_the_bundle_from_drive(real_course):
    for name, text in real_course["outputs"].items():
        if name != "00":
            assert RESTORED in text and FETCHING not in text, name
    assert "subset" in real_course["outputs"]["00"].lower()  # the download said what the mirror is


@pytest.mark.slow
@pytest.mark.real_data
def test_notebook_03_compares_with_notebook_02s_row(real_course):
    for name in ("03", "03-again"):
        assert SIMPLE_CNN_ROW in real_course["outputs"][name]
        assert "no results of notebook 02" not in real_course["outputs"][name]


@pytest.mark.slow
@pytest.mark.real_data
def test_notebooks_04_and_05_load_the_models_that_02_and_03_saved_on_drive(real_course):
    data_id = next(real_course["drive"].rglob("02_simple_cnn")).parent.name
    for name in ("04", "05"):
        for saved in SAVED_MODELS:  # read through the Drive mount point, from this data's results folder
            assert f"/drive/MyDrive/skin-lesion-kit/runs/{data_id}/{saved}" in real_course["outputs"][name], name
        assert "stand-in" not in real_course["outputs"][name], name


@pytest.mark.slow
@pytest.mark.real_data
def test_killed_notebook_03_resumes_after_its_last_finished_epoch(real_course):
    assert real_course["killed"]
    done = real_course["killed_at"]
    epochs = len(real_course["uninterrupted"]["history"])
    assert 1 <= done < epochs
    assert f"{done} epoch(s) done" in real_course["outputs"]["03-again"]
    assert [row["epoch"] for row in real_course["resumed"]["history"]] == list(range(1, epochs + 1))


@pytest.mark.slow
@pytest.mark.real_data
def test_resumed_run_ends_with_the_metrics_of_an_uninterrupted_one(real_course):
    assert real_course["resumed"]["test"] == real_course["uninterrupted"]["test"]
    for resumed, uninterrupted in zip(real_course["resumed"]["history"], real_course["uninterrupted"]["history"]):
        assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-6)


# ------------------------------------------------------------------ the synthetic set, no server
@pytest.mark.slow
def test_the_synthetic_course_runs_as_a_chain_of_fresh_runtimes(tmp_path):
    course = Course(tmp_path, {"SKINLIB_DATASET": "synthetic"})
    outputs = {path.stem[:2]: course.run(path)[0] for path in COURSE}
    assert FETCHING in outputs["00"] and "SYNTHETIC" in outputs["00"]
    for name, text in outputs.items():
        if name != "00":
            assert RESTORED in text and FETCHING not in text, name
    assert SIMPLE_CNN_ROW in outputs["03"]
    for name in ("04", "05"):
        assert all(saved in outputs[name] for saved in SAVED_MODELS) and "stand-in" not in outputs[name], name
    assert len(list(course.drive.rglob("*-bundle.zip"))) == 1
