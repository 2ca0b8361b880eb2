"""A run judged on any OASIS-layout folder: its VQ-VAE-2's reconstructions (whole slice and head only),
how much of a slice's layout its top codes carry, and the bits per code of the folder's codes under
its priors. ``python -m oasis_gen.cli.evaluate``
runs these from the command line; sample quality is in ``samples``, run comparison in ``compare``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf

from oasis_gen import plots, rundir
from oasis_gen.data import codes as codes_lib
from oasis_gen.data.stream import load_split
from oasis_gen.evaluation import metrics
from oasis_gen.models.loading import load_model
from oasis_gen.progress import progress_bar
from oasis_gen.sampling.generate import load_models


def evaluate_reconstruction(run_dir: str, data_dir: str, split: str = "test", batch_size: int = 16,
                            progress: bool = True) -> dict:
    """Reconstruction metrics of the run's VQ-VAE-2 on ``split`` of ``data_dir``.

    Slices are brought to the run's image size the way the run was configured.

    Raises:
        rundir.RunError: the run has no finished VQ-VAE stage.
        slices.DataError: the folder or split cannot be read.
    """

    run = rundir.open_run(run_dir, None, {}, create=False)
    run.require("vqvae", "evaluate reconstruction")
    model = load_model(run.model_path("vqvae"))
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir),
                                      image_size=model.image_size, include_masks=False)
    dataset, source = load_split(data_config, split, batch_size)
    results = metrics.evaluate_reconstruction(model, dataset, progress=progress)
    results.update({"split": split, "data_dir": data_config.data_dir, "synthetic_data": source.synthetic,
                    "run_dir": run.path, "skipped": source.skipped})
    return results


def evaluate_prior(run_dir: str, data_dir: str, split: str = "test", batch_size: int = 16,
                   progress: bool = True) -> dict:
    """Bits per code of a folder's codes under the run's priors: ``{"top": {...}, "bottom": {...}}``.

    Raises:
        rundir.RunError: the run lacks a trained VQ-VAE or prior.
        slices.DataError: the folder or split cannot be read.
    """








    run = rundir.open_run(run_dir, None, {}, create=False)
    models = load_models(run)
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir),
                                      image_size=models["vqvae"].image_size, include_masks=False)
    dataset, source = load_split(data_config, split, batch_size, with_paths=True)
    codes = codes_lib.encode_dataset(models["vqvae"], dataset, progress=progress)
    results = {"split": split, "data_dir": data_config.data_dir, "synthetic_data": source.synthetic,
               "slices": int(len(codes["files"])), "run_dir": run.path}
    for level in ("top", "bottom"):
        prior = models[level]
        if prior is None:
            continue
        nats = tf.function(lambda batch: tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(prior.target_codes(batch), tf.int32), logits=prior(batch, training=False))))
        total, count = 0.0, 0
        for batch in codes_lib.code_dataset(codes, level, batch_size, with_position=prior.num_positions > 0):
            total += float(nats(batch))
            count += int(tf.size(prior.target_codes(batch)))
        results[level] = {"nll_bits_per_code": total / count / math.log(2.0), "codes": count,
                          "uniform_bits_per_code": math.log2(prior.num_embeddings)}
    return results


def _top_vectors(model, dataset, progress: bool, description: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(top quantized vectors, top code indices, slices averaged over 4x4 pixels)`` of a dataset."""
    quantize = tf.function(lambda images: model.quantize_levels(images)[0])
    vectors, indices, coarse = [], [], []
    for images in progress_bar(dataset, desc=description, unit="batches", disable=not progress, leave=False):
        top = quantize(images)
        vectors.append(top["quantized"].numpy())
        indices.append(top["indices"].numpy())
        coarse.append(tf.nn.avg_pool2d(images, 4, 4, "VALID").numpy())
    return np.concatenate(vectors), np.concatenate(indices), np.concatenate(coarse)


def layout_probe(input_shape: tuple[int, int, int], output_side: int, seed: int = 0) -> keras.Model:
    """The small head ``evaluate_layout`` fits: top vectors [h, w, d] -> a [side, side, 1] slice.

    A 3x3 convolution (64 channels), then one transposed convolution per doubling (32, 16, ...
    channels) and a 3x3 convolution to one channel: small enough that it cannot draw anatomy the
    top codes do not hold."""
    keras.utils.set_random_seed(seed)
    ups = int(round(math.log2(output_side / input_shape[0])))
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Conv2D(64, 3, padding="same", activation="relu")]
        + [keras.layers.Conv2DTranspose(64 >> (i + 1), 4, 2, padding="same", activation="relu") for i in range(ups)]
        + [keras.layers.Conv2D(1, 3, padding="same")], name="layout_probe")


def evaluate_layout(run_dir: str, data_dir: str, split: str = "validate", batch_size: int = 32, epochs: int = 12,
                    out: str | None = None, seed: int = 0, progress: bool = True) -> dict:
    """How much of each slice's layout the run's top codes carry, whatever the bottom codes do.

    A small head (``layout_probe``) learns, on the training split with the VQ-VAE-2 frozen, to
    predict each slice averaged over 4x4 pixels (64x64 for 256x256 slices) from the top level's
    quantized vectors alone; its SSIM and MSE on ``split`` say how much anatomy (ventricles, midline,
    outline) the top map encodes, which is what the top prior has to model. The same head and
    training for every run make runs comparable. With ``out``, ``layout_probe.png`` shows the
    held-out slices (averaged) above the head's predictions.

    Returns:
        ``{"layout_ssim", "layout_mse", "top_perplexity", "top_codes_used", "slices", "split", ...}``.

    Raises:
        rundir.RunError: the run has no finished VQ-VAE stage.
        ValueError: the run's VQ-VAE-2 has a single level (no top codes).
        slices.DataError: the folder or split cannot be read.
    """
    run = rundir.open_run(run_dir, None, {}, create=False)
    run.require("vqvae", "evaluate layout")
    model = load_model(run.model_path("vqvae"))
    if model.levels != 2:
        raise ValueError(f"the VQ-VAE of {run.path} has a single level: there are no top codes to probe")
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir),
                                      image_size=model.image_size, include_masks=False)
    train_set, _ = load_split(data_config, "train", batch_size)
    held_out, source = load_split(data_config, split, batch_size)
    train_vectors, _, train_targets = _top_vectors(model, train_set, progress, "encoding train")
    vectors, indices, targets = _top_vectors(model, held_out, progress, f"encoding {split}")
    probe = layout_probe(vectors.shape[1:], targets.shape[1], seed)
    probe.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    probe.fit(train_vectors, train_targets, batch_size=batch_size, epochs=epochs, shuffle=True,
              verbose=1 if progress else 0)
    predicted = np.clip(probe.predict(vectors, batch_size=batch_size, verbose=0), 0.0, 1.0)
    counts = np.bincount(indices.ravel(), minlength=model.num_embeddings)
    statistics = metrics.code_statistics(counts)
    # a 7-pixel window on the 4x4-mean targets: the 11-pixel one of full-size SSIM would span 44 slice pixels
    results = {"layout_ssim": float(np.mean(tf.image.ssim(targets, predicted, max_val=1.0, filter_size=7))),
               "layout_mse": float(np.mean((predicted - targets) ** 2)),
               "top_perplexity": statistics["perplexity"], "top_codes_used": statistics["codes_used"],
               "top_grid": int(vectors.shape[1]), "probe_side": int(targets.shape[1]), "epochs": epochs,
               "slices": int(len(vectors)), "split": split, "data_dir": data_config.data_dir,
               "synthetic_data": source.synthetic, "run_dir": run.path}
    if out:
        os.makedirs(out, exist_ok=True)
        shown = np.linspace(0, len(vectors) - 1, min(8, len(vectors))).astype(int)
        figure = plots.image_grid([(f"{split} (4x4 mean)", targets[shown]), ("from top codes", predicted[shown])],
                                  title=f"layout carried by the {vectors.shape[1]}x{vectors.shape[2]} top codes: "
                                        f"SSIM {results['layout_ssim']:.3f}")
        results["figure"] = plots.save(figure, os.path.join(out, "layout_probe.png"))
    return results
