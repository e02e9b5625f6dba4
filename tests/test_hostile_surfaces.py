"""The newer surfaces against a hostile user: download again, servers that stall, trickle, redirect
and lie, mirror and bundle manifests of every wrong shape, archives that carry more than the
dataset, subset mirrors, two writers at once, kills, torchrun and the notebook builder.

Every case is refused (or handled) in one line naming the file, address or option and what to do,
and nothing that worked before is broken by it. data/README.md (section 7) lists each case with
the test that shows it. Servers run on 127.0.0.1; nothing trains.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from skinlib.acquire import download as dl
from skinlib.cli import main
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, load_index
from skinlib.acquire.fetch import DownloadError, Fetcher
from skinlib.storage.folders import claim_folder
from test_download import DATA, FAST, FakeMirror, _dataset, _hashes, _make_zip

ARCHIVE = dl.ARCHIVE


def one_line(err: BaseException | str) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@contextlib.contextmanager
def serving(routes: dict):
    """http://127.0.0.1:PORT/ serving `routes`: path -> bytes (200) or a function(handler)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes.get(self.path.lstrip("/"))
            try:
                if route is None:
                    self.send_error(404)
                elif callable(route):
                    route(self)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- download again, on a finished download
@pytest.fixture
def finished(tmp_path):
    """A finished download (from a mirror) in tmp_path/isic2019; yields (server, folder)."""
    server = FakeMirror(DATA)
    target = tmp_path / "isic2019"
    dl.download_isic2019(target, base_url=server.url, expected_sha256=_hashes(DATA), **FAST)
    yield server, target
    server.close()


def _csvs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (GROUND_TRUTH_CSV, METADATA_CSV)}


# Hashes that the folder's CSVs do not have: those of the official files after a mirror's download.
OTHER_HASHES = {GROUND_TRUTH_CSV: "a" * 64, METADATA_CSV: "b" * 64}


@pytest.mark.parametrize("address", ["offline", "mistyped_path", "answers_an_html_page"])
def test_download_again_that_fails_leaves_the_finished_download_working(finished, address):
    server, target = finished
    before = _csvs(target)
    page = b"<html>Sign in to the network</html>"
    with serving({name: page for name in (GROUND_TRUTH_CSV, METADATA_CSV)}) as portal:
        url = {"offline": f"http://127.0.0.1:{closed_port()}/", "mistyped_path": server.url + "typo/",
               "answers_an_html_page": portal}[address]
        with pytest.raises(DownloadError) as refused:
            dl.download_isic2019(target, base_url=url, **{**FAST, "retries": 0, "expected_sha256": OTHER_HASHES})
    one_line(refused.value)
    assert _csvs(target) == before  # the working CSVs stay where they were
    assert not list(target.glob("*.new")) and not list(target.glob("*.new.part"))
    assert len(load_index(target)) == 12  # `check` still reads the folder
    if address == "answers_an_html_page":
        assert "the copy already in the folder is kept" in str(refused.value)


def test_download_refused_for_another_mirrors_images_replaces_nothing(finished, tmp_path):
    _, target = finished
    before = _csvs(target)
    other = _dataset(10)
    server = FakeMirror(other)
    try:
        with pytest.raises(DownloadError, match=r"ISIC_2019_Training_Input exists but holds 10 of the 10 images "
                                                r"the ground truth lists and 2 it does not"):
            dl.download_isic2019(target, base_url=server.url, **{**FAST, "expected_sha256": _hashes(other)})
    finally:
        server.close()
    assert _csvs(target) == before
    assert not list(target.glob("*.new")) and not list(target.glob("*.bad"))
    assert len(load_index(target)) == 12


def test_a_second_download_into_a_folder_in_use_is_refused(finished):
    server, target = finished
    (target / dl.MANIFEST).unlink()  # so the second run has work to do
    with claim_folder(target, "download").lock("a download"):
        with pytest.raises(Exception, match=r"is in use by another download \(it holds .skinlib-lock\)") as refused:
            dl.download_isic2019(target, base_url=server.url, **{**FAST, "expected_sha256": _hashes(DATA)})
    one_line(refused.value)


# ---------------------------------------------------------------- servers that stall, trickle, redirect and lie
def _trickle(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(200):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.02)


def _redirect_to(location):
    def answer(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def _status(code, headers=()):
    def answer(handler):
        handler.send_response(code)
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def _short_body(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "5000")
    handler.end_headers()
    handler.wfile.write(b"y" * 100)
    handler.close_connection = True


def _gzip(handler):
    handler.send_response(200)
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", "4")
    handler.end_headers()
    handler.wfile.write(b"\x1f\x8b..")


def _stall(handler):
    time.sleep(1.5)


def _partial_to_a_fresh_request(handler, content_range="bytes 10-19/20"):
    handler.send_response(206)
    handler.send_header("Content-Range", content_range)
    handler.send_header("Content-Length", "10")
    handler.end_headers()
    handler.wfile.write(b"z" * 10)


SERVERS = {  # what the server does -> what the one line says
    "trickles_a_byte_at_a_time": (_trickle, r"the server sent only \d+ bytes in 0\.\d s \(too slow to finish\)"),
    "redirects_in_a_loop": (_redirect_to("/file"), r"the address redirects in a loop"),
    "redirects_to_ftp": (_redirect_to("ftp://127.0.0.1/file"), r"an address it cannot follow"),
    "redirects_to_a_missing_file": (_redirect_to("/gone"), r"HTTP 404 Not Found \(check the address"),
    "answers_403": (_status(403), r"HTTP 403 Forbidden"),
    "answers_500_every_time": (_status(500), r"HTTP 500 Internal Server Error; gave up after 2 tries"),
    "answers_503_every_time": (_status(503), r"HTTP 503 Service Unavailable; gave up after 2 tries"),
    "announces_more_than_it_sends": (_short_body, r"connection dropped \(closed at byte 100 of 5,000 the server "
                                                 r"announced\); gave up after 2 tries"),
    "sends_it_gzip_encoded": (_gzip, r"the server sent it gzip-encoded; use a plain mirror"),
    "stalls_before_answering": (_stall, r"the server sent nothing for 0\.5 s"),
    "answers_206_to_a_fresh_request_from_elsewhere": (_partial_to_a_fresh_request,
                                                      r"server resumed at byte 10, not 0; restarting; gave up after"),
    "answers_206_with_an_unreadable_range": (lambda h: _partial_to_a_fresh_request(h, "bytes ten"),
                                             r"HTTP 206 with an unreadable Content-Range 'bytes ten'"),
}


@pytest.mark.parametrize("behaviour", SERVERS)
def test_a_server_that_misbehaves_ends_in_one_line_and_no_file(tmp_path, behaviour):
    answer, message = SERVERS[behaviour]
    with serving({"file": answer}) as url:
        fetch = Fetcher(url, progress=False, retries=1, backoff=0.0, timeout=(1.0, 0.5), keep_partial=False)
        started = time.monotonic()
        with pytest.raises(DownloadError, match=message) as refused, fetch:
            fetch.get(tmp_path / "file")
    one_line(refused.value)
    assert time.monotonic() - started < 8  # never hangs
    assert not (tmp_path / "file").exists() and list(tmp_path.iterdir()) == []


def test_a_server_that_refuses_connections_says_it_cannot_be_reached(tmp_path):
    fetch = Fetcher(f"http://127.0.0.1:{closed_port()}/", progress=False, retries=0, backoff=0.0)
    with pytest.raises(DownloadError, match=r"cannot reach the server \(\[Errno 111\] Connection refused"):
        fetch.get(tmp_path / "file")


def test_a_trickling_download_from_the_command_line_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("skinlib.acquire.download.TIMEOUT", (1.0, 0.3))
    monkeypatch.setattr("skinlib.acquire.fetch.BACKOFF", 0.0)
    monkeypatch.setattr(dl.download_isic2019, "__kwdefaults__",
                        {**dl.download_isic2019.__kwdefaults__, "timeout": (1.0, 0.3), "retries": 0, "backoff": 0.0})
    with serving({"skinlib-mirror.json": _status(404), GROUND_TRUTH_CSV: _trickle}) as url:
        status = main(["download", str(tmp_path / "d"), "--base-url", url, "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and err.startswith("error: ") and "too slow to finish" in err


# ---------------------------------------------------------------- mirror manifests of every wrong shape
def _mirror_files(tmp_path) -> dict[str, bytes]:
    """A mirror's files (the FakeMirror data) and a valid manifest of them."""
    files = {name: DATA[name] for name in (GROUND_TRUTH_CSV, METADATA_CSV, ARCHIVE)}
    manifest = {"format": "skinlib-mirror", "version": 1, "subset": True, "images": 12, "source_images": 25331,
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in files.items()}}
    return files, manifest


def _drop(path):
    def change(manifest):
        *parents, last = path.split("/")
        node = manifest
        for key in parents:
            node = node[key]
        del node[last]
        return manifest
    return change


def _set(path, value):
    def change(manifest):
        *parents, last = path.split("/")
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value
        return manifest
    return change


MIRROR_MANIFESTS = {  # a change to a valid manifest (or its bytes) -> what the line says
    "not_json": (lambda m: b"<html>404</html>", r"Expecting value"),
    "empty": (lambda m: b"", r"Expecting value"),
    "a_json_list": (lambda m: [m], r"it holds a JSON list, not an object"),
    "a_json_string": (lambda m: "skinlib-mirror", r"it holds a JSON str, not an object"),
    "format_mistyped": (_set("format", "skinlib-mirorr"), r"format is 'skinlib-mirorr', not 'skinlib-mirror'"),
    "format_missing": (_drop("format"), r"format is None"),
    "files_missing": (_drop("files"), r"it lists no files"),
    "files_a_list": (_set("files", [GROUND_TRUTH_CSV]), r"it lists no files"),
    "files_empty": (_set("files", {}), r"it lists no files"),
    "an_entry_without_sha256": (_drop(f"files/{GROUND_TRUTH_CSV}/sha256"), rf"files/{GROUND_TRUTH_CSV} has no SHA-256"),
    "an_entry_a_string": (_set(f"files/{METADATA_CSV}", "abc"), rf"files/{METADATA_CSV} has no SHA-256"),
    "a_sha256_in_upper_case_or_short": (_set(f"files/{ARCHIVE}/sha256", "ABC123"), rf"files/{ARCHIVE} has no SHA-256"),
    "the_archive_not_listed": (_drop(f"files/{ARCHIVE}"), rf"files lacks {ARCHIVE}"),
    "a_csv_not_listed": (_drop(f"files/{GROUND_TRUTH_CSV}"), rf"files lacks {GROUND_TRUTH_CSV}"),
    "a_file_name_leaving_the_folder": (lambda m: {**m, "files": {**m["files"], "../.bashrc": {"sha256": "0" * 64}}},
                                       r"files lists '../.bashrc', which is not a file name"),
    "images_missing": (_drop("images"), r"images is None, not a number of images"),
    "images_a_string": (_set("images", "12"), r"images is '12', not a number of images"),
    "source_images_true": (_set("source_images", True), r"source_images is True, not a number of images"),
}


@pytest.mark.parametrize("shape", MIRROR_MANIFESTS)
def test_a_mirror_manifest_of_a_wrong_shape_is_one_line_and_nothing_is_fetched(tmp_path, shape):
    change, message = MIRROR_MANIFESTS[shape]
    files, manifest = _mirror_files(tmp_path)
    changed = change(manifest)
    body = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
    with serving({**files, "skinlib-mirror.json": body}) as url:
        with pytest.raises(DownloadError, match=rf"skinlib-mirror\.json: not a readable mirror manifest \(.*{message}"
                                                rf".*\); ask whoever serves the mirror") as refused:
            dl.download_isic2019(tmp_path / "d", base_url=url, progress=False, retries=0, backoff=0.0)
    one_line(refused.value)
    assert not (tmp_path / "d" / GROUND_TRUTH_CSV).exists() and not (tmp_path / "d" / IMAGES_DIR).exists()


def test_a_mirror_manifest_of_a_wrong_shape_from_the_command_line_is_one_error_line(tmp_path, capsys):
    files, manifest = _mirror_files(tmp_path)
    with serving({**files, "skinlib-mirror.json": json.dumps(_drop("images")(manifest)).encode()}) as url:
        status = main(["download", str(tmp_path / "d"), "--base-url", url, "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and err.startswith("error: ")


def test_a_redirect_loop_at_the_mirror_manifest_says_so(tmp_path):
    with serving({"skinlib-mirror.json": _redirect_to("/skinlib-mirror.json")}) as url:
        with pytest.raises(DownloadError, match=r"skinlib-mirror\.json: the address redirects in a loop"):
            dl.download_isic2019(tmp_path / "d", base_url=url, progress=False, retries=0, backoff=0.0)


# ---------------------------------------------------------------- archives carrying more than the dataset
EXTRAS = {".bashrc": b"rm -rf ~\n", "run_me.sh": b"#!/bin/sh\n", f"{IMAGES_DIR}/sub/evil.jpg": b"\xff\xd8",
"notes/readme.txt": b"hi", f"{IMAGES_DIR}/run_me.sh": b"x"}


def test_an_archive_unpacks_only_the_listed_images_and_notices(tmp_path, capsys):
    served = dict(DATA)
    served[ARCHIVE] = _make_zip({**DATA["members"], **EXTRAS})
    server = FakeMirror(served)
    try:
        dl.download_isic2019(tmp_path / "d", base_url=server.url, **{**FAST, "expected_sha256": _hashes(DATA)})
    finally:
        server.close()
    target = tmp_path / "d"
    for name in EXTRAS:
        assert not (target / name).exists(), name
    assert not (target / "notes").exists() and not (target / IMAGES_DIR / "sub").exists()
    assert sorted(p.name for p in (target / IMAGES_DIR).iterdir()) == sorted(
        Path(m).name for m in DATA["members"])
    assert f"also holds {len(EXTRAS)} file(s) that are no part of ISIC 2019's layout" in capsys.readouterr().out


# ---------------------------------------------------------------- course bundles of every wrong shape
from skinlib.acquire import bundle as bundle_module  # noqa: E402
from skinlib.acquire.bundle import BundleError, check_provenance, make_bundle, read_manifest, restore_bundle  # noqa: E402


def _bundle_manifest() -> dict:
    files = {name: {"bytes": len(DATA[name]), "sha256": hashlib.sha256(DATA[name]).hexdigest()}
             for name in (GROUND_TRUTH_CSV, METADATA_CSV)}
    return {"format": "skinlib-course-bundle", "version": 1, "dataset": "isic2019", "source_folder": "/content/x",
            "source_address": None, "images": 12, "size": 256, "quality": 90, "files": files,
            "created": "2026-12-08T00:00:00+0000"}


def _write_bundle(path: Path, manifest=None, *, leave_out=(), extra=None) -> Path:
    manifest = _bundle_manifest() if manifest is None else manifest
    members = {bundle_module.MANIFEST: manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode(),
               GROUND_TRUTH_CSV: DATA[GROUND_TRUTH_CSV], METADATA_CSV: DATA[METADATA_CSV],
               **{name: data for name, data in DATA["members"].items() if name.endswith(".jpg")}, **(extra or {})}
    path.write_bytes(_make_zip({name: data for name, data in members.items() if name not in leave_out}))
    return path


def test_a_well_formed_bundle_is_read(tmp_path):
    assert read_manifest(_write_bundle(tmp_path / "b.zip"))["images"] == 12


BUNDLES = {  # how the bundle is broken -> what the line says
    "manifest_not_json": (dict(manifest=b"{not json"), r"not a readable course bundle \(Expecting property name"),
    "manifest_empty": (dict(manifest=b""), r"not a readable course bundle \(Expecting value"),
    "manifest_a_list": (dict(manifest=[1]), r"not a skinlib-course-bundle \(its skinlib-bundle\.json says format \[1\]"),
    "format_mistyped": (dict(manifest={**_bundle_manifest(), "format": "skinlib-bundle"}),
                        r"not a skinlib-course-bundle \(its skinlib-bundle\.json says format 'skinlib-bundle'\)"),
    "format_version_2": (dict(manifest={**_bundle_manifest(), "version": 2}),
                         r"a course bundle of format version 2, and this skinlib reads version 1: install the "
                         r"skinlib that made it, or delete it and run notebook 00 again"),
    "format_version_a_string": (dict(manifest={**_bundle_manifest(), "version": "1"}), r"format version '1'"),
    "dataset_missing": (dict(manifest={k: v for k, v in _bundle_manifest().items() if k != "dataset"}),
                        r"its skinlib-bundle\.json lacks dataset"),
    "images_a_string": (dict(manifest={**_bundle_manifest(), "images": "12"}), r"lacks images \(or holds the wrong"),
    "size_missing": (dict(manifest={k: v for k, v in _bundle_manifest().items() if k != "size"}), r"lacks size"),
    "created_a_number": (dict(manifest={**_bundle_manifest(), "created": 2026}), r"lacks created"),
    "files_missing": (dict(manifest={k: v for k, v in _bundle_manifest().items() if k != "files"}),
                      r"lacks files, files/ISIC_2019_Training_GroundTruth\.csv"),
    "files_without_the_ground_truth": (dict(manifest={**_bundle_manifest(), "files": {}}),
                                       r"lacks files/ISIC_2019_Training_GroundTruth\.csv, files/ISIC_2019_Training_Metadata"),
    "a_sha256_that_is_a_number": (
        dict(manifest={**_bundle_manifest(), "files": {**_bundle_manifest()["files"], METADATA_CSV: {"sha256": 7}}}),
        r"lacks files/ISIC_2019_Training_Metadata\.csv"),
    "a_csv_with_another_sha256": (
        dict(manifest={**_bundle_manifest(), "files": {**_bundle_manifest()["files"],
                                                       METADATA_CSV: {"sha256": "0" * 64}}}),
        r"ISIC_2019_Training_Metadata\.csv has SHA-256 .* the data and its bundle do not belong together"),
    "images_count_wrong": (dict(manifest={**_bundle_manifest(), "images": 13}),
                           r"holds 12 images, its ground truth lists 12 and its manifest says 13"),
    "no_manifest_member": (dict(leave_out=(bundle_module.MANIFEST,)),
                           r"not a readable course bundle \(\"There is no item named 'skinlib-bundle\.json'"),
    "no_metadata_member": (dict(leave_out=(METADATA_CSV,)), r"There is no item named 'ISIC_2019_Training_Metadata"),
    "an_image_missing": (dict(leave_out=(f"{IMAGES_DIR}/ISIC_0000003.jpg",)), r"holds 11 images"),
    "an_image_in_a_subfolder": (dict(extra={f"{IMAGES_DIR}/sub/evil.jpg": b"\xff\xd8"}), r"holds 13 images"),
}


@pytest.mark.parametrize("broken", BUNDLES)
def test_a_broken_bundle_is_one_line_and_nothing_is_restored(tmp_path, broken):
    options, message = BUNDLES[broken]
    bundle = _write_bundle(tmp_path / "b.zip", **options)
    with pytest.raises(BundleError, match=message) as refused:
        restore_bundle(bundle, tmp_path / "data")
    assert one_line(refused.value).startswith(str(bundle))
    assert not (tmp_path / "data").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b.zip"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"<html>Drive quota exceeded</html>"],
                         ids=["an_empty_file", "a_zip_cut_short", "an_html_page"])
def test_a_bundle_file_that_is_not_a_zip_is_one_line(tmp_path, content):
    (tmp_path / "b.zip").write_bytes(content)
    with pytest.raises(BundleError, match=r"b\.zip: not a readable course bundle \(File is not a zip file\); "
                                          r"delete it and run notebook 00 again") as refused:
        read_manifest(tmp_path / "b.zip")
    one_line(refused.value)


def test_a_bundle_unpacks_only_what_a_bundle_holds(tmp_path, capsys):
    extra = {".bashrc": b"rm -rf ~\n", "run_me.sh": b"#!/bin/sh\n", "notes/x.txt": b"x",
             f"{IMAGES_DIR}/LICENSE.txt": b"x"}
    bundle = _write_bundle(tmp_path / "b.zip", extra=extra)
    restore_bundle(bundle, tmp_path / "data")
    for name in extra:
        assert not (tmp_path / "data" / name).exists(), name
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        [bundle_module.MANIFEST, GROUND_TRUTH_CSV, METADATA_CSV, IMAGES_DIR])
    assert "also holds 4 file(s) that are no part of a course bundle" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["{", "[]", json.dumps({"format": "skinlib-course-bundle", "version": 1})],
                         ids=["not_json", "a_json_list", "fields_missing"])
def test_a_restored_folder_with_a_damaged_manifest_is_one_line(tmp_path, content):
    restore_bundle(_write_bundle(tmp_path / "b.zip"), tmp_path / "data")
    (tmp_path / "data" / bundle_module.MANIFEST).write_text(content)
    with pytest.raises(BundleError, match=r"skinlib-bundle\.json: not a|skinlib-bundle\.json lacks") as refused:
        check_provenance(tmp_path / "data")
    one_line(refused.value)
    assert check_provenance(tmp_path / "data", quiet=True) is None


@pytest.mark.parametrize("errno_, words", [
    pytest.param(28, r"the disk \(or Drive\) is full \(No space left on device\); nothing was saved; free some space",
                 id="drive_full"),
    pytest.param(30, r"cannot be written \(Read-only file system\); nothing was saved; choose a folder you can write to",
                 id="drive_read_only"),
    pytest.param(122, r"the disk \(or Drive\) is full", id="drive_quota_exceeded")])
def test_a_full_or_read_only_drive_while_saving_the_bundle_names_the_bundle(synthetic_dir, synthetic_cache, tmp_path,
                                                                           monkeypatch, errno_, words):
    def refuse(path, write, **kwargs):
        raise OSError(errno_, os.strerror(errno_), str(path))

    monkeypatch.setattr(bundle_module, "atomic_write", refuse)
    target = tmp_path / "drive" / "isic2019-bundle.zip"
    with pytest.raises(BundleError, match=rf"{target}: {words}") as refused:
        make_bundle(synthetic_dir, synthetic_cache, target, dataset="synthetic", progress=False)
    one_line(refused.value)
    assert not target.exists()


def test_a_drive_folder_that_is_a_file_is_one_line(synthetic_dir, synthetic_cache, tmp_path):
    (tmp_path / "drive").write_text("not a folder")
    with pytest.raises(BundleError, match=r"drive/b\.zip: cannot be written \(File exists\)") as refused:
        make_bundle(synthetic_dir, synthetic_cache, tmp_path / "drive" / "b.zip", dataset="synthetic", progress=False)
    one_line(refused.value)


# ---------------------------------------------------------------- two writers at once
WRITER = """
import sys
from skinlib.storage.atomic import atomic_write
path, fill = sys.argv[1], sys.argv[2].encode()
for _ in range(40):
    atomic_write(path, lambda f: [f.write(fill * 65536) for _ in range(4)])
"""


def test_two_processes_writing_one_file_at_once_leave_one_whole_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), fill]) for fill in "ab"]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    assert target.read_bytes() in (b"a" * 262144, b"b" * 262144)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


BUNDLER = """
import sys
from skinlib.acquire.bundle import make_bundle
make_bundle(sys.argv[1], sys.argv[2], sys.argv[3], dataset="synthetic", progress=False)
"""


def test_two_runtimes_saving_the_bundle_to_one_drive_folder_at_once_leave_one_whole_bundle(tmp_path):
    from skinlib.storage.prepare import prepare
    from skinlib.acquire.synth import make_synthetic

    data = make_synthetic(tmp_path / "data", n=40, seed=0)
    prepare(data, tmp_path / "cache", size=64, workers=1, progress=False)
    target = tmp_path / "drive" / "synthetic-bundle.zip"
    runtimes = [subprocess.Popen([sys.executable, "-c", BUNDLER, str(data), str(tmp_path / "cache"), str(target)],
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(runtime.wait(timeout=300), runtime.stderr.read()) for runtime in runtimes]
    assert [status for status, _ in results] == [0, 0], results
    assert read_manifest(target)["images"] == 40  # whole: every CRC and the manifest check out
    with zipfile.ZipFile(target) as zf:
        assert zf.testzip() is None
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_stale_temporaries_are_removed_only_when_their_writer_is_gone(tmp_path, monkeypatch):
    from skinlib.storage import atomic

    target = tmp_path / "b.zip"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {"dead": f".b.zip.{atomic._HOST}.{dead.pid}.x1.tmp", "alive": f".b.zip.{atomic._HOST}.{os.getppid()}.x2.tmp",
             "other_machine": ".b.zip.colab-7f3a.1234.x3.tmp", "other_machine_idle": ".b.zip.colab-7f3a.99.x4.tmp",
             "not_ours": ".c.zip.host.1.x5.tmp"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    idle = time.time() - atomic.IDLE_LIMIT_S - 60
    os.utime(tmp_path / names["other_machine_idle"], (idle, idle))

    removed = atomic.remove_stale_temporaries(target, locked=False)

    assert sorted(p.name for p in removed) == sorted([names["dead"], names["other_machine_idle"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["alive"], names["other_machine"], names["not_ours"]])
    assert len(atomic.remove_stale_temporaries(target)) == 2  # under the folder's lock: every one is stale


KILLED_WRITER = """
import sys, time
from skinlib.storage.atomic import atomic_write
def write(f):
    f.write(b"half a model"); f.flush(); print("writing", flush=True); time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_a_model_file_half_written_by_a_killed_process_is_removed_by_the_next_export(tmp_path, monkeypatch):
    from skinlib.export import export_model, load_model
    from test_predict_outputs import TinyNet

    monkeypatch.setattr("skinlib.export.build_model", lambda name, num_classes, **_: TinyNet(num_classes))
    target = tmp_path / "model.pt"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert len(list(tmp_path.glob(".model.pt.*.tmp"))) == 1  # what a kill leaves

    export_model(target, TinyNet(), "resnet50", data={"fingerprint": "0" * 64})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert load_model(target).architecture == "resnet50"


def test_an_overlay_half_written_by_a_killed_predict_is_removed_by_the_next(tmp_path, capsys, monkeypatch):
    import dataclasses

    from skinlib.models import MODELS
    from test_predict_outputs import TinyNet, picture, tiny_model_file

    # the model file says resnet50; its registry entry builds the tiny network, Grad-CAM at its layer "0"
    monkeypatch.setitem(MODELS, "resnet50", dataclasses.replace(
        MODELS["resnet50"], build=lambda num_classes, **_: TinyNet(num_classes), model_class=TinyNet,
        gradcam_layer="0"))
    model = tiny_model_file(tmp_path / "model.pt", synthetic=False)
    image = picture(tmp_path / "in" / "a.jpg")
    cams = tmp_path / "cams"
    assert main(["predict", str(image), "--model", str(model), "--cam", str(cams), "--quiet", "--device", "cpu"]) == 0
    stale = cams / ".a_gradcam.png.host.424242.abc.tmp"  # a predict killed while saving this overlay
    stale.write_bytes(b"half a png")
    assert main(["predict", str(image), "--model", str(model), "--cam", str(cams), "--quiet", "--device", "cpu"]) == 0
    assert not stale.exists() and (cams / "a_gradcam.png").is_file()


# ---------------------------------------------------------------- notebook 00's data cell, run again
@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A stand-in Colab runtime (tests/fake_colab): local disk and Drive in tmp_path; a small
    SYNTHETIC set is what it fetches."""
    from skinlib import course
    from skinlib.acquire.synth import make_synthetic

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_colab"))
    monkeypatch.delitem(sys.modules, "google", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    import google.colab  # noqa: F401  (what makes course.in_colab() true)

    monkeypatch.setenv("SKINLIB_LOCAL_DISK", str(tmp_path / "content"))
    monkeypatch.setenv("FAKE_DRIVE", str(tmp_path / "drive"))
    monkeypatch.setenv("SKINLIB_DATASET", "synthetic")
    monkeypatch.delenv("SKINLIB_DATA", raising=False)
    monkeypatch.setattr(course, "make_synthetic", lambda folder, n, seed: make_synthetic(folder, n=40, seed=seed))
    yield course
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delitem(sys.modules, "google", raising=False)


def test_running_the_data_cell_twice_in_one_runtime_uses_its_own_download(colab, capsys):
    first = colab.get_data()
    assert (first.drive_dir / "synthetic-bundle.zip").is_file()
    capsys.readouterr()

    again = colab.get_data()  # the same runtime: the bundle it saved is on Drive, its data on local disk

    assert again.data_dir == first.data_dir and again.data_id == first.data_id
    assert "already holds the data of the course bundle" in capsys.readouterr().out


def test_a_mirror_other_than_the_bundles_source_is_named_not_ignored(colab, capsys):
    colab.get_data()
    capsys.readouterr()
    colab.get_data(mirror="https://mirror.example.edu/isic2019-subset/")
    out = capsys.readouterr().out
    assert ("note: the course bundle on Drive was made from data not downloaded by the kit, not from the mirror "
            "https://mirror.example.edu/isic2019-subset/; it is used as it is. To download from "
            "https://mirror.example.edu/isic2019-subset/ instead, delete ") in out


# ---------------------------------------------------------------- subset mirrors of data saved by other programs
from skinlib.acquire.subset import make_subset  # noqa: E402


@pytest.fixture
def sample_copy(real_sample_dir, tmp_path):
    """A copy of the 70-image real sample whose CSVs a test may rewrite."""
    copy = tmp_path / "data"
    shutil.copytree(real_sample_dir, copy)
    return copy


def _rewrite(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    rows = [line.split(",") for line in lines]
    path.write_bytes(change(rows))


def _columns_reversed(rows):
    return ("\n".join(",".join(reversed(row)) for row in rows) + "\n").encode()


def _image_column_second(rows):
    return ("\n".join(",".join([row[1], row[0], *row[2:]]) for row in rows) + "\n").encode()


def _crlf_and_bom(rows):
    return b"\xef\xbb\xbf" + ("\r\n".join(",".join(row) for row in rows) + "\r\n").encode()


def _quoted(rows):
    return ("\n".join(",".join(f'"{field}"' for field in row) for row in rows) + "\n").encode()


def _spaces_after_commas(rows):
    return ("\n".join(", ".join(row) for row in rows) + "\n").encode()


SAVED_BY = {"columns_in_reverse_order": _columns_reversed, "image_column_second": _image_column_second,
            "crlf_line_ends_and_a_byte_order_mark": _crlf_and_bom, "every_field_quoted": _quoted,
            "a_space_after_each_comma": _spaces_after_commas}


@pytest.mark.parametrize("csv_name", [GROUND_TRUTH_CSV, METADATA_CSV])
@pytest.mark.parametrize("saved_by", SAVED_BY)
def test_a_subset_reads_the_csvs_by_column_name_as_check_does(sample_copy, tmp_path, csv_name, saved_by, capsys):
    _rewrite(sample_copy / csv_name, SAVED_BY[saved_by])
    manifest = make_subset(sample_copy, tmp_path / "mirror", 0.5, seed=0)
    mirror = tmp_path / "mirror"
    with zipfile.ZipFile(mirror / ARCHIVE) as zf:
        zf.extractall(mirror / "unpacked")
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        shutil.copy(mirror / name, mirror / "unpacked" / name)
    served = load_index(mirror / "unpacked")  # the mirror reads as check reads it
    assert len(served) == manifest["images"] > 0
    original = load_index(sample_copy).set_index("image")
    assert (served.set_index("image")["label"] == original.loc[served["image"], "label"]).all()


def test_a_ground_truth_without_an_image_column_is_refused_before_anything_is_written(sample_copy, tmp_path):
    _rewrite(sample_copy / GROUND_TRUTH_CSV, lambda rows: ("\n".join(",".join(["name", *row[1:]]) for row in rows)
                                                         + "\n").encode())
    with pytest.raises(Exception, match=r"GroundTruth\.csv") as refused:
        make_subset(sample_copy, tmp_path / "mirror", 0.5)
    one_line(refused.value)
    assert not (tmp_path / "mirror").exists()


def test_a_folder_restored_from_a_course_bundle_is_not_published_as_the_official_images(sample_copy, tmp_path):
    (sample_copy / bundle_module.MANIFEST).write_text(json.dumps(_bundle_manifest()))
    with pytest.raises(Exception, match=r"data: was restored from a course bundle \(skinlib-bundle\.json\): its images "
                                        r"are 256-pixel JPEG copies, not the official files") as refused:
        make_subset(sample_copy, tmp_path / "mirror", 0.5)
    one_line(refused.value)
    assert not (tmp_path / "mirror").exists()


def test_a_fraction_that_leaves_a_mirror_too_small_to_train_on_is_warned_about(real_sample_dir, tmp_path, capsys):
    make_subset(real_sample_dir, tmp_path / "mirror", 0.1, seed=0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: the mirror keeps only ")
    assert "every student's run would fail; choose a larger --fraction than 0.1" in err


def test_a_fraction_that_leaves_enough_images_is_not_warned_about(real_sample_dir, tmp_path, capsys, monkeypatch):
    import functools

    from skinlib.config import TrainConfig

    # 70 images: a batch of 64 is too many for any split of them, so a student would pick 8
    monkeypatch.setattr("skinlib.config.TrainConfig", functools.partial(TrainConfig, batch_size=8))
    make_subset(real_sample_dir, tmp_path / "mirror", 1.0, seed=0)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- torchrun
RANK_OF_A_KILLED_TORCHRUN = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import time
from skinlib import distributed
with distributed.torchrun_session("cpu"):
    print("joined", flush=True)
    time.sleep(120)
'''])
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_processes_of_a_torchrun_killed_outright_end_with_it(tmp_path):
    from test_distributed import free_port
    from test_faults import _alive

    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    torchrun = subprocess.Popen([sys.executable, "-c", RANK_OF_A_KILLED_TORCHRUN], env=env, stdout=subprocess.PIPE,
                                text=True)
    rank = int(torchrun.stdout.readline())
    assert torchrun.stdout.readline().strip() == "joined"
    torchrun.send_signal(signal.SIGKILL)  # kill -9 of torchrun
    torchrun.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(rank):
        time.sleep(0.05)
    assert not _alive(rank)


# ---------------------------------------------------------------- a full disk at a checkpoint, SKINLIB_DATA a file
def test_a_full_disk_at_a_checkpoint_says_the_disk_is_full(tmp_path, monkeypatch):
    import torch

    from skinlib.storage import checkpoint

    def full(state, f):  # what torch's writer raises when write() fails for want of space
        f.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    (tmp_path / "checkpoint.pt").write_bytes(b"the previous one")
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint\.pt: the disk is full \(0 MB free in .*, the "
                                                         r"checkpoint needs about 4 MB\); free some space, then run "
                                                         r"the same command with --resume") as refused:
        checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", {"weights": torch.zeros(1_000_000)})
    assert "inline_container" not in one_line(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"the previous one"


def test_a_no_space_error_at_a_checkpoint_says_the_disk_is_full(tmp_path, monkeypatch):
    import errno

    import torch

    from skinlib.storage import checkpoint

    def full(state, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(checkpoint.CheckpointError, match=r"the disk is full"):
        checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", {"weights": torch.zeros(10)})


@pytest.mark.parametrize("name", [GROUND_TRUTH_CSV, "isic2019.zip"])
def test_skinlib_data_naming_a_file_says_it_is_a_file(tmp_path, monkeypatch, capsys, name):
    (tmp_path / name).write_text("image,MEL\n")
    monkeypatch.setenv("SKINLIB_DATA", str(tmp_path / name))
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1"]) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"error: SKINLIB_DATA={tmp_path / name}: is a file, not a folder; point it at the folder" in err
    assert (f"({tmp_path})" in err) == name.endswith(".csv")


# ---------------------------------------------------------------- the notebook builder and runner
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import build_notebooks  # noqa: E402  (tools/ is not a package)
import run_notebooks  # noqa: E402

REPO = "https://github.com/example/skin-lesion-kit"


def _source(tmp_path, monkeypatch, text: str) -> Path:
    monkeypatch.setattr(build_notebooks, "ROOT", tmp_path)
    source = tmp_path / "tools" / "notebook_src" / "99_hostile.py"
    source.parent.mkdir(parents=True)
    source.write_text(textwrap.dedent(text))
    return source


BROKEN_SOURCES = {  # a source -> what the one line says
    "plain_cell": ("# %%\nx = (1,\n", r"cell 0, line 1 of the cell: the solution version is not valid Python \('\(' was never closed\)"),
    "solution_region": ("# %%\ndef f():\n    # TODO: return one\n    ### BEGIN SOLUTION\n    return 1 +\n"
                        "    ### END SOLUTION\n", r"cell 0, line 4 of the cell: the solution version is not valid"),
    "student_version_only": ("# %%\nif True:\n    # TODO: nothing\n    ### BEGIN SOLUTION\n    x = 1\n"
                             "    ### END SOLUTION\n", r"an indented region must lie in a function's body"),
    "tab_and_space_indent": ("# %%\ndef f():\n\tx = 1\n        return x\n", r"not valid Python \(unindent|not valid "
                             r"Python \(inconsistent use of tabs"),
    "unclosed_string": ("# %%\nprint('hello)\n", r"not valid Python \(unterminated string literal"),
    "markdown_region_without_end": ("# %% [markdown]\n# Why?\n# ### BEGIN SOLUTION\n# Because.\n",
                                    r"### BEGIN SOLUTION without ### END SOLUTION"),
    "markdown_near_marker": ("# %% [markdown]\n# ### Begin Solution\n# Because.\n# ### END SOLUTION\n",
                             r"reads like a solution marker but is not one"),
}


@pytest.mark.parametrize("broken", BROKEN_SOURCES)
def test_a_source_that_cannot_run_is_refused_by_build_and_check(tmp_path, monkeypatch, broken):
    text, message = BROKEN_SOURCES[broken]
    source = _source(tmp_path, monkeypatch, text)
    for version in ("student", "solution"):
        with pytest.raises(build_notebooks.SourceError, match=message) as refused:
            build_notebooks.build(source, REPO, version)
        assert one_line(refused.value).startswith("tools/notebook_src/99_hostile.py, cell ")


def test_the_builder_from_the_command_line_refuses_a_syntax_error_in_one_line(tmp_path, monkeypatch, capsys):
    _source(tmp_path, monkeypatch, "# %%\nx = (1,\n")
    monkeypatch.setattr(build_notebooks, "SOURCES", tmp_path / "tools" / "notebook_src")
    monkeypatch.setattr(build_notebooks, "VERSIONS", {"student": tmp_path / "notebooks",
                                                      "solution": tmp_path / "solutions"})
    assert build_notebooks.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: tools/notebook_src/99_hostile.py, cell 0")


def test_magics_and_shell_lines_are_valid_cells(tmp_path, monkeypatch):
    source = _source(tmp_path, monkeypatch, "# %%\n# %matplotlib inline\n# !ls\nx = 1\n")
    assert build_notebooks.build(source, REPO, "student").cells[0].source.startswith("%matplotlib inline")


def test_a_written_answer_in_a_markdown_cell_stays_out_of_the_student_notebook(tmp_path, monkeypatch):
    source = _source(tmp_path, monkeypatch, """\
        # %% [markdown]
        # **Question.** Why is the validation loss higher?
        # ### BEGIN SOLUTION
        # Because the model overfits: SECRET ANSWER.
        # ### END SOLUTION
        # Next we train.
        """)
    student = build_notebooks.build(source, REPO, "student").cells[0].source
    solution = build_notebooks.build(source, REPO, "solution").cells[0].source
    assert "SECRET" not in student and "BEGIN SOLUTION" not in student and "END SOLUTION" not in student
    assert student.splitlines() == ["**Question.** Why is the validation loss higher?", "_Your answer here._",
                                    "Next we train."]
    assert "SECRET ANSWER" in solution and "### BEGIN SOLUTION" in solution


def test_a_cell_that_hangs_past_the_timeout_is_one_line_and_the_notebook_is_still_written(tmp_path, monkeypatch,
                                                                                            capsys):
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('before')"),
                                               nbformat.v4.new_code_cell("import time\ntime.sleep(60)"),
                                               nbformat.v4.new_code_cell("print('after')")])
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(notebook, notebooks / "00_hangs.ipynb")
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(run_notebooks, "_write_html", lambda notebook, path: None)

    status = run_notebooks.main(["--out", str(tmp_path / "out"), "--smoke", "--timeout", "3"])

    out, err = capsys.readouterr()
    assert status == 1 and "Traceback" not in out + err
    assert "    a cell ran longer than the timeout of 3 s (--timeout): import time" in out.splitlines()
    executed = nbformat.read(tmp_path / "out" / "00_hangs.ipynb", as_version=4)
    assert executed.cells[0].outputs[0].text == "before\n"  # written up to the cell that hung
    assert executed.cells[2].outputs == []


# ---------------------------------------------------------------- kills at every step
def test_a_download_killed_after_staging_a_verified_csv_finishes_offline(finished):
    _, target = finished
    good = (target / GROUND_TRUTH_CSV).read_bytes()
    (target / (GROUND_TRUTH_CSV + ".new")).write_bytes(good)  # staged and verified, then the run was killed
    (target / GROUND_TRUTH_CSV).write_bytes(b"image,MEL\nedited by hand\n")
    (target / dl.MANIFEST).unlink()
    dl.download_isic2019(target, base_url=f"http://127.0.0.1:{closed_port()}/",
                         **{**FAST, "retries": 0, "expected_sha256": _hashes(DATA)})
    assert (target / GROUND_TRUTH_CSV).read_bytes() == good
    assert (target / (GROUND_TRUTH_CSV + ".bad")).read_bytes() == b"image,MEL\nedited by hand\n"
    assert not (target / (GROUND_TRUTH_CSV + ".new")).exists()


def test_a_staged_copy_left_beside_a_good_csv_is_removed(finished):
    server, target = finished
    (target / (METADATA_CSV + ".new")).write_bytes(b"left by a killed run")
    (target / dl.MANIFEST).unlink()
    dl.download_isic2019(target, base_url=server.url, **{**FAST, "expected_sha256": _hashes(DATA)})
    assert not (target / (METADATA_CSV + ".new")).exists()


def test_a_download_killed_while_unpacking_is_finished_by_the_next_run(tmp_path):
    server = FakeMirror(DATA)
    target = tmp_path / "d"
    claim_folder(target, "download").record(*dl.KIT_NAMES)  # as the killed run had, before writing
    (target / ".extracting" / IMAGES_DIR).mkdir(parents=True)  # what a kill during extraction leaves
    (target / ".extracting" / IMAGES_DIR / "ISIC_0000000.jpg").write_bytes(b"half")
    try:
        dl.download_isic2019(target, base_url=server.url, **{**FAST, "expected_sha256": _hashes(DATA)})
    finally:
        server.close()
    assert not (target / ".extracting").exists() and len(load_index(target)) == 12


def test_a_restore_killed_half_way_is_redone_by_the_next(tmp_path):
    bundle = _write_bundle(tmp_path / "b.zip")
    scratch = tmp_path / ".data.restoring"  # what a kill during the restore leaves
    (scratch / "data" / IMAGES_DIR).mkdir(parents=True)
    (scratch / "b.zip").write_bytes(b"half a copy")
    restore_bundle(bundle, tmp_path / "data")
    assert not scratch.exists() and len(load_index(tmp_path / "data")) == 12


def test_a_subset_interrupted_while_writing_its_archive_is_replaced_by_the_next(real_sample_dir, tmp_path,
                                                                               monkeypatch):
    import skinlib.acquire.subset as subset_module

    real = subset_module.atomic_write

    def interrupted(path, write, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(subset_module, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_subset(real_sample_dir, tmp_path / "mirror", 0.5)
    monkeypatch.setattr(subset_module, "atomic_write", real)
    manifest = make_subset(real_sample_dir, tmp_path / "mirror", 0.5)
    assert manifest["files"][ARCHIVE]["bytes"] == (tmp_path / "mirror" / ARCHIVE).stat().st_size
    assert not list((tmp_path / "mirror").glob(".*.tmp"))


# ---------------------------------------------------------------- an instructor's read-only shared folders
from unprivileged import as_user, user_folder  # noqa: E402,F401  (user_folder is a fixture)

STUDENT = """
import sys
from skinlib.acquire import download
from skinlib.acquire import bundle
from skinlib.acquire import subset
from skinlib.cli import main
finished, shared_bundle, mine, empty = sys.argv[1:5]
download.download_isic2019(finished, base_url="http://127.0.0.1:9/", progress=False,
                           expected_sha256=dict(a.split("=") for a in sys.argv[5:]))
bundle.restore_bundle(shared_bundle, mine + "/restored")
print("restored", flush=True)
subset.make_subset(finished, mine + "/mirror", 1.0)
print("subset", flush=True)
sys.exit(main(["download", empty, "--no-progress"]))
"""


def test_a_student_reads_an_instructors_read_only_download_and_bundle_and_cannot_write_there(
        finished, user_folder, tmp_path):
    import tempfile

    _, target = finished
    shared = Path(tempfile.mkdtemp(prefix="skinlib-instructor-"))
    try:
        shutil.copytree(target, shared / "isic2019", symlinks=True)
        _write_bundle(shared / "isic2019-bundle.zip")
        (shared / "empty").mkdir()
        for path in [shared, *shared.rglob("*")]:  # the instructor's, readable by all, writable by none
            path.chmod(0o555 if path.is_dir() else 0o444)
        hashes = [f"{name}={sha}" for name, sha in _hashes(DATA).items()]
        result = as_user(["-c", STUDENT, shared / "isic2019", shared / "isic2019-bundle.zip", user_folder,
                          shared / "empty", *hashes], user_folder, timeout=300)
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(shared)
    assert "already holds the verified ISIC 2019 download (12 images); nothing to do" in result.stdout, result.stderr
    assert "restored" in result.stdout and "subset" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors == [f"error: {shared / 'empty'}: cannot write to this folder (Permission denied); choose a folder "
                      f"you can write to"], result.stderr


def test_restoring_over_a_restored_folder_whose_manifest_is_damaged_is_one_line(tmp_path):
    bundle = _write_bundle(tmp_path / "b.zip")
    restore_bundle(bundle, tmp_path / "data")
    (tmp_path / "data" / bundle_module.MANIFEST).write_text("{")
    with pytest.raises(BundleError, match=r"data exists and is not empty; move it away, then run the cell again"):
        restore_bundle(bundle, tmp_path / "data")


def _huge(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", str(4 << 20))
    handler.end_headers()
    for _ in range(64):
        handler.wfile.write(b" " * 65536)


MANIFEST_SERVERS = {
    "trickled": (_trickle, r"skinlib-mirror\.json: the server sent only \d+ bytes of the manifest in 0\.3 s \(too slow\)"),
    "gigabytes_in_its_place": (_huge, r"skinlib-mirror\.json: more than 1 MiB, not a mirror manifest; check --base-url"),
    "answers_500": (_status(500), r"skinlib-mirror\.json: not a readable mirror manifest \(500 Server Error"),
}


@pytest.mark.parametrize("behaviour", MANIFEST_SERVERS)
def test_a_mirror_manifest_that_trickles_or_floods_is_refused_not_waited_for(tmp_path, behaviour):
    answer, message = MANIFEST_SERVERS[behaviour]
    started = time.monotonic()
    with serving({"skinlib-mirror.json": answer}) as url:
        with pytest.raises(DownloadError, match=message) as refused:
            dl.download_isic2019(tmp_path / "d", base_url=url, progress=False, retries=0, backoff=0.0,
                                 timeout=(1.0, 0.3))
    one_line(refused.value)
    assert time.monotonic() - started < 8
