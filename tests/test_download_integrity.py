"""What a download keeps: a file is kept only as long as the server announced, and a CSV already
on disk is re-hashed on every run, even when its size and the manifest still agree.

The servers are local (127.0.0.1); the data are the SYNTHETIC files of tests/test_download.py.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from skinlib.acquire.download import METADATA_CSV, DownloadError
from skinlib.acquire.fetch import Fetcher
from test_download import DATA, FakeMirror, _download

BODY = bytes(range(256)) * 4  # 1,024 bytes


class UnderAnnouncing:
    """Answers a Range request with 206 whose Content-Range announces 10 bytes fewer than it sends."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                start = int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY) - 10}")
                self.send_header("Content-Length", str(len(BODY) - start))
                self.end_headers()
                self.wfile.write(BODY[start:])

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/file.bin"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def under_announcing():
    server = UnderAnnouncing()
    yield server
    server.close()


def test_a_download_longer_than_the_server_announced_is_not_kept(under_announcing, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(BODY[:100])  # a resumed download
    with Fetcher(progress=False, retries=0, backoff=0.0, timeout=(2.0, 2.0)) as fetch:
        with pytest.raises(DownloadError, match=r"received 1,024 bytes but the server announced 1,014"):
            fetch.download(under_announcing.url, dest)
    assert not dest.exists() and not (tmp_path / "file.bin.part").exists()
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [BODY]  # moved aside, whole, for a look


def test_a_csv_edited_in_place_after_a_download_is_found_and_replaced(tmp_path, capsys):
    mirror = FakeMirror(DATA)
    try:
        _download(mirror, tmp_path)
        csv = tmp_path / METADATA_CSV
        edited = DATA[METADATA_CSV].replace(b"female", b"FEMALE", 1)  # same size: the manifest's bytes agree
        assert len(edited) == len(DATA[METADATA_CSV])
        csv.write_bytes(edited)
        capsys.readouterr()

        _download(mirror, tmp_path)

        assert "nothing to do" not in capsys.readouterr().out
        assert csv.read_bytes() == DATA[METADATA_CSV]
        assert mirror.requested(METADATA_CSV)[-1] is None  # fetched again, whole
    finally:
        mirror.close()

