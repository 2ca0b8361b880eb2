"""``python generate.py --run_dir R --num_samples 16 --temperature 1.0 --seed 0 --out DIR``: new brain slices.

Rebuilds the VQ-VAE-2 and both priors from the run directory, samples top codes, then bottom
codes given them, decodes, and writes each slice as a PNG (``sample_000.png`` ...), a grid
(``grid.png``), the codes (``codes.npz``: int16 ``top``, ``bottom``) and, with ``--gif``, an
animation of the bottom code map filling in (``sampling.gif``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np

from oasis_gen import config as config_lib
from oasis_gen import rundir
from oasis_gen.cli.console import plain, program_name, quiet_tensorflow
from oasis_gen.rundir import PRIORS, output_folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python generate.py"), description=plain(__doc__.split("\n\n")[0]))
    parser.add_argument("--run_dir", required=True, help="a run directory with trained vqvae and priors")
    parser.add_argument("--num_samples", type=int, default=16,
                        help="slices to generate (with a --slice_index range: one per position, so this is ignored)")
    parser.add_argument("--slice_index", default=None,
                        help="axial position(s) for priors trained with positions: 12 (every sample there) or a range "
                             "0:32 (one sample per position, in order: a whole synthetic stack); default: drawn "
                             "from the training data")
    parser.add_argument("--temperature", default="1.0",
                        help="softmax temperature (0: greedy); one value, or TOP,BOTTOM for each prior (e.g. 0.9,1.0)")
    parser.add_argument("--top_k", default="0",
                        help="sample among the k likeliest codes (0: all); one value, or TOP,BOTTOM")
    parser.add_argument("--guidance", default=None,
                        help="classifier-free guidance weight on the slice position (0: none; larger follows the "
                             "position more closely); one value, or TOP,BOTTOM; needs priors trained with "
                             "--position_dropout; default: the run's sampling.guidance (1.0,0 in the cpu preset, "
                             "0 in quick)")
    parser.add_argument("--seed", type=int, default=0, help="same seed and batch size, same brains")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--method", choices=("cached", "naive"), default="cached")
    parser.add_argument("--prior", choices=PRIORS, default="pixelcnn",
                        help="which trained prior samples the codes (dcgan: a single-level run's DCGAN baseline)")
    parser.add_argument("--out", default=None, help="output folder, new or without earlier samples (default: a new "
                                                     "RUN_DIR/generated/<date-time> per call)")
    parser.add_argument("--gif", action="store_true", help="also write an animation of the sampling")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    args = parser.parse_args(argv)
    try:
        args.slice_positions = parse_slice_index(args.slice_index, args.num_samples)
        args.temperature = config_lib.one_or_pair(args.temperature, float, "--temperature")
        args.top_k = config_lib.one_or_pair(args.top_k, int, "--top_k")
        if args.guidance is not None:
            args.guidance = config_lib.one_or_pair(args.guidance, float, "--guidance")
    except ValueError as error:
        parser.error(str(error))
    if args.slice_positions is not None:
        args.num_samples = len(args.slice_positions)
    return args


def parse_slice_index(text: str | None, num_samples: int) -> np.ndarray | None:
    """Positions int32 [N] from ``--slice_index``: ``"12"`` repeats 12 ``num_samples`` times; ``"0:32"`` (or
    ``"0:32:4"``) is a range, one sample per position; None stays None.

    Raises:
        ValueError: text that is neither an integer nor a non-empty range of non-negative integers.
    """
    if text is None:
        return None
    try:
        parts = [int(part) for part in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1 and parts[0] >= 0:
        return np.full(num_samples, parts[0], np.int32)
    if 2 <= len(parts) <= 3 and min(parts[:2]) >= 0 and len(range(*parts)) > 0:
        return np.arange(*parts, dtype=np.int32)
    raise ValueError(f"--slice_index takes a position like 12 or a range like 0:32, got {text!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from oasis_gen.data.slices import DataError

    try:
        run = rundir.open_run(args.run_dir, None, {}, create=False)  # a wrong path is named before TensorFlow loads
        if args.guidance is None:  # what the run's own samples stage uses
            args.guidance = run.config.sampling.guidance_for(args.prior)
        out = output_folder(args.run_dir, args.out)
        quiet_tensorflow(args.verbose)
        from oasis_gen.sampling.generate import run_generation

        summary = run_generation(args.run_dir, args.num_samples, args.temperature, args.top_k, args.seed,
                                 args.batch_size, args.method, out, args.gif, prior=args.prior,
                                 slice_positions=args.slice_positions, guidance=args.guidance)
    except (rundir.RunError, DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['num_samples']} slices to {summary['out']} "
          f"({summary['seconds_per_brain']:.2f} s per brain, "
          + (f"{summary['method']} sampler)" if args.prior == "pixelcnn" else f"{args.prior} prior)"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
