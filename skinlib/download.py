"""Download, verify and unpack the ISIC 2019 training data.

`python -m skinlib download DATA` fetches the three official files into DATA:

    DATA/ISIC_2019_Training_GroundTruth.csv   checked against its published SHA-256
    DATA/ISIC_2019_Training_Metadata.csv      checked against its published SHA-256
    DATA/ISIC_2019_Training_Input/*.jpg       from ISIC_2019_Training_Input.zip (about 9 GB)

The archive has no published checksum, so it is checked three other ways: its size must be
the one the server announced, every member's CRC-32 is checked while it is extracted, and
the images it holds must be exactly the ones the ground-truth CSV lists.

An interrupted download is kept as `NAME.part` and resumed with an HTTP Range request, both
within a run (a dropped connection is retried a few times with backoff) and across runs
(re-running the command continues where it stopped; a Colab runtime that disconnected loses
nothing already on disk). A finished run writes `skinlib-download.json`; a later run sees it,
re-checks the files and makes no request at all.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Mapping

import requests
import urllib3
from tqdm.auto import tqdm

from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, DataError
from skinlib.files import atomic_write_text

BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/"
ARCHIVE = IMAGES_DIR + ".zip"
MANIFEST = "skinlib-download.json"

# Published checksums of the two CSVs (the archive has none; see the module docstring).
SHA256 = {
    GROUND_TRUTH_CSV: "aa88e9638fe4df9ef330dc4ba22fa4bd475c44af692fffb870c73091ab25cdcd",
    METADATA_CSV: "d93994a8ed201d474de9a7af7e17ec30929cbc4a5220659ecbde17cbe83e9316",
}

# (connect, read) seconds: a stalled server fails fast instead of hanging a notebook cell.
TIMEOUT = (15.0, 60.0)
RETRIES = 5  # resumes after a dropped connection before giving up
BACKOFF = 2.0  # seconds before the first retry, doubled each time
CHUNK = 1 << 16
# HTTP statuses worth retrying: S3 answers these under load and they pass.
TRANSIENT_STATUS = {500, 502, 503, 504}


class DownloadError(DataError):
    """A download, checksum or archive problem; the message is one line naming the file or URL.

    A DataError, so `python -m skinlib` reports it as one line like any other bad-data error.
    """


class _Dropped(Exception):
    """The connection ended early or the server had a transient failure: retry, resuming."""


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
    data_dir = Path(data_dir).expanduser()
    hashes = dict(SHA256 if expected_sha256 is None else expected_sha256)
    if _already_done(data_dir, hashes):
        n = json.loads((data_dir / MANIFEST).read_text())["images"]
        print(f"{data_dir} already holds the verified ISIC 2019 download ({n:,} images); nothing to do.")
        return data_dir
    if data_dir.exists() and not data_dir.is_dir():
        raise DownloadError(f"{data_dir} exists and is not a folder")
    data_dir.mkdir(parents=True, exist_ok=True)

    fetch = _Fetcher(base_url, progress=progress, retries=retries, backoff=backoff, timeout=timeout)
    with fetch:
        for name in (GROUND_TRUTH_CSV, METADATA_CSV):
            _get_csv(fetch, data_dir / name, hashes.get(name))
        images = _read_image_ids(data_dir / GROUND_TRUTH_CSV)
        if not _images_in_place(data_dir / IMAGES_DIR, images):
            archive = data_dir / ARCHIVE
            if not archive.exists():
                # The zip and its extracted copy sit side by side for a moment.
                fetch.get(archive, space_factor=2.0)
            _extract(archive, data_dir, images, progress=progress)
            if not keep_archive:
                archive.unlink()

    _write_manifest(data_dir, hashes, len(images), base_url)
    print(f"ISIC 2019 is ready in {data_dir}: {len(images):,} images, both CSVs verified.")
    return data_dir


# --------------------------------------------------------------------------- HTTP


class _Fetcher:
    """Streams one URL into a `.part` file, resuming with Range after a dropped connection."""

    def __init__(self, base_url, *, progress, retries, backoff, timeout):
        self.base_url = base_url.rstrip("/") + "/"
        self.progress, self.retries, self.backoff, self.timeout = progress, retries, backoff, timeout
        self.session = requests.Session()
        # Byte offsets only mean something on the identity encoding.
        self.session.headers["Accept-Encoding"] = "identity"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()

    def get(self, dest: Path, space_factor: float = 1.0) -> None:
        """Download `dest.name` into `dest`; its length must match what the server announced."""
        url = self.base_url + dest.name
        part = dest.with_name(dest.name + ".part")
        for attempt in range(self.retries + 1):
            try:
                self._get_once(url, part, space_factor)
                break
            except (_Dropped, requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
                if attempt == self.retries:
                    kept = part.stat().st_size if part.exists() else 0
                    tries = f"{attempt + 1} tr{'y' if attempt == 0 else 'ies'}"
                    then = (f"{kept:,} bytes are kept in {part}: re-running the command resumes "
                            "from there" if kept else "re-running the command tries again")
                    raise DownloadError(f"{url}: {self._reason(exc)}; gave up after {tries}; {then}") from None
                time.sleep(self.backoff * 2**attempt)
        os.replace(part, dest)

    def _get_once(self, url: str, part: Path, space_factor: float) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            status = response.status_code
            if status == 416:  # nothing left after `have`: complete, or longer than the file
                total = _range_total(response.headers.get("Content-Range", ""))
                if total is None:  # not every server says the size in a 416: ask for it
                    total = self._length(url)
                if total == have:
                    return
                part.unlink()
                raise _Dropped(f"HTTP 416: the partial file ({have:,} bytes) does not fit; restarting")
            if status in TRANSIENT_STATUS:
                raise _Dropped(f"HTTP {status} {response.reason}")
            if status == 206:
                start, total = _parse_content_range(url, response.headers.get("Content-Range", ""))
                if start != have:  # the server resumed elsewhere: start over rather than guess
                    part.unlink()
                    raise _Dropped(f"server resumed at byte {start:,}, not {have:,}; restarting")
                mode = "ab"
            elif status == 200:  # no Range support (or first request): from byte zero
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                have, mode = 0, "wb"
            else:
                raise DownloadError(f"{url}: HTTP {status} {response.reason} (check the address or --base-url)")
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise DownloadError(f"{url}: the server sent it {encoding}-encoded; use a plain mirror")
            if total is not None:
                _check_space(part.parent, (total - have) + total * (space_factor - 1.0), url)
            with open(part, mode) as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not self.progress,
            ) as bar:
                # Raw bytes, not iter_content: with decoding on, urllib3 drops the bytes it
                # buffered when the connection breaks, and a resume must start at the last
                # byte actually written. Accept-Encoding: identity makes raw bytes the file.
                for chunk in response.raw.stream(CHUNK, decode_content=False):
                    out.write(chunk)
                    bar.update(len(chunk))
        size = part.stat().st_size
        if total is not None and size < total:
            raise _Dropped(f"connection closed at byte {size:,} of {total:,}")
        if total is not None and size > total:
            bad = _move_aside(part)
            raise DownloadError(
                f"{url}: received {size:,} bytes but the server announced {total:,}; "
                f"moved aside to {bad.name}, re-run to download it again"
            )


    def _reason(self, exc: BaseException) -> str:
        """A short human reason for a failed try (the library messages run to several lines)."""
        if isinstance(exc, _Dropped):
            return str(exc)
        if isinstance(exc, requests.ConnectTimeout):
            return f"no connection within {self.timeout[0]:g} s"
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)):
            return f"the server sent nothing for {self.timeout[1]:g} s"
        if isinstance(exc, requests.ConnectionError):
            inner = exc.args[0] if exc.args else exc
            inner = getattr(inner, "reason", inner)  # urllib3's MaxRetryError wraps the cause
            text = re.sub(r"<[^>]*>:?\s*", "", _one_line(inner))  # drop '<...Connection object at 0x..>'
            return f"cannot reach the server ({text})"
        return "the connection dropped"

    def _length(self, url: str) -> int | None:
        """The file's size from a HEAD request, or None when the server does not say."""
        response = self.session.head(url, timeout=self.timeout, allow_redirects=True)
        length = response.headers.get("Content-Length", "")
        return int(length) if response.ok and length.isdigit() else None


def _parse_content_range(url: str, value: str) -> tuple[int, int | None]:
    """'bytes START-END/TOTAL' -> (START, TOTAL or None when the server sends '*')."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not match:
        raise DownloadError(f"{url}: HTTP 206 with an unreadable Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _range_total(value: str) -> int | None:
    """The TOTAL of a 416's 'bytes */TOTAL', or None."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value)
    return int(match.group(1)) if match else None


def _check_space(folder: Path, needed: float, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(
            f"{url}: needs about {needed / 1e9:.1f} GB free in {folder}, only {free / 1e9:.1f} GB left"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- checks


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in blocks (a 9 GB file never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _move_aside(path: Path) -> Path:
    """Rename a file that failed a check to `NAME.bad` (NAME without `.part`), replacing an older one."""
    bad = path.with_name(path.name.removesuffix(".part") + ".bad")
    os.replace(path, bad)
    return bad


def _get_csv(fetch: _Fetcher, path: Path, expected: str | None) -> None:
    """Download one CSV unless a copy with the expected checksum is already there."""
    if path.exists():
        if expected is None or sha256_of(path) == expected:
            return
        _move_aside(path)  # a stale or edited copy: fetch a clean one
    fetch.get(path)
    if expected is not None:
        actual = sha256_of(path)
        if actual != expected:
            bad = _move_aside(path)
            raise DownloadError(
                f"{fetch.base_url + path.name}: SHA-256 {actual} does not match the published "
                f"{expected}; moved aside to {bad}, nothing extracted"
            )


def _read_image_ids(path: Path) -> list[str]:
    """The `image` column of the ground-truth CSV (already checksummed, so only read here)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        if not header or header[0].strip() != "image":
            raise DownloadError(f"{path}: the first column is not 'image'")
        return [row[0].strip() for row in rows if row]


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


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it would land outside the target folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        return None
    return path


def _extract(archive: Path, data_dir: Path, images: list[str], *, progress: bool) -> None:
    """Check the archive's members, then extract into a scratch folder and rename into place.

    Any failure moves the archive aside as `.bad` and leaves `data_dir/IMAGES_DIR` absent, so a
    re-run downloads a fresh copy instead of unpacking the same broken one again.
    """
    def fail(reason: str):
        bad = _move_aside(archive)
        return DownloadError(f"{archive}: {reason}; moved aside to {bad.name}, nothing extracted")

    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise fail(f"not a readable zip archive ({_one_line(exc)})") from None
    with zf:
        members = zf.infolist()
        for info in members:
            if _safe_member_path(info.filename) is None:
                raise fail(f"member {info.filename!r} would be written outside the target folder")
        prefix = IMAGES_DIR + "/"
        in_zip = {
            info.filename[len(prefix):-4]
            for info in members
            if info.filename.startswith(prefix) and info.filename.lower().endswith(".jpg")
            and "/" not in info.filename[len(prefix):]
        }
        listed = set(images)
        if in_zip != listed:
            missing, extra = sorted(listed - in_zip), sorted(in_zip - listed)
            detail = "; ".join(
                f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for what, names in (("missing", missing), ("not in the CSV", extra)) if names
            )
            raise fail(
                f"holds {len(in_zip):,} images under {prefix} but {GROUND_TRUTH_CSV} lists "
                f"{len(listed):,} ({detail})"
            )

        scratch = data_dir / ".extracting"
        shutil.rmtree(scratch, ignore_errors=True)  # leftovers of a run that was cut off
        scratch.mkdir()
        try:
            with tqdm(total=len(members), unit="file", desc=f"unpack {archive.name}",
                      disable=not progress) as bar:
                for info in members:
                    # ZipFile.extract reads through ZipExtFile, which raises BadZipFile on a
                    # CRC-32 mismatch at the end of each member: the integrity check is free.
                    zf.extract(info, scratch)
                    bar.update(1)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise fail(f"corrupt member ({_one_line(exc)})") from None
        except OSError as exc:  # disk full, permissions: the archive itself may be fine
            shutil.rmtree(scratch, ignore_errors=True)
            raise DownloadError(f"{archive}: extracting into {data_dir} failed ({_one_line(exc)})") from None

    # One rename publishes the folder, so a run cut off here never leaves half a folder behind.
    os.replace(scratch / IMAGES_DIR, data_dir / IMAGES_DIR)
    for leftover in scratch.iterdir():  # LICENSE / ATTRIBUTION at the archive's root, if any
        target = data_dir / leftover.name
        if not target.exists():
            os.replace(leftover, target)
    shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- manifest


def _write_manifest(data_dir: Path, hashes: Mapping[str, str], n_images: int, base_url: str) -> None:
    files = {}
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        path = data_dir / name
        files[name] = {"bytes": path.stat().st_size, "sha256": hashes.get(name) or sha256_of(path)}
    manifest = {"source": base_url, "files": files, "images_dir": IMAGES_DIR, "images": n_images}
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
            if sha256_of(path) != expected:  # 2.5 MB in all: cheap enough to re-check every run
                return False
        folder = data_dir / manifest["images_dir"]
        n = sum(1 for p in os.scandir(folder) if p.name.lower().endswith(".jpg"))
        return n == manifest["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------- command line


def register(subparsers) -> None:
    """Add `download` to the `python -m skinlib` command line."""
    parser = subparsers.add_parser(
        "download",
        help="download, verify and unpack the ISIC 2019 training data (about 9 GB)",
        description="Download ISIC 2019 (images, ground truth, metadata) into DATA, check every "
        "file and unpack the images. Re-running resumes an interrupted download; a finished "
        "one is only re-checked.",
    )
    parser.add_argument("data", type=Path, help="folder to fill (use local disk, e.g. /content/isic2019 in Colab)")
    parser.add_argument("--base-url", default=BASE_URL, help=f"where the three files live (default {BASE_URL})")
    parser.add_argument("--keep-archive", action="store_true", help="keep the 9 GB zip after unpacking it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    download_isic2019(
        args.data, base_url=args.base_url, progress=not args.no_progress, keep_archive=args.keep_archive
    )
    return 0
