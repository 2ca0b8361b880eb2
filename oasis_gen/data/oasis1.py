"""Import OASIS-1 volumes into the slice layout (``python -m oasis_gen.cli.prepare oasis1 SRC_DIR --out DIR``).

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

import csv
import dataclasses
import os
import re
import shutil
import tempfile
import warnings

import imageio.v3 as iio
import numpy as np

from oasis_gen.data.slices import MASK_FOLDER, SPLIT_FOLDER, SPLITS, DataError, parse_slice_name, split_by_subject
from oasis_gen.fileio import atomic_write_text
from oasis_gen.progress import progress_bar

SIZE = 256
SESSION = re.compile(r"^OAS1_(\d{4})_MR(\d+)$")
IMAGE_SUFFIX = {"masked": "_t88_masked_gfc.hdr", "gfc": "_t88_gfc.hdr"}
SEGMENTATION_VALUES = np.array([0, 85, 170, 255], np.uint8)
EXPECTED_LAYOUT = ("SRC/disc1/OAS1_0001_MR1/PROCESSED/MPRAGE/T88_111/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc"
                   ".hdr (+ .img), and optionally SRC/disc1/OAS1_0001_MR1/FSL_SEG/..._fseg.hdr (+ .img)")


class PrepareError(DataError):
    """The download cannot be imported as asked; the message says what was expected where."""


@dataclasses.dataclass
class Session:
    """One OASIS-1 session folder and the volumes found in it."""

    subject: int
    session: int
    folder: str
    image: str
    segmentation: str | None


def parse_slices(text: str) -> slice:
    """``"100:132"`` or ``"100:132:2"`` as a slice; raises ValueError for anything else."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--slices must be START:STOP or START:STOP:STEP with non-negative integers, got {text!r}")
    start, stop, *step = (int(p) for p in parts)
    if stop <= start or (step and step[0] < 1):
        raise ValueError(f"--slices {text!r} selects no slice")
    return slice(start, stop, step[0] if step else 1)


def _volume_pair(header: str) -> str | None:
    """Problem with an Analyze pair, or None: the ``.img`` beside a ``.hdr`` must exist."""
    image = header[:-4] + ".img"
    return None if os.path.exists(image) else f"{header} has no matching {os.path.basename(image)}"


def find_sessions(source: str, image: str = "masked", allow_incomplete: bool = False) -> tuple[list[Session], list[str]]:
    """Finds every session folder under ``source`` and its T1 volume (and segmentation).

    Returns:
        ``(sessions, skipped)``: complete sessions sorted by subject and session, and a message
        per incomplete session that was skipped (only with ``allow_incomplete``).

    Raises:
        PrepareError: ``source`` is missing or holds no session folder, or (without
            ``allow_incomplete``) a session lacks its processed volume or half of an Analyze pair.
    """
    if not os.path.isdir(source):
        raise PrepareError(f"no folder at {source}; expected the extracted OASIS-1 download ({EXPECTED_LAYOUT})")
    suffix = IMAGE_SUFFIX[image]
    sessions, problems = [], []
    for root, folders, _ in os.walk(source):
        folders.sort()
        for name in list(folders):
            match = SESSION.match(name)
            if not match:
                continue
            folders.remove(name)  # do not descend into a session's own folders again
            folder = os.path.join(root, name)
            t88 = os.path.join(folder, "PROCESSED", "MPRAGE", "T88_111")
            images = sorted(f for f in os.listdir(t88) if f.endswith(suffix)) if os.path.isdir(t88) else []
            if not images:
                problems.append(f"{name}: no *{suffix} volume in {t88}")
                continue
            header = os.path.join(t88, images[0])
            segmentation_folder = os.path.join(folder, "FSL_SEG")
            segmentations = sorted(f for f in os.listdir(segmentation_folder) if f.endswith("_fseg.hdr")) \
                if os.path.isdir(segmentation_folder) else []
            segmentation = os.path.join(segmentation_folder, segmentations[0]) if segmentations else None
            pair_problems = [p for p in (_volume_pair(header), segmentation and _volume_pair(segmentation)) if p]
            if pair_problems:
                problems.extend(f"{name}: {p}" for p in pair_problems)
                continue
            sessions.append(Session(int(match.group(1)), int(match.group(2)), folder, header, segmentation))
    if not sessions and not problems:
        raise PrepareError(f"no OASIS-1 session folders (OAS1_NNNN_MRN) under {source}; expected {EXPECTED_LAYOUT}")
    if problems and not allow_incomplete:
        raise PrepareError(f"{len(problems)} session(s) of {source} are incomplete (a partial download?):\n  "
                           + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
                           + "\nre-extract them, or pass --allow_incomplete to skip them")
    return sorted(sessions, key=lambda s: (s.subject, s.session)), problems


def fit_to_square(plane: np.ndarray, size: int = SIZE, nearest: bool = False) -> np.ndarray:
    """Zero-pads a 2-D slice (centred) to ``size`` x ``size``, shrinking it first if it is larger.

    Shrinking is separable linear interpolation (``nearest`` for label maps), preserving the aspect.
    """
    height, width = plane.shape
    scale = min(1.0, size / height, size / width)
    if scale < 1.0:
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
        rows = (np.arange(new_height) + 0.5) / scale - 0.5
        columns = (np.arange(new_width) + 0.5) / scale - 0.5
        if nearest:
            plane = plane[np.clip(np.round(rows).astype(int), 0, height - 1)][
                :, np.clip(np.round(columns).astype(int), 0, width - 1)]
        else:
            plane = plane.astype(np.float64)
            plane = np.stack([np.interp(rows, np.arange(height), plane[:, c]) for c in range(width)], axis=1)
            plane = np.stack([np.interp(columns, np.arange(width), plane[r]) for r in range(new_height)])
        height, width = plane.shape
    top, left = (size - height) // 2, (size - width) // 2
    out = np.zeros((size, size), plane.dtype)
    out[top:top + height, left:left + width] = plane
    return out


def to_uint8(volume: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Scales a volume to 8 bits: the ``percentile`` of its non-zero voxels maps to 255, 0 stays 0."""
    volume = np.nan_to_num(np.asarray(volume, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    foreground = volume[volume > 0]
    if foreground.size == 0:
        return np.zeros(volume.shape, np.uint8)
    top = np.percentile(foreground, percentile)
    return np.round(np.clip(volume / max(top, 1e-12), 0.0, 1.0) * 255.0).astype(np.uint8)


def load_volume(path: str) -> np.ndarray:
    """A 3-D array from an Analyze ``.hdr``/``.img`` pair (a trailing length-1 axis is dropped).

    Raises:
        ValueError: the file cannot be read or is not 3-D.
    """
    import nibabel

    try:
        volume = np.asanyarray(nibabel.load(path).dataobj)
    except Exception as error:  # nibabel raises several types for broken files
        raise ValueError(f"{path}: unreadable Analyze volume ({error})") from error
    volume = volume.reshape(volume.shape[:3]) if volume.ndim == 4 and volume.shape[3] == 1 else volume
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {volume.shape}")
    return volume


def read_demographics(path: str) -> dict[int, dict]:
    """Age, sex and CDR per subject from the OASIS-1 cross-sectional CSV (first session's row).

    Raises:
        PrepareError: missing file or no ``ID`` column.
    """
    if not os.path.isfile(path):
        raise PrepareError(f"no demographics file at {path}; expected oasis_cross-sectional.csv from the OASIS site")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "ID" not in rows[0]:
        raise PrepareError(f"{path}: expected a CSV with an ID column (OAS1_NNNN_MRN), M/F, Age and CDR")
    people = {}
    for row in rows:
        match = SESSION.match(row["ID"].strip())
        if match and int(match.group(1)) not in people:
            people[int(match.group(1))] = {"age": row.get("Age", "").strip(), "sex": row.get("M/F", "").strip(),
                                           "cdr": row.get("CDR", "").strip()}
    return people


def _write_png(path: str, array: np.ndarray) -> None:
    iio.imwrite(path, array, extension=".png")


def _holds_slices(out: str) -> bool:
    return any(os.path.isdir(os.path.join(out, name)) and name.startswith("keras_png_slices")
               for name in (os.listdir(out) if os.path.isdir(out) else []))


def import_oasis1(source: str, out: str, slices: slice = slice(100, 132), image: str = "masked",
                  demographics: str | None = None, validate_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 0, overwrite: bool = False, allow_incomplete: bool = False,
                  percentile: float = 99.5, progress: bool = True) -> dict:
    """Converts an OASIS-1 download into ``keras_png_slices_*`` folders; returns a summary.

    Raises:
        PrepareError: missing or partial download, an ``out`` that holds slices (without
            ``overwrite``), no readable volume, or a slice range outside the volumes.
    """
    if _holds_slices(out) and not overwrite:
        raise PrepareError(f"{out} already holds keras_png_slices folders; pass --overwrite to replace them")
    sessions, incomplete = find_sessions(source, image, allow_incomplete)
    people = read_demographics(demographics) if demographics else {}
    names = [f"case_{subject:04d}_slice_0.nii.png" for subject in sorted({s.subject for s in sessions})]
    split_of = {parse_slice_name(path)[0]: split
                for split, paths in split_by_subject(names, validate_fraction, test_fraction, seed).items()
                for path in paths}
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".import-", dir=out)
    try:
        counts = {split: 0 for split in SPLITS}
        unreadable, written_sessions = [], {}
        by_subject: dict[int, list[Session]] = {}
        for session in sessions:
            by_subject.setdefault(session.subject, []).append(session)
        for subject, subject_sessions in progress_bar(sorted(by_subject.items()), desc="subjects", unit="subjects",
                                                        disable=not progress):
            split = split_of[subject]
            for session in subject_sessions:
                try:
                    volume = load_volume(session.image)
                    labels = load_volume(session.segmentation) if session.segmentation else None
                    if labels is not None and labels.shape != volume.shape:
                        raise ValueError(f"{session.segmentation}: shape {labels.shape} differs from the T1 "
                                         f"volume's {volume.shape}")
                except ValueError as error:
                    unreadable.append(str(error))
                    warnings.warn(f"skipping {os.path.basename(session.folder)}: {error}", stacklevel=2)
                    continue
                if slices.stop > volume.shape[2]:
                    raise PrepareError(f"--slices {slices.start}:{slices.stop} runs past {session.image}, which "
                                       f"has {volume.shape[2]} axial slices")
                chosen = range(*slices.indices(volume.shape[2]))
                scaled = to_uint8(volume, percentile)
                tag = "" if session.session == 1 else f"_mr{session.session}"
                for index, z in enumerate(chosen):
                    name = f"case_{subject:04d}{tag}_slice_{index}.nii.png"
                    folder = os.path.join(staging, SPLIT_FOLDER.format(split=split))
                    os.makedirs(folder, exist_ok=True)
                    _write_png(os.path.join(folder, name), fit_to_square(scaled[:, :, z]))
                    if labels is not None:
                        mask = SEGMENTATION_VALUES[np.clip(np.round(labels[:, :, z]).astype(int), 0, 3)]
                        mask_folder = os.path.join(staging, MASK_FOLDER.format(split=split))
                        os.makedirs(mask_folder, exist_ok=True)
                        _write_png(os.path.join(mask_folder, "seg" + name[4:]), fit_to_square(mask, nearest=True))
                counts[split] += len(chosen)
                written_sessions.setdefault(subject, []).append(f"MR{session.session}")
        if not written_sessions:
            raise PrepareError(f"none of the {len(sessions)} sessions under {source} could be read")
        rows = ["subject,split,sessions,age,sex,cdr"]
        for subject, labels in sorted(written_sessions.items()):
            person = people.get(subject, {})
            rows.append(f"OAS1_{subject:04d},{split_of[subject]},{';'.join(labels)},{person.get('age', '')},"
                        f"{person.get('sex', '')},{person.get('cdr', '')}")
        atomic_write_text(os.path.join(staging, "subjects.csv"), "\n".join(rows) + "\n")
        for name in os.listdir(out):  # replace what an earlier import wrote (only with --overwrite)
            if name.startswith("keras_png_slices") or name == "subjects.csv":
                target = os.path.join(out, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"out": os.path.abspath(out), "subjects": len(written_sessions),
            "sessions": sum(len(v) for v in written_sessions.values()), "slices": counts,
            "subjects_per_split": {split: sum(1 for s in written_sessions if split_of[s] == split)
                                   for split in SPLITS},
            "skipped_incomplete": incomplete, "skipped_unreadable": unreadable,
            "with_segmentations": any(s.segmentation for s in sessions), "demographics": bool(people)}
