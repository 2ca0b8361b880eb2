"""A feature space learned from brains: a small CNN that places a slice by its axial position.

FID's InceptionV3 features come from photographs and need a download; the sample metrics here
use instead the penultimate features of a network trained, on the *training* split only, to
predict which of 8 bands of axial positions a slice comes from (the ``S`` of
``case_NNN_slice_S``; with 32 positions, bands of 4 slices). To place a slice it must read its
anatomy (orbits, ventricles, cortex), so its features separate slices by what a reader of brain
MRI sees, and a sample whose anatomy the network cannot place gets a low position confidence.

The trained network is cached (``feature_net.keras`` and ``feature_net.json``) and retrained only
when the training files, the image size or the training settings change.
"""

from __future__ import annotations

import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from oasis_gen.data import slices
from oasis_gen.fileio import atomic_write_json
from oasis_gen.models.loading import save_model_atomic
from oasis_gen.progress import progress_bar

POSITION_BANDS = 8
REPORT_BANDS = 4  # the per-position tables: slices 0-7, 8-15, 16-23, 24-31 of a 32-slice stack
FEATURE_DIM = 32
FEATURE_NET_VERSION = 2  # 2: shifts in the data pipeline (Keras' RandomTranslation stalled training on real slices)
MIN_STEPS_PER_EPOCH = 8  # small training sets get smaller batches rather than too few updates
MODEL_FILE = "feature_net.keras"
META_FILE = "feature_net.json"


def position_bands(positions, num_positions: int, bands: int = POSITION_BANDS) -> np.ndarray:
    """Band index [N] of axial ``positions`` (0 .. num_positions - 1) split into ``bands`` equal bands."""
    positions = np.asarray(positions, np.int64)
    return np.clip(positions * bands // max(int(num_positions), 1), 0, bands - 1)


@keras.saving.register_keras_serializable(package="oasis_gen")
class SpatialStd(keras.layers.Layer):
    """Per-channel standard deviation over the spatial axes: [B, H, W, C] -> [B, C]."""

    def call(self, inputs):
        mean = keras.ops.mean(inputs, axis=(1, 2), keepdims=True)
        return keras.ops.sqrt(keras.ops.mean(keras.ops.square(inputs - mean), axis=(1, 2)) + 1e-12)


def build_feature_net(image_size: int, bands: int = POSITION_BANDS, feature_dim: int = FEATURE_DIM):
    """The position classifier: strided convolutions on a 128x128 (or smaller) copy, pooled features, logits.

    Its layer ``features`` gives the embedding that feeds the position logits: the pooled mid-level
    edge channels (32) beside ``feature_dim`` units read from the deepest maps (anatomy); the
    output is ``bands`` logits.
    """

    inputs = keras.Input((image_size, image_size, 1))
    x = inputs
    if image_size > 128:
        x = keras.layers.AveragePooling2D(image_size // 128)(x)
    pooled = []
    for filters, strides in ((32, 2), (64, 2), (64, 1), (128, 2), (128, 1), (128, 2)):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", activation="relu",
                                kernel_initializer="he_normal")(x)
        if filters == 32:  # low-level contrast: the spatial spread of each filter's response drops with blur
            pooled.append(SpatialStd(name="edge_contrast")(x))
    anatomy = keras.layers.Dense(feature_dim, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
    features = keras.layers.Concatenate(name="features")(pooled + [anatomy])
    logits = keras.layers.Dense(bands, name="position_logits")(keras.layers.Dropout(0.3)(features))
    return keras.Model(inputs, logits, name="position_feature_net")


def fingerprint(paths, image_size: int, epochs: int, seed: int) -> str:
    """Identity of a training set and settings: file names and sizes, image size, epochs, seed, version."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{os.path.basename(path)}:{os.path.getsize(path)};".encode())
    digest.update(f"{image_size}:{epochs}:{seed}:{FEATURE_NET_VERSION}".encode())
    return digest.hexdigest()


class FeatureSpace:
    """A trained position network: embeddings, band probabilities and the positions it was trained on.

    Args:
        model: the network from ``build_feature_net`` (trained).
        num_positions: axial positions per subject in the training data (32 for OASIS).
        meta: what ``feature_net.json`` records (accuracies, fingerprint).
    """

    def __init__(self, model, num_positions: int, meta: dict | None = None):

        self.model = model
        self.num_positions = int(num_positions)
        self.meta = meta or {}
        self._embed = keras.Model(model.inputs, [model.get_layer("features").output, model.outputs[0]])
        self.scale = np.asarray(self.meta.get("feature_scale", 1.0), np.float64)

    def standardize(self, train_images: np.ndarray) -> None:
        """Scales each feature by its spread over the training slices, so edge and anatomy features
        weigh alike in distances (their raw scales differ by orders of magnitude)."""
        features, _ = self.embed(train_images)
        spread = features.std(axis=0)
        alive = spread > 1e-3 * spread.max()  # units (almost) never active on brains carry no information
        self.scale = np.where(alive, 1.0 / np.where(alive, spread, 1.0), 0.0)
        self.meta["feature_scale"] = self.scale.tolist()

    def embed(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """``(features [N, 32 + FEATURE_DIM], band probabilities [N, POSITION_BANDS])`` of images in [0, 1]."""

        features, probabilities = [], []
        for start in range(0, len(images), batch_size):
            batch_features, logits = self._embed(tf.constant(images[start:start + batch_size], tf.float32),
                                                 training=False)
            features.append(np.asarray(batch_features, np.float64) * self.scale)
            probabilities.append(tf.nn.softmax(logits).numpy().astype(np.float64))
        return np.concatenate(features), np.concatenate(probabilities)

    def bands(self, positions) -> np.ndarray:
        return position_bands(positions, self.num_positions)


def train_feature_net(images: np.ndarray, positions: np.ndarray, num_positions: int, epochs: int = 8,
                      seed: int = 0, batch_size: int = 32, progress: bool = True):
    """Trains the position network on ``images`` [N, S, S, 1] with their axial ``positions`` [N]."""
    keras.utils.set_random_seed(seed)
    model = build_feature_net(images.shape[1])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    labels = position_bands(positions, num_positions)
    batch_size = max(4, min(batch_size, len(images) // MIN_STEPS_PER_EPOCH))
    size = images.shape[1]
    margin = max(1, int(round(0.04 * size)))  # heads are not all centred: random shifts of up to 4%

    def shift(image, label):
        padded = tf.pad(image, [[margin, margin], [margin, margin], [0, 0]])
        return tf.image.random_crop(padded, tf.shape(image), seed=seed), label

    dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=seed)
               .map(shift, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size))
    bar = progress_bar(total=epochs, desc="position network", unit="epochs", disable=not progress, leave=False)
    tick = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: bar.update(1))
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=[tick])
    bar.close()
    return model, float(history.history["accuracy"][-1])


def load_or_train(folder: str, train_images: np.ndarray, train_paths, epochs: int = 8, seed: int = 0,
                  validation: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True) -> FeatureSpace:
    """The cached position network in ``folder``, or a new one trained on the training slices.

    Args:
        folder: where ``feature_net.keras`` and ``feature_net.json`` live (created when missing).
        train_images: the training split [N, S, S, 1] in [0, 1].
        train_paths: their files; positions come from the names (``slice_S``).
        epochs: training epochs.
        seed: weight and shuffle seed.
        validation: optional ``(images, positions)`` of held-out slices to report the band accuracy on.
        progress: show a progress bar while training.

    Raises:
        slices.DataError: a training file without a slice position in its name.
    """

    positions = np.asarray([slices.slice_position(p) if slices.slice_position(p) is not None else -1
                            for p in train_paths])
    if (positions < 0).any():
        missing = train_paths[int(np.argmax(positions < 0))]
        raise slices.DataError(f"{missing}: the position network needs the axial position in every training file "
                             "name (case_NNN_slice_S.nii.png)")
    num_positions = int(positions.max()) + 1
    key = fingerprint(train_paths, train_images.shape[1], epochs, seed)
    model_path, meta_path = os.path.join(folder, MODEL_FILE), os.path.join(folder, META_FILE)
    if os.path.isfile(model_path) and os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("fingerprint") == key:
            return FeatureSpace(keras.models.load_model(model_path, safe_mode=True), meta["num_positions"], meta)

    model, train_accuracy = train_feature_net(train_images, positions, num_positions, epochs, seed,
                                              progress=progress)
    meta = {"fingerprint": key, "num_positions": num_positions, "bands": POSITION_BANDS, "epochs": epochs,
            "seed": seed, "train_slices": int(len(train_images)), "train_band_accuracy": train_accuracy}
    space = FeatureSpace(model, num_positions, meta)
    space.standardize(train_images)
    if validation is not None:
        _, probabilities = space.embed(validation[0])
        bands = space.bands(validation[1])
        meta["heldout_band_accuracy"] = float((probabilities.argmax(1) == bands).mean())
        meta["heldout_band_accuracy_within_one"] = float((np.abs(probabilities.argmax(1) - bands) <= 1).mean())
    os.makedirs(folder, exist_ok=True)
    save_model_atomic(model, model_path)
    atomic_write_json(meta_path, meta)
    return space
