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

from oasis_gen import rundir
from oasis_gen.config import DataConfig
from oasis_gen.data import slices, stream
from oasis_gen.evaluation import feature_net, floor_cache, metrics, realism
from oasis_gen.evaluation.report import FLOOR_DRAWS, SWEEP_METRICS, report
from oasis_gen.fileio import atomic_write_json, atomic_write_text
from oasis_gen.plots import sample_figures, temperature_sweep
from oasis_gen.sampling import generate as generation
from oasis_gen.sampling.generate import load_models

TISSUE_THRESHOLD = 0.1  # intensity above which a pixel counts as head/brain (background is ~0)
MIN_BAND_SLICES = 8
PRDC_K = 5  # neighbours of precision/recall/density/coverage (Naeem et al. 2020); fewer for tiny sets  # a per-band Fréchet distance needs at least this many slices per side


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
    dataset, source = stream.load_split(dataclasses.replace(data_config, cache=False), split, 64)
    images = np.concatenate([batch.numpy() for batch in dataset])
    positions = np.asarray([-1 if slices.slice_position(p) is None else slices.slice_position(p) for p in source.paths])
    return (RealSet(images, np.asarray([slices.subject_of(p) for p in source.paths]), positions), source.paths,
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
        cache_folder: where the position network and the floors are cached (``floor_cache``).
        vqvae: a run's VQ-VAE, for the reconstruction floor (None: no such floor).

    Raises:
        slices.DataError: the folder or a split cannot be read, or ``split`` is the training split.
    """
    if split == "train":
        raise slices.DataError("compare samples with a held-out split (validate or test), not the training split")
    heldout, heldout_paths, synthetic = read_real(data_config, split)
    train, train_paths, _ = read_real(data_config, "train")
    seed = settings.seed
    space = feature_net.load_or_train(cache_folder, train.images, train_paths, settings.feature_epochs, seed,
                                      validation=None, progress=settings.progress)
    heldout_features, heldout_probabilities = space.embed(heldout.images)
    key = floor_cache.cache_key(
        heldout=floor_cache.files_digest(heldout_paths), train=floor_cache.files_digest(train_paths), split=split,
        image_size=data_config.image_size, resize=data_config.resize_method, count=count, seed=seed,
        folds=settings.c2st_folds, epochs=settings.c2st_epochs, draws=FLOOR_DRAWS,
        position_network=floor_cache.weights_digest(space.model),
        vqvae=None if vqvae is None else floor_cache.weights_digest(vqvae))
    floors = floor_cache.cached_floors(cache_folder, key, lambda: _floors(
        heldout, train, space, heldout_features, heldout_probabilities, count, settings, vqvae))
    inception = None
    if settings.inception_weights:
        inception = realism.inception_features(heldout.images, settings.inception_weights)
    return Reference(heldout=heldout, train=train, space=space, heldout_features=heldout_features,
                     heldout_probabilities=heldout_probabilities, floors=floors, count=count, synthetic=synthetic,
                     data_dir=data_config.data_dir, split=split, inception_heldout=inception)


def _floors(heldout: RealSet, train: RealSet, space, heldout_features, heldout_probabilities, count: int,
            settings: EvaluationSettings, vqvae=None) -> dict:
    """Every floor: the same metrics on real slices of training subjects (and a run's reconstructions)."""
    seed = settings.seed
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
    return floors


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
    written = sample_figures(samples, reference, details, results, figures, TISSUE_THRESHOLD)
    if sweep:
        atomic_write_json(os.path.join(out, "temperature_sweep.json"), sweep)
        written.append(temperature_sweep(sweep, os.path.join(figures, "temperature_sweep.png"), SWEEP_METRICS))
    atomic_write_json(os.path.join(out, "metrics.json"), results)
    atomic_write_text(os.path.join(out, "report.md"), report(results, sweep, [os.path.relpath(p, out) for p in written]))
    results["report"] = os.path.join(out, "report.md")
    return results


def evaluate_samples(run_dir: str, data_dir: str, *, num_samples: int = 128, temperature=1.0, seed: int = 0,
                     split: str = "test", batch_size: int = 8, inception_weights: str | None = None,
                     temperatures: tuple[float, ...] = (), out: str | None = None, c2st_epochs: int = 20,
                     copy_threshold: float = 0.95, progress: bool = True, prior: str = "pixelcnn",
                     keep_images: bool = False, c2st_folds: int = 4, feature_epochs: int = 8, top_k=0,
                     guidance=None) -> dict:
    """Generates ``num_samples`` slices from the run and scores them against ``data_dir``; writes the report.

    ``temperature``, ``top_k`` and ``guidance`` are one value or a (top, bottom) pair, as for
    ``generate.py``; a ``temperatures`` sweep sets both levels to each value (``top_k``, ``guidance`` kept).
    ``guidance=None`` samples with the run's own ``sampling.guidance``, as its samples stage does.

    ``prior`` picks the run's PixelCNN priors or its DCGAN baseline (``"dcgan"``; temperature does
    not apply to it, and its default output folder is ``<run>/sample_evaluation_dcgan``, else ``<run>/sample_evaluation``). The position
    network is cached in ``<run>/evaluation/``.

    Raises:
        rundir.RunError: the run lacks a trained VQ-VAE or prior.
        slices.DataError: the folder or split cannot be read.
        ValueError: fewer than 4 samples, or a missing/invalid Inception weights file.
    """

    settings = _settings(num_samples, inception_weights, c2st_folds, c2st_epochs, feature_epochs, copy_threshold,
                         seed, progress)
    start = time.perf_counter()
    run = rundir.open_run(run_dir, None, {}, create=False)
    models = load_models(run, prior)
    if guidance is None:
        guidance = run.config.sampling.guidance_for(prior)
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
        generated = generation.generate_from(models, num_samples, temp, top_k, seed, "cached", batch_size, progress,
                                             guidance=guidance)
        return generated["images"], generated["position"]

    samples, positions = sample(temperature)
    scores, details = score_samples(samples, reference, settings, positions)
    results = {"run_dir": run.path, "samples_dir": None, "prior": prior, "levels": models["vqvae"].levels,
               "data_dir": reference.data_dir, "split": split, "synthetic_data": reference.synthetic,
               "temperature": temperature, "top_k": top_k, "guidance": guidance, "seed": seed, **scores}
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


def evaluate_folder(samples_dir: str, data_dir: str, *, out: str | None = None, split: str = "test",
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
        slices.DataError: the folder is missing, empty or holds a non-PNG or broken file (named),
            or the data folder cannot be read.
        ValueError: fewer than 4 slices, or a missing/invalid Inception weights file.
    """
    start = time.perf_counter()
    paths = slices.list_sample_pngs(samples_dir)
    settings = _settings(len(paths), inception_weights, c2st_folds, c2st_epochs, feature_epochs, copy_threshold,
                         seed, progress)
    samples = stream.read_images(paths, image_size, resize_method)
    named = [slices.slice_position(p) for p in paths]
    positions = np.asarray(named) if all(p is not None for p in named) else None
    cases = [slices.parse_slice_name(p) for p in paths]
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

