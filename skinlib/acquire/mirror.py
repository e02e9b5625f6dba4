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
from pathlib import Path

import requests
import urllib3

from skinlib.acquire.fetch import DownloadError, Fetcher, flat_message, move_aside, sha256_of
from skinlib.storage.atomic import atomic_write_text

MIRROR_MANIFEST = "skinlib-mirror.json"
FORMAT = "skinlib-mirror"


def mirror_hashes(manifest: dict) -> dict[str, str]:
    """File name -> SHA-256 from a mirror manifest (ValueError/KeyError/TypeError if malformed)."""
    if manifest.get("format") != FORMAT:
        raise ValueError(f"format is {manifest.get('format')!r}, not {FORMAT!r}")
    return {name: entry["sha256"] for name, entry in manifest["files"].items()}


def fetch_mirror_manifest(fetch: Fetcher, data_dir: Path) -> dict | None:
    """The mirror's manifest (also kept in `data_dir`), or None when the mirror has none."""
    url = fetch.base_url + MIRROR_MANIFEST
    try:
        response = fetch.session.get(url, timeout=fetch.timeout)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise DownloadError(f"{url}: {fetch.reason(exc)}") from None
    if response.status_code == 404:
        return None  # a plain copy of the official files: the published checksums apply
    try:
        response.raise_for_status()
        manifest = json.loads(response.content)
        mirror_hashes(manifest)
    except (requests.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DownloadError(f"{url}: not a readable mirror manifest ({flat_message(exc)})") from None
    atomic_write_text(data_dir / MIRROR_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    print(f"{fetch.base_url} is a SUBSET of ISIC 2019 ({manifest['images']:,} of {manifest['source_images']:,} "
          f"images, made by `skinlib subset`), not the official release: every file is checked against "
          f"the mirror's {MIRROR_MANIFEST}")
    return manifest


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
    actual = sha256_of(archive)
    if actual != expected:
        bad = move_aside(archive)
        raise DownloadError(f"{base_url}{archive.name}: SHA-256 {actual} does not match the mirror's "
                            f"{MIRROR_MANIFEST} ({expected}); moved aside to {bad.name}, nothing extracted")
