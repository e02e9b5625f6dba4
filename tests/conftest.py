"""Shared fixtures.

Real ISIC 2019 files are reached only through $SKINLIB_TEST_DATA (a folder holding
`isic2019/`, `isic2019-sample/` and `colab/`). Locally, tests that need it are skipped
when it is unset; under CI=true a missing folder fails the run instead of hiding it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


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
