"""Evaluation metrics: SSIM, MS-SSIM, PSNR, MSE, code usage and perplexity, NLL in bits per code.

All image metrics take NHWC float32 intensities in [0, 1]. SSIM uses a Gaussian window of 11
with sigma 1.5, k1 = 0.01, k2 = 0.03 (Wang et al. 2004), as DESIGN.md §4 fixes.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def ssim(images, reconstructions):
    """Per-image SSIM [B] of two [B, H, W, 1] batches in [0, 1]."""
    return tf.image.ssim(images, reconstructions, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def ms_ssim(images, reconstructions):
    """Per-image MS-SSIM [B]; uses as many of the 5 scales as the image size allows (>= 11 px at the coarsest)."""
    size = min(int(images.shape[1]), int(images.shape[2]))
    scales = max(1, min(5, int(math.floor(math.log2(size / 11.0))) + 1))
    weights = np.asarray(_MS_SSIM_WEIGHTS[:scales])
    return tf.image.ssim_multiscale(images, reconstructions, max_val=1.0,
                                    power_factors=tuple(weights / weights.sum()), filter_size=11)


def psnr(images, reconstructions):
    """Per-image PSNR in dB [B]."""
    return tf.image.psnr(images, reconstructions, max_val=1.0)


def code_statistics(counts: np.ndarray) -> dict:
    """Perplexity and used fraction of a codebook from its per-code counts [K]."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return {"perplexity": 0.0, "usage": 0.0, "codes_used": 0}
    probabilities = counts / total
    nonzero = probabilities[probabilities > 0]
    return {"perplexity": float(np.exp(-(nonzero * np.log(nonzero)).sum())),
            "usage": float((counts > 0).mean()), "codes_used": int((counts > 0).sum())}


def bits_per_code(logits, codes):
    """Mean negative log2-likelihood per code of integer ``codes`` under categorical ``logits`` [..., K]."""
    nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(codes, tf.int32),
                                                          logits=tf.cast(logits, tf.float32))
    return tf.reduce_mean(nats) / math.log(2.0)


def evaluate_reconstruction(model, dataset, progress: bool = True) -> dict:
    """Reconstruction and codebook metrics of a ``VQVAE2`` over a dataset of image batches.

    Returns:
        ``ssim_mean``, ``ssim_std``, ``ssim_min``, ``ms_ssim_mean``, ``psnr_mean``, ``psnr_std``,
        ``mse_mean``, ``images``, and ``top``/``bottom`` dicts with ``perplexity``, ``usage`` and
        ``codes_used`` over the whole split.
    """
    from tqdm.auto import tqdm

    @tf.function
    def step(images):
        top, bottom = model.quantize_levels(images)
        reconstructions = model._decode(top["quantized"], bottom["quantized"])  # already in [0, 1]
        mse = tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
        counts = [tf.math.bincount(tf.reshape(level["indices"], [-1]), minlength=model.num_embeddings,
                                   maxlength=model.num_embeddings) for level in (top, bottom)]
        return (ssim(images, reconstructions), ms_ssim(images, reconstructions), psnr(images, reconstructions),
                mse, counts[0], counts[1])

    values = {"ssim": [], "ms_ssim": [], "psnr": [], "mse": []}
    top_counts = np.zeros(model.num_embeddings, np.int64)
    bottom_counts = np.zeros(model.num_embeddings, np.int64)
    for batch in tqdm(dataset, desc="evaluating", disable=not progress, leave=False):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        s, m, p, e, top, bottom = step(images)
        for key, value in zip(("ssim", "ms_ssim", "psnr", "mse"), (s, m, p, e)):
            values[key].append(value.numpy())
        top_counts += top.numpy()
        bottom_counts += bottom.numpy()
    arrays = {key: np.concatenate(value) for key, value in values.items()}
    psnr_values = arrays["psnr"][np.isfinite(arrays["psnr"])]
    return {
        "images": int(arrays["ssim"].size),
        "ssim_mean": float(arrays["ssim"].mean()), "ssim_std": float(arrays["ssim"].std()),
        "ssim_min": float(arrays["ssim"].min()),
        "ms_ssim_mean": float(arrays["ms_ssim"].mean()),
        "psnr_mean": float(psnr_values.mean()), "psnr_std": float(psnr_values.std()),
        "mse_mean": float(arrays["mse"].mean()),
        "top": code_statistics(top_counts), "bottom": code_statistics(bottom_counts),
    }
