"""A mirror made by `python -m skinlib subset`: its checksum manifest, as `download` reads it.

An instructor's subset mirror holds `skinlib-mirror.json` beside the three files: the bytes and
SHA-256 of each (the archive included) and how many of ISIC 2019's images it keeps. When
`download --base-url` points anywhere but the official address, the manifest is fetched first
if the mirror has one; every file is then checked against it, and the download says plainly
that the data is a subset, not the official release. At the official address it is never
consulted: the published checksums guard the official files.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import requests
import urllib3

from skinlib.acquire.fetch import DownloadError, Fetcher, flat_message, move_aside
from skinlib.storage.atomic import atomic_write_text, sha256_file
from skinlib.layout import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV

MIRROR_MANIFEST = "skinlib-mirror.json"
FORMAT = "skinlib-mirror"
MAX_MANIFEST = 1 << 20  # a manifest lists four files: a few hundred bytes


def mirror_hashes(manifest) -> dict[str, str]:
    """File name -> SHA-256 from a mirror manifest; a ValueError saying what is wrong if malformed."""
    if not isinstance(manifest, dict):
        raise ValueError(f"it holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"format is {manifest.get('format')!r}, not {FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError("it lists no files")
    hashes = {}
    for name, entry in files.items():
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError(f"files/{name} has no SHA-256 (64 hex digits)")
        if name != Path(name).name or name in ("", ".", ".."):
            raise ValueError(f"files lists {name!r}, which is not a file name")
        hashes[name] = sha
    missing = [name for name in (GROUND_TRUTH_CSV, METADATA_CSV, IMAGES_DIR + ".zip") if name not in hashes]
    if missing:  # a file the manifest does not list would be taken unchecked
        raise ValueError(f"files lacks {', '.join(missing)}")
    for field in ("images", "source_images"):
        if not isinstance(manifest.get(field), int) or isinstance(manifest.get(field), bool):
            raise ValueError(f"{field} is {manifest.get(field)!r}, not a number of images")
    return hashes


def fetch_mirror_manifest(fetch: Fetcher, data_dir: Path) -> dict | None:
    """The mirror's manifest (also kept in `data_dir`), or None when the mirror has none."""
    url = fetch.base_url + MIRROR_MANIFEST
    try:
        with fetch.session.get(url, timeout=fetch.timeout, stream=True) as response:
            if response.status_code == 404:
                return None  # a plain copy of the official files: the published checksums apply
            response.raise_for_status()
            body = _small_body(response, url, fetch.timeout[1])
    except requests.HTTPError as exc:
        raise DownloadError(f"{url}: not a readable mirror manifest ({flat_message(exc)}); ask whoever "
                            f"serves the mirror to make it again with `python -m skinlib subset`") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise DownloadError(f"{url}: {fetch.reason(exc)}") from None
    try:
        manifest = json.loads(body)
        mirror_hashes(manifest)
    except ValueError as exc:
        raise DownloadError(f"{url}: not a readable mirror manifest ({flat_message(exc)}); ask whoever "
                            f"serves the mirror to make it again with `python -m skinlib subset`") from None
    atomic_write_text(data_dir / MIRROR_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    print(f"{fetch.base_url} is a SUBSET of ISIC 2019 ({manifest['images']:,} of {manifest['source_images']:,} "
          f"images, made by `skinlib subset`), not the official release: every file is checked against "
          f"the mirror's {MIRROR_MANIFEST}")
    return manifest


def _small_body(response, url: str, seconds: float) -> bytes:
    """The body of a manifest, read within `seconds` and at most MAX_MANIFEST bytes: a server that
    trickles it, or sends gigabytes in its place, is refused instead of waited for."""
    body, started = b"", time.monotonic()
    while chunk := response.raw.read1(1 << 16, decode_content=True):
        body += chunk
        if len(body) > MAX_MANIFEST:
            raise DownloadError(f"{url}: more than {MAX_MANIFEST // 1024 ** 2} MiB, not a mirror manifest; check "
                                f"--base-url")
        if time.monotonic() - started > seconds:
            raise DownloadError(f"{url}: the server sent only {len(body):,} bytes of the manifest in {seconds:g} s "
                                f"(too slow); try again later, or ask whoever serves the mirror")
    return body


def saved_mirror_manifest(data_dir: Path, download_manifest: str, base_url: str) -> dict | None:
    """The manifest kept by an earlier download from `base_url`, so that a re-run needs no request."""
    try:
        if json.loads((data_dir / download_manifest).read_text())["source"] != base_url:
            return None
        manifest = json.loads((data_dir / MIRROR_MANIFEST).read_text())
        mirror_hashes(manifest)
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_archive(archive: Path, expected: str, base_url: str) -> None:
    """The archive must have the SHA-256 the mirror's manifest lists; else it is moved aside."""
    actual = sha256_file(archive)
    if actual != expected:
        bad = move_aside(archive)
        raise DownloadError(f"{base_url}{archive.name}: SHA-256 {actual} does not match the mirror's "
                            f"{MIRROR_MANIFEST} ({expected}); moved aside to {bad.name}, nothing extracted")
