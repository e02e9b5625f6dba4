"""`course.get_data` outside Colab: the folder in $SKINLIB_DATA, prepared once into the cache, read only."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from skinlib import course
from skinlib.data import GROUND_TRUTH_CSV


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.real_data
def test_outside_colab_the_data_folder_is_used_as_it_is_and_prepared_once(real_sample_dir, tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setenv("SKINLIB_DATA", str(real_sample_dir))
    monkeypatch.setenv("SKINLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = _snapshot(real_sample_dir)

    data = course.get_data()

    assert data.data_dir == real_sample_dir and not data.synthetic and data.drive_dir is None
    assert data.cache_dir is not None and data.cache_dir.is_relative_to(tmp_path / "cache")
    truth = hashlib.sha256((real_sample_dir / GROUND_TRUTH_CSV).read_bytes()).hexdigest()
    assert data.data_id == f"isic2019-sample-{truth[:12]}"
    assert data.results_dir == Path("runs")
    first = capsys.readouterr().out
    assert f"data: {real_sample_dir};" in first and "decoded 70" in first
    assert _snapshot(real_sample_dir) == before  # nothing written into the user's data folder

    again = course.get_data()  # a second notebook in the same runtime finds the cache up to date
    assert again.cache_dir == data.cache_dir and again.data_id == data.data_id
    assert "already up to date, nothing to do" in capsys.readouterr().out
    assert _snapshot(real_sample_dir) == before


def _as_in_colab(monkeypatch, local_disk: Path) -> None:
    """`google.colab` imported (as Colab's kernel does), with a `drive.mount` that makes the mount point."""
    import types

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda where: (Path(where) / "MyDrive").mkdir(parents=True))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv("SKINLIB_LOCAL_DISK", str(local_disk))


def test_in_colab_the_results_folder_on_drive_is_keyed_by_the_data(synthetic_dir, tmp_path, monkeypatch, capsys):
    # Two data sets (say the SYNTHETIC one and the real one) must never share a results folder:
    # notebook 04 would load a model trained on the other data.
    _as_in_colab(monkeypatch, tmp_path / "content")
    monkeypatch.setenv("SKINLIB_DATA", str(synthetic_dir))
    data = course.get_data()
    truth = hashlib.sha256((synthetic_dir / GROUND_TRUTH_CSV).read_bytes()).hexdigest()
    drive = tmp_path / "content" / "drive" / "MyDrive" / course.DRIVE_FOLDER
    assert data.drive_dir == drive and data.data_id == f"{synthetic_dir.name}-{truth[:12]}"
    assert data.results_dir == drive / "runs" / data.data_id
    assert f"results: {data.results_dir}" in capsys.readouterr().out
