"""`python -m elax.report`: the command line of `elax.report.cli`."""

import sys

from elax.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
