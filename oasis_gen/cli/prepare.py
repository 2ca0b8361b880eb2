"""Import OASIS-1 volumes into the slice layout: ``python -m oasis_gen.cli.prepare oasis1 SRC_DIR --out DIR``.

OASIS-1 (Marcus et al. 2007, https://sites.wustl.edu/oasisbrains/) is downloaded by the user
(its data use terms forbid redistribution), as one folder per session (``OAS1_0001_MR1``; some
subjects have a second session ``MR2``) under ``disc1/``, ``disc2/``, ... Each session holds
Analyze 7.5 volumes (``.hdr`` + ``.img``). This tool reads, per session:

- the atlas-registered (Talairach T88, 1 mm, 176x208x176), gain-field-corrected T1 volume under
  ``PROCESSED/MPRAGE/T88_111/``: ``*_t88_masked_gfc.hdr`` (brain-masked, the default) or
  ``*_t88_gfc.hdr`` (with skull, ``--image gfc``);
- its FAST tissue segmentation under ``FSL_SEG/`` (``*_fseg.hdr``: 0 background, 1 CSF, 2 grey,
  3 white matter), when present; written as masks with values 0, 85, 170, 255.

**Orientation.** An axial slice is ``volume[:, :, z]`` shown without flips: image rows follow
the volume's first axis (left-right), columns its second (posterior-anterior), so the head is
wider than tall, as in the preprocessed ``keras_png_slices`` set. Slices are zero-padded
(centred) to 256x256; a larger slice is first shrunk to fit. ``--slices START:STOP[:STEP]``
chooses the axial range (default ``100:132``, 32 contiguous slices numbered 0-31 in the names).

**Intensities.** Per volume, the 99.5th percentile of the non-zero voxels maps to 255 (brighter
voxels clip) and 0 stays 0, so the background is exactly black.

**Splits.** Subjects (not sessions) are split train/validate/test with a seed, so both sessions
of a subject land in the same split. Files are ``case_NNNN_slice_S.nii.png`` (subject number)
for a first session and ``case_NNNN_mr2_slice_S.nii.png`` for a second. ``subjects.csv`` lists
each subject's split and sessions and, with ``--demographics oasis_cross-sectional.csv``, age,
sex and CDR.

Everything is written into a temporary folder inside ``--out`` and moved into place at the end;
an ``--out`` that already holds slices is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from oasis_gen.cli.console import plain, program_name
from oasis_gen.data.oasis1 import IMAGE_SUFFIX, import_oasis1, parse_slices
from oasis_gen.data.slices import SPLITS, DataError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m oasis_gen.cli.prepare"), description=plain(__doc__.split("\n\n")[0]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=plain(__doc__.split("\n\n", 1)[1]))
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("oasis1", help="OASIS-1 Analyze volumes -> keras_png_slices folders")
    command.add_argument("source", metavar="SRC_DIR", help="the extracted OASIS-1 download (disc1/, disc2/, ...)")
    command.add_argument("--out", required=True, help="output data folder")
    command.add_argument("--slices", default="100:132", help="axial range START:STOP[:STEP] (default 100:132)")
    command.add_argument("--image", choices=sorted(IMAGE_SUFFIX), default="masked",
                         help="masked: brain-masked T1 (default); gfc: with skull")
    command.add_argument("--demographics", default=None, help="oasis_cross-sectional.csv: adds age, sex, CDR")
    command.add_argument("--validate_fraction", type=float, default=0.1)
    command.add_argument("--test_fraction", type=float, default=0.1)
    command.add_argument("--seed", type=int, default=0, help="seed of the subject split")
    command.add_argument("--percentile", type=float, default=99.5,
                         help="percentile of non-zero voxels that maps to 255")
    command.add_argument("--overwrite", action="store_true", help="replace slices an earlier import wrote")
    command.add_argument("--allow_incomplete", action="store_true", help="skip incomplete sessions (counted)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = import_oasis1(args.source, args.out, parse_slices(args.slices), args.image, args.demographics,
                                args.validate_fraction, args.test_fraction, args.seed, args.overwrite,
                                args.allow_incomplete, args.percentile)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['subjects']} subjects ({summary['sessions']} sessions) to {summary['out']}: "
          + ", ".join(f"{split} {summary['slices'][split]} slices / {summary['subjects_per_split'][split]} subjects"
                      for split in SPLITS))
    for kind in ("skipped_incomplete", "skipped_unreadable"):
        if summary[kind]:
            print(f"{kind.replace('_', ' ')}: {len(summary[kind])}\n  " + "\n  ".join(summary[kind]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
