import sys

from elax.tickets.cli import main

if __name__ == "__main__":
    sys.exit(main())
