"""Evaluation metrics: SSIM, MS-SSIM, PSNR, MSE, code usage and perplexity, NLL in bits per code,
and the sample-quality statistics (pairwise MS-SSIM, nearest-neighbour SSIM, histogram and
Fréchet distances, ROC AUC). Nothing here trains a model (the two-sample classifier is in ``realism``).

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
        ``mse_mean``, ``images``, ``levels``, and a dict per code map (``top`` and ``bottom``, or
        ``bottom`` alone for a single-level model) with ``perplexity``, ``usage`` and ``codes_used``
        over the whole split.
    """
    from tqdm.auto import tqdm

    @tf.function
    def step(images):
        top, bottom = model.quantize_levels(images)
        reconstructions = model.decode_quantized(None if top is None else top["quantized"], bottom["quantized"])
        mse = tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
        counts = {name: tf.math.bincount(tf.reshape(level["indices"], [-1]), minlength=model.num_embeddings,
                                         maxlength=model.num_embeddings)
                  for name, level in (("top", top), ("bottom", bottom)) if level is not None}
        return (ssim(images, reconstructions), ms_ssim(images, reconstructions), psnr(images, reconstructions),
                mse, counts)

    values = {"ssim": [], "ms_ssim": [], "psnr": [], "mse": []}
    counts = {name: np.zeros(model.num_embeddings, np.int64) for name in model.level_names}
    for batch in tqdm(dataset, desc="evaluating", disable=not progress, leave=False):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        s, m, p, e, batch_counts = step(images)
        for key, value in zip(("ssim", "ms_ssim", "psnr", "mse"), (s, m, p, e)):
            values[key].append(value.numpy())
        for name, value in batch_counts.items():
            counts[name] += value.numpy()
    arrays = {key: np.concatenate(value) for key, value in values.items()}
    psnr_values = arrays["psnr"][np.isfinite(arrays["psnr"])]
    return {
        "images": int(arrays["ssim"].size),
        "ssim_mean": float(arrays["ssim"].mean()), "ssim_std": float(arrays["ssim"].std()),
        "ssim_min": float(arrays["ssim"].min()),
        "ms_ssim_mean": float(arrays["ms_ssim"].mean()),
        "psnr_mean": float(psnr_values.mean()), "psnr_std": float(psnr_values.std()),
        "mse_mean": float(arrays["mse"].mean()), "levels": len(counts),
        **{name: code_statistics(level_counts) for name, level_counts in counts.items()},
    }


# ------------------------------------------------------------------------------ sample quality
def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive), ties counted half.

    Equals the probability that a random positive outscores a random negative (Mann-Whitney U).
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over runs of tied scores
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start:stop + 1]] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def pairwise_ms_ssim(images: np.ndarray, max_pairs: int = 2000, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """MS-SSIM of distinct pairs of ``images`` [N, H, W, 1]: all pairs, or ``max_pairs`` drawn without repeats.

    The mean is the usual diversity statistic (lower = more diverse).
    """
    count = len(images)
    if count < 2:
        raise ValueError(f"pairwise MS-SSIM needs at least 2 images, got {count}")
    first, second = np.triu_indices(count, k=1)
    if len(first) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(first), size=max_pairs, replace=False)
        first, second = first[keep], second[keep]
    values = [ms_ssim(tf.constant(images[first[i:i + batch_size]]), tf.constant(images[second[i:i + batch_size]]))
              .numpy() for i in range(0, len(first), batch_size)]
    return np.concatenate(values)


def _downsample(images: np.ndarray, side: int = 64) -> np.ndarray:
    factor = max(1, images.shape[1] // side)
    pooled = tf.nn.avg_pool2d(tf.constant(images, tf.float32), factor, factor, "VALID").numpy()
    return pooled.reshape(len(images), -1)


def nearest_ssim(samples: np.ndarray, references: np.ndarray, candidates: int = 16,
                 batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, the highest SSIM to any reference image, and that reference's index.

    The ``candidates`` references closest in Euclidean distance (on 64x64 average-pooled copies)
    are scored with full-resolution SSIM; a copy of a reference is always among them.
    """
    small_samples, small_references = _downsample(samples), _downsample(references)
    reference_norms = np.square(small_references).sum(axis=1)
    candidates = min(candidates, len(references))
    best_values = np.empty(len(samples), np.float64)
    best_indices = np.empty(len(samples), np.int64)
    for start in range(0, len(samples), batch_size):
        chunk = small_samples[start:start + batch_size]
        distances = reference_norms[None, :] - 2.0 * chunk @ small_references.T
        nearest = np.argpartition(distances, candidates - 1, axis=1)[:, :candidates]
        for row, indices in enumerate(nearest):
            sample = np.repeat(samples[start + row][None], len(indices), axis=0)
            scores = ssim(tf.constant(sample), tf.constant(references[indices])).numpy()
            best_values[start + row] = scores.max()
            best_indices[start + row] = indices[int(scores.argmax())]
    return best_values, best_indices


def histogram_wasserstein(first: np.ndarray, second: np.ndarray, bins: int = 256, low: float = 0.0) -> float:
    """1-Wasserstein distance between the intensity distributions of two image sets in [0, 1].

    Pixels at or below ``low`` are left out when ``low > 0`` (e.g. to compare brain tissue only).
    Computed from ``bins``-bin histograms as the integral of the absolute CDF difference.
    """
    def cdf(values):
        values = np.asarray(values, np.float64).ravel()
        if low > 0:
            values = values[values > low]
        if values.size == 0:
            raise ValueError(f"no pixels above {low} to compare")
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
        return np.cumsum(counts) / values.size

    return float(np.abs(cdf(first) - cdf(second)).sum() / bins)


def brain_area(images: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Fraction of each image's pixels brighter than ``threshold`` (the imaged head/brain area) [N]."""
    return (np.asarray(images)[..., 0] > threshold).mean(axis=(1, 2))


def wasserstein_1d(first: np.ndarray, second: np.ndarray) -> float:
    """1-Wasserstein distance between two 1-D empirical distributions (exact, via quantile functions)."""
    first, second = np.sort(np.asarray(first, np.float64)), np.sort(np.asarray(second, np.float64))
    grid = np.union1d(first, second)
    cdf_first = np.searchsorted(first, grid, side="right") / len(first)
    cdf_second = np.searchsorted(second, grid, side="right") / len(second)
    return float(np.sum(np.abs(cdf_first - cdf_second)[:-1] * np.diff(grid)))


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (the FID formula, Heusel et al. 2017).

    ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, with the trace of the matrix square root taken
    from the eigenvalues of ``S1^(1/2) S2 S1^(1/2)`` (symmetric, so no complex arithmetic).
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.ndim != 2 or second.ndim != 2 or first.shape[1] != second.shape[1] or min(len(first), len(second)) < 2:
        raise ValueError(f"expected two feature sets [N, D] with N >= 2, got {first.shape} and {second.shape}")
    mean_first, mean_second = first.mean(axis=0), second.mean(axis=0)
    cov_first, cov_second = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    values, vectors = np.linalg.eigh(cov_first)
    root_first = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root_first @ cov_second @ root_first
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    return float(np.square(mean_first - mean_second).sum() + np.trace(cov_first) + np.trace(cov_second)
                 - 2.0 * trace_root)
