"""`python -m skinlib ...` runs the command line (see skinlib/cli.py)."""
import sys

try:
    from skinlib.cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C while the libraries load, before main() can catch it
    print("error: interrupted while starting; nothing was written: run the command again", file=sys.stderr)
    sys.exit(130)
