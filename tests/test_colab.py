"""Installing skinlib in Colab must never reinstall torch, numpy or anything Colab already has.

pyproject.toml declares lower bounds only; these tests hold them against the package versions of
Colab's GPU runtime ($SKINLIB_TEST_DATA/colab/pip-freeze.gpu.txt).
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def read_freeze(path: Path) -> dict[str, Version]:
    """`pip freeze` lines `name==version` -> {canonical name: Version}; URL and comment lines are skipped."""
    versions = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "==" not in line:
            continue
        name, version = line.split("==", 1)
        versions[canonicalize_name(name)] = Version(version)
    return versions


def unmet(requirements: list[str], installed: dict[str, Version]) -> list[str]:
    """The requirements that the installed versions do not satisfy (missing counts as unmet)."""
    problems = []
    for text in requirements:
        req = Requirement(text)
        have = installed.get(canonicalize_name(req.name))
        if have is None:
            problems.append(f"{req}: not installed")
        elif not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req}: Colab has {have}")
    return problems


@pytest.fixture(scope="module")
def colab(test_data: Path) -> dict[str, Version]:
    return read_freeze(test_data / "colab" / "pip-freeze.gpu.txt")


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_freeze_file_holds_the_versions_the_kit_was_checked_against(colab):
    assert colab["torch"] == Version("2.11.0+cu128")
    assert colab["numpy"] == Version("2.1.3")


def test_every_dependency_is_already_satisfied_in_colab(colab, project):
    assert unmet(project["dependencies"], colab) == []


def test_notebook_extras_that_colab_ships_are_satisfied(colab, project):
    extras = project["optional-dependencies"]["notebooks"]
    shipped = [r for r in extras if canonicalize_name(Requirement(r).name) in colab]
    assert shipped, "Colab should ship ipywidgets/ipykernel"
    assert unmet(shipped, colab) == []


def test_a_bound_above_colab_is_caught(colab):
    # The check must be able to fail: a bound one minor release above Colab's torch is unmet.
    assert unmet(["torch>=2.12", "numpy>=1.24"], colab) == ["torch>=2.12: Colab has 2.11.0+cu128"]


def test_no_dependency_is_pinned_exactly(project):
    # `==` pins belong in requirements.txt; in pyproject they would make pip replace Colab's packages.
    assert [r for r in project["dependencies"] if "==" in r] == []
