"""A course bundle: one file that carries a prepared dataset from one Colab runtime to the next.

Every Colab notebook starts on a fresh machine with an empty local disk. Downloading the 9 GB
of ISIC 2019 and decoding its large JPEGs again in every notebook would cost most of a lesson,
so notebook 00 does it once and saves a bundle to Google Drive; later notebooks copy the bundle
to local disk and unpack it (`restore_bundle`). A bundle is a zip archive, stored without
compression (JPEG data does not compress further):

    skinlib-bundle.json                   provenance: dataset, source folder and address, image
                                          count and size, both CSVs' bytes and SHA-256
    ISIC_2019_Training_GroundTruth.csv    the two CSVs, unchanged
    ISIC_2019_Training_Metadata.csv
    ISIC_2019_Training_Input/<image>.jpg  each image as `prepare` stored it (short side resized
                                          to 256, centre square), JPEG quality 90
    SYNTHETIC.txt                         only in a bundle of the synthetic set

So the unpacked folder has the ISIC 2019 layout and every notebook reads it as it reads the
download; its images are the 256-pixel copies that training uses anyway. The manifest stays in
the folder, so `python -m skinlib check` can say where the data came from, and a folder whose
CSVs no longer match it is refused (`check_provenance`).
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from skinlib.storage.atomic import atomic_write, remove_stale_temporaries
from skinlib.storage.cache import open_cache
from skinlib.data import lines_by_image
from skinlib.data import GROUND_TRUTH_CSV, IMAGE_SUFFIX, IMAGES_DIR, METADATA_CSV, DataError
from skinlib.layout import SYNTHETIC_MARKER

MANIFEST = "skinlib-bundle.json"
FORMAT = "skinlib-course-bundle"
VERSION = 1
QUALITY = 90
CSVS = (GROUND_TRUTH_CSV, METADATA_CSV)
# Files of the download that travel with the data: its manifest (provenance, subset or not)
# and the licence a subset mirror carries beside it.
PASSENGERS = ("skinlib-download.json", "LICENSE.txt", SYNTHETIC_MARKER)


class BundleError(DataError):
    """A bundle that is unreadable, incomplete, or does not match its CSVs; names the file."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _encode(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class BundleReport:
    """What `make_bundle` wrote."""

    path: Path
    n_images: int
    nbytes: int
    seconds: float

    def format(self) -> str:
        return (f"{self.path}: course bundle of {self.n_images:,} images, {self.nbytes / 1e6:,.1f} MB "
                f"({self.nbytes / max(self.n_images, 1) / 1e3:.1f} KB per image), written in "
                f"{self.seconds:.1f} s")


def make_bundle(data_dir: str | os.PathLike, cache_dir: str | os.PathLike, bundle: str | os.PathLike,
                *, dataset: str, quality: int = QUALITY, progress: bool = True) -> BundleReport:
    """Write the bundle of `data_dir` (ISIC 2019 layout) from its prepared cache `cache_dir`.

    The images come from the cache (already decoded and resized), so nothing is decoded twice.
    The bundle is written to a temporary file of this process and renamed when complete: a
    bundle on Drive is either whole or absent, even with two runtimes saving it at once. `dataset` names it in the manifest ("isic2019", "synthetic").
    """
    started = time.perf_counter()
    data_dir, bundle = Path(data_dir), Path(bundle)
    cache = open_cache(cache_dir)
    csv_bytes = {name: (data_dir / name).read_bytes() for name in CSVS}
    download = data_dir / "skinlib-download.json"
    manifest = {
        "format": FORMAT, "version": VERSION, "dataset": dataset,
        "source_folder": str(data_dir.resolve()),
        "source_address": json.loads(download.read_text()).get("source") if download.is_file() else None,
        "images": len(cache), "size": cache.size, "quality": quality,
        "files": {name: {"bytes": len(data), "sha256": sha256_bytes(data)} for name, data in csv_bytes.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cache.manifest.get("source") != str(data_dir.resolve()):
        raise BundleError(f"{cache_dir} was prepared from {cache.manifest.get('source')}, not {data_dir}; "
                          f"run `python -m skinlib prepare --data {data_dir} --cache {cache_dir}` first")
    names = cache.index["image"].tolist()

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
            for name, data in csv_bytes.items():
                zf.writestr(name, data)
            for name in PASSENGERS:
                if (data_dir / name).is_file():
                    zf.write(data_dir / name, name)
            pixels = cache.images()
            for row, name in enumerate(tqdm(names, desc="bundle", unit="img", disable=not progress)):
                zf.writestr(f"{IMAGES_DIR}/{name}{IMAGE_SUFFIX}", _encode(np.asarray(pixels[row]), quality))

    try:
        bundle.parent.mkdir(parents=True, exist_ok=True)
        # Two runtimes may save to one Drive folder at once: each writes its own temporary file and
        # renames it (skinlib.storage.atomic), so the bundle on Drive is always one whole bundle.
        remove_stale_temporaries(bundle, locked=False)
        atomic_write(bundle, write)
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        raise BundleError(f"{bundle}: {'the disk (or Drive) is full' if full else 'cannot be written'} "
                          f"({err.strerror or err}); nothing was saved"
                          + ("; free some space on it (a bundle of ISIC 2019 needs about 0.35 GB), then run the cell "
                             "again" if full else "; choose a folder you can write to")) from None
    return BundleReport(bundle, len(names), bundle.stat().st_size, time.perf_counter() - started)


def read_manifest(bundle: str | os.PathLike) -> dict:
    """The manifest of a bundle file, after checking that the bundle is complete and consistent.

    Reads only the zip's directory and the small members (CSVs, manifest): cheap even on Drive.
    Raises BundleError naming the file when the CSVs do not match the manifest or the images
    are not exactly the ones the ground truth lists.
    """
    bundle = Path(bundle)
    rebuild = "delete it and run notebook 00 again to rebuild it"
    try:
        with zipfile.ZipFile(bundle) as zf:
            manifest = json.loads(zf.read(MANIFEST))
            _check_manifest_shape(bundle, manifest, rebuild)
            csvs = {name: zf.read(name) for name in CSVS}
            members = {info.filename for info in zf.infolist()}
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{bundle}: not a readable course bundle ({flat(exc)}); {rebuild}") from None
    for name, data in csvs.items():
        _check_csv(bundle, name, data, manifest)
    listed = _image_ids(csvs[GROUND_TRUTH_CSV])
    present = {m[len(IMAGES_DIR) + 1:-len(IMAGE_SUFFIX)] for m in members
               if m.startswith(IMAGES_DIR + "/") and m.endswith(IMAGE_SUFFIX)}
    if present != set(listed) or len(listed) != manifest.get("images"):
        raise BundleError(f"{bundle}: holds {len(present):,} images, its ground truth lists {len(listed):,} and "
                          f"its manifest says {manifest.get('images')}; delete it and run notebook 00 again")
    return manifest


def flat(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# The manifest's fields and the type each must have (provenance_lines reads them all).
FIELDS = {"format": str, "version": int, "dataset": str, "source_folder": str, "images": int, "size": int,
          "quality": int, "files": dict, "created": str}


def _check_manifest_shape(where: Path, manifest, rebuild: str) -> None:
    """A BundleError naming `where` unless `manifest` is a version-VERSION manifest with every field."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: not a {FORMAT} (its {MANIFEST} says format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else manifest!r}); {rebuild}")
    if manifest.get("version") != VERSION:
        raise BundleError(f"{where}: a course bundle of format version {manifest.get('version')!r}, and this "
                          f"skinlib reads version {VERSION}: install the skinlib that made it, or {rebuild} "
                          f"with this one")
    wrong = [name for name, kind in FIELDS.items()
             if not isinstance(manifest.get(name), kind) or isinstance(manifest.get(name), bool)]
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    wrong += [f"files/{name}" for name in CSVS
              if not isinstance(files.get(name), dict) or not isinstance(files[name].get("sha256"), str)]
    if wrong:
        raise BundleError(f"{where}: its {MANIFEST} lacks {', '.join(wrong)} (or holds the wrong kind of "
                          f"value there); {rebuild}")


def _check_csv(where: Path, name: str, data: bytes, manifest: dict) -> None:
    expected = manifest.get("files", {}).get(name, {}).get("sha256")
    actual = sha256_bytes(data)
    if actual != expected:
        raise BundleError(f"{where}: {name} has SHA-256 {actual[:12]}..., the bundle's manifest says "
                          f"{str(expected)[:12]}...: the data and its bundle do not belong together")


def _image_ids(ground_truth: bytes) -> list[str]:
    return [image for image, _ in lines_by_image(ground_truth.decode("utf-8-sig"), GROUND_TRUTH_CSV)[1]]


def restore_bundle(bundle: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Copy `bundle` (e.g. on Drive) to local disk and unpack it into `data_dir`; return `data_dir`.

    A `data_dir` already restored from the same bundle is kept as it is. Any other non-empty
    `data_dir` is refused: the kit never writes into a folder it did not make. The bundle is
    checked first (`read_manifest`); every member's CRC-32 is checked while it is unpacked.
    Prints the time of each step.
    """
    bundle, data_dir = Path(bundle), Path(data_dir)
    manifest = read_manifest(bundle)
    if check_provenance(data_dir, quiet=True) == manifest:  # None for a damaged or missing manifest
        print(f"{data_dir} already holds this bundle's {manifest['images']:,} images")
        return data_dir
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BundleError(f"{data_dir} exists and is not empty; move it away, then run the cell again")
    scratch = data_dir.with_name(f".{data_dir.name}.restoring")
    shutil.rmtree(scratch, ignore_errors=True)  # a restore that was cut off (kit-named scratch)
    scratch.mkdir(parents=True)
    local = scratch / bundle.name
    try:
        started = time.perf_counter()
        shutil.copyfile(bundle, local)
        copied = time.perf_counter()
        print(f"copied {bundle} ({bundle.stat().st_size / 1e6:,.1f} MB) to local disk in {copied - started:.1f} s")
        with zipfile.ZipFile(local) as zf:
            wanted, skipped = _bundle_members(zf)
            zf.extractall(scratch / "data", members=wanted)  # raises BadZipFile on a CRC-32 mismatch
        if skipped:
            print(f"note: {bundle} also holds {len(skipped):,} file(s) that are no part of a course bundle "
                  f"(first: {skipped[0]!r}); not unpacked")
        print(f"unpacked {manifest['images']:,} images in {time.perf_counter() - copied:.1f} s")
        local.unlink()
        if data_dir.exists():
            data_dir.rmdir()  # empty, checked above
        os.replace(scratch / "data", data_dir)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{bundle}: restoring into {data_dir} failed ({exc})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return data_dir


def _bundle_members(zf: zipfile.ZipFile) -> tuple[list[str], list[str]]:
    """(the members a course bundle defines: its manifest, CSVs, passengers and the images its
    ground truth lists; every other member), so nothing else reaches the data folder."""
    listed = {f"{IMAGES_DIR}/{image}{IMAGE_SUFFIX}" for image in _image_ids(zf.read(GROUND_TRUTH_CSV))}
    known = {MANIFEST, *CSVS, *PASSENGERS} | listed
    wanted, skipped = [], []
    for name in zf.namelist():
        (wanted if name in known else skipped).append(name)
    return wanted, skipped


def check_provenance(data_dir: str | os.PathLike, *, quiet: bool = False) -> dict | None:
    """The bundle manifest of a restored folder (None for a folder not restored from a bundle).

    Raises BundleError when the folder's CSVs no longer match the manifest (with `quiet=True`
    returns None instead). Prints the provenance unless `quiet`.
    """
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        _check_manifest_shape(path, manifest, "move the folder away and restore the bundle again")
        for name in CSVS:
            _check_csv(data_dir, name, (data_dir / name).read_bytes(), manifest)
    except (BundleError, OSError, ValueError) as exc:
        if quiet:
            return None
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{path}: not a readable course bundle manifest ({flat(exc)}); move the folder "
                          f"away and restore the bundle again") from None
    if not quiet:
        print("\n".join(provenance_lines(manifest)))
    return manifest


def provenance_lines(manifest: dict) -> list[str]:
    """Where a bundle's data came from, in a few lines."""
    truth = manifest["files"][GROUND_TRUTH_CSV]["sha256"]
    address = manifest.get("source_address")
    return [f"course bundle ({manifest['dataset']}): {manifest['images']:,} images of "
            f"{manifest['size']}x{manifest['size']} (JPEG quality {manifest['quality']}), made {manifest['created']}",
            f"  from {manifest['source_folder']}" + (f", downloaded from {address}" if address else ""),
            f"  {GROUND_TRUTH_CSV} SHA-256 {truth}"]
