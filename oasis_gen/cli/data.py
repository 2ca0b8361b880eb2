"""``python -m oasis_gen.cli.data DIR [--json]``: summarise a folder of slices (counts, subjects, shape,
value range, background, skipped files) before training on it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from oasis_gen.cli.console import program_name
from oasis_gen.data.slices import DataError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m oasis_gen.cli.data"),
                                     description="Summarise an OASIS-layout (or flat) folder of PNG slices.")
    parser.add_argument("data_dir", help="data folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--on_bad_file", choices=("skip", "error"), default="skip",
                        help="list undecodable files (skip) or stop at the first (error)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from oasis_gen.cli.console import quiet_tensorflow

        quiet_tensorflow()
        from oasis_gen.data.stream import format_summary, summarize

        summary = summarize(args.data_dir, on_bad_file=args.on_bad_file)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
