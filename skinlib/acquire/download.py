"""Download, verify and unpack the ISIC 2019 training data.

`python -m skinlib download DATA` fetches the three official files into DATA:

    DATA/ISIC_2019_Training_GroundTruth.csv   checked against its published SHA-256
    DATA/ISIC_2019_Training_Metadata.csv      checked against its published SHA-256
    DATA/ISIC_2019_Training_Input/*.jpg       from ISIC_2019_Training_Input.zip (about 9 GB)

From an instructor's subset mirror (`--base-url`, made by `skinlib subset`) it also fetches the
mirror's LICENSE.txt (the licence notice and the three citations), checked against the mirror's
manifest like every other file.

The archive has no published checksum, so it is checked three other ways: its size must be
the one the server announced, every member's CRC-32 is checked while it is extracted, and
the images it holds must be exactly the ones the ground-truth CSV lists.

An interrupted download is kept as `NAME.part` and resumed with an HTTP Range request, both
within a run (a dropped connection is retried a few times with backoff) and across runs
(re-running the command continues where it stopped; a Colab runtime that disconnected loses
nothing already on disk). A file already in the folder is replaced only by a verified copy, and
only once every check before the archive has passed: a re-run that fails (offline, a mistyped
address, another mirror's images) leaves a working folder working. A finished run writes `skinlib-download.json`; a later run sees it,
re-checks the files and makes no request at all.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit
from typing import Mapping

from skinlib.data import lines_by_image
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, DataError
from skinlib.acquire.fetch import BACKOFF, RETRIES, TIMEOUT, DownloadError, Fetcher, move_aside
from skinlib.storage.atomic import atomic_write_text, sha256_file
from skinlib.storage.folders import claim_folder, expand_home
from skinlib.layout import synthetic_image_ids
from skinlib.acquire.mirror import (MIRROR_MANIFEST, check_archive, fetch_mirror_manifest, mirror_hashes,
                            saved_mirror_manifest)
from skinlib.acquire.unpack import SCRATCH, extract

__all__ = ["BASE_URL", "ARCHIVE", "MANIFEST", "SHA256", "DownloadError", "download_isic2019"]

BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/"
ARCHIVE = IMAGES_DIR + ".zip"
MANIFEST = "skinlib-download.json"

# Published checksums of the two CSVs (the archive has none; see the module docstring).
SHA256 = {
    GROUND_TRUTH_CSV: "aa88e9638fe4df9ef330dc4ba22fa4bd475c44af692fffb870c73091ab25cdcd",
    METADATA_CSV: "d93994a8ed201d474de9a7af7e17ec30929cbc4a5220659ecbde17cbe83e9316",
}

ARCHIVE_ROOT_FILES = ("LICENSE.txt", "ATTRIBUTION.txt")  # what an archive may hold beside its folder
LICENSE = "LICENSE.txt"  # also what a subset mirror serves beside its files (skinlib.acquire.subset)
STAGED = ".new"  # a verified copy waiting to replace the file in the folder
# Every name a download writes in its folder (the archive's root may add LICENSE/ATTRIBUTION files).
KIT_NAMES = (GROUND_TRUTH_CSV, METADATA_CSV, IMAGES_DIR, ARCHIVE, MANIFEST, SCRATCH, MIRROR_MANIFEST,
             *ARCHIVE_ROOT_FILES,
             *(f"{name}{suffix}" for name in (GROUND_TRUTH_CSV, METADATA_CSV, ARCHIVE, LICENSE)
               for suffix in (".part", ".bad", STAGED, STAGED + ".part")))


def _check_base_url(base_url: str) -> None:
    """Refuse an address that is not http(s) before any request (a typo in the scheme)."""
    try:
        parts = urlsplit(base_url)
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"--base-url {base_url!r} is not an http:// or https:// address; "
                            f"check its spelling (default {BASE_URL})")


def download_isic2019(
    data_dir: str | os.PathLike,
    base_url: str = BASE_URL,
    progress: bool = True,
    *,
    expected_sha256: Mapping[str, str] | None = None,
    keep_archive: bool = False,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    timeout: tuple[float, float] = TIMEOUT,
) -> Path:
    """Fetch, verify and unpack ISIC 2019 into `data_dir`; returns `data_dir` as a Path.

    Safe to re-run: a finished download is only re-checked (no network), an interrupted
    one is resumed. `expected_sha256` maps a CSV name to its SHA-256 (default `SHA256`);
    `keep_archive=True` keeps the zip after extraction (it is deleted by default to save
    9 GB). Raises DownloadError with a one-line message.
    """
    data_dir = expand_home(data_dir)
    hashes = dict(SHA256 if expected_sha256 is None else expected_sha256)
    # A subset mirror's own manifest (skinlib.acquire.mirror); never at the official address.
    use_mirror_manifest = expected_sha256 is None and base_url.rstrip("/") != BASE_URL.rstrip("/")
    mirror = saved_mirror_manifest(data_dir, MANIFEST, base_url) if use_mirror_manifest else None
    if mirror is not None:
        hashes = mirror_hashes(mirror)
    if _already_done(data_dir, hashes):
        n = json.loads((data_dir / MANIFEST).read_text())["images"]
        what = "SUBSET of ISIC 2019" if mirror is not None else "ISIC 2019 download"
        print(f"{data_dir} already holds the verified {what} ({n:,} images); nothing to do.")
        return data_dir
    _check_base_url(base_url)
    folder = claim_folder(data_dir, "download", option="folder")
    folder.record(*KIT_NAMES)  # before anything is written: every name this download may use

    fetch = Fetcher(base_url, progress=progress, retries=retries, backoff=backoff, timeout=timeout)
    # Two downloads into one folder would append to the same NAME.part: the second is refused.
    with folder.lock("another download"), fetch:
        mirror = fetch_mirror_manifest(fetch, data_dir) if use_mirror_manifest else None
        if mirror is not None:
            hashes = mirror_hashes(mirror)
        if mirror is not None:
            against = f"the SHA-256 that the mirror's {MIRROR_MANIFEST} lists, {{expected}}"
        elif use_mirror_manifest:
            against = (f"the published {{expected}} (this address serves no {MIRROR_MANIFEST}, so the official "
                       f"checksums apply: is it a `skinlib subset` mirror served without its manifest?)")
        else:
            against = "the published {expected}"
        images = _fetch_files(fetch, data_dir, hashes, keep_archive=keep_archive, progress=progress,
                              against=against)

    _write_manifest(data_dir, hashes, len(images), base_url, subset=mirror is not None)
    what = "a SUBSET of ISIC 2019" if mirror is not None else "ISIC 2019"
    print(f"{what} is ready in {data_dir}: {len(images):,} images, both CSVs verified.")
    return data_dir


def _fetch_files(fetch: Fetcher, data_dir: Path, hashes: Mapping[str, str], *, keep_archive: bool,
                 progress: bool, against: str) -> list[str]:
    """Both CSVs checked (and a mirror's licence notice), then the images unpacked unless already
    in place; the image ids.

    A file already in the folder stays there until its replacement is verified and every check
    that can be made before the archive (synthetic ids, the images already unpacked) has passed:
    a run refused, offline or pointed at a mistyped address leaves a working folder working.
    """
    # A mirror's manifest lists the archive (the official archive has no checksum) and, when
    # `subset` made it, the licence notice with the three citations, which goes with the data.
    in_mirror = ARCHIVE in hashes
    names = (GROUND_TRUTH_CSV, METADATA_CSV, *([LICENSE] if LICENSE in hashes else []))
    ready = {}
    try:
        for name in names:
            ready[name] = _get_checked(fetch, data_dir / name, hashes.get(name), against)
        images = _read_image_ids(ready[GROUND_TRUTH_CSV])
        synthetic = synthetic_image_ids(images)
        if synthetic:  # a mirror of the kit's SYNTHETIC set: unpacked here, it would carry no SYNTHETIC.txt
            raise DownloadError(f"{fetch.base_url}{GROUND_TRUTH_CSV} lists {len(synthetic):,} of the kit's SYNTHETIC "
                                f"images ({synthetic[0]}, ...: ISIC 2019 has no such number), not ISIC 2019; nothing "
                                f"unpacked. For synthetic data run `python -m skinlib synth DATA`")
        in_place = _images_in_place(data_dir / IMAGES_DIR, images)
    except BaseException:
        for name, staged in ready.items():
            if staged != data_dir / name:
                staged.unlink(missing_ok=True)
        raise
    for name, staged in ready.items():  # every check passed: the verified copies take their places
        if staged != data_dir / name:
            if (data_dir / name).exists():
                move_aside(data_dir / name)  # the stale or edited copy, kept as NAME.bad
            os.replace(staged, data_dir / name)
    if not in_place:
        archive = data_dir / ARCHIVE
        if not archive.exists():
            # The zip and its extracted copy sit side by side for a moment.
            fetch.get(archive, space_factor=2.0)
        if in_mirror:
            check_archive(archive, hashes[ARCHIVE], fetch.base_url)
        extract(archive, data_dir, images, progress=progress)
        if not keep_archive:
            archive.unlink()
    return images


# --------------------------------------------------------------------------- checks


def _get_checked(fetch: Fetcher, path: Path, expected: str | None, against: str) -> Path:
    """`path` when it already has the expected checksum, else a verified fresh copy staged beside
    it as NAME.new (the caller puts it in place); `against` says where the expected checksum
    comes from ("{expected}" stands for it). A copy that fails the check becomes NAME.bad."""
    staged = path.with_name(path.name + STAGED)
    if path.exists() and (expected is None or sha256_file(path) == expected):
        staged.unlink(missing_ok=True)  # staged by a run killed before it put the copy in place
        return path
    if staged.exists() and expected is not None and sha256_file(staged) == expected:
        return staged  # verified by a run killed before it put it in place: no need to fetch it again
    fetch.download(fetch.base_url + path.name, staged)
    if expected is not None:
        actual = sha256_file(staged)
        if actual != expected:
            bad = path.with_name(path.name + ".bad")
            os.replace(staged, bad)
            raise DownloadError(f"{fetch.base_url + path.name}: SHA-256 {actual} does not match "
                                f"{against.format(expected=expected)}; moved aside to {bad}, nothing extracted"
                                + ("; the copy already in the folder is kept" if path.exists() else ""))
    return staged


def _read_image_ids(path: Path) -> list[str]:
    """The `image` column of the ground-truth CSV (already checksummed, so only read here)."""
    try:
        return [image for image, _ in lines_by_image(path.read_text(encoding="utf-8-sig"), str(path))[1]]
    except (DataError, UnicodeDecodeError) as exc:
        raise DownloadError(f"{path}: the ground truth cannot be read ({exc})") from None


def _images_in_place(folder: Path, images: list[str]) -> bool:
    """True when `folder` holds exactly the listed images (e.g. unpacked by an earlier run)."""
    if not folder.is_dir():
        return False
    present = {p.name[:-4] for p in os.scandir(folder) if p.name.lower().endswith(".jpg")}
    if present == set(images):
        return True
    listed = set(images)
    raise DownloadError(
        f"{folder} exists but holds {len(present & listed):,} of the {len(listed):,} images the "
        f"ground truth lists and {len(present - listed):,} it does not; move it away, then re-run"
    )


# --------------------------------------------------------------------------- manifest


def _write_manifest(data_dir: Path, hashes: Mapping[str, str], n_images: int, base_url: str, *,
                    subset: bool = False) -> None:
    files = {}
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        path = data_dir / name
        files[name] = {"bytes": path.stat().st_size, "sha256": hashes.get(name) or sha256_file(path)}
    manifest = {"source": base_url, "files": files, "images_dir": IMAGES_DIR, "images": n_images,
                "subset": subset}
    atomic_write_text(data_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _already_done(data_dir: Path, hashes: Mapping[str, str]) -> bool:
    """True when a manifest exists and the files still match it (no network needed)."""
    try:
        manifest = json.loads((data_dir / MANIFEST).read_text())
        for name, entry in manifest["files"].items():
            path = data_dir / name
            expected = hashes.get(name, entry["sha256"])
            if entry["sha256"] != expected or path.stat().st_size != entry["bytes"]:
                return False
            if sha256_file(path) != expected:  # 2.5 MB in all: cheap enough to re-check every run
                return False
        folder = data_dir / manifest["images_dir"]
        n = sum(1 for p in os.scandir(folder) if p.name.lower().endswith(".jpg"))
        return n == manifest["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
