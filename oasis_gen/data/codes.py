"""Extracted code maps on disk (``codes/{split}.npz``) and their tf.data loaders.

Each file holds ``top`` int16 [N, h, w], ``bottom`` int16 [N, 2h, 2w], ``files`` (the source
slice names, in order) and ``position`` int16 [N] (the axial slice position of each, -1 where the
name carries none; files written before it existed get it from ``files``); a single-level model's
files have no ``top``. In memory, code grids are int32.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from oasis_gen.data.slices import slice_position
from oasis_gen.data.stream import shuffled_indices
from oasis_gen.fileio import atomic_path
from oasis_gen.progress import progress_bar


def encode_dataset(model, dataset, progress: bool = True, description: str = "encoding") -> dict:
    """Encodes a dataset of ``(images, paths)`` batches with a ``VQVAE2``.

    Returns:
        ``{"top": int16 [N, h, w], "bottom": int16 [N, 2h, 2w], "files": str [N], "position": int16 [N]}``
        (no ``top`` for a single-level model).
    """
    encode = tf.function(model.encode)
    tops, bottoms, files = [], [], []
    for images, paths in progress_bar(dataset, desc=description, unit="batches", disable=not progress, leave=False):
        top, bottom = encode(images)
        if top is not None:
            tops.append(top.numpy().astype(np.int16))
        bottoms.append(bottom.numpy().astype(np.int16))
        files.extend(os.path.basename(p.decode()) for p in paths.numpy())
    codes = {"bottom": np.concatenate(bottoms), "files": np.asarray(files), "position": positions_of(files)}
    if tops:
        codes["top"] = np.concatenate(tops)
    return codes


MIRRORED = "train_mirrored"  # codes/train_mirrored.npz: the training slices mirrored left-right


def mirror_left_right(images):
    """Slices [B, H, W, C] mirrored left-right: OASIS rows run from one hemisphere to the other
    (``volume[:, :, z]`` without flips), so the mirror image reverses the row axis."""

    return tf.reverse(images, axis=[1])


def concatenate(first: dict, second: dict) -> dict:
    """The code maps of ``first`` followed by those of ``second`` (same levels)."""
    return {key: np.concatenate([np.asarray(first[key]), np.asarray(second[key])]) for key in first
            if first[key] is not None}


def positions_of(files) -> np.ndarray:
    """Axial slice positions int16 [N] named in ``files`` (``..._slice_S...``), -1 where a name has none."""

    return np.asarray([-1 if slice_position(str(name)) is None else slice_position(str(name)) for name in files],
                      np.int16)


def position_frequencies(codes: dict) -> list[float]:
    """How often each axial position 0..max occurs in ``codes`` (fractions summing to 1).

    Raises:
        ValueError: a slice without a position in its name (named), so a position-conditioned prior
            cannot be trained on these codes.
    """
    positions = np.asarray(codes["position"])
    if (positions < 0).any():
        name = codes["files"][int(np.argmax(positions < 0))]
        raise ValueError(f"{name} carries no slice position (..._slice_S...): rename the slices, or train the "
                         "priors without it (--no-condition_on_position)")
    counts = np.bincount(positions.astype(np.int64))
    return (counts / counts.sum()).tolist()


def save_codes(path: str, codes: dict) -> None:
    """Writes code maps to an .npz file atomically."""
    arrays = {name: np.asarray(codes[name]).astype(np.int16) for name in ("top", "bottom", "position")
              if codes.get(name) is not None}
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez_compressed(temporary, files=np.asarray(codes["files"]), **arrays)


def load_codes(path: str, num_embeddings: int | None = None) -> dict:
    """Reads code maps written by ``save_codes``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: missing arrays, inconsistent shapes or codes outside ``[0, num_embeddings)``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no code file at {path}")
    with np.load(path, allow_pickle=False) as archive:
        missing = {"bottom", "files"} - set(archive.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)}")
        codes = {key: archive[key] for key in ("top", "bottom", "files", "position") if key in archive.files}
    if "position" not in codes:
        codes["position"] = positions_of(codes["files"])
    bottom = codes["bottom"]
    if bottom.ndim != 3 or len(bottom) != len(codes["files"]):
        raise ValueError(f"{path}: expected bottom [N, h, w] with N file names, got {bottom.shape} and "
                         f"{len(codes['files'])} names")
    top = codes.get("top")
    if top is not None and (top.ndim != 3 or len(top) != len(bottom) or bottom.shape[1] not in (2 * top.shape[1],
                                                                                               4 * top.shape[1])):
        raise ValueError(f"{path}: expected top [N, h, w] and bottom [N, 2h, 2w] or [N, 4h, 4w], got {top.shape} "
                         f"and {bottom.shape}")
    if num_embeddings is not None:
        for name, values in codes.items():
            if name in ("files", "position"):
                continue
            if values.size and (values.min() < 0 or values.max() >= num_embeddings):
                raise ValueError(f"{path}: {name} codes outside [0, {num_embeddings})")
    return codes


def code_dataset(codes: dict, level: str, batch_size: int, training: bool = False, seed: int = 0,
                 start_step: int = 0, with_position: bool = False):
    """tf.data batches for a prior: top code maps, or ``{"bottom", "top"}`` dicts for the bottom prior (int32);
    bottom code maps alone when ``codes`` has no top level (a single-level model). ``with_position``
    gives dicts with a ``position`` entry too (for a position-conditioned prior).

    ``training`` gives an endless stream of shuffled passes (``data.shuffled_indices``) from
    batch ``start_step`` on; otherwise one pass in file order.
    """


    if level not in ("top", "bottom"):
        raise ValueError(f"level must be 'top' or 'bottom', got {level!r}")
    if level == "top" and codes.get("top") is None:
        raise ValueError("these codes come from a single-level model: there is no top level")
    names = ("top",) if level == "top" else ("bottom", "top") if codes.get("top") is not None else ("bottom",)
    if with_position:
        names += ("position",)
    arrays = {name: tf.constant(np.asarray(codes[name]).astype(np.int32)) for name in names}

    def pick(index):
        return arrays[names[0]][index] if len(names) == 1 else {name: arrays[name][index] for name in names}

    count = len(codes["bottom"])
    if training:
        indices = shuffled_indices(count, seed, start_step * batch_size)
    else:
        indices = tf.data.Dataset.range(count)
    return indices.map(pick).batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
