"""skinlib.storage.folders: a file is replaced whole or not at all."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from skinlib.storage.atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from skinlib.storage.folders import LOCK, MARKER, FolderError, claim_folder
from unprivileged import as_user, give_to_user, user_folder  # noqa: F401 (user_folder: a fixture)


def test_atomic_write_text_replaces_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new ✓\n")
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_leftover(tmp_path, error):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"previous")

    def half_then_fail(f):
        f.write(b"half of the new con")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_atomic_write_names_the_file_not_its_temporary(tmp_path):
    missing = tmp_path / "missing" / "metrics.json"
    with pytest.raises(FileNotFoundError) as caught:
        atomic_write_text(missing, "{}")
    assert caught.value.filename == str(missing)
    (tmp_path / "metrics.json").mkdir()  # the user's folder where the kit's file belongs
    with pytest.raises(IsADirectoryError) as caught:
        atomic_write_text(tmp_path / "metrics.json", "{}")
    assert caught.value.filename == str(tmp_path / "metrics.json")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_atomic_write_gives_the_file_the_users_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.json", "{}\n")
        os.umask(0o002)
        atomic_write_text(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o664


def test_stale_temporaries_of_a_killed_write_are_found_and_removed(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    stale = tmp_path / ".checkpoint.pt.k2j3h4.tmp"  # what mkstemp left when the process was killed
    stale.write_bytes(b"half")
    (tmp_path / ".other.tmp").write_bytes(b"not ours")
    assert remove_stale_temporaries(checkpoint) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp"]


# ---------------------------------------------------------------- folder ownership
def test_a_new_folder_is_created_and_marked_with_the_kit_and_its_kind(tmp_path):
    folder = claim_folder(tmp_path / "new" / "cache", "cache")
    record = json.loads(folder.marker.read_text())
    assert folder.path.is_dir() and record["kit"] == "skinlib" and record["kind"] == "cache"
    assert record["files"] == []


def test_an_empty_folder_with_only_system_litter_is_claimed(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"mac")
    folder = claim_folder(tmp_path, "run")
    assert folder.marker.is_file() and (tmp_path / ".DS_Store").read_bytes() == b"mac"


def test_a_folder_with_user_files_is_refused_naming_it_and_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text("my own config")
    with pytest.raises(FolderError, match=rf"{tmp_path} holds files skinlib did not write \(config.json\).*"
                                          r"choose another --out, or move those files away"):
        claim_folder(tmp_path, "run", option="--out")
    assert (tmp_path / "config.json").read_text() == "my own config"
    assert not (tmp_path / MARKER).exists()


def test_a_file_is_refused_as_a_folder(tmp_path):
    path = tmp_path / "run"
    path.write_text("x")
    with pytest.raises(FolderError, match=r"run is a file, not a folder; choose another --out"):
        claim_folder(path, "run", option="--out")


def test_a_folder_of_another_kind_is_refused(tmp_path):
    claim_folder(tmp_path, "cache")
    with pytest.raises(FolderError, match=r"is a skinlib cache folder, not a run folder"):
        claim_folder(tmp_path, "run")


def test_a_damaged_marker_is_refused_not_trusted(tmp_path):
    (tmp_path / MARKER).write_text("{half")
    with pytest.raises(FolderError, match=rf"{MARKER}: not a readable skinlib folder marker"):
        claim_folder(tmp_path, "run")


def test_the_record_survives_and_only_recorded_files_are_removed(tmp_path):
    folder = claim_folder(tmp_path, "cache")
    folder.file("index-a.csv").write_text("kit")
    (tmp_path / "index-b.csv").write_text("planted by the user after the claim")
    again = claim_folder(tmp_path, "cache")  # a later command reads the record back
    assert again.files == {"index-a.csv"}
    assert again.remove("index-a.csv") and not (tmp_path / "index-a.csv").exists()
    assert not again.remove("index-b.csv") and (tmp_path / "index-b.csv").read_text().startswith("planted")
    assert json.loads(again.marker.read_text())["files"] == []
    assert again.unrecorded() == ["index-b.csv"]


def test_a_recorded_folder_is_removed_without_the_users_files_in_it(tmp_path):
    folder = claim_folder(tmp_path, "synthetic")
    folder.file("images/a.jpg").parent.mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"kit")
    folder.record("images")
    (tmp_path / "images" / "mine.jpg").write_bytes(b"user")
    folder.remove("images")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["mine.jpg"]


def test_names_outside_the_folder_cannot_be_recorded(tmp_path):
    folder = claim_folder(tmp_path, "run")
    for name in ("../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            folder.record(name)


def test_a_folder_without_write_permission_is_refused_in_one_line(user_folder):
    locked = user_folder / "ro"
    locked.mkdir(mode=0o555)
    give_to_user(locked)  # its owner, who is not root, may still not write into it
    claim = "import sys; from skinlib.storage.folders import claim_folder; claim_folder(sys.argv[1], 'run')"
    done = as_user(["-c", claim, locked], user_folder)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"skinlib.storage.folders.FolderError: {locked}: cannot write to this folder (Permission denied); "
        f"choose a folder you can write to")


def test_a_folder_that_cannot_be_created_is_refused_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match=r"cannot create or read this folder .*choose another --cache"):
        claim_folder(tmp_path / "file" / "cache", "cache", option="--cache")


# ---------------------------------------------------------------- locks
def test_a_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    folder = claim_folder(tmp_path, "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderError, match=rf"{tmp_path} is in use by another run \(it holds {LOCK}\)"):
            with folder.lock("another run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder.lock():  # the kernel released the dead holder's lock: nothing stale to clear
        pass


HOLD_LOCK = """
import sys, time
from skinlib.storage.folders import claim_folder
with claim_folder(sys.argv[1], "run").lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_recorded_folder_replaced_by_a_link_is_refused_and_nothing_behind_it_is_touched(tmp_path):
    folder = claim_folder(tmp_path / "set", "synthetic")
    (tmp_path / "set" / "images").mkdir()
    (tmp_path / "set" / "images" / "a.jpg").write_bytes(b"the kit's")
    folder.record("images", "images/a.jpg")
    mine = tmp_path / "my-pictures"
    mine.mkdir()
    (mine / "a.jpg").write_bytes(b"the user's")
    (tmp_path / "set" / "images").rename(tmp_path / "moved")
    (tmp_path / "set" / "images").symlink_to(mine)
    with pytest.raises(FolderError, match=r"set/images was a folder skinlib wrote and is now a link \(to "
                                          r".*my-pictures\); skinlib will not delete or write files through it"):
        claim_folder(tmp_path / "set", "synthetic")
    assert (mine / "a.jpg").read_bytes() == b"the user's"
