"""Check that this environment runs the versions a requirements file pins (`make test-colab`).

.venv-colab reads torch from .venv through a .pth file placed after its own packages; a package
missing from the Colab environment would be read from there too, at .venv's newer version, and the
run would prove nothing about Colab's. This names any such package, and says which torch is used.

    python tools/colab_versions.py requirements-colab.txt
"""
from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)")


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("requirements-colab.txt")
    wrong = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if not match:
            continue
        name, pinned = match.groups()
        try:
            found = version(name)
        except PackageNotFoundError:
            found = "not installed"
        if found != pinned:
            wrong.append(f"{name} {found} (pinned {pinned})")
    if wrong:
        print(f"error: {path}: this environment does not run the pinned versions: {'; '.join(wrong)}")
        return 1
    import torch
    import torchvision

    print(f"{path}: every pinned version in place; torch {torch.__version__}, torchvision {torchvision.__version__} "
          f"(from {Path(torch.__file__).parents[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
