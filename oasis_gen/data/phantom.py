"""Built-in synthetic brain slices ("phantom") in the OASIS layout.

Used when no ``--data`` is given, in the tests and in the quick demo. Each synthetic subject has
an age that drives atrophy (larger ventricles, thinner cortex, wider CSF spaces), its own head
size, orientation, gyral pattern and intensity gain. Each axial slice is skull-stripped:
black background, a CSF rim, grey matter with folded gyri and sulci, white matter, a midline
fissure and, in the middle slices, lateral ventricles. The brain cross-section grows and
shrinks with the slice index. Slices are 8-bit PNGs named like OASIS
(``case_NNN_slice_S.nii.png``) with matching masks (``seg_NNN_slice_S.nii.png``; 0 background,
85 CSF, 170 grey matter, 255 white matter), so the real pipeline reads them unchanged.

A file ``SYNTHETIC_PHANTOM_DATA.txt`` marks the folder; the data checks report such data as
synthetic and every metrics file made from it says so.

``python -m oasis_gen.cli.phantom OUT [--subjects N] [--slices S] [--seed K]`` writes a data set.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os

import imageio.v3 as iio
import numpy as np

from oasis_gen.data.slices import MASK_FOLDER, PHANTOM_MARKER, SPLIT_FOLDER
from oasis_gen.progress import progress_bar

BACKGROUND, CSF, GREY, WHITE = 0, 1, 2, 3
MASK_VALUES = np.array([0, 85, 170, 255], dtype=np.uint8)
_TISSUE_INTENSITY = np.array([0.0, 0.22, 0.52, 0.78])


@dataclasses.dataclass(frozen=True)
class Subject:
    """Anatomy of one synthetic subject."""

    case: int
    age: float
    radius_x: float
    radius_y: float
    angle: float
    fold_frequencies: tuple[int, ...]
    fold_radial: tuple[float, ...]
    gyral_phase: float
    gain: float
    ventricle_offset: float


def make_subject(case: int, rng: np.random.Generator) -> Subject:
    """Draws a subject's anatomy; ages span young adults to the very old, as in OASIS."""
    return Subject(
        case=case,
        age=float(rng.uniform(18, 96)),
        radius_x=float(rng.uniform(74, 88)),
        radius_y=float(rng.uniform(94, 108)),
        angle=float(rng.normal(0.0, 0.05)),
        fold_frequencies=tuple(int(f) for f in rng.integers(9, 27, size=4)),
        fold_radial=tuple(float(f) for f in rng.uniform(-14, 14, size=4)),
        gyral_phase=float(rng.uniform(0, 2 * np.pi)),
        gain=float(rng.uniform(0.92, 1.08)),
        ventricle_offset=float(rng.uniform(8, 12)),
    )


def _blur(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1, mode="edge")
    image = 0.25 * padded[:-2, 1:-1] + 0.5 * padded[1:-1, 1:-1] + 0.25 * padded[2:, 1:-1]
    padded = np.pad(image, ((0, 0), (1, 1)), mode="edge")
    return 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]


def render_slice(subject: Subject, slice_index: int, num_slices: int, size: int = 256,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Renders one axial slice of ``subject``.

    Args:
        subject: from ``make_subject``.
        slice_index: 0 (inferior) to ``num_slices - 1`` (superior).
        num_slices: slices per subject.
        size: side of the square image.
        rng: noise source (default: seeded from the subject and slice).

    Returns:
        ``(image, labels)``: uint8 [size, size] intensities and uint8 tissue labels
        (0 background, 1 CSF, 2 grey matter, 3 white matter).
    """
    if rng is None:
        rng = np.random.default_rng([subject.case, slice_index])
    atrophy = float(np.clip((subject.age - 18.0) / 78.0, 0.0, 1.0))
    z = (slice_index + 0.5) / num_slices * 2.0 - 1.0  # -1 inferior ... 1 superior
    section = np.sqrt(max(1.0 - (0.92 * z) ** 2, 0.02)) * (1.0 - 0.08 * max(-z, 0.0))
    scale = size / 256.0
    coords = ((np.arange(size) - (size - 1) / 2.0) / scale).astype(np.float32)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    cos, sin = np.cos(subject.angle), np.sin(subject.angle)
    x, y = cos * x - sin * y, sin * x + cos * y
    y = y + 6.0 * z  # the section drifts slightly as the slices go up
    rx, ry = subject.radius_x * section, subject.radius_y * section
    radius = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    theta = np.arctan2(y, x)
    phase = subject.gyral_phase + 1.7 * z
    wobble = 0.015 * np.sin(3 * theta + phase) + 0.01 * np.sin(5 * theta - 2 * phase)

    # Several integer angular frequencies (continuous around the circle), bent radially, give irregular, tortuous gyri.
    folds = sum(np.sin(f * theta + k * radius + (i + 1) * phase)
                for i, (f, k) in enumerate(zip(subject.fold_frequencies, subject.fold_radial)))
    folds = folds / 2.0
    cortex = 0.17 - 0.05 * atrophy + 0.03 * (1 - section)
    rim = 0.015 + 0.05 * atrophy
    labels = np.full((size, size), BACKGROUND, dtype=np.uint8)
    outer = radius < 1.0 + wobble
    labels[outer] = CSF
    brain = radius < 1.0 - rim + wobble
    labels[brain] = GREY
    white_edge = 1.0 - rim - cortex + 0.11 * np.clip(folds, 0, None) + wobble
    labels[brain & (radius < white_edge)] = WHITE
    sulcus_depth = 1.0 - rim - (0.6 + 0.5 * atrophy) * cortex
    sulci = brain & (folds < -0.55 - 0.15 * (1 - atrophy)) & (radius > sulcus_depth)
    labels[sulci] = CSF
    fissure = outer & (np.abs(x) < 1.2 + 2.0 * atrophy) & (np.abs(y) > ry * (0.45 + 0.1 * z))
    labels[fissure] = CSF

    if abs(z) < 0.5:
        strength = np.cos(z / 0.5 * np.pi / 2)
        width = (3.0 + 9.0 * atrophy ** 1.5) * strength + 0.5
        length = (18.0 + 14.0 * atrophy) * strength + 2.0
        for side in (-1.0, 1.0):
            center_x = side * (subject.ventricle_offset + 0.4 * width)
            tilt = x - center_x - side * 0.25 * (y + 0.2 * ry)
            horn = (tilt / width) ** 2 + ((y + 4.0) / length) ** 2 < 1.0
            labels[horn & brain] = CSF

    image = _TISSUE_INTENSITY[labels] * subject.gain
    bias = 1.0 + 0.05 * (x / 128.0) - 0.04 * (y / 128.0)
    image = _blur(image * bias) + rng.normal(0.0, 0.012, size=image.shape) * (labels > 0)
    image = np.clip(image, 0.0, 1.0)
    return np.round(image * 255.0).astype(np.uint8), labels


def _write_subject(out_dir: str, subject: Subject, split: str, slices_per_subject: int, size: int,
                   seed: int) -> int:
    for index in range(slices_per_subject):
        image, labels = render_slice(subject, index, slices_per_subject, size,
                                     np.random.default_rng([seed, subject.case, index]))
        name = f"case_{subject.case:03d}_slice_{index}.nii.png"
        iio.imwrite(os.path.join(out_dir, SPLIT_FOLDER.format(split=split), name), image)
        iio.imwrite(os.path.join(out_dir, MASK_FOLDER.format(split=split), "seg" + name[4:]), MASK_VALUES[labels])
    return slices_per_subject


def write_phantom(out_dir: str, num_subjects: int = 40, slices_per_subject: int = 32, size: int = 256,
                  seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  progress: bool = False) -> dict[str, int]:
    """Writes a synthetic data set in the OASIS layout (with masks) under ``out_dir``.

    Args:
        out_dir: destination folder (created when missing).
        num_subjects: synthetic subjects (at least 3: one per split).
        slices_per_subject: axial slices per subject.
        size: image side in pixels.
        seed: everything written is a function of this seed.
        fractions: train/validate/test fractions of the subjects.
        progress: show a progress bar.

    Returns:
        Number of slices written per split.

    Raises:
        ValueError: for fewer than 3 subjects, no slices, or fractions that do not sum to 1.
    """
    if num_subjects < 3:
        raise ValueError(f"num_subjects must be >= 3 (one per split), got {num_subjects}")
    if slices_per_subject < 1:
        raise ValueError(f"slices_per_subject must be >= 1, got {slices_per_subject}")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    subjects = [make_subject(case, rng) for case in range(1, num_subjects + 1)]
    counts = [max(1, int(round(f * num_subjects))) for f in fractions[1:]]
    order = rng.permutation(num_subjects)
    split_of = {}
    for rank, index in enumerate(order):
        split_of[subjects[index].case] = ("validate" if rank < counts[0] else
                                          "test" if rank < sum(counts) else "train")
    os.makedirs(out_dir, exist_ok=True)
    for split in ("train", "validate", "test"):
        os.makedirs(os.path.join(out_dir, SPLIT_FOLDER.format(split=split)), exist_ok=True)
        os.makedirs(os.path.join(out_dir, MASK_FOLDER.format(split=split)), exist_ok=True)
    written = {"train": 0, "validate": 0, "test": 0}
    jobs = [(out_dir, subject, split_of[subject.case], slices_per_subject, size, seed) for subject in subjects]
    workers = max(1, min(os.cpu_count() or 1, 8, len(jobs) // 4))
    bar = progress_bar(total=len(jobs), desc="phantom subjects", unit="subjects", disable=not progress)
    if workers == 1:
        for job in jobs:
            written[job[2]] += _write_subject(*job)
            bar.update()
    else:
        # spawn, not fork: callers may already run TensorFlow threads.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for split, count in zip((job[2] for job in jobs), pool.map(_write_subject, *zip(*jobs))):
                written[split] += count
                bar.update()
    bar.close()
    with open(os.path.join(out_dir, PHANTOM_MARKER), "w", encoding="utf-8") as handle:
        handle.write("SYNTHETIC phantom brain slices made by oasis_gen.data.phantom; not real MRI.\n"
                     f"subjects={num_subjects} slices_per_subject={slices_per_subject} size={size} seed={seed}\n")
    return written
