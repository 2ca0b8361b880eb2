"""``python -m oasis_gen.cli.figures --run_dir R --data DIR``: the README's figures of a run.

Writes data.png, reconstructions.png, code_maps.png, vqvae_curves.png, prior_curves.png and
samples.png (each when the run has the stages it needs) into ``--out`` (default ``R/figures``). A
folder that already holds PNG files is refused unless ``--overwrite`` is given, so the README's own
``images/`` is replaced only on purpose.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from oasis_gen import rundir
from oasis_gen.cli.console import plain, program_name, quiet_tensorflow
from oasis_gen.data.slices import DataError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m oasis_gen.cli.figures"), description=plain(__doc__.split("\n\n")[0]),
                                     epilog=plain(__doc__.split("\n\n", 1)[1]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="a run directory made by train.py")
    parser.add_argument("--data", required=True, help="the data folder whose slices are shown")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/figures)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNG files already in --out")
    parser.add_argument("--num_samples", type=int, default=8, help="generated slices in samples.png (default: 8)")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rundir.open_run(args.run_dir, None, {}, create=False)  # a wrong path is named before TensorFlow loads
        out = args.out or os.path.join(args.run_dir, "figures")
        existing = sorted(n for n in os.listdir(out) if n.endswith(".png")) if os.path.isdir(out) else []
        if existing and not args.overwrite:
            raise ValueError(f"{out} already holds {len(existing)} figures ({existing[0]}, ...); "
                             "add --overwrite to replace them, or choose another --out")
        quiet_tensorflow(args.verbose)
        from oasis_gen.evaluation.figures import make_figures

        make_figures(args.run_dir, args.data, out, args.num_samples)
    except (rundir.RunError, DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
