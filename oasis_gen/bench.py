"""Benchmarks: ``python -m oasis_gen.bench {data,train,sample} ... [--json]``.

Every speed figure in the README comes from this module, with the command that produced it.

- ``data``: images/second of the tf.data pipeline for a full pass over the training split,
  cold (decoding PNGs) and cached (decoded uint8 slices in memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Sequence


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_data(data_dir: str, batch_size: int = 32, image_size: int = 256, split: str = "train",
               cached_passes: int = 3) -> dict:
    """Times full passes of the training pipeline over ``split`` of ``data_dir``.

    The cold pass reads and decodes every PNG (and fills the cache); the cached figure is the
    median of ``cached_passes`` further passes, shuffling included.

    Returns:
        ``{"images", "cold_images_per_s", "cached_images_per_s", "peak_rss_mib", ...}``.
    """
    import numpy as np

    from oasis_gen import data

    folder = data.find_slices(data_dir)
    source = data.resolve_split(folder, split, image_size=image_size)
    dataset = data.make_dataset(source, batch_size, training=True, cache=True)

    def one_pass() -> tuple[float, int]:
        start = time.perf_counter()
        count = 0
        for batch in dataset:
            count += int(batch.shape[0])
        return time.perf_counter() - start, count

    cold_seconds, count = one_pass()
    cached = [one_pass()[0] for _ in range(cached_passes)]
    return {
        "images": count,
        "batch_size": batch_size,
        "image_size": image_size,
        "cold_images_per_s": round(count / cold_seconds, 1),
        "cached_images_per_s": round(count / float(np.median(cached)), 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def _print_table(title: str, results: dict) -> None:
    print(title)
    for key, value in results.items():
        print(f"  {key:<28}{value}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m oasis_gen.bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    data_parser = commands.add_parser("data", help="tf.data images/second, cold and cached")
    data_parser.add_argument("--data", required=True, help="OASIS-layout data folder")
    data_parser.add_argument("--batch_size", type=int, default=32)
    data_parser.add_argument("--image_size", type=int, default=256)
    data_parser.add_argument("--split", default="train", choices=("train", "validate", "test"))
    data_parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from oasis_gen.data import DataError

    try:
        if args.command == "data":
            results = bench_data(args.data, args.batch_size, args.image_size, args.split)
            title = f"tf.data pipeline, {args.split} split of {args.data}"
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        _print_table(title, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
