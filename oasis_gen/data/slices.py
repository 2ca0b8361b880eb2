"""Finding OASIS slices on disk and streaming them with tf.data.

Layout read (the preprocessed OASIS set)::

    DIR/keras_png_slices_train/case_001_slice_0.nii.png ...
    DIR/keras_png_slices_validate/...
    DIR/keras_png_slices_test/...
    DIR/keras_png_slices_seg_{train,validate,test}/seg_001_slice_0.nii.png   (masks, optional)

or a flat folder of ``case_NNN_slice_S.nii.png`` files, which is split by subject (the case
number) so that no subject lands in two splits.

Tensor convention: images are NHWC float32 in [0, 1] (0 = black background); masks are uint8
as stored. Every file is validated before streaming (PNG signature, chunk CRCs, header, a
complete zlib stream of the expected length, a pixel-count limit against decompression bombs,
symlinks that leave the data folder), so a bad file is named instead of failing deep inside
TensorFlow. ``python -m oasis_gen.cli.data DIR [--json]`` prints a per-split summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import warnings
import zlib
from typing import Sequence

import numpy as np

SPLITS = ("train", "validate", "test")
SPLIT_FOLDER = "keras_png_slices_{split}"
MASK_FOLDER = "keras_png_slices_seg_{split}"
PHANTOM_MARKER = "SYNTHETIC_PHANTOM_DATA.txt"
# Far beyond any MRI slice (a 256x256 8-bit slice decodes to 64 KiB and is ~30 KiB on disk), far below
# what a decompression bomb would claim.
MAX_IMAGE_BYTES = 1 << 28  # decoded pixel bytes: width x height x channels x bytes per sample
MAX_FILE_BYTES = 1 << 26  # bytes read from disk per file
_ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# case_012_slice_7.nii.png; a subject's second scan session may carry a tag: case_0012_mr2_slice_7.nii.png
_SLICE_NAME = re.compile(r"(?:case|seg)_(\d+)(?:_mr\d+)?_slice_(\d+)", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_BY_COLOR_TYPE = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class DataError(ValueError):
    """A data folder or file that cannot be used; the message names it."""


class BadImageError(DataError):
    """A file that is not a decodable PNG image."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class PngHeader:
    """What a PNG file's IHDR chunk declares."""

    height: int
    width: int
    channels: int
    bit_depth: int


# ----------------------------------------------------------------------------- validation

def _scanline_bytes(width: int, height: int, channels: int, bit_depth: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (one filter byte per row) the image data must inflate to."""
    def rows(w: int, h: int) -> int:
        return h * ((w * channels * bit_depth + 7) // 8 + 1) if w and h else 0

    if not interlaced:
        return rows(width, height)
    # Adam7: seven reduced images, each with its own rows; empty passes have no rows at all.
    return sum(rows(max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy)))
               for x0, y0, dx, dy in _ADAM7_PASSES)


def read_png_header(path: str, max_image_bytes: int = MAX_IMAGE_BYTES,
                    max_file_bytes: int = MAX_FILE_BYTES) -> PngHeader:
    """Fully validates the PNG at ``path`` and returns its header.

    Checks the signature (before reading further), the file size against ``max_file_bytes``,
    every chunk's length and CRC, the header fields, the decoded size (width x height x
    channels x bytes per sample, so 16-bit and RGBA images count in full) against
    ``max_image_bytes`` (decompression bombs) and that the compressed image data inflates to
    exactly the size the header implies, interlaced (Adam7) or not (truncated or corrupt files).

    Raises:
        BadImageError: naming ``path`` and what is wrong with it.
    """
    try:
        with open(path, "rb") as handle:
            blob = handle.read(len(_PNG_SIGNATURE))
            if not blob:
                raise BadImageError(path, "is an empty (zero-byte) file")
            if blob != _PNG_SIGNATURE:
                raise BadImageError(path, "is not a PNG image (wrong signature)")
            blob += handle.read(max_file_bytes + 1 - len(blob))
    except OSError as error:
        raise BadImageError(path, f"cannot be read ({error.strerror})") from error
    if len(blob) > max_file_bytes:
        raise BadImageError(path, f"is larger than the {max_file_bytes:,} bytes allowed for one slice")
    position = len(_PNG_SIGNATURE)
    header = None
    compressed = []
    interlaced = False
    ended = False
    while position + 8 <= len(blob):
        length, kind = struct.unpack(">I4s", blob[position:position + 8])
        data = blob[position + 8:position + 8 + length]
        crc_bytes = blob[position + 8 + length:position + 12 + length]
        if len(data) != length or len(crc_bytes) != 4:
            raise BadImageError(path, "is truncated (a chunk ends early)")
        if zlib.crc32(kind + data) != struct.unpack(">I", crc_bytes)[0]:
            raise BadImageError(path, f"is corrupt (bad CRC in chunk {kind.decode('latin-1')!r})")
        position += 12 + length
        if kind == b"IHDR":
            if length != 13:
                raise BadImageError(path, "has a malformed IHDR header")
            width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", data)
            if color_type not in _CHANNELS_BY_COLOR_TYPE or bit_depth not in (1, 2, 4, 8, 16):
                raise BadImageError(path, f"has an invalid colour type {color_type} / bit depth {bit_depth}")
            if width == 0 or height == 0:
                raise BadImageError(path, "declares an empty image")
            channels = _CHANNELS_BY_COLOR_TYPE[color_type]
            decoded = width * height * channels * max(1, bit_depth // 8)
            if decoded > max_image_bytes:
                raise BadImageError(
                    path, f"claims {width}x{height} pixels x {channels} channels x {bit_depth} bits, "
                          f"{decoded:,} bytes decoded, more than the {max_image_bytes:,} allowed "
                          "(possible decompression bomb)")
            header = (height, width, _CHANNELS_BY_COLOR_TYPE[color_type], bit_depth)
            interlaced = interlace == 1
        elif kind == b"IDAT":
            compressed.append(data)
        elif kind == b"IEND":
            ended = True
            break
    if header is None:
        raise BadImageError(path, "has no IHDR header")
    if not ended:
        raise BadImageError(path, "is truncated (no IEND chunk)")
    height, width, channels, bit_depth = header
    expected = _scanline_bytes(width, height, channels, bit_depth, interlaced)
    inflater = zlib.decompressobj()
    try:
        # Bounded inflation: a stream that inflates past the declared size is refused, not expanded.
        pixels = inflater.decompress(b"".join(compressed), expected + 1)
    except zlib.error as error:
        raise BadImageError(path, f"has corrupt image data ({error})") from error
    if not inflater.eof:
        raise BadImageError(path, "has incomplete or oversized image data")
    if len(pixels) != expected:
        raise BadImageError(path, f"holds {len(pixels)} bytes of image data, expected {expected}")
    return PngHeader(height, width, channels, bit_depth)


@dataclasses.dataclass
class ScanResult:
    """The files of one split that passed validation, and those skipped."""

    paths: list[str]
    headers: list[PngHeader]
    skipped: list[dict]


_SCAN_CACHE: dict[tuple, PngHeader | BadImageError] = {}


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root


def scan_files(paths: Sequence[str], root: str, on_bad_file: str = "error") -> ScanResult:
    """Validates every file in ``paths`` (see ``read_png_header``).

    Args:
        paths: PNG files to check.
        root: the data folder; a symlink resolving outside it is refused.
        on_bad_file: ``"error"`` raises on the first bad file; ``"skip"`` drops bad files
            and warns once with their count.

    Raises:
        BadImageError: with ``on_bad_file="error"``, naming the first bad file.
    """
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    real_root = os.path.realpath(root)
    good, headers, skipped = [], [], []
    for path in paths:
        try:
            if not _inside(path, real_root):
                raise BadImageError(path, f"is a symlink pointing outside the data folder {root}")
            stat = os.stat(path)
            key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
            cached = _SCAN_CACHE.get(key)
            if cached is None:
                try:
                    cached = read_png_header(path)
                except BadImageError as error:
                    cached = error
                _SCAN_CACHE[key] = cached
            if isinstance(cached, BadImageError):
                raise BadImageError(path, cached.reason)
            good.append(path)
            headers.append(cached)
        except BadImageError as error:
            if on_bad_file == "error":
                raise
            skipped.append({"path": path, "reason": error.reason})
        except OSError as error:
            bad = BadImageError(path, f"cannot be read ({error.strerror})")
            if on_bad_file == "error":
                raise bad from error
            skipped.append({"path": path, "reason": bad.reason})
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(paths)} files that are not decodable PNG images "
                      f"(first: {skipped[0]['path']}: {skipped[0]['reason']})", stacklevel=2)
    return ScanResult(good, headers, skipped)


# ----------------------------------------------------------------------------- discovery

def parse_slice_name(path: str) -> tuple[int, int] | None:
    """Returns (subject, slice) from a name like ``case_012_slice_7.nii.png``, else None."""
    match = _SLICE_NAME.search(os.path.basename(path))
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


_POSITION = re.compile(r"slice_(\d+)", re.IGNORECASE)


def slice_position(path: str) -> int | None:
    """The axial slice position ``S`` named in a file (``case_012_slice_7.nii.png``,
    ``sample_003_slice_7.png``), or None when the name carries none."""
    match = _POSITION.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def list_sample_pngs(folder: str) -> list[str]:
    """The PNG slices of a folder of generated samples, in name order.

    A folder written by ``generate.py`` (it holds ``generation.json``) gives the files that file
    lists; any other folder must hold PNG files only (hidden files and sub-folders are passed over).

    Raises:
        DataError: the folder is missing or empty, or holds a file that is not a PNG (named).
    """
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"samples folder {folder} does not exist" if not os.path.exists(folder)
                        else f"{folder} is not a folder")
    manifest = os.path.join(folder, "generation.json")
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            listed = json.load(handle).get("files")
        if listed:
            return [os.path.join(folder, name) for name in listed]
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and os.path.isfile(os.path.join(folder, n)))
    others = [n for n in names if not n.lower().endswith(".png")]
    if others:
        raise DataError(f"{os.path.join(folder, others[0])} is not a PNG ({len(others)} non-PNG file(s) in "
                        f"{folder}); --samples takes a folder of PNG slices only")
    if not names:
        raise DataError(f"no PNG slices in {folder}")
    return [os.path.join(folder, n) for n in names]


def _sort_key(path: str) -> tuple:
    parsed = parse_slice_name(path)
    return (0, *parsed, path) if parsed else (1, 0, 0, path)


def list_pngs(folder: str) -> list[str]:
    """PNG files directly inside ``folder``, sorted by subject then slice number."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(".png") and not n.startswith(".")]
    return sorted((os.path.join(folder, n) for n in names), key=_sort_key)


def subject_of(path: str) -> str:
    """The subject a slice belongs to: its case number, or its file stem when unnamed."""
    parsed = parse_slice_name(path)
    return f"{parsed[0]:03d}" if parsed else os.path.basename(path).split(".")[0]


def split_by_subject(paths: Sequence[str], validate_fraction: float = 0.1, test_fraction: float = 0.1,
                     seed: int = 0) -> dict[str, list[str]]:
    """Splits slices into train/validate/test by subject, so no subject is in two splits.

    Args:
        paths: slice files named ``case_NNN_slice_S...``.
        validate_fraction: fraction of subjects for validation (each non-zero split gets >= 1).
        test_fraction: fraction of subjects for test.
        seed: seed of the subject permutation.

    Raises:
        DataError: for a name without a case number, bad fractions, or too few subjects.
    """
    for name, value in (("validate_fraction", validate_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {value}")
    if validate_fraction + test_fraction >= 1.0:
        raise DataError(f"validate_fraction + test_fraction must be below 1, got "
                        f"{validate_fraction + test_fraction}")
    by_subject: dict[str, list[str]] = {}
    for path in paths:
        if parse_slice_name(path) is None:
            raise DataError(f"{path}: cannot tell its subject; flat folders are split by subject and need "
                            "names like case_NNN_slice_S.nii.png")
        by_subject.setdefault(subject_of(path), []).append(path)
    subjects = sorted(by_subject)
    wanted = [int(round(f * len(subjects))) if f == 0 else max(1, int(round(f * len(subjects))))
              for f in (validate_fraction, test_fraction)]
    if sum(wanted) >= len(subjects):
        raise DataError(f"{len(subjects)} subjects are too few to split with fractions "
                        f"{validate_fraction}/{test_fraction}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    groups = {"validate": shuffled[:wanted[0]], "test": shuffled[wanted[0]:sum(wanted)],
              "train": shuffled[sum(wanted):]}
    return {split: sorted((p for s in groups[split] for p in by_subject[s]), key=_sort_key) for split in SPLITS}


@dataclasses.dataclass
class SliceFolder:
    """The splits found in a data folder.

    Attributes:
        root: the data folder.
        layout: ``"oasis"`` (split folders) or ``"flat"`` (split here by subject).
        files: split name -> sorted slice paths (unvalidated).
        masks: split name -> mask folder, for splits that have one.
        synthetic: True for the built-in phantom data.
    """

    root: str
    layout: str
    files: dict[str, list[str]]
    masks: dict[str, str]
    synthetic: bool

    def split(self, name: str) -> list[str]:
        """The files of split ``name``; raises DataError naming what is missing or empty."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {SPLITS}")
        if name not in self.files:
            raise DataError(f"missing split folder {os.path.join(self.root, SPLIT_FOLDER.format(split=name))}")
        if not self.files[name]:
            where = (os.path.join(self.root, SPLIT_FOLDER.format(split=name)) if self.layout == "oasis"
                     else f"the {name} split of {self.root}")
            raise DataError(f"empty split: no PNG slices in {where}")
        return self.files[name]

    def mask_for(self, split: str, image_path: str) -> str:
        """The segmentation mask file matching ``image_path`` (same case and slice)."""
        if split not in self.masks:
            raise DataError(f"no mask folder {os.path.join(self.root, MASK_FOLDER.format(split=split))}")
        parsed = parse_slice_name(image_path)
        if parsed is None:
            raise DataError(f"{image_path}: cannot match a mask to a file without case/slice numbers")
        name = os.path.basename(image_path)
        candidates = [re.sub(r"^case_", "seg_", name, flags=re.IGNORECASE), name]
        for candidate in candidates:
            path = os.path.join(self.masks[split], candidate)
            if os.path.exists(path):
                return path
        raise DataError(f"no mask for {image_path} in {self.masks[split]} (looked for {candidates[0]})")


def _refuse_shared_subjects(files: dict[str, list[str]]) -> None:
    """Raises DataError naming the subjects found in more than one split folder: their slices would
    leak between training and evaluation."""
    splits_of: dict[str, set[str]] = {}
    for split, paths in files.items():
        for path in paths:
            if parse_slice_name(path) is not None:
                splits_of.setdefault(subject_of(path), set()).add(split)
    shared = sorted(subject for subject, found in splits_of.items() if len(found) > 1)
    if shared:
        listed = ", ".join(f"case {s} ({'/'.join(sorted(splits_of[s], key=SPLITS.index))})" for s in shared[:10])
        more = f" and {len(shared) - 10} more" if len(shared) > 10 else ""
        raise DataError(f"{len(shared)} subjects appear in more than one split folder: {listed}{more}; a subject's "
                        "slices must all be in one split, or held-out scores measure memory, not generalisation")


def find_slices(data_dir: str, validate_fraction: float = 0.1, test_fraction: float = 0.1,
                split_seed: int = 0) -> SliceFolder:
    """Finds the splits of ``data_dir`` (OASIS layout, or a flat folder split by subject).

    Raises:
        DataError: when the folder is missing or holds no slices, naming it.
    """
    if data_dir is None:
        raise DataError("no data folder given (pass --data DIR)")
    root = os.path.abspath(os.fspath(data_dir))
    if not os.path.isdir(root):
        raise DataError(f"data folder {root} does not exist" if not os.path.exists(root)
                        else f"{root} is not a folder")
    synthetic = os.path.exists(os.path.join(root, PHANTOM_MARKER))
    split_dirs = {s: os.path.join(root, SPLIT_FOLDER.format(split=s)) for s in SPLITS}
    present = {s: d for s, d in split_dirs.items() if os.path.isdir(d)}
    masks = {s: os.path.join(root, MASK_FOLDER.format(split=s)) for s in SPLITS
             if os.path.isdir(os.path.join(root, MASK_FOLDER.format(split=s)))}
    if present:
        files = {s: list_pngs(d) for s, d in present.items()}
        _refuse_shared_subjects(files)
        return SliceFolder(root, "oasis", files, masks, synthetic)
    flat = list_pngs(root)
    if not flat:
        raise DataError(f"no PNG slices in {root}: expected keras_png_slices_{{train,validate,test}}/ folders "
                        "or a flat folder of case_NNN_slice_S.nii.png files")
    files = split_by_subject(flat, validate_fraction, test_fraction, split_seed)
    return SliceFolder(root, "flat", files, {}, synthetic)


# ----------------------------------------------------------------------------- tf.data
