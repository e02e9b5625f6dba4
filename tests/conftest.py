"""Shared fixtures.

Real ISIC 2019 files are reached only through $SKINLIB_TEST_DATA (a folder holding
`isic2019/`, `isic2019-sample/` and `colab/`). Locally, tests that need it are skipped
when it is unset; under CI=true a missing folder fails the run instead of hiding it.

Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`): each worker, and every process it
starts (notebook kernels, torchrun, the CLI), uses its share of the cores, so two workers do not
fight over two cores; a module whose tests share a module-scoped fixture stays on one worker (the
fixture is built once), other tests are spread one by one; and the longest work (the notebook runs,
the two-process training) is handed out first, so no long test starts last and runs alone.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest


# Handed out first, in this order (each several to 150 s): whatever starts last decides the run's length.
LONGEST_FIRST = ("test_journey.py", "test_notebooks_meta.py", "test_distributed.py", "test_cli.py",
                 "test_browser.py", "test_benchmarks.py", "test_predict.py", "test_resume.py")


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read by torch when it is first imported
            os.environ.setdefault(name, str(max(1, cores // int(workers))))


def _shares_a_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        fixturedef.scope in ("module", "class", "package")
        for fixturedefs in info.name2fixturedefs.values() for fixturedef in fixturedefs)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup`: a module with a module-scoped fixture is one unit of work (one
    xdist_group), any other test a unit of its own; units are handed out longest first."""
    if not config.pluginmanager.has_plugin("xdist") or config.getoption("dist", "no") != "loadgroup":
        return
    units = {}
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        if marker is None and _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.path.name))
            marker = item.get_closest_marker("xdist_group")
        units[id(item)] = marker.args[0] if marker is not None else item.nodeid
    first = {}  # unit -> the earliest rank of its tests
    for position, item in enumerate(items):
        name = item.path.name
        rank = (item.get_closest_marker("slow") is None,
                LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST), position)
        first[units[id(item)]] = min(first.get(units[id(item)], rank), rank)
    order = {id(item): (first[units[id(item)]], i) for i, item in enumerate(items)}
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
    from skinlib.synth import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "data", n=160, seed=0)


@pytest.fixture(scope="session")
def synthetic_cache(synthetic_dir, tmp_path_factory) -> Path:
    """The synthetic set prepared once into an image cache (S=256); tests must not change it."""
    from skinlib.cache import prepare

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
