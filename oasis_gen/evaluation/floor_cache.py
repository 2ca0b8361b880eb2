"""On-disk cache of the evaluation's floors: what real slices of other people (and a run's decoder) score.

The floors depend only on the real data, the position network, the VQ-VAE and the settings, not
on the samples, yet their classifier two-sample tests, nearest-slice SSIMs and MS-SSIMs cost as much
as scoring the samples. Every evaluation of a run (another temperature, guidance, seed of the
samples) and every folder scored with the same cache folder reuses them. The key covers everything
they are computed from: the held-out and training files (names and sizes), the position network's
and the VQ-VAE's weights, the number of slices, the seed and the two-sample test settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import numpy as np

from oasis_gen.fileio import atomic_path

FLOORS_VERSION = 1  # raise when the floors are computed differently
ARRAY_PREFIX = "array:"


def weights_digest(model) -> str:
    """SHA-256 of a Keras model's weights (values, shapes and dtypes, in order)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.asarray(weight.numpy())
        digest.update(f"{value.shape}:{value.dtype};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def files_digest(paths) -> str:
    """SHA-256 of file names and sizes, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{os.path.basename(path)}:{os.path.getsize(path)};".encode())
    return digest.hexdigest()


def cache_key(**parts) -> str:
    """A short key from JSON-able parts (sorted by name) and ``FLOORS_VERSION``."""
    text = json.dumps({**parts, "version": FLOORS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _flatten(details: dict) -> tuple[dict, dict]:
    """``details`` (nested dicts of numbers and arrays) split into a JSON tree and named arrays."""
    arrays = {}

    def walk(value, name):
        if isinstance(value, dict):
            return {key: walk(item, f"{name}.{key}" if name else key) for key, item in value.items()}
        if isinstance(value, np.ndarray):
            arrays[name] = value
            return ARRAY_PREFIX + name
        return value.item() if isinstance(value, np.generic) else value

    return walk(details, ""), arrays


def _unflatten(tree, arrays):
    if isinstance(tree, dict):
        return {key: _unflatten(item, arrays) for key, item in tree.items()}
    if isinstance(tree, str) and tree.startswith(ARRAY_PREFIX):
        return arrays[tree[len(ARRAY_PREFIX):]]
    return tree


def cached_floors(folder: str, key: str, compute: Callable[[], dict]) -> dict:
    """The floors dict for ``key``: read from ``folder/floors_<key>.npz``, or computed and written there.

    ``compute()`` returns a dict of numbers, None and (under ``"details"``) nested dicts with NumPy
    arrays. A cache file that cannot be read is recomputed and replaced.
    """
    path = os.path.join(folder, f"floors_{key}.npz")
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files if name != "tree"}
                return _unflatten(json.loads(str(stored["tree"])), arrays)
        except (OSError, ValueError, KeyError):
            pass  # a torn or foreign file: compute again
    floors = compute()
    tree, arrays = _flatten(floors)
    os.makedirs(folder, exist_ok=True)
    with atomic_path(path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, tree=np.asarray(json.dumps(tree)), **arrays)
    return floors
