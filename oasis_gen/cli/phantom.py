"""``python -m oasis_gen.cli.phantom OUT [--subjects N] [--slices S] [--seed K]``: write the built-in
synthetic (phantom) data set in the OASIS layout, marked as synthetic."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from oasis_gen.cli.console import program_name
from oasis_gen.data.phantom import write_phantom


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m oasis_gen.cli.phantom"),
                                     description="Write synthetic OASIS-like slices (labelled synthetic).")
    parser.add_argument("out_dir", help="folder to write (keras_png_slices_{train,validate,test}/ and masks)")
    parser.add_argument("--subjects", type=int, default=40, help="synthetic subjects (default: 40)")
    parser.add_argument("--slices", type=int, default=32, help="axial slices per subject (default: 32)")
    parser.add_argument("--size", type=int, default=256, help="slice side in pixels (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    written = write_phantom(args.out_dir, args.subjects, args.slices, args.size, args.seed, progress=True)
    print(f"wrote {sum(written.values())} SYNTHETIC slices to {args.out_dir}: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
