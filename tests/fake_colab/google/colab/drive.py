"""Stand-in for `google.colab.drive`: `mount(mountpoint)` links it to the folder $FAKE_DRIVE."""
import os
from pathlib import Path


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    target = Path(os.environ["FAKE_DRIVE"])
    (target / "MyDrive").mkdir(parents=True, exist_ok=True)
    link = Path(mountpoint)
    if link.is_symlink() and link.resolve() == target.resolve():
        print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, "
              "call drive.mount(\"/content/drive\", force_remount=True).")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    print(f"Mounted at {mountpoint}")
