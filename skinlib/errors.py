"""The one base of the errors that mean "bad input, a missing file, or a run that cannot go on".

Each is raised with a message that names the file (and row), option or address and says what
to do; the command line prints it as one `error: ...` line instead of a traceback. A bug is
anything else, and keeps its traceback.
"""
from __future__ import annotations


class SkinlibError(Exception):
    """Base of skinlib's expected errors (DataError, CheckpointError, NonFiniteLoss, ...)."""
