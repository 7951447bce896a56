"""`python -m accelerando` runs the command-line interface."""

import sys

from accelerando.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
