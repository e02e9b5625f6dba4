"""`skinlib.acquire.download` against a real HTTP server on 127.0.0.1 (no test touches the internet).

The server serves a small archive in the layout of the official one (tiny JPEGs under
ISIC_2019_Training_Input/, plus LICENSE.txt and ATTRIBUTION.txt) and CSVs that match it, and
can be told to cut a response half-way, answer an error status, ignore Range, or stall.
It records every request and counts the bytes it sent, so the tests can check what was
fetched, not just what ended up on disk.
"""
from __future__ import annotations

import ast
import hashlib
import io
import re
import shutil
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlib.acquire import download as dl
from skinlib.cli import main
from skinlib.data import CLASSES
from skinlib.storage.atomic import sha256_file
from skinlib.storage.folders import claim_folder
from skinlib.acquire.download import ARCHIVE, GROUND_TRUTH_CSV, IMAGES_DIR, MANIFEST, METADATA_CSV, DownloadError

FAST = dict(progress=False, backoff=0.0, timeout=(2.0, 2.0))


# --------------------------------------------------------------------------- the data served


def _jpeg(seed: int) -> bytes:
    """A small noisy JPEG (noise keeps it from compressing to nothing, so the zip has some size)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    # Stored, not deflated: a flipped byte then reaches the CRC check instead of the inflater.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _dataset(n: int = 12) -> dict[str, bytes]:
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    truth = ["image," + ",".join(CLASSES) + ",UNK"]
    meta = ["image,age_approx,anatom_site_general,lesion_id,sex"]
    for i, image in enumerate(ids):
        onehot = ["1.0" if c == i % len(CLASSES) else "0.0" for c in range(len(CLASSES))]
        truth.append(",".join([image, *onehot, "0.0"]))
        meta.append(f"{image},{30 + i},anterior torso,BCN_{i // 2:07d},female")
    members = {f"{IMAGES_DIR}/{image}.jpg": _jpeg(i) for i, image in enumerate(ids)}
    members[f"{IMAGES_DIR}/LICENSE.txt"] = b"CC BY-NC 4.0\n"
    members[f"{IMAGES_DIR}/ATTRIBUTION.txt"] = b"International Skin Imaging Collaboration\n"
    return {
        GROUND_TRUTH_CSV: ("\n".join(truth) + "\n").encode(),
        METADATA_CSV: ("\n".join(meta) + "\n").encode(),
        ARCHIVE: _make_zip(members),
        "members": members,  # not served: what the archive holds, for the tests to compare
    }


DATA = _dataset()


def _hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(files[name]).hexdigest() for name in (GROUND_TRUTH_CSV, METADATA_CSV)}


# --------------------------------------------------------------------------- the server


class FakeMirror:
    """Serves `files` at http://127.0.0.1:PORT/NAME, with switches for the faults under test."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self.sent: dict[str, int] = {}  # body bytes sent per name
        self.cut_at: dict[str, int] = {}  # name -> byte offset where the next response is cut
        self.status: dict[str, int] = {}  # name -> status to answer instead of the file
        self.ignore_range = False
        self.size_in_416 = True  # False: a 416 without Content-Range, as some servers send
        self.stall_s = 0.0
        self.lock = threading.Lock()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    mirror._serve(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test): nothing to answer

            def do_HEAD(self):
                with mirror.lock:
                    mirror.requests.append((self.path.removeprefix("/mirror/"), "HEAD"))
                data = mirror.files.get(self.path.removeprefix("/mirror/"))
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mirror/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def requested(self, name: str) -> list[str | None]:
        """The Range headers of the requests for `name`, in order (None: no Range; "HEAD")."""
        return [rng for n, rng in self.requests if n == name]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.removeprefix("/mirror/")
        rng = handler.headers.get("Range")
        with self.lock:
            self.requests.append((name, rng))
        if self.stall_s:
            time.sleep(self.stall_s)
        if name in self.status:
            handler.send_error(self.status[name])
            return
        if name not in self.files or name == "members":
            handler.send_error(404)
            return
        data = self.files[name]
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                handler.send_response(416)
                if self.size_in_416:
                    handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        end = len(data)
        with self.lock:
            if name in self.cut_at:
                end = self.cut_at.pop(name)  # one-shot: the retry gets the rest
        body = data[start:end]
        handler.wfile.write(body)
        handler.wfile.flush()
        with self.lock:
            self.sent[name] = self.sent.get(name, 0) + len(body)
        if end < len(data):
            handler.close_connection = True  # the socket closes before Content-Length is reached


@pytest.fixture
def mirror():
    server = FakeMirror(DATA)
    yield server
    server.close()


def _started(target: Path) -> Path:
    """`target` as a download leaves it once started: marked, every name it may write recorded
    (files planted there after stand for what an interrupted or earlier download left)."""
    claim_folder(target, "download").record(*dl.KIT_NAMES)
    return target


def _download(mirror: FakeMirror, target: Path, **kwargs) -> Path:
    options = {**FAST, "expected_sha256": _hashes(DATA), **kwargs}
    return dl.download_isic2019(target, base_url=mirror.url, **options)


def _image_files(target: Path) -> list[str]:
    folder = target / IMAGES_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- tests


def test_clean_download_puts_files_and_images_in_place(mirror, tmp_path):
    target = tmp_path / "isic2019"

    assert _download(mirror, target) == target

    assert (target / GROUND_TRUTH_CSV).read_bytes() == DATA[GROUND_TRUTH_CSV]
    assert (target / METADATA_CSV).read_bytes() == DATA[METADATA_CSV]
    for member, data in DATA["members"].items():
        assert (target / member).read_bytes() == data, member
    with Image.open(target / IMAGES_DIR / "ISIC_0000003.jpg") as image:
        assert image.size == (40, 40)
    assert not (target / ARCHIVE).exists()  # deleted after unpacking: 9 GB saved
    assert not list(target.glob("*.part")) and not (target / ".extracting").exists()
    assert (target / MANIFEST).is_file()


def test_keep_archive_keeps_the_zip(mirror, tmp_path):
    _download(mirror, tmp_path, keep_archive=True)

    assert (tmp_path / ARCHIVE).read_bytes() == DATA[ARCHIVE]


def test_dropped_connection_is_resumed_without_refetching_bytes(mirror, tmp_path):
    size = len(DATA[ARCHIVE])
    mirror.cut_at[ARCHIVE] = size // 2

    _download(mirror, tmp_path)

    assert mirror.requested(ARCHIVE) == [None, f"bytes={size // 2}-"]
    assert mirror.sent[ARCHIVE] == size  # half, then the other half: not 1.5x
    assert len(_image_files(tmp_path)) == len(DATA["members"])


def test_run_that_gives_up_says_rerunning_resumes_and_the_rerun_does(mirror, tmp_path):
    size = len(DATA[ARCHIVE])
    mirror.cut_at[ARCHIVE] = size // 3

    with pytest.raises(DownloadError, match="re-running the command resumes") as error:
        _download(mirror, tmp_path, retries=0)
    assert mirror.url + ARCHIVE in str(error.value)
    assert (tmp_path / (ARCHIVE + ".part")).stat().st_size == size // 3

    _download(mirror, tmp_path)

    assert mirror.requested(ARCHIVE) == [None, f"bytes={size // 3}-"]
    assert mirror.sent[ARCHIVE] == size
    assert len(_image_files(tmp_path)) == len(DATA["members"])


def test_server_ignoring_range_restarts_from_zero(mirror, tmp_path):
    _started(tmp_path)
    (tmp_path / (ARCHIVE + ".part")).write_bytes(b"x" * 1000)  # junk a 200 must overwrite
    mirror.ignore_range = True

    _download(mirror, tmp_path, keep_archive=True)

    assert mirror.requested(ARCHIVE) == ["bytes=1000-"]
    assert (tmp_path / ARCHIVE).read_bytes() == DATA[ARCHIVE]


def test_complete_part_file_answered_416_is_used_as_is(mirror, tmp_path):
    _started(tmp_path)
    (tmp_path / (ARCHIVE + ".part")).write_bytes(DATA[ARCHIVE])

    _download(mirror, tmp_path)

    assert mirror.requested(ARCHIVE) == [f"bytes={len(DATA[ARCHIVE])}-"]
    assert mirror.sent.get(ARCHIVE, 0) == 0
    assert len(_image_files(tmp_path)) == len(DATA["members"])


def test_416_without_a_size_asks_for_it_with_head(mirror, tmp_path):
    _started(tmp_path)
    (tmp_path / (ARCHIVE + ".part")).write_bytes(DATA[ARCHIVE])
    mirror.size_in_416 = False

    _download(mirror, tmp_path)

    assert mirror.requested(ARCHIVE) == [f"bytes={len(DATA[ARCHIVE])}-", "HEAD"]
    assert mirror.sent.get(ARCHIVE, 0) == 0
    assert len(_image_files(tmp_path)) == len(DATA["members"])


def test_part_file_longer_than_the_file_is_restarted_after_416(mirror, tmp_path):
    _started(tmp_path)
    (tmp_path / (ARCHIVE + ".part")).write_bytes(DATA[ARCHIVE] + b"trailing junk")

    _download(mirror, tmp_path, keep_archive=True)

    assert mirror.requested(ARCHIVE) == [f"bytes={len(DATA[ARCHIVE]) + 13}-", None]
    assert (tmp_path / ARCHIVE).read_bytes() == DATA[ARCHIVE]


def test_wrong_checksum_moves_the_file_aside_and_extracts_nothing(mirror, tmp_path):
    hashes = {**_hashes(DATA), GROUND_TRUTH_CSV: "0" * 64}

    with pytest.raises(DownloadError, match=f"{GROUND_TRUTH_CSV}: SHA-256 .* does not match") as error:
        _download(mirror, tmp_path, expected_sha256=hashes)

    assert "\n" not in str(error.value)
    assert (tmp_path / (GROUND_TRUTH_CSV + ".bad")).read_bytes() == DATA[GROUND_TRUTH_CSV]
    assert not (tmp_path / GROUND_TRUTH_CSV).exists()
    assert not (tmp_path / IMAGES_DIR).exists()
    assert mirror.requested(ARCHIVE) == []


def test_stale_csv_on_disk_is_replaced_by_a_verified_copy(mirror, tmp_path):
    _started(tmp_path)
    (tmp_path / METADATA_CSV).write_bytes(b"image,age_approx\nedited,1\n")

    _download(mirror, tmp_path)

    assert (tmp_path / METADATA_CSV).read_bytes() == DATA[METADATA_CSV]
    assert (tmp_path / (METADATA_CSV + ".bad")).read_bytes() == b"image,age_approx\nedited,1\n"


def test_too_little_disk_space_is_reported_before_writing(mirror, tmp_path, monkeypatch):
    real_usage = shutil.disk_usage

    def almost_full(path):
        total, used, _ = real_usage(path)
        return type(real_usage(path))(total, used, len(DATA[ARCHIVE]))  # room for the zip, not for both

    monkeypatch.setattr(shutil, "disk_usage", almost_full)

    with pytest.raises(DownloadError, match=r"ISIC_2019_Training_Input.zip: needs about .* GB free in"):
        _download(mirror, tmp_path)

    assert not (tmp_path / (ARCHIVE + ".part")).exists()


def test_default_checksums_are_the_published_ones():
    assert dl.SHA256 == {
        GROUND_TRUTH_CSV: "aa88e9638fe4df9ef330dc4ba22fa4bd475c44af692fffb870c73091ab25cdcd",
        METADATA_CSV: "d93994a8ed201d474de9a7af7e17ec30929cbc4a5220659ecbde17cbe83e9316",
    }


@pytest.mark.real_data
def test_default_checksums_match_the_real_csvs(real_csv_dir):
    for name, expected in dl.SHA256.items():
        assert sha256_file(real_csv_dir / name) == expected


def test_http_404_names_the_url(mirror, tmp_path):
    del mirror.files[METADATA_CSV]

    with pytest.raises(DownloadError, match="HTTP 404") as error:
        _download(mirror, tmp_path)

    assert mirror.url + METADATA_CSV in str(error.value)
    assert len(mirror.requested(METADATA_CSV)) == 1  # a 404 is final: no retries
    assert not (tmp_path / IMAGES_DIR).exists()


def test_http_500_is_retried_then_names_the_url(mirror, tmp_path):
    mirror.status[ARCHIVE] = 500

    with pytest.raises(DownloadError, match="HTTP 500 .* gave up after 3 tries") as error:
        _download(mirror, tmp_path, retries=2)

    assert mirror.url + ARCHIVE in str(error.value)
    assert len(mirror.requested(ARCHIVE)) == 3
    assert not (tmp_path / IMAGES_DIR).exists()


def test_stalled_server_times_out(mirror, tmp_path):
    mirror.stall_s = 3.0  # far longer than the 0.3 s read timeout, so a busy machine cannot blur the two
    started = time.monotonic()

    with pytest.raises(DownloadError, match="sent nothing for 0.3 s; gave up after 1 try") as error:
        _download(mirror, tmp_path, retries=0, timeout=(1.0, 0.3))

    assert mirror.url + GROUND_TRUTH_CSV in str(error.value)
    assert time.monotonic() - started < 2.5  # gave up without waiting for the server


@pytest.mark.parametrize("evil", ["../escaped.txt", "/tmp/skinlib-absolute.txt", f"{IMAGES_DIR}/../../up.txt"])
def test_member_leaving_the_target_folder_is_refused(mirror, tmp_path, evil):
    mirror.files[ARCHIVE] = _make_zip({**DATA["members"], evil: b"should never be written"})
    target = tmp_path / "deep" / "isic2019"

    with pytest.raises(DownloadError, match="outside the target folder"):
        _download(mirror, target)

    assert not (target / IMAGES_DIR).exists()
    assert not (target / ".extracting").exists()
    written = [p for p in tmp_path.rglob("*.txt")]
    assert written == []
    assert not Path("/tmp/skinlib-absolute.txt").exists()
    assert (target / (ARCHIVE + ".bad")).exists()


def test_image_count_not_matching_the_csv_is_an_error(mirror, tmp_path):
    members = dict(DATA["members"])
    del members[f"{IMAGES_DIR}/ISIC_0000005.jpg"]
    mirror.files[ARCHIVE] = _make_zip(members)

    with pytest.raises(DownloadError, match=r"holds 11 images .* lists 12 \(missing: ISIC_0000005\)"):
        _download(mirror, tmp_path)

    assert not (tmp_path / IMAGES_DIR).exists()
    assert (tmp_path / (ARCHIVE + ".bad")).exists()


def test_corrupt_member_fails_the_crc_check(mirror, tmp_path):
    archive = bytearray(DATA[ARCHIVE])
    image = DATA["members"][f"{IMAGES_DIR}/ISIC_0000004.jpg"]
    offset = bytes(archive).index(image) + len(image) // 2
    archive[offset] ^= 0xFF
    mirror.files[ARCHIVE] = bytes(archive)

    with pytest.raises(DownloadError, match="CRC"):
        _download(mirror, tmp_path)

    assert not (tmp_path / IMAGES_DIR).exists()
    assert not (tmp_path / ".extracting").exists()
    assert (tmp_path / (ARCHIVE + ".bad")).exists()


def test_archive_that_is_not_a_zip_is_an_error(mirror, tmp_path):
    mirror.files[ARCHIVE] = b"<html>Access denied</html>"

    with pytest.raises(DownloadError, match="not a readable zip"):
        _download(mirror, tmp_path)

    assert not (tmp_path / IMAGES_DIR).exists()


def test_second_run_checks_and_makes_no_request(mirror, tmp_path, capsys):
    _download(mirror, tmp_path)
    made = len(mirror.requests)

    _download(mirror, tmp_path)

    assert len(mirror.requests) == made
    assert "nothing to do" in capsys.readouterr().out


def test_second_run_after_an_image_was_deleted_is_an_error_not_a_silent_pass(mirror, tmp_path):
    _download(mirror, tmp_path)
    (tmp_path / IMAGES_DIR / "ISIC_0000002.jpg").unlink()

    with pytest.raises(DownloadError, match="holds 11 of the 12 images"):
        _download(mirror, tmp_path)


def test_command_line_downloads_with_base_url(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl, "SHA256", _hashes(DATA))
    argv = ["download", str(tmp_path / "d"), "--base-url", mirror.url, "--no-progress"]

    assert main(argv) == 0

    assert len(_image_files(tmp_path / "d")) == len(DATA["members"])
    assert "ISIC 2019 is ready" in capsys.readouterr().out


def test_command_line_reports_a_failed_download_on_one_line(mirror, tmp_path, capsys):
    del mirror.files[GROUND_TRUTH_CSV]

    assert main(["download", str(tmp_path), "--base-url", mirror.url, "--no-progress"]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"{mirror.url}{GROUND_TRUTH_CSV}: HTTP 404" in err


def test_every_test_named_in_the_data_readme_exists():
    """data/README.md's bad-input table points at tests; a renamed test must not leave it stale."""
    root = Path(__file__).resolve().parent.parent
    named = set(re.findall(r"(tests/test_\w+\.py)::(test_\w+)", (root / "data" / "README.md").read_text()))
    assert len(named) > 40
    defined, literals = {}, {}
    for file in {f for f, _ in named}:
        tree = ast.parse((root / file).read_text())
        defined[file] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        literals[file] = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert sorted(f"{f}::{t}" for f, t in named if t not in defined[f]) == []
    # a case of a table-driven test, `test_x[case]`, names a function of that file (a @case), or a
    # key of its table or a pytest.param id, written in that file
    cases = set(re.findall(r"(tests/test_\w+\.py)::test_\w+\[(\w+)\]", (root / "data" / "README.md").read_text()))
    assert sorted(f"{f}[{c}]" for f, c in cases if c not in defined[f] | literals[f]) == []
