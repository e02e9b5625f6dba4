"""Unpacking the ISIC 2019 image archive: every member checked before anything is written.

`extract` refuses an archive with a member that would land outside the target folder or with
images that are not exactly the ground truth's, checks every member's CRC-32 while unpacking
into a scratch folder, and publishes the images folder with one rename.
"""
from __future__ import annotations

import os
import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from skinlib.acquire.fetch import DownloadError, flat_message, move_aside
from skinlib.layout import GROUND_TRUTH_CSV, IMAGES_DIR

SCRATCH = ".extracting"  # the scratch folder, inside the data folder
# Besides the listed images, what the official archive holds (its notices, beside the images and at
# its root). Any other member (`.bashrc`, `run_me.sh`, `sub/evil.jpg`) is not unpacked.
NOTICES = ("LICENSE", "LICENSE.txt", "ATTRIBUTION.txt")
ROOT_NOTICES = ("LICENSE.txt", "ATTRIBUTION.txt")


def wanted_members(members: list[zipfile.ZipInfo], images: list[str]) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """(the members the dataset's layout defines: the listed images and the notices; the names of
    all others), so an archive cannot place anything else in the data folder."""
    known = {f"{IMAGES_DIR}/{image}.jpg" for image in images}
    known |= {f"{IMAGES_DIR}/{name}" for name in NOTICES} | set(ROOT_NOTICES) | {IMAGES_DIR + "/"}
    wanted, skipped = [], []
    for info in members:
        if info.filename in known:
            wanted.append(info)
        else:
            skipped.append(info.filename)
    return wanted, skipped


def safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it would land outside the target folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        return None
    return path


def members_problem(members: list[zipfile.ZipInfo], images: list[str]) -> str | None:
    """Why the archive's `members` cannot be unpacked (a path leaving the folder, images that
    are not the CSV's), or None."""
    for info in members:
        if safe_member_path(info.filename) is None:
            return f"member {info.filename!r} would be written outside the target folder"
    prefix = IMAGES_DIR + "/"
    in_zip = {
        info.filename[len(prefix):-4]
        for info in members
        if info.filename.startswith(prefix) and info.filename.lower().endswith(".jpg")
        and "/" not in info.filename[len(prefix):]
    }
    listed = set(images)
    if in_zip == listed:
        return None
    missing, extra = sorted(listed - in_zip), sorted(in_zip - listed)
    detail = "; ".join(
        f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for what, names in (("missing", missing), ("not in the CSV", extra)) if names
    )
    return f"holds {len(in_zip):,} images under {prefix} but {GROUND_TRUTH_CSV} lists {len(listed):,} ({detail})"


def extract(archive: Path, data_dir: Path, images: list[str], *, progress: bool) -> None:
    """Check the archive's members, then extract into a scratch folder and rename into place.

    Any failure moves the archive aside as `.bad` and leaves `data_dir/IMAGES_DIR` absent, so a
    re-run downloads a fresh copy instead of unpacking the same broken one again.
    """
    def fail(reason: str):
        bad = move_aside(archive)
        return DownloadError(f"{archive}: {reason}; moved aside to {bad.name}, nothing extracted")

    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise fail(f"not a readable zip archive ({flat_message(exc)})") from None
    with zf:
        members = zf.infolist()
        reason = members_problem(members, images)
        if reason is not None:
            raise fail(reason)

        members, skipped = wanted_members(members, images)
        if skipped:
            print(f"note: {archive.name} also holds {len(skipped):,} file(s) that are no part of ISIC 2019's "
                  f"layout (first: {skipped[0]!r}); not unpacked")
        scratch = data_dir / SCRATCH
        shutil.rmtree(scratch, ignore_errors=True)  # the kit's leftovers of a run that was cut off
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
            raise fail(f"corrupt member ({flat_message(exc)})") from None
        except OSError as exc:  # disk full, permissions: the archive itself may be fine
            shutil.rmtree(scratch, ignore_errors=True)
            raise DownloadError(f"{archive}: extracting into {data_dir} failed ({flat_message(exc)})") from None

    # One rename publishes the folder, so a run cut off here never leaves half a folder behind.
    os.replace(scratch / IMAGES_DIR, data_dir / IMAGES_DIR)
    for leftover in scratch.iterdir():  # LICENSE / ATTRIBUTION at the archive's root, if any
        target = data_dir / leftover.name
        if not target.exists():
            os.replace(leftover, target)
    shutil.rmtree(scratch, ignore_errors=True)
