"""How good are generated slices? Realism, a brain-trained feature space, diversity and novelty against real slices.

Both sides are scored on the same 8-bit grid: samples are rounded exactly as a saved PNG would be
(``metrics.to_8bit``) before any metric, as real slices are 8-bit PNGs. Every figure stands beside
its floor, the value real data of other people reaches:

- **realism**: the classifier two-sample test (``realism.two_sample_test``) of held-out real slices
  against samples, with folds grouped by subject and a bootstrap 95% interval; its floors are the
  same test between real slices of *training* subjects and the held-out ones (``c2st_auc_floor``)
  and, for a run, between the VQ-VAE's reconstructions of held-out slices and those slices
  (``c2st_auc_reconstructions``: what the decoder allows at best);
- **brain features** (``feature_net``): Fréchet distance (``fd_brain``, floor ``fd_brain_floor``),
  precision / recall / density / coverage (k = 5) and position confidence, in the features of a
  network trained on the training split to place slices by axial position;
- **diversity**: mean pairwise MS-SSIM among samples, beside the same statistic on as many real
  slices drawn across all held-out subjects, and across training subjects;
- **novelty**: each sample's SSIM to its nearest training slice, beside the same for real held-out
  slices (a sample closer than ``copy_threshold`` is counted as a copy);
- **intensity**: Wasserstein distances between intensity histograms and head-area distributions;
- **per position band** (slices 0-7, 8-15, 16-23, 24-31): C2ST AUC, FD and position confidence,
  by the position each sample was asked for, or else the one the position network assigns;
- **FID** when an InceptionV3 weights file is given.

``evaluate_samples`` generates from a run; ``evaluate_folder`` scores a folder of PNGs from any
generator. Both write ``metrics.json``, ``report.md`` and figures into the output folder.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from oasis_gen import data, feature_net, metrics, pipeline, realism
from oasis_gen.fileio import atomic_write_json, atomic_write_text
from oasis_gen.fileio import save_figure as _save

TISSUE_THRESHOLD = 0.1  # intensity above which a pixel counts as head/brain (background is ~0)
MIN_BAND_SLICES = 8
FLOOR_DRAWS = 5  # draws of training-subject slices averaged into the feature-space floors
PRDC_K = 5  # neighbours of precision/recall/density/coverage (Naeem et al. 2020); fewer for tiny sets  # a per-band Fréchet distance needs at least this many slices per side

SWEEP_METRICS = (("c2st_auc", "C2ST AUC (0.5 = indistinguishable)"),
                 ("fd_brain", "Fréchet distance, brain features"),
                 ("diversity_ms_ssim_samples", "pairwise MS-SSIM (lower = more diverse)"),
                 ("novelty_ssim_nearest_mean", "SSIM to nearest training slice"),
                 ("histogram_wasserstein_foreground", "tissue intensity W1"))


@dataclasses.dataclass
class EvaluationSettings:
    """How samples are scored (the ``evaluate samples`` flags)."""

    c2st_folds: int = 4
    c2st_epochs: int = 20
    feature_epochs: int = 8
    copy_threshold: float = 0.95
    seed: int = 0
    inception_weights: str | None = None
    progress: bool = True


@dataclasses.dataclass
class RealSet:
    """Real slices with their subjects and axial positions (-1 where a name carries none)."""

    images: np.ndarray
    subjects: np.ndarray
    positions: np.ndarray

    def subset(self, indices) -> "RealSet":
        return RealSet(self.images[indices], self.subjects[indices], self.positions[indices])

    def spread(self, count: int, seed: int) -> "RealSet":
        """``count`` slices drawn evenly across subjects (all of them when there are fewer)."""
        return self.subset(realism.balanced_subset(min(count, len(self.images)), self.subjects,
                                            np.random.default_rng(seed)))


def read_real(data_config, split: str) -> tuple[RealSet, list[str], bool]:
    """All slices of ``split`` as a ``RealSet``, their paths, and whether the data is the synthetic phantom."""
    dataset, source = data.load_split(dataclasses.replace(data_config, cache=False), split, 64)
    images = np.concatenate([batch.numpy() for batch in dataset])
    positions = np.asarray([-1 if data.slice_position(p) is None else data.slice_position(p) for p in source.paths])
    return (RealSet(images, np.asarray([data.subject_of(p) for p in source.paths]), positions), source.paths,
            source.synthetic)


@dataclasses.dataclass
class Reference:
    """Real slices that samples are compared with, the feature space, and every floor (computed once)."""

    heldout: RealSet
    train: RealSet
    space: feature_net.FeatureSpace
    heldout_features: np.ndarray
    heldout_probabilities: np.ndarray
    floors: dict
    count: int
    synthetic: bool
    data_dir: str
    split: str
    inception_heldout: np.ndarray | None = None


def load_reference(data_config, split: str, count: int, settings: EvaluationSettings, cache_folder: str,
                   vqvae=None) -> Reference:
    """Reads the held-out and training splits, trains (or loads) the feature network and computes the floors.

    Args:
        data_config: a ``DataConfig`` naming the folder and image size.
        split: the held-out split (``validate`` or ``test``).
        count: how many samples will be scored; the floors use as many real slices.
        settings: the evaluation settings.
        cache_folder: where the position network is cached.
        vqvae: a run's VQ-VAE, for the reconstruction floor (None: no such floor).

    Raises:
        data.DataError: the folder or a split cannot be read, or ``split`` is the training split.
    """
    if split == "train":
        raise data.DataError("compare samples with a held-out split (validate or test), not the training split")
    heldout, _, synthetic = read_real(data_config, split)
    train, train_paths, _ = read_real(data_config, "train")
    seed = settings.seed
    space = feature_net.load_or_train(cache_folder, train.images, train_paths, settings.feature_epochs, seed,
                                      validation=None, progress=settings.progress)
    heldout_features, heldout_probabilities = space.embed(heldout.images)
    # the real stand-ins for samples: as many slices as samples, spread over held-out / training subjects
    heldout_part, train_part = heldout.spread(count, seed), train.spread(count, seed)
    # FD and precision/recall of small sets vary with the draw: the floor is the mean over several draws
    floor_draws = [space.embed(train.spread(count, seed + draw).images)[0] for draw in range(FLOOR_DRAWS)]
    fd_floors = [metrics.frechet_distance(heldout_features, features) for features in floor_draws]
    prdc_floors = [_prdc(heldout_features, features) for features in floor_draws]
    c2st = dict(folds=settings.c2st_folds, epochs=settings.c2st_epochs, seed=seed, progress=settings.progress)
    floor_test = realism.two_sample_test(heldout.images, train_part.images, real_groups=heldout.subjects,
                                            generated_groups=train_part.subjects,
                                            description="C2ST floor (real vs real)", **c2st)
    nearest_real, _ = metrics.nearest_ssim(heldout_part.images, train.images)
    floors = {
        "c2st_auc_floor": floor_test["auc"], "c2st_auc_floor_low": floor_test["auc_low"],
        "c2st_auc_floor_high": floor_test["auc_high"],
        "fd_brain_floor": float(np.mean(fd_floors)), "fd_brain_floor_std": float(np.std(fd_floors)),
        **{f"{key}_floor": None if prdc_floors[0][key] is None else float(np.mean([draw[key] for draw in prdc_floors]))
           for key in ("precision", "recall", "density", "coverage")},
        "position_confidence_real": float(heldout_probabilities.max(axis=1).mean()),
        "position_accuracy_real": _placed(space, heldout_probabilities, heldout.positions),
        "feature_net_heldout_band_accuracy": float((heldout_probabilities.argmax(1)
                                                    == space.bands(heldout.positions)).mean()),
        "diversity_ms_ssim_real": float(metrics.pairwise_ms_ssim(heldout_part.images, seed=seed).mean()),
        "diversity_ms_ssim_real_subjects": int(len(np.unique(heldout_part.subjects))),
        "diversity_ms_ssim_real_train": float(metrics.pairwise_ms_ssim(train_part.images, seed=seed).mean()),
        "diversity_ms_ssim_real_train_subjects": int(len(np.unique(train_part.subjects))),
        "novelty_ssim_nearest_real_mean": float(nearest_real.mean()),
        "c2st_auc_reconstructions": None, "c2st_auc_reconstructions_low": None,
        "c2st_auc_reconstructions_high": None,
        "details": {"floor_test": floor_test, "nearest_real": nearest_real},
    }
    if vqvae is not None:
        reconstructions = metrics.to_8bit(np.concatenate([vqvae(heldout_part.images[i:i + 32]).numpy()
                                                          for i in range(0, len(heldout_part.images), 32)]))
        # a slice and its reconstruction share the subject label, so they always share a fold
        test = realism.two_sample_test(heldout_part.images, reconstructions, real_groups=heldout_part.subjects,
                                          generated_groups=heldout_part.subjects,
                                          description="C2ST floor (reconstructions)", **c2st)
        floors.update({"c2st_auc_reconstructions": test["auc"], "c2st_auc_reconstructions_low": test["auc_low"],
                       "c2st_auc_reconstructions_high": test["auc_high"]})
    inception = None
    if settings.inception_weights:
        inception = realism.inception_features(heldout.images, settings.inception_weights)
    return Reference(heldout=heldout, train=train, space=space, heldout_features=heldout_features,
                     heldout_probabilities=heldout_probabilities, floors=floors, count=count, synthetic=synthetic,
                     data_dir=data_config.data_dir, split=split, inception_heldout=inception)


def _prdc(real: np.ndarray, fake: np.ndarray) -> dict:
    """Precision/recall/density/coverage with k = 5, or fewer neighbours when a set is that small."""
    k = min(PRDC_K, len(real) - 1, len(fake) - 1)
    if k < 1:
        return {"precision": None, "recall": None, "density": None, "coverage": None, "prdc_k": 0}
    return {**metrics.precision_recall_density_coverage(real, fake, k=k), "prdc_k": k}


def _placed(space: feature_net.FeatureSpace, probabilities: np.ndarray, positions: np.ndarray) -> float | None:
    """Fraction of slices the position network puts in their own band or a neighbouring one."""
    known = positions >= 0
    if not known.any():
        return None
    bands = space.bands(positions[known])
    return float((np.abs(probabilities[known].argmax(axis=1) - bands) <= 1).mean())


def score_samples(samples: np.ndarray, reference: Reference, settings: EvaluationSettings,
                  positions: np.ndarray | None = None, groups: np.ndarray | None = None) -> tuple[dict, dict]:
    """Sample-quality metrics of ``samples`` [N, S, S, 1] in [0, 1] against ``reference``.

    Samples are first rounded to the 8-bit grid. ``positions`` [N] are the axial positions the
    samples were generated for (None: unknown; the position network's bands are used for the
    per-band table). ``groups`` [N] keep slices of one source subject in one C2ST fold (None:
    independent samples, spread evenly).

    Returns:
        ``(scores, details)``: the JSON-ready metrics and the per-image arrays the figures use.
    """
    samples = metrics.to_8bit(samples)
    seed = settings.seed
    nearest, nearest_index = metrics.nearest_ssim(samples, reference.train.images)
    c2st = realism.two_sample_test(reference.heldout.images, samples, folds=settings.c2st_folds,
                                      epochs=settings.c2st_epochs, seed=seed, real_groups=reference.heldout.subjects,
                                      generated_groups=groups, progress=settings.progress,
                                      description="C2ST (samples vs real)")
    features, probabilities = reference.space.embed(samples)
    area_samples, area_real = metrics.brain_area(samples), metrics.brain_area(reference.heldout.images)
    given = positions is not None and len(positions) == len(samples) and bool(np.all(np.asarray(positions) >= 0))
    scores = {
        "num_samples": int(len(samples)), "real_slices": int(len(reference.heldout.images)),
        "heldout_subjects": int(len(np.unique(reference.heldout.subjects))),
        "preprocessing": "samples rounded to the 8-bit grid (as a saved PNG) before every metric",
        "c2st_auc": c2st["auc"], "c2st_auc_low": c2st["auc_low"], "c2st_auc_high": c2st["auc_high"],
        "c2st_accuracy": c2st["accuracy"], "c2st_slices_per_side": c2st["per_image"], "c2st_folds": c2st["folds"],
        "fd_brain": metrics.frechet_distance(reference.heldout_features, features),
        **_prdc(reference.heldout_features, features),
        "position_confidence": float(probabilities.max(axis=1).mean()),
        "position_source": "requested" if given else "feature network",
        "position_accuracy": _placed(reference.space, probabilities, np.asarray(positions)) if given else None,
        "diversity_ms_ssim_samples": float(metrics.pairwise_ms_ssim(samples, seed=seed).mean()),
        "novelty_ssim_nearest_mean": float(nearest.mean()),
        "novelty_ssim_nearest_median": float(np.median(nearest)),
        "novelty_ssim_nearest_max": float(nearest.max()),
        "copy_threshold": settings.copy_threshold, "copies": int((nearest >= settings.copy_threshold).sum()),
        "histogram_wasserstein": metrics.histogram_wasserstein(samples, reference.heldout.images),
        "histogram_wasserstein_foreground": metrics.histogram_wasserstein(samples, reference.heldout.images,
                                                                          low=TISSUE_THRESHOLD),
        "brain_area_samples_mean": float(area_samples.mean()), "brain_area_samples_std": float(area_samples.std()),
        "brain_area_real_mean": float(area_real.mean()), "brain_area_real_std": float(area_real.std()),
        "brain_area_wasserstein": metrics.wasserstein_1d(area_samples, area_real),
        "fid": None,
        **{key: value for key, value in reference.floors.items() if key != "details"},
    }
    if reference.inception_heldout is not None:
        scores["fid"] = metrics.frechet_distance(
            reference.inception_heldout, realism.inception_features(samples, settings.inception_weights))
    sample_bands = (reference.space.bands(positions) if given else probabilities.argmax(axis=1))
    scores["per_band"] = _per_band(reference, c2st, features, probabilities, sample_bands)
    details = {"nearest": nearest, "nearest_index": nearest_index, "c2st": c2st,
               "c2st_floor": reference.floors["details"]["floor_test"], "area_samples": area_samples,
               "area_real": area_real, "samples": samples, "sample_bands": sample_bands}
    return scores, details


def _per_band(reference: Reference, c2st: dict, features: np.ndarray, probabilities: np.ndarray,
              sample_bands8: np.ndarray) -> list[dict]:
    """C2ST AUC, FD and position confidence for each of ``REPORT_BANDS`` position bands."""
    per = feature_net.POSITION_BANDS // feature_net.REPORT_BANDS
    real_bands = reference.space.bands(reference.heldout.positions) // per
    sample_bands = np.asarray(sample_bands8) // per
    known_real = reference.heldout.positions >= 0
    # the C2ST scores of each image, split by band (real images by their file's position)
    labels, scores, indices = c2st["labels"], c2st["scores"], c2st["indices"]
    c2st_band = np.empty(len(labels), np.int64)
    real_side = labels == 0
    c2st_band[real_side] = np.where(known_real[indices[real_side]], real_bands[indices[real_side]], -1)
    c2st_band[~real_side] = sample_bands[indices[~real_side]]
    slices = reference.space.num_positions // feature_net.REPORT_BANDS
    rows = []
    for band in range(feature_net.REPORT_BANDS):
        real_in, samples_in = known_real & (real_bands == band), sample_bands == band
        in_test = c2st_band == band
        row = {"band": band, "slices": f"{band * slices}-{(band + 1) * slices - 1}",
               "samples": int(samples_in.sum()), "real": int(real_in.sum()), "c2st_auc": None, "fd_brain": None,
               "position_confidence": float(probabilities[samples_in].max(axis=1).mean()) if samples_in.any()
               else None,
               "position_confidence_real": float(reference.heldout_probabilities[real_in].max(axis=1).mean())
               if real_in.any() else None}
        if len(np.unique(labels[in_test])) == 2:
            row["c2st_auc"] = metrics.roc_auc(labels[in_test], scores[in_test])
        if samples_in.sum() >= MIN_BAND_SLICES and real_in.sum() >= MIN_BAND_SLICES:
            row["fd_brain"] = metrics.frechet_distance(reference.heldout_features[real_in], features[samples_in])
        rows.append(row)
    return rows


def _write(results: dict, samples: np.ndarray, reference: Reference, details: dict, out: str,
           sweep: list[dict]) -> dict:
    figures = os.path.join(out, "figures")
    os.makedirs(figures, exist_ok=True)
    written = _figures(samples, reference, details, results, figures)
    if sweep:
        atomic_write_json(os.path.join(out, "temperature_sweep.json"), sweep)
        written.append(plot_sweep(sweep, os.path.join(figures, "temperature_sweep.png")))
    atomic_write_json(os.path.join(out, "metrics.json"), results)
    atomic_write_text(os.path.join(out, "report.md"), report(results, sweep, [os.path.relpath(p, out) for p in written]))
    results["report"] = os.path.join(out, "report.md")
    return results


def evaluate_samples(run_dir: str, data_dir: str, num_samples: int = 128, temperature=1.0, seed: int = 0,
                     split: str = "test", batch_size: int = 8, inception_weights: str | None = None,
                     temperatures: tuple[float, ...] = (), out: str | None = None, c2st_epochs: int = 20,
                     copy_threshold: float = 0.95, progress: bool = True, prior: str = "pixelcnn",
                     keep_images: bool = False, c2st_folds: int = 4, feature_epochs: int = 8, top_k=0) -> dict:
    """Generates ``num_samples`` slices from the run and scores them against ``data_dir``; writes the report.

    ``temperature`` and ``top_k`` are one value or a (top, bottom) pair, as for ``generate.py``; a
    ``temperatures`` sweep sets both levels to each value (``top_k`` kept).

    ``prior`` picks the run's PixelCNN priors or its DCGAN baseline (``"dcgan"``; temperature does
    not apply to it, and its default output folder is ``<run>/sample_evaluation_dcgan``, else ``<run>/sample_evaluation``). The position
    network is cached in ``<run>/evaluation/``.

    Raises:
        pipeline.RunError: the run lacks a trained VQ-VAE or prior.
        data.DataError: the folder or split cannot be read.
        ValueError: fewer than 4 samples, or a missing/invalid Inception weights file.
    """
    from oasis_gen import sampling
    from oasis_gen.cli.generate import load_models

    settings = _settings(num_samples, inception_weights, c2st_folds, c2st_epochs, feature_epochs, copy_threshold,
                         seed, progress)
    start = time.perf_counter()
    run = pipeline.open_run(run_dir, None, {}, create=False)
    models = load_models(run, prior)
    if prior == "dcgan" and temperatures:
        raise ValueError("a temperature sweep needs the PixelCNN priors; the DCGAN has no temperature")
    # not samples/ or evaluate/: those are the pipeline stages' own folders
    out = os.path.abspath(out or os.path.join(run.path, "sample_evaluation" if prior == "pixelcnn"
                                              else f"sample_evaluation_{prior}"))
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir),
                                      image_size=models["vqvae"].image_size, include_masks=False)
    reference = load_reference(data_config, split, num_samples, settings, os.path.join(run.path, "evaluation"),
                               vqvae=models["vqvae"])

    def sample(temp):
        generated = sampling.generate_from(models, num_samples, temp, top_k, seed, "cached", batch_size, progress)
        return generated["images"], generated["position"]

    samples, positions = sample(temperature)
    scores, details = score_samples(samples, reference, settings, positions)
    results = {"run_dir": run.path, "samples_dir": None, "prior": prior, "levels": models["vqvae"].levels,
               "data_dir": reference.data_dir, "split": split, "synthetic_data": reference.synthetic,
               "temperature": temperature, "top_k": top_k, "seed": seed, **scores}
    sweep = []
    for temp in temperatures:
        sweep_images, sweep_positions = sample(temp)
        sweep_scores, _ = score_samples(sweep_images, reference, settings, sweep_positions)
        sweep.append({"temperature": temp, **sweep_scores})
    results["seconds"] = round(time.perf_counter() - start, 1)
    results = _write(results, details["samples"], reference, details, out, sweep)
    if keep_images:  # for callers that show the samples (not written to metrics.json)
        results["images"], results["real_images"] = details["samples"], reference.heldout.images
    return results


def evaluate_folder(samples_dir: str, data_dir: str, out: str | None = None, split: str = "test",
                    image_size: int = 256, resize_method: str = "resize", inception_weights: str | None = None,
                    c2st_folds: int = 4, c2st_epochs: int = 20, feature_epochs: int = 8, copy_threshold: float = 0.95,
                    seed: int = 0, progress: bool = True) -> dict:
    """Scores a folder of PNG slices from any generator against the real slices of ``data_dir``.

    Slices of another size are brought to ``image_size`` by the data module's rules
    (``resize_method``). Names carrying ``slice_S`` give the samples' positions; names carrying a
    case number (real slices, a generator that copies or edits subjects) keep each case in one
    C2ST fold, as the real side's subjects are. The position
    network is cached in ``<out>/evaluation/`` (default ``out``: ``<samples_dir>_evaluation``).
    Every metric of ``evaluate_samples`` is reported except the reconstruction floor.

    Raises:
        data.DataError: the folder is missing, empty or holds a non-PNG or broken file (named),
            or the data folder cannot be read.
        ValueError: fewer than 4 slices, or a missing/invalid Inception weights file.
    """
    start = time.perf_counter()
    paths = data.list_sample_pngs(samples_dir)
    settings = _settings(len(paths), inception_weights, c2st_folds, c2st_epochs, feature_epochs, copy_threshold,
                         seed, progress)
    samples = data.read_images(paths, image_size, resize_method)
    named = [data.slice_position(p) for p in paths]
    positions = np.asarray(named) if all(p is not None for p in named) else None
    cases = [data.parse_slice_name(p) for p in paths]
    groups = np.asarray([c[0] for c in cases]) if all(c is not None for c in cases) else None
    out = os.path.abspath(out or os.path.normpath(os.path.abspath(samples_dir)) + "_evaluation")
    data_config = config_for_folder(data_dir, image_size, resize_method)
    reference = load_reference(data_config, split, len(samples), settings, os.path.join(out, "evaluation"))
    scores, details = score_samples(samples, reference, settings, positions, groups)
    results = {"run_dir": None, "samples_dir": os.path.abspath(samples_dir), "prior": None, "levels": None,
               "data_dir": reference.data_dir, "split": split, "synthetic_data": reference.synthetic,
               "temperature": None, "seed": seed, **scores, "seconds": round(time.perf_counter() - start, 1)}
    return _write(results, details["samples"], reference, details, out, [])


def config_for_folder(data_dir: str, image_size: int, resize_method: str):
    """A ``DataConfig`` reading ``data_dir`` at ``image_size`` with ``resize_method``, no masks."""
    from oasis_gen.config import DataConfig

    return DataConfig(data_dir=os.path.abspath(data_dir), image_size=image_size, resize_method=resize_method)


def _settings(count: int, inception_weights, c2st_folds, c2st_epochs, feature_epochs, copy_threshold, seed,
              progress) -> EvaluationSettings:
    if count < 4:
        raise ValueError(f"num_samples must be >= 4 for the two-sample test, got {count}")
    if c2st_folds < 2:
        raise ValueError(f"c2st_folds must be >= 2, got {c2st_folds}")
    if inception_weights and not os.path.isfile(inception_weights):
        raise FileNotFoundError(f"no Inception weights file at {inception_weights}")
    return EvaluationSettings(c2st_folds=c2st_folds, c2st_epochs=c2st_epochs, feature_epochs=feature_epochs,
                              copy_threshold=copy_threshold, seed=seed, inception_weights=inception_weights,
                              progress=progress)


# ------------------------------------------------------------------------------ figures and report
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order].astype(bool)
    true_positive = np.concatenate([[0], np.cumsum(hits)]) / max(hits.sum(), 1)
    false_positive = np.concatenate([[0], np.cumsum(~hits)]) / max((~hits).sum(), 1)
    return false_positive, true_positive


def _figures(samples: np.ndarray, reference: Reference, details: dict, scores: dict, folder: str) -> list[str]:
    plt = _pyplot()
    tag = " - SYNTHETIC phantom data" if reference.synthetic else ""
    written = []
    heldout = reference.heldout.spread(len(samples), 0).images  # shown across subjects, not one subject's stack
    columns = min(8, len(samples), len(heldout))

    figure, axes = plt.subplots(2, columns, figsize=(1.8 * columns, 4.0), squeeze=False)
    for row, (label, images) in enumerate((("samples", samples), ("real (held out)", heldout))):
        for column in range(columns):
            axes[row][column].imshow(images[column][..., 0], cmap="gray", vmin=0, vmax=1)
            axes[row][column].set_xticks([])
            axes[row][column].set_yticks([])
        axes[row][0].set_ylabel(label)
    figure.suptitle("generated slices (top) and real held-out slices (bottom)" + tag, fontsize=10)
    written.append(_save(figure, os.path.join(folder, "samples_vs_real.png")))

    closest = np.argsort(-details["nearest"])[:columns]
    figure, axes = plt.subplots(2, columns, figsize=(1.8 * columns, 4.1), squeeze=False)
    for column, index in enumerate(closest):
        axes[0][column].imshow(samples[index][..., 0], cmap="gray", vmin=0, vmax=1)
        axes[0][column].set_title(f"SSIM {details['nearest'][index]:.3f}", fontsize=8)
        axes[1][column].imshow(reference.train.images[details["nearest_index"][index]][..., 0], cmap="gray",
                               vmin=0, vmax=1)
        for row in (0, 1):
            axes[row][column].set_xticks([])
            axes[row][column].set_yticks([])
    axes[0][0].set_ylabel("sample")
    axes[1][0].set_ylabel("nearest training")
    figure.suptitle("the samples closest to a training slice, above that slice" + tag, fontsize=10)
    written.append(_save(figure, os.path.join(folder, "nearest_neighbours.png")))

    figure, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    bins = np.linspace(0, 1, 51)
    axes[0].hist(reference.floors["details"]["nearest_real"], bins=bins, alpha=0.6, density=True, label="real held-out slices")
    axes[0].hist(details["nearest"], bins=bins, alpha=0.6, density=True, label="samples")
    axes[0].axvline(scores["copy_threshold"], color="k", linestyle="--", linewidth=1, label="copy threshold")
    axes[0].set(title="novelty: SSIM to the nearest training slice", xlabel="SSIM")
    intensity_bins = np.linspace(TISSUE_THRESHOLD, 1, 61)
    for label, images in (("real held-out slices", reference.heldout.images), ("samples", samples)):
        values = images.ravel()
        axes[1].hist(values[values > TISSUE_THRESHOLD], bins=intensity_bins, alpha=0.6, density=True, label=label)
    axes[1].set(title=f"tissue intensities (W1 {scores['histogram_wasserstein_foreground']:.4f})",
                xlabel="intensity")
    area_bins = np.linspace(0, max(details["area_real"].max(), details["area_samples"].max()) + 1e-3, 31)
    axes[2].hist(details["area_real"], bins=area_bins, alpha=0.6, density=True, label="real held-out slices")
    axes[2].hist(details["area_samples"], bins=area_bins, alpha=0.6, density=True, label="samples")
    axes[2].set(title="head area per slice", xlabel=f"fraction of pixels > {TISSUE_THRESHOLD}")
    for key, label in (("c2st", "samples vs real"), ("c2st_floor", "floor: other subjects vs real")):
        false_positive, true_positive = _roc(details[key]["labels"], details[key]["scores"])
        axes[3].plot(false_positive, true_positive, label=f"{label} (AUC {details[key]['auc']:.3f})")
    axes[3].plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axes[3].set(title="classifier two-sample test (held-out ROC)", xlabel="false positive rate",
                ylabel="true positive rate")
    for axis in axes:
        axis.legend(fontsize=7)
    figure.suptitle(f"{len(samples)} samples against {len(reference.heldout.images)} real {reference.split} slices"
                    + tag, fontsize=10, y=1.04)
    written.append(_save(figure, os.path.join(folder, "sample_statistics.png")))
    written.append(_plot_bands(scores, os.path.join(folder, "position_bands.png"), tag))
    return written


def _plot_bands(scores: dict, path: str, tag: str) -> str:
    """Per position band: C2ST AUC of samples (floor dashed) and position confidence of samples and real slices."""
    plt = _pyplot()
    rows = scores["per_band"]
    names = [f"slices {row['slices']}" for row in rows]
    x = np.arange(len(rows))
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    axes[0].bar(x, [np.nan if row["c2st_auc"] is None else row["c2st_auc"] for row in rows], color="tab:orange",
                label="samples vs real")
    axes[0].axhline(scores["c2st_auc_floor"], color="grey", linestyle="--", label="floor (all bands)")
    axes[0].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[0].set(title="C2ST AUC by position band", ylim=(0, 1.05))
    for offset, key, label in ((-0.2, "position_confidence", "samples"), (0.2, "position_confidence_real", "real")):
        axes[1].bar(x + offset, [np.nan if row[key] is None else row[key] for row in rows], width=0.4, label=label)
    axes[1].set(title="position confidence by band", ylim=(0, 1.05))
    for axis in axes:
        axis.set_xticks(x, names, fontsize=8)
        axis.legend(fontsize=7)
    figure.suptitle(f"by axial position ({scores['position_source']} positions for samples)" + tag, fontsize=10,
                    y=1.04)
    return _save(figure, path)


def plot_sweep(sweep: list[dict], path: str) -> str:
    """One panel per metric against sampling temperature; real-data references dashed."""
    plt = _pyplot()
    temperatures = [entry["temperature"] for entry in sweep]
    figure, axes = plt.subplots(1, len(SWEEP_METRICS), figsize=(4.2 * len(SWEEP_METRICS), 3.4))
    references = {"c2st_auc": sweep[0]["c2st_auc_floor"], "fd_brain": sweep[0]["fd_brain_floor"],
                  "diversity_ms_ssim_samples": sweep[0]["diversity_ms_ssim_real"],
                  "novelty_ssim_nearest_mean": sweep[0]["novelty_ssim_nearest_real_mean"],
                  "histogram_wasserstein_foreground": 0.0}
    for axis, (key, label) in zip(axes, SWEEP_METRICS):
        axis.plot(temperatures, [entry[key] for entry in sweep], marker="o", label="samples")
        axis.axhline(references[key], color="grey", linestyle="--", label="real data (floor)")
        axis.set(title=label, xlabel="temperature")
        axis.legend(fontsize=7)
    figure.suptitle("sample quality against sampling temperature", fontsize=10, y=1.04)
    return _save(figure, path)


def _interval(results: dict, key: str) -> str:
    if results.get(key) is None:
        return "n/a"
    return f"{results[key]:.3f} [{results[key + '_low']:.3f}, {results[key + '_high']:.3f}]"


def _optional(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(results: dict, sweep: list[dict], figures: list[str]) -> str:
    """The Markdown report of ``evaluate_samples``' or ``evaluate_folder``'s results."""
    synthetic = " The data is the SYNTHETIC phantom." if results["synthetic_data"] else ""
    fid = "not computed (pass `--inception_weights PATH`)" if results["fid"] is None else f"{results['fid']:.2f}"
    rows = [
        ("C2ST AUC, samples vs held-out real [95% CI]", _interval(results, "c2st_auc"),
         f"floor {_interval(results, 'c2st_auc_floor')} (training subjects vs held-out); reconstructions "
         f"{_interval(results, 'c2st_auc_reconstructions')}"),
        ("Fréchet distance, brain features", f"{results['fd_brain']:.3f}",
         f"{results['fd_brain_floor']:.3f} ± {results['fd_brain_floor_std']:.3f} (floor, {FLOOR_DRAWS} draws)"),
        *[(f"{name}, brain features (k = {results['prdc_k']})", _optional(results[name]),
           f"{_optional(results[name + '_floor'])} (floor)") for name in ("precision", "recall", "density", "coverage")],
        ("position confidence", f"{results['position_confidence']:.3f}",
         f"{results['position_confidence_real']:.3f} (real held-out)"),
        ("placed in the requested band (+-1)", _optional(results["position_accuracy"]),
         f"{_optional(results['position_accuracy_real'])} (real held-out)"),
        ("diversity: mean pairwise MS-SSIM", f"{results['diversity_ms_ssim_samples']:.3f}",
         f"{results['diversity_ms_ssim_real']:.3f} (real, {results['diversity_ms_ssim_real_subjects']} held-out "
         f"subjects); {results['diversity_ms_ssim_real_train']:.3f} (real, "
         f"{results['diversity_ms_ssim_real_train_subjects']} training subjects)"),
        ("novelty: mean SSIM to nearest training slice", f"{results['novelty_ssim_nearest_mean']:.3f}",
         f"{results['novelty_ssim_nearest_real_mean']:.3f} (real held-out)"),
        (f"copies (nearest SSIM >= {results['copy_threshold']})", str(results["copies"]), "0"),
        ("intensity W1, all pixels", f"{results['histogram_wasserstein']:.4f}", "0"),
        ("intensity W1, tissue only", f"{results['histogram_wasserstein_foreground']:.4f}", "0"),
        ("head area (fraction of slice)",
         f"{results['brain_area_samples_mean']:.3f} ± {results['brain_area_samples_std']:.3f}",
         f"{results['brain_area_real_mean']:.3f} ± {results['brain_area_real_std']:.3f} (real)"),
        ("head area W1", f"{results['brain_area_wasserstein']:.4f}", "0"),
        ("FID (InceptionV3)", fid, "0"),
    ]
    source = (f"the run `{results['run_dir']}` ({results['prior']} prior, temperature {results['temperature']}, "
              f"top-k {results.get('top_k', 0)}, seed {results['seed']})" if results["run_dir"] else f"the folder `{results['samples_dir']}`")
    lines = [f"# Sample evaluation: {results['run_dir'] or results['samples_dir']}", "",
             f"{results['num_samples']} samples from {source} against {results['real_slices']} real slices of "
             f"{results['heldout_subjects']} subjects of the {results['split']} split of `{results['data_dir']}`."
             f"{synthetic} Samples were rounded to the 8-bit grid (as a saved PNG) before every metric. The C2ST "
             f"used {results['c2st_slices_per_side']} slices per side in {results['c2st_folds']} folds grouped by "
             "subject.", "",
             "| metric | samples | floor / real |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    lines += ["", f"## By position band ({results['position_source']} positions for samples)", "",
              "| slices | samples | real | C2ST AUC | FD brain | position confidence (real) |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['slices']} | {row['samples']} | {row['real']} | {_optional(row['c2st_auc'])} | "
              f"{_optional(row['fd_brain'])} | {_optional(row['position_confidence'])} "
              f"({_optional(row['position_confidence_real'])}) |" for row in results["per_band"]]
    if sweep:
        lines += ["", "## Temperature sweep", "", "| temperature | " + " | ".join(k for k, _ in SWEEP_METRICS) + " |",
                  "|---" * (len(SWEEP_METRICS) + 1) + "|"]
        lines += [f"| {entry['temperature']} | " + " | ".join(f"{entry[k]:.4f}" for k, _ in SWEEP_METRICS) + " |"
                  for entry in sweep]
    lines += [""] + [f"![{os.path.splitext(os.path.basename(path))[0]}]({path})" for path in figures] + [""]
    return "\n".join(lines)
