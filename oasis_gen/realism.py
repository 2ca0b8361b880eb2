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

import numpy as np

from oasis_gen import metrics


def _classifier(image_size: int):
    import keras

    layers = [keras.Input((image_size, image_size, 1))]
    if image_size > 128:  # the classifier looks at 128x128 or smaller copies (texture survives x2 pooling)
        layers.append(keras.layers.AveragePooling2D(image_size // 128))
    for filters in (16, 32, 64, 64):
        layers += [keras.layers.Conv2D(filters, 3, strides=2, padding="same"), keras.layers.LeakyReLU(0.2)]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.25), keras.layers.Dense(1)]
    return keras.Sequential(layers)


def two_sample_test(real: np.ndarray, generated: np.ndarray, folds: int = 4, epochs: int = 20,
                    batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0) -> dict:
    """Classifier two-sample test of two image sets [N, S, S, 1] in [0, 1].

    The larger set is subsampled to the smaller one's size (balanced classes); each fold's slices
    are scored by a CNN trained on the other folds (at most one fold per image).

    Returns:
        ``{"auc": float, "accuracy": float, "per_image": N, "folds": k, "labels": int [2N],
        "scores": float [2N]}`` (labels 1 = generated).

    Raises:
        ValueError: fewer than 2 images in a set, or sets of different image shapes.
    """
    import keras
    import tensorflow as tf

    real, generated = np.asarray(real, np.float32), np.asarray(generated, np.float32)
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"real slices {real.shape[1:]} and samples {generated.shape[1:]} differ in shape")
    rng = np.random.default_rng(seed)
    count = min(len(real), len(generated))
    if count < 2:
        raise ValueError(f"the two-sample test needs at least 2 images per set, got {count}")
    folds = min(folds, count)
    real = real[rng.choice(len(real), count, replace=False)]
    generated = generated[rng.choice(len(generated), count, replace=False)]
    images = np.concatenate([real, generated])
    labels = np.concatenate([np.zeros(count, np.int64), np.ones(count, np.int64)])
    fold_of = np.concatenate([rng.permutation(count) % folds, rng.permutation(count) % folds])
    scores = np.zeros(len(images), np.float64)
    for fold in range(folds):
        keras.utils.set_random_seed(seed + fold)
        train, held_out = fold_of != fold, fold_of == fold
        model = _classifier(images.shape[1])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        dataset = (tf.data.Dataset.from_tensor_slices((images[train], labels[train].astype(np.float32)))
                   .shuffle(int(train.sum()), seed=seed + fold).batch(batch_size))
        model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)  # the dataset shuffles
        scores[held_out] = np.concatenate([model(images[held_out][i:i + 64], training=False).numpy()[:, 0]
                                           for i in range(0, int(held_out.sum()), 64)])
    return {"auc": metrics.roc_auc(labels, scores), "accuracy": float(((scores > 0) == labels).mean()),
            "per_image": count, "folds": folds, "labels": labels, "scores": scores}


def inception_features(images: np.ndarray, weights_path: str, batch_size: int = 32) -> np.ndarray:
    """2048-d pooled InceptionV3 features [N, 2048] of grayscale images [N, S, S, 1] in [0, 1].

    Slices are resized to 299x299 and repeated to three channels, then scaled to [-1, 1] as
    InceptionV3 expects.

    Raises:
        FileNotFoundError: no file at ``weights_path``.
        ValueError: the file is not an InceptionV3 (no-top) weights file.
    """
    import keras
    import tensorflow as tf

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
