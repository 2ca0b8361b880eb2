"""Learned realism measures: the classifier two-sample test and Inception features for FID.

Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): a small CNN learns to tell real
slices from generated ones; its ROC AUC on slices it was not trained on measures how
distinguishable the two sets are (0.5: indistinguishable, 1.0: always told apart). Every slice
is scored exactly once by a classifier that did not see it (k-fold cross-fitting), so all the
data serves as held-out data.

FID (Heusel et al. 2017) needs ImageNet InceptionV3 weights. Nothing is downloaded: the user
passes the Keras weights file (``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from oasis_gen.evaluation import metrics
from oasis_gen.progress import progress_bar

MIN_STEPS_PER_EPOCH = 8  # small sets train in smaller batches rather than with too few updates


def _classifier(image_size: int):

    layers = [keras.Input((image_size, image_size, 1))]
    if image_size > 128:  # the classifier looks at 128x128 or smaller copies (texture survives x2 pooling)
        layers.append(keras.layers.AveragePooling2D(image_size // 128))
    for filters in (16, 32, 64, 64):
        layers += [keras.layers.Conv2D(filters, 3, strides=2, padding="same"), keras.layers.LeakyReLU(0.2)]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.25), keras.layers.Dense(1)]
    return keras.Sequential(layers)


_COMPILED: dict = {}  # image size -> the classifier whose training step is traced, re-initialised for every fold


def _new_classifier(image_size: int, learning_rate: float, seed: int):
    """A compiled classifier in the state a new one built after ``keras.utils.set_random_seed(seed)`` has
    (weights, dropout seed, zeroed Adam moments), but one model per image size and process: its training
    step is traced once, not once per fold and test (tracing, not training, dominated small tests)."""
    keras.utils.set_random_seed(seed)
    fresh = _classifier(image_size)
    model = _COMPILED.get(image_size)
    if model is None or not model.optimizer.built:
        model = _COMPILED[image_size] = fresh
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        return model
    for target, source in zip(model.variables, fresh.variables, strict=True):
        target.assign(source)
    for variable in model.optimizer.variables:  # the step count and both moments
        variable.assign(tf.zeros_like(variable))
    model.optimizer.learning_rate = learning_rate
    return model


def grouped_folds(groups, folds: int, seed: int = 0, sides=None) -> np.ndarray:
    """Fold index [N] per item, keeping every group (e.g. a subject's slices) inside one fold.

    Groups are taken in a seeded random order and each is put into the fold that holds the
    fewest items of its side so far (``sides``: e.g. 0 for real, 1 for generated), so each side
    is spread evenly over the folds; a group met again on another side keeps its fold.
    """
    groups = np.asarray(groups).ravel()
    sides = np.zeros(len(groups), np.int64) if sides is None else np.asarray(sides).ravel()
    rng = np.random.default_rng(seed)
    fold_of_group: dict = {}
    for side in np.unique(sides):
        names, sizes = np.unique(groups[sides == side], return_counts=True)
        filled = np.zeros(folds, np.int64)
        for name in names:
            if name in fold_of_group:
                filled[fold_of_group[name]] += sizes[names == name][0]
        for position in rng.permutation(len(names)):
            if names[position] not in fold_of_group:
                fold_of_group[names[position]] = int(np.argmin(filled))
                filled[fold_of_group[names[position]]] += sizes[position]
    return np.asarray([fold_of_group[name] for name in groups], np.int64)


def balanced_subset(count: int, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices drawn without replacement, spread as evenly as possible over the groups."""
    order = rng.permutation(len(groups))
    rank_in_group = np.empty(len(groups), np.int64)  # the i-th draw of a group gets rank i
    seen: dict = {}
    for index in order:
        rank_in_group[index] = seen.get(groups[index], 0)
        seen[groups[index]] = rank_in_group[index] + 1
    return np.sort(order[np.argsort(rank_in_group[order], kind="stable")][:count])


def two_sample_test(real: np.ndarray, generated: np.ndarray, folds: int = 4, epochs: int = 20,
                    batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
                    real_groups=None, generated_groups=None, progress: bool = False,
                    description: str = "C2ST") -> dict:
    """Classifier two-sample test of two image sets [N, S, S, 1] in [0, 1].

    The larger set is subsampled to the smaller one's size (balanced classes, drawn evenly across
    its groups). Each fold's images are scored by a CNN trained on the other folds. Images that
    share a group label (``real_groups``: the subject of each real slice) always land in the same
    fold, so a classifier never scores a subject it trained on; without groups every image is its
    own group and images spread evenly over the folds. The same label on both sides (a slice and
    its reconstruction) shares a fold too. The AUC comes with a 95% bootstrap interval that
    resamples whole groups.

    Returns:
        ``{"auc", "auc_low", "auc_high", "accuracy", "per_image", "folds", "labels" [2N] (1 =
        generated), "scores" [2N], "groups" [2N], "indices" [2N]}``; ``indices`` are positions in
        the set each image came from, ``fold_of`` [2N] the fold that scored each image.

    Raises:
        ValueError: fewer than 2 images or groups in a set, sets of different image shapes, or
            group labels that do not match their set's length. (A set with fewer groups than
            ``folds`` is tested with as many folds as it has groups.)
    """
    real, generated = np.asarray(real, np.float32), np.asarray(generated, np.float32)
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"real slices {real.shape[1:]} and samples {generated.shape[1:]} differ in shape")
    sides = []
    for name, images, groups in (("real", real, real_groups), ("generated", generated, generated_groups)):
        groups = (np.asarray([f"{name}:{i}" for i in range(len(images))]) if groups is None
                  else np.asarray(groups).astype(str))
        if len(groups) != len(images):
            raise ValueError(f"{len(groups)} group labels for {len(images)} {name} images")
        sides.append(groups)
    rng = np.random.default_rng(seed)
    count = min(len(real), len(generated))
    if count < 2:
        raise ValueError(f"the two-sample test needs at least 2 images per set, got {count}")
    picked = [balanced_subset(count, groups, rng) for groups in sides]
    images = np.concatenate([real[picked[0]], generated[picked[1]]])
    groups = np.concatenate([sides[0][picked[0]], sides[1][picked[1]]])
    labels = np.concatenate([np.zeros(count, np.int64), np.ones(count, np.int64)])
    # every fold must hold images of both sets; a set with fewer groups than folds gets fewer folds
    folds = min(folds, count, *(len(np.unique(side[chosen])) for side, chosen in zip(sides, picked)))
    if folds < 2:
        raise ValueError("the two-sample test needs images of at least 2 subjects (groups) per set, so that "
                         "every image is scored by a classifier that never saw its subject; got "
                         f"{[len(np.unique(side[chosen])) for side, chosen in zip(sides, picked)]}")
    fold_of = grouped_folds(groups, folds, seed, sides=labels)
    scores = np.zeros(len(images), np.float64)
    bar = progress_bar(total=folds * epochs, desc=description, unit="epochs", disable=not progress, leave=False)
    tick = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: bar.update(1))
    for fold in range(folds):
        train, held_out = fold_of != fold, fold_of == fold
        fold_batch = max(4, min(batch_size, int(train.sum()) // MIN_STEPS_PER_EPOCH))
        model = _new_classifier(images.shape[1], learning_rate, seed + fold)
        dataset = (tf.data.Dataset.from_tensor_slices((images[train], labels[train].astype(np.float32)))
                   .shuffle(int(train.sum()), seed=seed + fold).batch(fold_batch))
        model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=[tick])  # the dataset shuffles
        scores[held_out] = np.concatenate([model(images[held_out][i:i + 64], training=False).numpy()[:, 0]
                                           for i in range(0, int(held_out.sum()), 64)])
    bar.close()
    low, high = metrics.bootstrap_auc_interval(labels, scores, groups, seed=seed)
    return {"auc": metrics.roc_auc(labels, scores), "auc_low": low, "auc_high": high,
            "accuracy": float(((scores > 0) == labels).mean()), "per_image": count, "folds": folds,
            "labels": labels, "scores": scores, "groups": groups, "indices": np.concatenate(picked),
            "fold_of": fold_of}


def inception_features(images: np.ndarray, weights_path: str, batch_size: int = 32) -> np.ndarray:
    """2048-d pooled InceptionV3 features [N, 2048] of grayscale images [N, S, S, 1] in [0, 1].

    Slices are resized to 299x299 and repeated to three channels, then scaled to [-1, 1] as
    InceptionV3 expects.

    Raises:
        FileNotFoundError: no file at ``weights_path``.
        ValueError: the file is not an InceptionV3 (no-top) weights file.
    """

    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"no Inception weights file at {weights_path}")
    try:
        model = keras.applications.InceptionV3(include_top=False, weights=weights_path, pooling="avg",
                                               input_shape=(299, 299, 3))
    except Exception as error:  # Keras raises several types for a wrong or corrupt weights file
        raise ValueError(f"{weights_path} is not a Keras InceptionV3 weights file without the top "
                         f"(inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5): {error}") from error

    @tf.function
    def features(batch):
        resized = tf.image.resize(batch, (299, 299), method="bilinear")
        return model(tf.repeat(resized * 2.0 - 1.0, 3, axis=-1), training=False)

    return np.concatenate([features(tf.constant(images[i:i + batch_size], tf.float32)).numpy()
                           for i in range(0, len(images), batch_size)])
