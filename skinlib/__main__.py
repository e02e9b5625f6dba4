"""`python -m skinlib ...` runs the command line (see skinlib/cli.py)."""
import sys

try:
    from skinlib.cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C while the libraries load, before main() can catch it
    print("interrupted", file=sys.stderr)
    sys.exit(130)
