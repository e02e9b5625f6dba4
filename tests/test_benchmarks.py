"""The benchmarks run end to end in --smoke mode and write the JSON they promise.

A smoke run checks that the code runs and the results are well formed; it times nothing
useful (tiny images, one step) and its numbers are not asserted on.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))

from benchmarks import bundle, input_pipeline, train_step  # noqa: E402


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_input_pipeline_smoke_writes_its_table_as_json(tmp_path, capsys):
    out = tmp_path / "input.json"
    assert input_pipeline.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "input_pipeline" and result["synthetic"] is True
    assert result["machine"]["cpus_available"] >= 1
    assert [row["set"] for row in result["sets"]] == list(input_pipeline.SMOKE_SETS)
    for row in result["sets"]:
        for key in ("stock_images_per_s", "cached_images_per_s", "jpeg256_images_per_s",
                    "prepare_seconds", "cache_mb", "speedup", "mean_file_kb"):
            assert positive(row[key]), key
        assert row["speedup"] == pytest.approx(row["cached_images_per_s"] / row["stock_images_per_s"])
        assert row["cache_mb"] == pytest.approx(16 * 64 * 64 * 3 / 1e6, rel=0.01)
    assert result["full_isic2019_cache_bytes"] == 25_331 * 64 * 64 * 3
    assert "cached/stock" in capsys.readouterr().out


def test_cpu_seconds_counts_this_process_like_process_time():
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system: cpu_seconds says None")
    import os
    import time

    before, reference = input_pipeline.cpu_seconds([os.getpid()]), time.process_time()
    while time.process_time() - reference < 0.3:  # busy, 0.3 s of this process's CPU time
        pass
    grown = input_pipeline.cpu_seconds([os.getpid()]) - before
    assert 0.25 <= grown <= 0.3 + 0.05  # /proc counts in clock ticks (usually 10 ms)
    assert input_pipeline.cpu_seconds([2**22 + 1]) is None  # above the largest pid Linux gives


def test_train_step_smoke_writes_its_table_as_json(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert train_step.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "train_step" and result["synthetic"] is True
    assert result["targets"] == {"resnet50_step_speedup": 4.5, "e2e_ratio": 0.8, "apply_to": "CUDA GPUs"}
    (row,) = result["models"]
    assert row["model"] == "resnet50"
    for key in ("seed_images_per_s", "skinlib_images_per_s", "step_speedup", "e2e_images_per_s",
                "e2e_ratio"):
        assert positive(row[key]), key
    assert len(row["e2e_cores"]) == 1
    assert "skinlib/seed" in capsys.readouterr().out


def test_bundle_smoke_writes_its_table_as_json(tmp_path, capsys):
    out = tmp_path / "bundle.json"
    assert bundle.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "bundle" and result["synthetic"] is True
    assert [row["set"] for row in result["sets"]] == list(bundle.SMOKE_SETS)
    for row in result["sets"]:
        for key in ("bundle_kb_per_image", "bundle_s", "restore_s", "open_s", "restore_ms_per_image"):
            assert positive(row[key]), key
        assert ("stock_images_per_s" in row) == (row["set"] not in bundle.NO_PIPELINE)
    expected = sum(row["bundle_kb_per_image"] * 1e3 * bundle.ISIC_2019_MIX[row["set"]] for row in result["sets"])
    assert result["full_isic2019_bundle_bytes"] == pytest.approx(expected)
    assert sum(bundle.ISIC_2019_MIX.values()) == 25_331
    assert "full ISIC 2019 bundle" in capsys.readouterr().out


def test_bundle_size_mix_counts_the_real_archives(real_csv_dir):
    import pandas as pd

    lesion = pd.read_csv(real_csv_dir / "ISIC_2019_Training_Metadata.csv")["lesion_id"].fillna("")
    assert bundle.ISIC_2019_MIX == {"600x450": int(lesion.str.startswith("HAM_").sum()),
                                    "1024x1024": int(lesion.str.startswith("BCN_").sum()),
                                    "4000x3000": int((~lesion.str.startswith(("HAM_", "BCN_"))).sum())}


@pytest.mark.slow
def test_device_check_smoke_runs_every_part_and_reports_them_in_one_json(tmp_path, capsys):
    """The one command for a GPU machine, at tiny sizes on the CPU, the notebooks left out:
    they are tools/run_notebooks.py, which tests/test_notebooks_meta.py runs, and take minutes."""
    from benchmarks import device_check

    out = tmp_path / "check.json"
    status = device_check.main(["--smoke", "--skip", "notebooks", "--device", "cpu", "--out", str(out)])
    result = json.loads(out.read_text())
    assert status == 0, result["rows"]
    assert result["benchmark"] == "device_check" and result["smoke"] and result["synthetic"]
    assert result["card"] == "no GPU (cpu)" and result["machine"]["torch"]
    assert list(result["part_seconds"]) == ["steps", "end_to_end", "course_epoch", "torchrun"]
    checks = {row["check"]: row for row in result["rows"]}
    assert not any(row.get("error") for row in result["rows"])
    targets = [row for row in result["rows"] if row["target"] is not None]
    assert [row["target"] for row in targets] == [4.5, 0.8]
    for row in targets:  # a CPU checks no target, but every ratio is computed
        assert positive(row["ratio"]) and row["verdict"] == "not checked (no GPU)"
    assert any(check.startswith("torchrun, 1 process") for check in checks)
    assert all(positive(row["value"]) for row in result["rows"])
    printed = capsys.readouterr().out
    assert "no GPU (cpu); torch " in printed and "verdict" in printed
