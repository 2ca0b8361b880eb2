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

from oasis_gen.models.vqvae import PERFECT_MSE, PERFECT_PSNR_DB, psnr
from oasis_gen.progress import progress_bar

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


_WINDOW_SIZE, _WINDOW_SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _gaussian_window(size: int = _WINDOW_SIZE, sigma: float = _WINDOW_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product with itself is SSIM's 2-D window."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-0.5 * np.square(offsets / sigma))
    return (window / window.sum()).astype(np.float32)


def _ssim_maps(images, reconstructions):
    """Luminance and contrast-structure maps [B, H - 10, W - 10, C] of two [B, H, W, C] batches in [0, 1].

    The 11x11 Gaussian mean is applied as two 1-D passes (the window is separable), to the four
    statistics stacked as channels of one depthwise convolution: the same values as
    ``tf.image.ssim`` (which convolves with the full 2-D window; its compensation factor is 1,
    as here) at a fifth of the cost.
    """
    channels = images.shape[-1]
    stacked = tf.concat([images, reconstructions, tf.square(images) + tf.square(reconstructions),
                         images * reconstructions], axis=-1)  # [B, H, W, 4C]
    window = tf.constant(_gaussian_window())
    across = tf.tile(tf.reshape(window, [1, _WINDOW_SIZE, 1, 1]), [1, 1, 4 * channels, 1])
    down = tf.tile(tf.reshape(window, [_WINDOW_SIZE, 1, 1, 1]), [1, 1, 4 * channels, 1])
    means = tf.nn.depthwise_conv2d(tf.nn.depthwise_conv2d(stacked, across, [1, 1, 1, 1], "VALID"),
                                   down, [1, 1, 1, 1], "VALID")
    mean_x, mean_y, mean_squares, mean_product = tf.split(means, 4, axis=-1)
    c1, c2 = _K1 ** 2, _K2 ** 2  # max_val = 1
    product_of_means = 2.0 * mean_x * mean_y
    sum_of_squared_means = tf.square(mean_x) + tf.square(mean_y)
    luminance = (product_of_means + c1) / (sum_of_squared_means + c1)
    contrast_structure = (2.0 * mean_product - product_of_means + c2) / (mean_squares - sum_of_squared_means + c2)
    return luminance, contrast_structure


_GRAPHS: dict = {}


def _run_compiled(function, images, reconstructions):
    """Calls ``function`` on two image batches of one known size as a graph traced once per size and channels
    (any batch size), after checking that the size is known and fits the window."""
    images = tf.convert_to_tensor(images, tf.float32)
    reconstructions = tf.convert_to_tensor(reconstructions, tf.float32)
    if images.shape.rank != 4 or images.shape[1:] != reconstructions.shape[1:]:
        raise ValueError(f"expected two [B, H, W, C] batches of one size, got {images.shape} and "
                         f"{reconstructions.shape}")
    if None in images.shape[1:]:
        raise ValueError(f"SSIM needs a known image size, got {images.shape}")
    if min(images.shape[1], images.shape[2]) < _WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {_WINDOW_SIZE}x{_WINDOW_SIZE} pixels, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    if not tf.executing_eagerly():  # already inside a caller's graph
        return function(images, reconstructions)
    key = (function.__name__, tuple(images.shape[1:]))
    if key not in _GRAPHS:
        spec = tf.TensorSpec([None, *images.shape[1:]], tf.float32)
        _GRAPHS[key] = tf.function(function, input_signature=[spec, spec])
    return _GRAPHS[key](images, reconstructions)


def _ssim(images, reconstructions):
    luminance, contrast_structure = _ssim_maps(images, reconstructions)
    return tf.reduce_mean(luminance * contrast_structure, axis=[1, 2, 3])


def ssim(images, reconstructions):
    """Per-image SSIM [B] of two [B, H, W, C] batches in [0, 1] (mean over the map and the channels).

    Raises:
        ValueError: batches of other sizes, or images smaller than the 11x11 window.
    """
    return _run_compiled(_ssim, images, reconstructions)


def _halve(images):
    """2x2 mean pooling; an odd side is first padded by mirroring its last row or column, as MS-SSIM does."""
    pad_rows, pad_columns = int(images.shape[1]) % 2, int(images.shape[2]) % 2
    if pad_rows or pad_columns:
        images = tf.pad(images, [[0, 0], [0, pad_rows], [0, pad_columns], [0, 0]], mode="SYMMETRIC")
    return tf.nn.avg_pool2d(images, 2, 2, "VALID")


def ms_ssim(images, reconstructions):
    """Per-image MS-SSIM [B]; uses as many of the 5 scales as the image size allows (>= 11 px at the coarsest).

    Each scale's contrast-structure term (and the coarsest scale's SSIM) is averaged over the map,
    clipped at 0 and raised to its weight (Wang et al. 2003, renormalised over the scales used),
    as ``tf.image.ssim_multiscale`` does.

    Raises:
        ValueError: batches of other sizes, or images smaller than the 11x11 window.
    """
    return _run_compiled(_ms_ssim, images, reconstructions)


def _ms_ssim(images, reconstructions):
    size = min(int(images.shape[1]), int(images.shape[2]))
    scales = max(1, min(5, int(math.floor(math.log2(size / 11.0))) + 1))
    weights = np.asarray(_MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    result = 1.0
    for scale in range(scales):
        if scale:
            images, reconstructions = _halve(images), _halve(reconstructions)
        luminance, contrast_structure = _ssim_maps(images, reconstructions)
        term = contrast_structure if scale < scales - 1 else luminance * contrast_structure
        term = tf.nn.relu(tf.reduce_mean(term, axis=[1, 2]))  # [B, C]
        result = result * tf.pow(term, float(weights[scale]))
    return tf.reduce_mean(result, axis=-1)


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
        ``mse_mean``, the brain-only ``ssim_brain_mean`` / ``_std`` / ``_min`` and ``psnr_brain_mean``
        (over ``brain_mask`` of the real slice; ``brain_slices`` counts the slices with a head),
        ``images``, ``levels``, and a dict per code map (``top`` and ``bottom``, or
        ``bottom`` alone for a single-level model) with ``perplexity``, ``usage`` and ``codes_used``
        over the whole split.
    """
    @tf.function
    def step(images):
        top, bottom = model.quantize_levels(images)
        reconstructions = model.decode_quantized(None if top is None else top["quantized"], bottom["quantized"])
        mse = tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
        counts = {name: tf.math.bincount(tf.reshape(level["indices"], [-1]), minlength=model.num_embeddings,
                                         maxlength=model.num_embeddings)
                  for name, level in (("top", top), ("bottom", bottom)) if level is not None}
        mask = brain_mask(images)
        return (ssim(images, reconstructions), ms_ssim(images, reconstructions), psnr(images, reconstructions),
                mse, masked_ssim(images, reconstructions, mask), masked_psnr(images, reconstructions, mask), counts)

    names = ("ssim", "ms_ssim", "psnr", "mse", "ssim_brain", "psnr_brain")
    values = {name: [] for name in names}
    counts = {name: np.zeros(model.num_embeddings, np.int64) for name in model.level_names}
    for batch in progress_bar(dataset, desc="evaluating", unit="batches", disable=not progress, leave=False):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        *per_image, batch_counts = step(images)
        for key, value in zip(names, per_image):
            values[key].append(value.numpy())
        for name, value in batch_counts.items():
            counts[name] += value.numpy()
    arrays = {key: np.concatenate(value) for key, value in values.items()}
    psnr_values = arrays["psnr"]  # perfect slices count at PERFECT_PSNR_DB, not dropped
    brain = np.isfinite(arrays["ssim_brain"])  # a slice with no head has no brain-only score
    brain_psnr = arrays["psnr_brain"][brain]
    return {
        "images": int(arrays["ssim"].size),
        "ssim_mean": float(arrays["ssim"].mean()), "ssim_std": float(arrays["ssim"].std()),
        "ssim_min": float(arrays["ssim"].min()),
        "ms_ssim_mean": float(arrays["ms_ssim"].mean()),
        "psnr_mean": float(psnr_values.mean()), "psnr_std": float(psnr_values.std()),
        "perfect_slices": int(np.sum(psnr_values >= PERFECT_PSNR_DB - 1e-3)),
        "mse_mean": float(arrays["mse"].mean()), "levels": len(counts),
        "ssim_brain_mean": float(arrays["ssim_brain"][brain].mean()) if brain.any() else None,
        "ssim_brain_std": float(arrays["ssim_brain"][brain].std()) if brain.any() else None,
        "ssim_brain_min": float(arrays["ssim_brain"][brain].min()) if brain.any() else None,
        "psnr_brain_mean": float(brain_psnr.mean()) if brain_psnr.size else None,
        "brain_slices": int(brain.sum()),
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
    ordered = np.sort(scores)
    # 1-based rank averaged over ties: the mean of the first and last position of each value
    ranks = (np.searchsorted(ordered, scores, side="left") + np.searchsorted(ordered, scores, side="right") + 1) / 2.0
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def bootstrap_auc_interval(labels, scores, groups=None, resamples: int = 1000, level: float = 0.95,
                           seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``roc_auc(labels, scores)``.

    Each class is resampled separately; with ``groups`` whole groups (e.g. all slices of one
    subject) are drawn with replacement, so slices that are alike because they come from one
    person do not pass for independent evidence.

    Returns:
        ``(low, high)`` bounds of the ``level`` interval.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups).ravel()
    rng = np.random.default_rng(seed)
    members = []
    for value in (False, True):
        indices = np.flatnonzero(labels == value)
        names, inverse = np.unique(groups[indices], return_inverse=True)
        members.append([indices[inverse == g] for g in range(len(names))])
    values = np.empty(resamples)
    for r in range(resamples):
        chosen = np.concatenate([np.concatenate([side[g] for g in rng.integers(0, len(side), len(side))])
                                 for side in members])
        values[r] = roc_auc(labels[chosen], scores[chosen])
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def to_8bit(images: np.ndarray) -> np.ndarray:
    """Rounds float intensities to the 8-bit grid (multiples of 1/255), exactly as writing a PNG would.

    Real slices are 8-bit PNGs; scoring samples as raw floats would let a classifier tell them
    apart by quantisation alone, so every sample metric sees both sides on this grid.
    """
    levels = np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.float32)
    return levels * np.float32(1.0 / 255.0)  # the same float32 product the data pipeline computes


BRAIN_THRESHOLD = 5.0 / 255.0  # above the black background's noise floor of the preprocessed slices
BRAIN_DILATION = 3  # pixels added around the head, so its edge is judged too


def brain_mask(images, threshold: float = BRAIN_THRESHOLD, dilation: int = BRAIN_DILATION):
    """Boolean head mask [B, H, W, 1] of real slices: pixels above ``threshold``, dilated by ``dilation`` pixels."""
    above = tf.cast(tf.convert_to_tensor(images, tf.float32) > threshold, tf.float32)
    if dilation > 0:
        above = tf.nn.max_pool2d(above, 2 * dilation + 1, 1, "SAME")
    return above > 0.5


def masked_ssim(images, reconstructions, mask):
    """Per-image SSIM [B] averaged over the SSIM map inside ``mask`` [B, H, W, 1] (e.g. ``brain_mask``).

    The map comes from the same Gaussian window as ``ssim`` and covers the window centres of the
    valid region (H - 10 by W - 10), so the mask is cropped to those centres. An image whose mask
    is empty there gets NaN.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    luminance, contrast_structure = _ssim_maps(images, tf.convert_to_tensor(reconstructions, tf.float32))
    ssim_map = tf.reduce_mean(luminance * contrast_structure, axis=-1)
    crop = (int(images.shape[1]) - int(ssim_map.shape[1])) // 2
    inside = tf.cast(mask[:, crop:crop + ssim_map.shape[1], crop:crop + ssim_map.shape[2], 0], tf.float32)
    return tf.reduce_sum(ssim_map * inside, axis=[1, 2]) / tf.reduce_sum(inside, axis=[1, 2])


def masked_psnr(images, reconstructions, mask):
    """Per-image PSNR in dB [B] from the mean squared error over the pixels inside ``mask``."""
    inside = tf.cast(mask, tf.float32)
    squared = tf.square(tf.cast(images, tf.float32) - tf.cast(reconstructions, tf.float32)) * inside
    mse = tf.reduce_sum(squared, axis=[1, 2, 3]) / tf.reduce_sum(inside, axis=[1, 2, 3])
    mse = tf.where(tf.math.is_nan(mse), mse, tf.maximum(mse, PERFECT_MSE))  # NaN: no head in the slice
    return 10.0 * tf.math.log(1.0 / mse) / math.log(10.0)


def _kth_neighbour_distance(points: np.ndarray, k: int) -> np.ndarray:
    distances = _pairwise_distances(points, points)
    return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself


def _pairwise_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    squared = (np.square(first).sum(1)[:, None] + np.square(second).sum(1)[None, :] - 2.0 * first @ second.T)
    return np.sqrt(np.clip(squared, 0.0, None))


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict:
    """Fidelity and diversity of ``fake`` features [M, D] against ``real`` features [N, D].

    Precision and recall (Kynkaanniemi et al. 2019) ask whether a fake point lies inside the
    real manifold (the union of balls reaching each real point's k-th nearest real neighbour)
    and vice versa; density and coverage (Naeem et al. 2020) count how many real balls hold a
    fake point (density, 1 on average for matching distributions) and which real balls hold any
    (coverage).

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` floats.

    Raises:
        ValueError: feature sets of other shapes, or too few points for ``k`` neighbours.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two feature sets [N, D] of the same D, got {real.shape} and {fake.shape}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k = {k} neighbours need more than {k} points per set, got {len(real)} and {len(fake)}")
    real_radii, fake_radii = _kth_neighbour_distance(real, k), _kth_neighbour_distance(fake, k)
    distances = _pairwise_distances(real, fake)  # [N, M]
    inside_real = distances <= real_radii[:, None]
    return {"precision": float(inside_real.any(axis=0).mean()),
            "recall": float((distances <= fake_radii[None, :]).any(axis=1).mean()),
            "density": float(inside_real.sum() / (k * len(fake))),
            "coverage": float((distances.min(axis=1) <= real_radii).mean())}


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
    values = [ms_ssim(images[first[i:i + batch_size]], images[second[i:i + batch_size]]).numpy()
              for i in range(0, len(first), batch_size)]
    return np.concatenate(values)


def _downsample(images: np.ndarray, side: int = 64) -> np.ndarray:
    factor = max(1, images.shape[1] // side)
    pooled = tf.nn.avg_pool2d(tf.constant(images, tf.float32), factor, factor, "VALID").numpy()
    return pooled.reshape(len(images), -1)


def nearest_ssim(samples: np.ndarray, references: np.ndarray, candidates: int = 16,
                 batch_size: int = 64, pair_batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, the highest SSIM to any reference image, and that reference's index.

    The ``candidates`` references closest in Euclidean distance (on 64x64 average-pooled copies)
    are scored with full-resolution SSIM; a copy of a reference is always among them. Samples go
    ``batch_size`` at a time, their (sample, candidate) pairs ``pair_batch`` at a time.
    """
    small_samples, small_references = _downsample(samples), _downsample(references)
    reference_norms = np.square(small_references).sum(axis=1)
    candidates = min(candidates, len(references))
    best_values = np.empty(len(samples), np.float64)
    best_indices = np.empty(len(samples), np.int64)
    for start in range(0, len(samples), batch_size):
        chunk = small_samples[start:start + batch_size]
        distances = reference_norms[None, :] - 2.0 * chunk @ small_references.T
        nearest = np.argpartition(distances, candidates - 1, axis=1)[:, :candidates]  # [n, candidates]
        sample_of_pair = np.repeat(np.arange(start, start + len(chunk)), candidates)
        reference_of_pair = nearest.reshape(-1)
        scores = np.concatenate([
            ssim(samples[sample_of_pair[i:i + pair_batch]], references[reference_of_pair[i:i + pair_batch]]).numpy()
            for i in range(0, len(sample_of_pair), pair_batch)]).reshape(len(chunk), candidates)
        best = scores.argmax(axis=1)
        best_values[start:start + len(chunk)] = scores[np.arange(len(chunk)), best]
        best_indices[start:start + len(chunk)] = nearest[np.arange(len(chunk)), best]
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
