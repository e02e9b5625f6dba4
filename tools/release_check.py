"""Before publishing a version (`make release-check`): what students' set-up cells will install exists.

Each notebook's set-up cell installs `skinlib @ git+REPO@v<version>`. Checked here, each failure one
`error:` line: the tag v<version> (version: skinlib.__version__) points at HEAD, the working tree has no
uncommitted change to a tracked file, the notebooks are built from their sources for this version
(`tools/build_notebooks.py --check`), and CHANGELOG.md has an entry `## <version>`.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402  (tools/ is not a package)


def problems(version: str, root: Path = ROOT, *, notebooks: bool = True) -> list[str]:
    """What stops `version` of the checkout at `root` from being published, one sentence each
    (`notebooks=False` leaves out the rebuild of every notebook, a few seconds)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout

    found = []
    tag = f"v{version}"
    if tag not in git("tag", "--points-at", "HEAD").split():
        found.append(f"tag {tag} is not on HEAD: `git tag {tag}` on the commit to publish, then "
                     f"`git push origin {tag}` (the notebooks' set-up cell installs it)")
    if git("status", "--porcelain", "--untracked-files=no").strip():
        found.append("the working tree has uncommitted changes: the tag would not hold them")
    if notebooks:
        built = subprocess.run([sys.executable, str(root / "tools" / "build_notebooks.py"), "--check"],
                               cwd=root, capture_output=True, text=True)
        if built.returncode != 0:
            first = next(iter((built.stdout + built.stderr).strip().splitlines()), "")
            found.append(f"notebooks are not built from their sources for {version}: "
                         f"`python tools/build_notebooks.py` ({first.removeprefix('error: ')})")
    changelog = root / "CHANGELOG.md"
    text = changelog.read_text(encoding="utf-8") if changelog.is_file() else ""
    if not re.search(rf"^## v?{re.escape(version)}\b", text, re.M):
        found.append(f"{changelog.name} has no entry `## {version}`: say what changed for instructors and students")
    return found


def main() -> int:
    version = build_notebooks.package_version()
    found = problems(version)
    for problem in found:
        print(f"error: {problem}")
    if not found:
        print(f"release {version} ready: tag v{version} on HEAD, notebooks built for it, CHANGELOG entry present")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
