"""The course's data cell in one call: `get_data()` finds, fetches or restores the data; and
`load_for_evaluation()`, which finds the models notebooks 02 and 03 saved, for notebooks 04 and 05.

In Colab every notebook runs on a fresh runtime whose local disk starts empty, so what a later
notebook needs is kept on Google Drive, in one folder (`MyDrive/skin-lesion-kit`):

    isic2019-bundle.zip          the course bundle (skinlib.acquire.bundle): both CSVs and the prepared
                                 256-pixel images, written once by the first notebook that runs
    runs/isic2019-<id>/...       results later notebooks read (02's SimpleCNN, 03's checkpoints),
                                 in a folder named after the data they were computed on

`get_data()` in Colab: mounts Drive (Colab asks the student's consent), then restores the
bundle to local disk if Drive has one; else downloads ISIC 2019 (`skinlib.acquire.download`, from an
instructor's mirror if one is given), prepares the images and saves the bundle to Drive.
Everything is read from local disk afterwards: training straight from Drive would be far too
slow. Outside Colab nothing changes: the folder in $SKINLIB_DATA, else the embedded SYNTHETIC
set, and results in `runs/`.

$SKINLIB_LOCAL_DISK names the runtime's local disk (default /content, Colab's); Drive is mounted
at its `drive/` folder. $SKINLIB_DATASET picks what a Colab runtime fetches: isic2019 (default)
or synthetic.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from skinlib.acquire.bundle import (MANIFEST, check_provenance, make_bundle, provenance_lines, read_manifest, restore_bundle,
                            sha256_bytes)
from skinlib.storage.prepare import prepare
from skinlib.data import GROUND_TRUTH_CSV, DataError
from skinlib.acquire.synth import default_data_dir, make_synthetic
from skinlib.layout import is_synthetic
import pandas as pd

from skinlib.config import TrainConfig
from skinlib.data import load_index
from skinlib.export import MODEL_FILE, ExportedModel, ModelFileError, data_fingerprint, load_model
from skinlib.loaders import make_loaders
from skinlib.models import MODELS
from skinlib.splits import grouped_split
from skinlib.storage.folders import cache_home
from skinlib.train import run

DRIVE_FOLDER = "skin-lesion-kit"
DATASETS = ("isic2019", "synthetic")
PREPARED = "skinlib-prepared"


@dataclass
class CourseData:
    """Where a notebook's data and results are. `cache_dir` is None when images are decoded
    on the fly (the small synthetic set outside Colab); `drive_dir` is None without Drive."""

    data_dir: Path
    cache_dir: Path | None
    results_dir: Path
    synthetic: bool
    drive_dir: Path | None
    data_id: str  # "<name>-<first 12 hex digits of the ground truth's SHA-256>"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def local_disk() -> Path:
    return Path(os.environ.get("SKINLIB_LOCAL_DISK") or "/content")


def mount_drive() -> Path:
    """Mount Google Drive (Colab asks for consent the first time); return the course's folder."""
    from google.colab import drive

    mountpoint = local_disk() / "drive"
    drive.mount(str(mountpoint))
    folder = mountpoint / "MyDrive" / DRIVE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def step(what: str):
    """Print how long the step in the `with` block took."""
    started = time.perf_counter()
    yield
    print(f"  {what}: {time.perf_counter() - started:.1f} s", flush=True)


def get_data(dataset: str | None = None, *, mirror: str | None = None, use_drive: bool = True) -> CourseData:
    """The data of the course for this runtime, fetched or restored as needed (module docstring).

    `dataset` is isic2019 or synthetic (default: $SKINLIB_DATASET, else isic2019); it only
    matters in Colab without $SKINLIB_DATA. `mirror` is a base address for `download` (an
    instructor's subset mirror); `use_drive=False` keeps everything on the runtime's disk.
    """
    drive_dir = mount_drive() if in_colab() and use_drive else None
    if drive_dir is not None:
        print(f"Google Drive: course files in {drive_dir}")
    if os.environ.get("SKINLIB_DATA") or not in_colab():
        data_dir = default_data_dir()  # $SKINLIB_DATA, else the embedded SYNTHETIC set
        synthetic = is_synthetic(data_dir)
        cache_dir = None if synthetic else _prepare(data_dir, _cache_root() / PREPARED)
        return _course_data(data_dir, cache_dir, drive_dir, synthetic, data_dir.name)

    name = dataset or os.environ.get("SKINLIB_DATASET") or "isic2019"
    if name not in DATASETS:
        raise DataError(f"dataset {name!r}: choose one of {', '.join(DATASETS)}")
    data_dir, cache_dir = local_disk() / name, local_disk() / PREPARED
    bundle = drive_dir / f"{name}-bundle.zip" if drive_dir is not None else None
    if bundle is not None and bundle.is_file():
        manifest = read_manifest(bundle)
        _say_if_mirror_differs(bundle, manifest, mirror)
        if _downloaded_here(data_dir, manifest):  # this runtime made the bundle: the cell runs again
            print(f"{data_dir} already holds the data of the course bundle {bundle} (fetched in this runtime)")
            _prepare(data_dir, cache_dir)
            return _course_data(data_dir, cache_dir, drive_dir, name == "synthetic", name)
        print(f"restoring the course bundle from Drive: {bundle}")
        print("\n".join(provenance_lines(manifest)))
        with step("restored to local disk"):
            restore_bundle(bundle, data_dir)
        _prepare(data_dir, cache_dir)
        return _course_data(data_dir, cache_dir, drive_dir, name == "synthetic", name, provenance_shown=True)
    print(f"no course bundle on Drive{'' if bundle is not None else ' (Drive not used)'}: "
          f"fetching {name} to local disk")
    _fetch(name, data_dir, mirror)
    _prepare(data_dir, cache_dir)
    if bundle is not None:
        with step("course bundle saved to Drive"):
            print(make_bundle(data_dir, cache_dir, bundle, dataset=name).format())
    return _course_data(data_dir, cache_dir, drive_dir, name == "synthetic", name)


def _downloaded_here(data_dir: Path, manifest: dict) -> bool:
    """Whether `data_dir` holds the download (or synthetic set) the bundle was made from: not a
    restored folder, and the same ground truth."""
    truth = data_dir / GROUND_TRUTH_CSV
    if (data_dir / MANIFEST).exists() or not truth.is_file():
        return False
    return sha256_bytes(truth.read_bytes()) == manifest["files"][GROUND_TRUTH_CSV]["sha256"]


def _say_if_mirror_differs(bundle: Path, manifest: dict, mirror: str | None) -> None:
    """A note when `mirror` is not where the bundle's data came from: the bundle wins, and how not to."""
    made_from = manifest.get("source_address")
    if mirror and (made_from or "").rstrip("/") != mirror.rstrip("/"):
        print(f"note: the course bundle on Drive was made from {made_from or 'data not downloaded by the kit'}, "
              f"not from the mirror {mirror}; it is used as it is. To download from {mirror} instead, delete "
              f"{bundle} and run this cell again")


def _fetch(name: str, data_dir: Path, mirror: str | None) -> None:
    with step("download and verify" if name == "isic2019" else "generate"):
        if name == "isic2019":
            from skinlib.acquire.download import BASE_URL, download_isic2019

            download_isic2019(data_dir, base_url=mirror or BASE_URL)
        elif not (is_synthetic(data_dir) and (data_dir / GROUND_TRUTH_CSV).is_file()):
            make_synthetic(data_dir, n=800, seed=0)
    size = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    print(f"  {data_dir}: {size / 1e9:.2f} GB on local disk")


def _prepare(data_dir: Path, cache_dir: Path) -> Path:
    with step("prepare (decode once into the image cache)"):
        print(prepare(data_dir, cache_dir).format())
    return cache_dir


def _cache_root() -> Path:
    if in_colab():
        return local_disk()
    return cache_home()


def _course_data(data_dir: Path, cache_dir: Path | None, drive_dir: Path | None, synthetic: bool,
                 name: str, provenance_shown: bool = False) -> CourseData:
    # prints the provenance (unless the restore above did); refuses CSVs that do not match
    manifest = check_provenance(data_dir, quiet=provenance_shown)
    truth = (manifest["files"][GROUND_TRUTH_CSV]["sha256"] if manifest
             else sha256_bytes((data_dir / GROUND_TRUTH_CSV).read_bytes()))
    data_id = f"{name}-{truth[:12]}"
    results = drive_dir / "runs" / data_id if drive_dir is not None else Path("runs")
    print(f"data: {data_dir}{' (SYNTHETIC)' if synthetic else ''}; results: {results}")
    return CourseData(data_dir, cache_dir, results, synthetic, drive_dir, data_id)


# ---------------------------------------------------------------- the course's saved models
def course_networks() -> dict[str, tuple[str, str, str]]:
    """The course's saved models, read from `models.MODELS` when called (a network registered in a
    notebook counts): name shown -> (architecture, run folder, the notebook that trains and saves it)."""
    return {network.title: (name, *network.course) for name, network in MODELS.items() if network.course}


def find_saved(folders, fingerprint: str, *, smoke: bool = False) -> ExportedModel | None:
    """The first FOLDER/model.pt among `folders` trained on the data of `fingerprint`; a file of
    other data (or another split), or in a full run (`smoke` False) one trained in smoke mode, is
    passed over, saying so: never used silently."""
    for folder in map(Path, folders):
        if (folder / MODEL_FILE).is_file():
            saved = load_model(folder / MODEL_FILE)
            if saved.data.get("fingerprint") != fingerprint:
                print(f"{folder / MODEL_FILE} was trained on other data or another split: not used")
            elif saved.smoke and not smoke:
                print(f"{folder / MODEL_FILE} was trained in SMOKE mode (a few batches): not used in a full run")
            else:
                print(f"{folder / MODEL_FILE}: {saved.architecture}, trained on this data and split"
                      f"{' in SMOKE mode' if saved.smoke else ''}")
                return saved
    return None


def course_models(results_dir, frame: pd.DataFrame, split: pd.Series, config, *,
                  smoke: bool) -> dict[str, ExportedModel]:
    """Notebook 02's SimpleCNN and notebook 03's ResNet-50 as those notebooks saved them in
    `results_dir` (on Drive in Colab), trained on these images with this split.

    A missing one is named with the notebook that makes it. In smoke mode a short stand-in is
    then trained (`config` with that architecture) into results_dir/stand-in-ARCHITECTURE, where
    the next notebook finds it; in full mode it is an error: that notebook is the long run.
    """
    fingerprint, models = data_fingerprint(frame, split), {}
    for name, (architecture, folder, notebook) in course_networks().items():
        stand_in = Path(results_dir) / f"stand-in-{architecture}"
        found = find_saved([Path(results_dir) / folder, *([stand_in] if smoke else [])], fingerprint, smoke=smoke)
        if found is None:
            where = Path(results_dir) / folder / MODEL_FILE
            if not smoke:
                raise ModelFileError(f"no {name} trained in full mode on this data at {where}: run {notebook} "
                                     f"first, not in smoke mode (it trains the model and saves it there)")
            print(f"no {name} of {notebook} for this data at {where} (run {notebook} to make it); "
                  f"SMOKE mode: training a short stand-in into {stand_in}")
            run(config.replace(model=architecture, out=str(stand_in)),
                resume=(stand_in / "checkpoint.pt").is_file())
            found = load_model(stand_in / MODEL_FILE)
        models[name] = found
    return models


@dataclass
class Evaluation:
    """What notebooks 04 and 05 start from: the course's lesion-grouped split of the data, its
    loaders, the config of their data (and of any stand-in) and the saved models by name."""

    frame: pd.DataFrame
    split: pd.Series
    config: TrainConfig
    loaders: dict
    models: dict[str, ExportedModel]


def load_for_evaluation(data, device, *, smoke: bool, pretrained: bool, batch_size: int) -> Evaluation:
    """The split, loaders and saved models (`course_models`) for `data`, a `course.get_data()`:
    its images (the prepared cache when it has one) and its results folder."""
    frame = load_index(data.data_dir)
    split = grouped_split(frame, seed=0)  # the split of every notebook
    config = TrainConfig(data=str(data.data_dir), out=str(Path(data.results_dir) / "stand-in"), model="resnet50",
                         batch_size=batch_size, epochs=1 if smoke else 25, max_batches=1 if smoke else None,
                         pretrained=pretrained, num_workers=0 if smoke else None,
                         cache=None if data.cache_dir is None else str(data.cache_dir))
    loaders = make_loaders(frame, split, config, device=device)
    models = course_models(data.results_dir, frame, split, config, smoke=smoke)
    return Evaluation(frame, split, config, loaders, models)
