"""skinlib.files: a file is replaced whole or not at all."""
from __future__ import annotations

import pytest

from skinlib.files import atomic_write, atomic_write_text


def test_atomic_write_text_replaces_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new ✓\n")
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_leftover(tmp_path, error):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"previous")

    def half_then_fail(f):
        f.write(b"half of the new con")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
