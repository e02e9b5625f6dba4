"""`download --base-url` from a subset mirror made by `skinlib subset`: checked against the
mirror's own manifest, announced as a subset; the official address keeps the official hashes."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading

import pytest

import skinlib.acquire.download as dl
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, load_index
from skinlib.acquire.subset import ARCHIVE, MIRROR_MANIFEST, make_subset


@pytest.fixture(scope="module")
def subset_folder(real_sample_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror") / "files"
    make_subset(real_sample_dir, folder, 0.5, seed=0)
    return folder


@contextlib.contextmanager
def serving(folder):
    """`folder` served at http://127.0.0.1:PORT/; yields (url, requested paths)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path.lstrip("/"))
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def served(subset_folder):
    """The mirror folder served at http://127.0.0.1:PORT/; yields (url, requested paths)."""
    with serving(subset_folder) as server:
        yield server


def test_a_mirror_of_the_synthetic_set_is_refused_before_its_images_are_fetched(synthetic_dir, tmp_path,
                                                                                 monkeypatch):
    # A mirror of synthetic images served by someone (`subset` refuses a synthetic set, so it is
    # told otherwise here): no SYNTHETIC.txt travels with it.
    monkeypatch.setattr("skinlib.acquire.subset.is_synthetic", lambda data_dir: False)
    make_subset(synthetic_dir, tmp_path / "mirror", 0.5, seed=0)
    with serving(tmp_path / "mirror") as (url, requests):
        with pytest.raises(dl.DownloadError, match=r"lists \d+ of the kit's SYNTHETIC images \(ISIC_9"):
            dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)
    assert ARCHIVE not in requests and not (tmp_path / "data" / IMAGES_DIR).exists()


def test_subset_mirror_is_verified_against_its_manifest_and_called_a_subset(served, subset_folder, tmp_path,
                                                                           capsys):
    url, requests = served
    data = dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)
    out = capsys.readouterr().out
    manifest = json.loads((subset_folder / MIRROR_MANIFEST).read_text())
    assert f"a SUBSET of ISIC 2019 ({manifest['images']} of {manifest['source_images']:,} images" in out
    assert "not the official release" in out
    assert len(load_index(data)) == manifest["images"]
    recorded = json.loads((data / dl.MANIFEST).read_text())
    assert recorded["subset"] is True and recorded["source"] == url
    assert requests.count(ARCHIVE) == 1
    # The licence notice and the three citations go with the data, as from the official archive.
    assert (data / "LICENSE.txt").read_bytes() == (subset_folder / "LICENSE.txt").read_bytes()
    assert "CC BY-NC 4.0" in (data / "LICENSE.txt").read_text()
    assert "LICENSE.txt" in json.loads((data / "skinlib-folder.json").read_text())["files"]


def test_a_csv_that_is_not_the_one_in_the_mirrors_manifest_names_the_manifest(subset_folder, tmp_path):
    edited = shutil.copytree(subset_folder, tmp_path / "edited")
    with open(edited / GROUND_TRUTH_CSV, "a", encoding="utf-8") as csv:
        csv.write("ISIC_0000000,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
    with serving(edited) as (url, _):
        with pytest.raises(dl.DownloadError, match=rf"{GROUND_TRUTH_CSV}: SHA-256 \w+ does not match the SHA-256 "
                                                   rf"that the mirror's {MIRROR_MANIFEST} lists"):
            dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)


def test_a_mirror_served_without_its_manifest_is_checked_against_the_official_hashes_and_says_so(
        subset_folder, tmp_path):
    bare = shutil.copytree(subset_folder, tmp_path / "bare")
    (bare / MIRROR_MANIFEST).unlink()
    with serving(bare) as (url, _):
        with pytest.raises(dl.DownloadError, match=rf"does not match the published \w+ \(this address serves no "
                                                   rf"{MIRROR_MANIFEST}, so the official checksums apply"):
            dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)


def test_a_finished_subset_download_is_rechecked_without_a_request(served, tmp_path):
    url, requests = served
    dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)
    before = len(requests)
    dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)
    assert len(requests) == before


def test_an_archive_that_is_not_the_one_in_the_mirrors_manifest_is_refused(served, subset_folder, tmp_path):
    url, _ = served
    manifest_path = subset_folder / MIRROR_MANIFEST
    original = manifest_path.read_text()
    manifest = json.loads(original)
    manifest["files"][ARCHIVE]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    try:
        with pytest.raises(dl.DownloadError, match=rf"{ARCHIVE}: SHA-256 .* does not match .*{MIRROR_MANIFEST}"):
            dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)
    finally:
        manifest_path.write_text(original)
    assert not (tmp_path / "data" / IMAGES_DIR).exists()


def test_the_official_address_ignores_a_mirror_manifest(served, tmp_path, monkeypatch):
    url, requests = served
    monkeypatch.setattr(dl, "BASE_URL", url)  # the server plays the official bucket
    with pytest.raises(dl.DownloadError, match=f"{GROUND_TRUTH_CSV}: SHA-256 .* does not match the published"):
        dl.download_isic2019(tmp_path / "data", base_url=url, progress=False)
    assert MIRROR_MANIFEST not in requests
