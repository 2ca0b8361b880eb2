"""Train oasis_gen's models: ``python train.py --help``. A thin wrapper over ``oasis_gen.cli.train``."""

import sys

from oasis_gen.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
