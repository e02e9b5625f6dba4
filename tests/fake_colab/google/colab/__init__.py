"""A stand-in for Colab's `google.colab` package, for tests only (tests/test_journey.py).

With this folder on a kernel's PYTHONPATH and `import google.colab` at kernel start, the
notebooks take their Colab branch; `drive.mount` links the mount point to the folder named
by $FAKE_DRIVE, which stands in for the student's Google Drive.
"""
