"""Benchmarks: ``python -m oasis_gen.cli.bench {data,train,prior,sample} ... [--precision P] [--json]``.

Every speed figure in the README comes from this module, with the command that produced it.

- ``data``: images/second of the tf.data pipeline for a full pass over the training split,
  cold (decoding PNGs) and cached (decoded uint8 slices in memory).
- ``train``: VQ-VAE-2 training images/second (median of timed steps after warm-up, the real
  ``VQVAE2.fit`` on a tf.data pipeline of phantom slices), FLOPs per training image, the fraction
  of this machine's measured matmul peak (float32, or bfloat16 under ``mixed_bfloat16``) that
  reaches, and peak memory; ``--torch_reference DIR`` times the PyTorch reference in the same run.
- ``prior``: prior training code maps/second of a preset's top or bottom prior.
- ``sample``: seconds per generated brain with the ``cached`` and ``naive`` samplers (naive timed
  on a number of positions and extrapolated to the full grids, as the output says), their ratio,
  the priors' parameter counts and peak memory; trained priors from ``--run_dir`` or randomly
  initialised priors of a preset.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from oasis_gen.cli.console import plain, program_name, quiet_tensorflow
from oasis_gen.data.slices import DataError
from oasis_gen.rundir import RunError


def _print_table(title: str, results: dict) -> None:
    print(title)
    for key, value in results.items():
        print(f"  {key:<28}{value}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m oasis_gen.cli.bench"), description=plain(__doc__.splitlines()[0]))
    commands = parser.add_subparsers(dest="command", required=True)
    data_parser = commands.add_parser("data", help="tf.data images/second, cold and cached")
    data_parser.add_argument("--data", required=True, help="OASIS-layout data folder")
    data_parser.add_argument("--batch_size", type=int, default=32)
    data_parser.add_argument("--image_size", type=int, default=256)
    data_parser.add_argument("--split", default="train", choices=("train", "validate", "test"))
    data_parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    train_parser = commands.add_parser("train", help="VQ-VAE-2 training images/second, FLOPs, peak fraction")
    train_parser.add_argument("--preset", default="oasis", choices=("quick", "cpu", "oasis"))
    train_parser.add_argument("--batch_size", type=int, default=8)
    train_parser.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    train_parser.add_argument("--warmup", type=int, default=5)
    train_parser.add_argument("--jit_compile", action="store_true", help="compile the train step with XLA")
    train_parser.add_argument("--image_size", type=int, default=None, help="override the preset's image size")
    train_parser.add_argument("--torch_reference", default=None,
                              help="folder of the PyTorch VQ-VAE-2 reference's vqvae.py: time it in the same run")
    train_parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    prior_parser = commands.add_parser("prior", help="prior training code maps/second")
    prior_parser.add_argument("--preset", default="cpu", choices=("quick", "cpu", "oasis"))
    prior_parser.add_argument("--level", default="top", choices=("top", "bottom"))
    prior_parser.add_argument("--batch_size", type=int, default=32)
    prior_parser.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    prior_parser.add_argument("--warmup", type=int, default=5)
    prior_parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sample_parser = commands.add_parser("sample", help="seconds per generated brain, cached vs naive")
    sample_parser.add_argument("--preset", default="quick", choices=("quick", "cpu", "oasis"))
    sample_parser.add_argument("--batch_size", type=int, default=8)
    sample_parser.add_argument("--run_dir", default=None, help="use this run's trained priors")
    sample_parser.add_argument("--naive_positions", type=int, default=16,
                               help="positions the naive sampler is timed on (then extrapolated)")
    sample_parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    for command in (train_parser, prior_parser, sample_parser):
        command.add_argument("--precision", default="float32",
                             choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
                             help="compute precision (auto: what training would pick on this machine)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    from oasis_gen.benchmarks.speed import bench_data, bench_prior, bench_sample, bench_train

    try:
        if args.command == "data":
            results = bench_data(args.data, args.batch_size, args.image_size, args.split)
            title = f"tf.data pipeline, {args.split} split of {args.data}"
        elif args.command == "train":
            results = bench_train(args.preset, args.batch_size, args.steps, args.warmup, args.jit_compile,
                                  args.image_size, args.precision, args.torch_reference)
            title = f"VQ-VAE-2 training, preset {args.preset}, batch {args.batch_size}, {results['precision']}"
        elif args.command == "prior":
            results = bench_prior(args.preset, args.level, args.batch_size, args.steps, args.warmup, args.precision)
            title = f"{args.level} prior training, preset {args.preset}, batch {args.batch_size}, {results['precision']}"
        elif args.command == "sample":
            results = bench_sample(args.preset, args.batch_size, args.run_dir, args.naive_positions, args.precision)
            title = (f"sampling, {'run ' + args.run_dir if args.run_dir else 'preset ' + args.preset}, "
                     f"batch {args.batch_size} (naive extrapolated from {args.naive_positions} positions per prior)")
    except (DataError, RunError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        _print_table(title, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
