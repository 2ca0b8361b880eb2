"""Generate brain slices from a trained run: ``python generate.py --help``. A thin wrapper over ``oasis_gen.cli.generate``."""

import sys

from oasis_gen.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
