"""A run judged on any OASIS-layout folder: its VQ-VAE-2's reconstructions (whole slice and head only)
and the bits per code of the folder's codes under its priors. ``python -m oasis_gen.cli.evaluate``
runs these from the command line; sample quality is in ``samples``, run comparison in ``compare``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import tensorflow as tf

from oasis_gen import rundir
from oasis_gen.data import codes as codes_lib
from oasis_gen.data.stream import load_split
from oasis_gen.evaluation import metrics
from oasis_gen.models.loading import load_model
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
