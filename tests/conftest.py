"""Shared fixtures.

Real ISIC 2019 files are reached only through $SKINLIB_TEST_DATA (a folder holding
`isic2019/`, `isic2019-sample/` and `colab/`). Locally, tests that need it are skipped
when it is unset; under CI=true a missing folder fails the run instead of hiding it.

Under pytest-xdist (`make test` runs `-n logical --dist loadscope`): each worker, and every process
it starts (notebook kernels, torchrun, the CLI), uses its share of the cores, so two workers do not
fight over two cores; a test module is one unit of work (its module-scoped fixtures are built once),
except the tests listed in ALONE, which share no module fixture and are long enough to be units of
their own; and the units are handed out longest first, so no long one starts last and runs alone.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest


# Handed out first, in this order (each several to 150 s): whatever starts last decides the run's length.
LONGEST_FIRST = ("test_journey.py", "test_notebooks_meta.py", "test_distributed.py", "test_cli.py",
                 "test_browser.py", "test_benchmarks.py", "test_predict.py", "test_resume.py")
# Units of work of their own (node id prefixes): long tests that share no module-scoped fixture with their module.
ALONE = ("tests/test_journey.py::test_the_synthetic_course_runs_as_a_chain_of_fresh_runtimes",
         "tests/test_notebooks_meta.py::test_notebook_runs_on_the_synthetic_data[",
         "tests/test_notebooks_meta.py::test_run_notebooks_keeps_an_executed_copy_with_outputs",
         "tests/test_distributed.py::")


def unit_of_work(nodeid: str) -> str:
    return nodeid if nodeid.startswith(ALONE) else nodeid.split("::", 1)[0]


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read by torch when it is first imported
            os.environ.setdefault(name, str(max(1, cores // int(workers))))


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope` with the units of `unit_of_work` (xdist's loadgroup marks do not reach pytest 9's
    node ids), in the order of collection (`--no-loadscope-reorder`)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return Units(config, log)


def pytest_collection_modifyitems(config, items):
    """Under xdist, the longest units first (the order in which workers collect is the order handed out)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    first = {}  # unit -> the earliest rank of its tests
    for position, item in enumerate(items):
        name = item.path.name
        rank = (item.get_closest_marker("slow") is None,
                LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST), position)
        unit = unit_of_work(item.nodeid)
        first[unit] = min(first.get(unit, rank), rank)
    order = {id(item): (first[unit_of_work(item.nodeid)], i) for i, item in enumerate(items)}
    items.sort(key=lambda item: order[id(item)])


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def test_data() -> Path:
    value = os.environ.get("SKINLIB_TEST_DATA")
    if not value:
        if _in_ci():
            pytest.fail("CI=true but SKINLIB_TEST_DATA is unset: the real-data tests cannot run")
        pytest.skip("SKINLIB_TEST_DATA is unset (set it to the shared folder to run real-data tests)")
    root = Path(value)
    if not root.is_dir():
        pytest.fail(f"SKINLIB_TEST_DATA={value} is not a folder")
    return root


@pytest.fixture(scope="session")
def real_csv_dir(test_data: Path) -> Path:
    """The real ISIC 2019 training CSVs (no images)."""
    path = test_data / "isic2019"
    if not path.is_dir():
        pytest.fail(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def real_sample_dir(test_data: Path) -> Path:
    """70 real dermoscopy images in the layout of the official download."""
    path = test_data / "isic2019-sample"
    if not path.is_dir():
        pytest.fail(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset in the ISIC 2019 layout, generated once per test session."""
    from skinlib.acquire.synth import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "data", n=160, seed=0)


@pytest.fixture(scope="session")
def synthetic_cache(synthetic_dir, tmp_path_factory) -> Path:
    """The synthetic set prepared once into an image cache (S=256); tests must not change it."""
    from skinlib.storage.prepare import prepare

    cache_dir = tmp_path_factory.mktemp("cache") / "synthetic"
    prepare(synthetic_dir, cache_dir, size=256, workers=1, progress=False)
    return cache_dir


@pytest.fixture
def sigint_raises_keyboard_interrupt():
    """Ctrl+C as Python's own handler takes it, whatever the parent set: a shell or CI runner that
    ignores SIGINT (`nohup`, a background job) would otherwise make a SIGINT test pass or hang by chance."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
