"""`python -m skinlib ...` runs the command line (see skinlib/cli.py)."""
import sys

from skinlib.cli import main

sys.exit(main())
