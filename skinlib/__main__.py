"""`python -m skinlib ...` runs the command line (see skinlib/cli.py)."""
import contextlib
import sys

# An output that cannot encode a character the kit prints (the epoch line's arrow, an accented
# or undecodable file name; PYTHONIOENCODING=ascii, a Windows console) shows a replacement
# character instead of ending the command in a UnicodeEncodeError.
for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(AttributeError, ValueError):
        stream.reconfigure(errors="replace" if stream is sys.stdout else "backslashreplace")

try:
    from skinlib.cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C while the libraries load, before main() can catch it
    print("error: interrupted while starting; nothing was written: run the command again", file=sys.stderr)
    sys.exit(130)
