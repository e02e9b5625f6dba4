"""requirements.txt, environment.yml and pyproject.toml describe one set of versions."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)")


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def test_requirements_are_all_exact_pins():
    lines = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines and all("==" in l for l in lines)


def test_conda_environment_pins_the_same_versions_as_requirements():
    assert pins((ROOT / "environment.yml").read_text()) == pins((ROOT / "requirements.txt").read_text())


def test_pinned_versions_satisfy_the_package_bounds():
    pinned = pins((ROOT / "requirements.txt").read_text())
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in deps:
        req = Requirement(text)
        assert canonicalize_name(req.name) in pinned, f"{req.name} is not pinned in requirements.txt"
        assert req.specifier.contains(Version(pinned[canonicalize_name(req.name)])), text


def test_the_version_is_written_once_as_skinlibs_version():
    import skinlib

    sys.path.insert(0, str(ROOT / "tools"))
    import build_notebooks

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "skinlib.__version__"}
    assert build_notebooks.package_version() == skinlib.__version__
    assert len(re.findall(r"^__version__ = ", (ROOT / "skinlib" / "__init__.py").read_text(), re.M)) == 1


def test_the_colab_environment_pins_exactly_the_versions_of_colabs_image(test_data):
    colab = pins((test_data / "colab" / "pip-freeze.gpu.txt").read_text())
    ours = pins((ROOT / "requirements-colab.txt").read_text())
    assert "torch" not in ours and "torchvision" not in ours  # taken from .venv: see the file's comment
    tools = {"nbval", "captum", "pytest-xdist"}  # test tools Colab does not ship
    assert ours.keys() - tools and all(name in colab for name in ours.keys() - tools)
    assert {name: ours[name] for name in ours.keys() - tools} == {name: colab[name] for name in ours.keys() - tools}


# Colab's torch and torchvision cannot be installed offline: their bounds are Colab's versions (tests/test_colab.py).
UNTESTED_BOUNDS = {"torch": "2.11", "torchvision": "0.26"}


def test_every_lower_bound_is_a_version_a_tested_environment_runs():
    tested = {"colab": pins((ROOT / "requirements-colab.txt").read_text()),
              "requirements": pins((ROOT / "requirements.txt").read_text())}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        req = Requirement(text)
        name = canonicalize_name(req.name)
        (bound,) = [spec.version for spec in req.specifier if spec.operator == ">="]
        if name in UNTESTED_BOUNDS:
            assert bound == UNTESTED_BOUNDS[name], text
            continue
        oldest = tested["colab"].get(name, tested["requirements"].get(name))  # Colab's, else requirements.txt's
        assert oldest is not None and Version(bound) == Version(oldest), f"{text}: the oldest tested is {oldest}"


def test_release_check_names_each_missing_piece_and_passes_a_tagged_release(tmp_path):
    import subprocess
    import shutil

    sys.path.insert(0, str(ROOT / "tools"))
    import build_notebooks
    import release_check

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp_path / name)

    def git(*args):
        identity = ["-c", "user.name=Instructor", "-c", "user.email=instructor@example.org"]
        subprocess.run(["git", *identity, *args], cwd=tmp_path, capture_output=True, text=True, check=True)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "release")
    version = build_notebooks.package_version()
    assert [p.split(" ")[:2] for p in release_check.problems(version, tmp_path)] == [["tag", f"v{version}"]]
    git("tag", f"v{version}")
    assert release_check.problems(version, tmp_path, notebooks=False) == []
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## 0.0.1\n")
    assert [p.split(" ")[:4] for p in release_check.problems(version, tmp_path, notebooks=False)] == \
        [["the", "working", "tree", "has"], ["CHANGELOG.md", "has", "no", "entry"]]
    git("checkout", "CHANGELOG.md")
    notebook = next((tmp_path / "notebooks").glob("*.ipynb"))
    notebook.write_text(notebook.read_text().replace(f'KIT_VERSION = \\"{version}\\"', 'KIT_VERSION = \\"0.0.1\\"'))
    assert any(p.startswith("notebooks are not built") for p in release_check.problems(version, tmp_path))
