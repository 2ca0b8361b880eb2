"""Saving and loading oasis_gen models: atomic ``.keras`` writes and safe-mode loading in a chosen precision."""

from __future__ import annotations

import json
import os
import zipfile

import keras

from oasis_gen.fileio import atomic_path
from oasis_gen.models import dcgan, priors, vqvae  # noqa: F401  (importing registers the classes)
from oasis_gen.models.precision import PRECISIONS, precision_scope, set_compute_precision


def save_model_atomic(model: keras.Model, path: str) -> None:
    """Saves ``model`` to ``path`` (a .keras file) via a temporary name and a rename."""
    with atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary)


def _stored_precision(path: str) -> str:
    """The dtype policy a ``.keras`` file's model was saved under (float32 when it names none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            dtype = json.loads(archive.read("config.json")).get("config", {}).get("dtype")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return "float32"  # not a readable archive: let Keras report what is wrong with it
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    return name if name in PRECISIONS else "float32"


def load_model(path: str, precision: str | None = "float32") -> keras.Model:
    """Loads an oasis_gen ``.keras`` file with ``safe_mode=True`` (no code is run from the file).

    A model trained under a mixed policy stores it; ``precision`` (default float32) makes the loaded
    model compute in that precision instead, so codes, evaluation and sampling do not depend on how
    the model was trained. ``None`` keeps the stored policies (to resume training).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a Keras model of a registered oasis_gen class.
    """

    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:
        # rebuilt under the policy it was trained with, so every sub-layer is made as it was saved
        with precision_scope(_stored_precision(path)):
            model = keras.models.load_model(path, safe_mode=True, compile=True)
    except Exception as error:  # Keras raises many types for a foreign or broken file
        raise ValueError(f"{path} is not a loadable oasis_gen model: {error}") from error
    if not type(model).__module__.startswith("oasis_gen."):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an oasis_gen model")
    return model if precision is None else set_compute_precision(model, precision)
