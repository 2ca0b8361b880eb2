"""How good are a run's samples? Diversity, novelty, realism and intensity statistics against real slices.

``evaluate_samples`` generates slices from a run's priors and compares them with a data folder:

- **diversity**: mean pairwise MS-SSIM among samples, beside the same statistic on as many real
  held-out slices (samples far more alike than real slices means mode collapse);
- **novelty**: each sample's SSIM to its nearest training slice, beside the same for real held-out
  slices (a sample closer to a training slice than ``copy_threshold`` is counted as a copy);
- **realism**: the classifier two-sample test (``realism.two_sample_test``) of real held-out slices
  against samples, and of the VQ-VAE's reconstructions of those slices against samples (this one
  isolates the priors: the decoder's smoothing is on both sides);
- **intensity**: Wasserstein distance between the intensity histograms (all pixels and tissue
  only), and between the brain-area distributions;
- **FID** when an InceptionV3 weights file is given.

It writes ``metrics.json``, ``report.md`` and figures into the output folder (default
``<run>/samples``); a temperature sweep adds ``temperature_sweep.{json,png}``.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from oasis_gen import data, metrics, pipeline
from oasis_gen.fileio import atomic_write_json, atomic_write_text
from oasis_gen.fileio import save_figure as _save

TISSUE_THRESHOLD = 0.1  # intensity above which a pixel counts as head/brain (background is ~0)

SWEEP_METRICS = (("c2st_auc", "C2ST AUC (0.5 = indistinguishable)"),
                 ("diversity_ms_ssim_samples", "pairwise MS-SSIM (lower = more diverse)"),
                 ("novelty_ssim_nearest_mean", "SSIM to nearest training slice"),
                 ("histogram_wasserstein_foreground", "tissue intensity W1"))


@dataclasses.dataclass
class Reference:
    """Real slices a run's samples are compared with, and the statistics that do not depend on the samples."""

    heldout: np.ndarray
    train: np.ndarray
    reconstructions: np.ndarray | None
    diversity: float
    nearest_ssim: np.ndarray
    synthetic: bool
    data_dir: str
    split: str


def _images(data_config, split: str, limit: int = 0, seed: int = 0) -> tuple[np.ndarray, bool]:
    dataset, source = data.load_split(dataclasses.replace(data_config, cache=False), split, 64)
    if limit and len(source) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(source), limit, replace=False))
        subset = data.SplitSource(source.split, [source.paths[i] for i in keep], None, source.shape, [],
                                  source.synthetic)
        dataset = data.make_dataset(subset, 64, cache=False, resize_method=data_config.resize_method)
    return np.concatenate([batch.numpy() for batch in dataset]), source.synthetic


def load_reference(run: pipeline.Run, vqvae, data_dir: str, split: str = "test", count: int = 128,
                   seed: int = 0, max_train: int = 0) -> Reference:
    """Loads ``count`` real slices of ``split`` (held out from training) and the training split.

    Raises:
        data.DataError: the folder or a split cannot be read, or ``split`` is the training split.
    """
    if split == "train":
        raise data.DataError("compare samples with a held-out split (validate or test), not the training split")
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir),
                                      image_size=vqvae.image_size, include_masks=False)
    heldout, synthetic = _images(data_config, split, count, seed)
    train, _ = _images(data_config, "train", max_train, seed)
    reconstructions = np.concatenate([vqvae(heldout[i:i + 32]).numpy() for i in range(0, len(heldout), 32)])
    nearest, _ = metrics.nearest_ssim(heldout, train)
    return Reference(heldout=heldout, train=train, reconstructions=reconstructions,
                     diversity=float(metrics.pairwise_ms_ssim(heldout, seed=seed).mean()), nearest_ssim=nearest,
                     synthetic=synthetic, data_dir=data_config.data_dir, split=split)


def score_samples(samples: np.ndarray, reference: Reference, seed: int = 0, copy_threshold: float = 0.95,
                  c2st_epochs: int = 20, inception_weights: str | None = None) -> tuple[dict, dict]:
    """Sample-quality metrics of ``samples`` [N, S, S, 1] in [0, 1] against ``reference``.

    Returns:
        ``(scores, details)``: the JSON-ready metrics and the per-image arrays the figures use.
    """
    from oasis_gen import realism

    nearest, nearest_index = metrics.nearest_ssim(samples, reference.train)
    c2st = realism.two_sample_test(reference.heldout, samples, epochs=c2st_epochs, seed=seed)
    c2st_recon = realism.two_sample_test(reference.reconstructions, samples, epochs=c2st_epochs, seed=seed)
    area_samples, area_real = metrics.brain_area(samples), metrics.brain_area(reference.heldout)
    scores = {
        "num_samples": int(len(samples)), "real_slices": int(len(reference.heldout)),
        "c2st_auc": c2st["auc"], "c2st_accuracy": c2st["accuracy"],
        "c2st_auc_reconstructions": c2st_recon["auc"],
        "diversity_ms_ssim_samples": float(metrics.pairwise_ms_ssim(samples, seed=seed).mean()),
        "diversity_ms_ssim_real": reference.diversity,
        "novelty_ssim_nearest_mean": float(nearest.mean()),
        "novelty_ssim_nearest_median": float(np.median(nearest)),
        "novelty_ssim_nearest_max": float(nearest.max()),
        "novelty_ssim_nearest_real_mean": float(reference.nearest_ssim.mean()),
        "copy_threshold": copy_threshold, "copies": int((nearest >= copy_threshold).sum()),
        "histogram_wasserstein": metrics.histogram_wasserstein(samples, reference.heldout),
        "histogram_wasserstein_foreground": metrics.histogram_wasserstein(samples, reference.heldout,
                                                                          low=TISSUE_THRESHOLD),
        "brain_area_samples_mean": float(area_samples.mean()), "brain_area_samples_std": float(area_samples.std()),
        "brain_area_real_mean": float(area_real.mean()), "brain_area_real_std": float(area_real.std()),
        "brain_area_wasserstein": metrics.wasserstein_1d(area_samples, area_real),
        "fid": None,
    }
    if inception_weights:
        scores["fid"] = metrics.frechet_distance(realism.inception_features(reference.heldout, inception_weights),
                                                 realism.inception_features(samples, inception_weights))
    details = {"nearest": nearest, "nearest_index": nearest_index, "c2st": c2st, "c2st_reconstructions": c2st_recon,
               "area_samples": area_samples, "area_real": area_real}
    return scores, details


def evaluate_samples(run_dir: str, data_dir: str, num_samples: int = 128, temperature: float = 1.0, seed: int = 0,
                     split: str = "test", batch_size: int = 8, inception_weights: str | None = None,
                     temperatures: tuple[float, ...] = (), out: str | None = None, c2st_epochs: int = 20,
                     copy_threshold: float = 0.95, progress: bool = True, prior: str = "pixelcnn",
                     keep_images: bool = False) -> dict:
    """Generates ``num_samples`` slices from the run and scores them against ``data_dir``; writes the report.

    ``prior`` picks the run's PixelCNN priors or its DCGAN baseline (``"dcgan"``; temperature does
    not apply to it, and its default output folder is ``<run>/samples_dcgan``).

    Raises:
        pipeline.RunError: the run lacks a trained VQ-VAE or prior.
        data.DataError: the folder or split cannot be read.
        ValueError: fewer than 4 samples, or a missing/invalid Inception weights file.
    """
    from oasis_gen import sampling
    from oasis_gen.cli.generate import load_models

    if num_samples < 4:
        raise ValueError(f"num_samples must be >= 4 for the two-sample test, got {num_samples}")
    if inception_weights and not os.path.isfile(inception_weights):
        raise FileNotFoundError(f"no Inception weights file at {inception_weights}")
    start = time.perf_counter()
    run = pipeline.open_run(run_dir, None, {}, create=False)
    models = load_models(run, prior)
    if prior == "dcgan" and temperatures:
        raise ValueError("a temperature sweep needs the PixelCNN priors; the DCGAN has no temperature")
    out = os.path.abspath(out or os.path.join(run.path, "samples" if prior == "pixelcnn" else f"samples_{prior}"))
    figures = os.path.join(out, "figures")
    os.makedirs(figures, exist_ok=True)
    reference = load_reference(run, models["vqvae"], data_dir, split, count=num_samples, seed=seed)

    def sample(temp):
        return sampling.generate_from(models, num_samples, temp, 0, seed, "cached", batch_size, progress)["images"]

    samples = sample(temperature)
    scores, details = score_samples(samples, reference, seed, copy_threshold, c2st_epochs, inception_weights)
    results = {"run_dir": run.path, "prior": prior, "levels": models["vqvae"].levels, "data_dir": reference.data_dir,
               "split": split,
               "synthetic_data": reference.synthetic, "temperature": temperature, "seed": seed, **scores}
    written = _figures(samples, reference, details, scores, figures)
    sweep = []
    for temp in temperatures:
        sweep_scores, _ = score_samples(sample(temp), reference, seed, copy_threshold, c2st_epochs, inception_weights)
        sweep.append({"temperature": temp, **sweep_scores})
    if sweep:
        atomic_write_json(os.path.join(out, "temperature_sweep.json"), sweep)
        written.append(plot_sweep(sweep, os.path.join(figures, "temperature_sweep.png")))
    results["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(os.path.join(out, "metrics.json"), results)
    atomic_write_text(os.path.join(out, "report.md"), report(results, sweep, [os.path.relpath(p, out) for p in written]))
    results["report"] = os.path.join(out, "report.md")
    if keep_images:  # for callers that show the samples (not written to metrics.json)
        results["images"], results["real_images"] = samples, reference.heldout
    return results


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
    columns = min(8, len(samples), len(reference.heldout))

    figure, axes = plt.subplots(2, columns, figsize=(1.8 * columns, 4.0), squeeze=False)
    for row, (label, images) in enumerate((("samples", samples), ("real (held out)", reference.heldout))):
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
        axes[1][column].imshow(reference.train[details["nearest_index"][index]][..., 0], cmap="gray", vmin=0, vmax=1)
        for row in (0, 1):
            axes[row][column].set_xticks([])
            axes[row][column].set_yticks([])
    axes[0][0].set_ylabel("sample")
    axes[1][0].set_ylabel("nearest training")
    figure.suptitle("the samples closest to a training slice, above that slice" + tag, fontsize=10)
    written.append(_save(figure, os.path.join(folder, "nearest_neighbours.png")))

    figure, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    bins = np.linspace(0, 1, 51)
    axes[0].hist(reference.nearest_ssim, bins=bins, alpha=0.6, density=True, label="real held-out slices")
    axes[0].hist(details["nearest"], bins=bins, alpha=0.6, density=True, label="samples")
    axes[0].axvline(scores["copy_threshold"], color="k", linestyle="--", linewidth=1, label="copy threshold")
    axes[0].set(title="novelty: SSIM to the nearest training slice", xlabel="SSIM")
    intensity_bins = np.linspace(TISSUE_THRESHOLD, 1, 61)
    for label, images in (("real held-out slices", reference.heldout), ("samples", samples)):
        values = images.ravel()
        axes[1].hist(values[values > TISSUE_THRESHOLD], bins=intensity_bins, alpha=0.6, density=True, label=label)
    axes[1].set(title=f"tissue intensities (W1 {scores['histogram_wasserstein_foreground']:.4f})",
                xlabel="intensity")
    area_bins = np.linspace(0, max(details["area_real"].max(), details["area_samples"].max()) + 1e-3, 31)
    axes[2].hist(details["area_real"], bins=area_bins, alpha=0.6, density=True, label="real held-out slices")
    axes[2].hist(details["area_samples"], bins=area_bins, alpha=0.6, density=True, label="samples")
    axes[2].set(title="head area per slice", xlabel=f"fraction of pixels > {TISSUE_THRESHOLD}")
    for key, label in (("c2st", "real vs samples"), ("c2st_reconstructions", "reconstructions vs samples")):
        false_positive, true_positive = _roc(details[key]["labels"], details[key]["scores"])
        axes[3].plot(false_positive, true_positive, label=f"{label} (AUC {details[key]['auc']:.3f})")
    axes[3].plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axes[3].set(title="classifier two-sample test (held-out ROC)", xlabel="false positive rate",
                ylabel="true positive rate")
    for axis in axes:
        axis.legend(fontsize=7)
    figure.suptitle(f"{len(samples)} samples against {len(reference.heldout)} real {reference.split} slices" + tag,
                    fontsize=10, y=1.04)
    written.append(_save(figure, os.path.join(folder, "sample_statistics.png")))
    return written


def plot_sweep(sweep: list[dict], path: str) -> str:
    """One panel per metric against sampling temperature; real-data references dashed."""
    plt = _pyplot()
    temperatures = [entry["temperature"] for entry in sweep]
    figure, axes = plt.subplots(1, len(SWEEP_METRICS), figsize=(4.2 * len(SWEEP_METRICS), 3.4))
    references = {"c2st_auc": 0.5, "diversity_ms_ssim_samples": sweep[0]["diversity_ms_ssim_real"],
                  "novelty_ssim_nearest_mean": sweep[0]["novelty_ssim_nearest_real_mean"],
                  "histogram_wasserstein_foreground": 0.0}
    for axis, (key, label) in zip(axes, SWEEP_METRICS):
        axis.plot(temperatures, [entry[key] for entry in sweep], marker="o", label="samples")
        axis.axhline(references[key], color="grey", linestyle="--", label="real data / ideal")
        axis.set(title=label, xlabel="temperature")
        axis.legend(fontsize=7)
    figure.suptitle("sample quality against sampling temperature", fontsize=10, y=1.04)
    return _save(figure, path)


def report(results: dict, sweep: list[dict], figures: list[str]) -> str:
    """The Markdown report of ``evaluate_samples``' results."""
    synthetic = " The model was trained on SYNTHETIC phantom data." if results["synthetic_data"] else ""
    fid = "not computed (pass `--inception_weights PATH`)" if results["fid"] is None else f"{results['fid']:.2f}"
    rows = [
        ("C2ST AUC, real vs samples", f"{results['c2st_auc']:.3f}", "0.5"),
        ("C2ST AUC, reconstructions vs samples", f"{results['c2st_auc_reconstructions']:.3f}", "0.5"),
        ("diversity: mean pairwise MS-SSIM", f"{results['diversity_ms_ssim_samples']:.3f}",
         f"{results['diversity_ms_ssim_real']:.3f} (real)"),
        ("novelty: mean SSIM to nearest training slice", f"{results['novelty_ssim_nearest_mean']:.3f}",
         f"{results['novelty_ssim_nearest_real_mean']:.3f} (real held-out)"),
        (f"copies (nearest SSIM >= {results['copy_threshold']})", str(results["copies"]), "0"),
        ("intensity W1, all pixels", f"{results['histogram_wasserstein']:.4f}", "0"),
        ("intensity W1, tissue only", f"{results['histogram_wasserstein_foreground']:.4f}", "0"),
        ("head area (fraction of slice)",
         f"{results['brain_area_samples_mean']:.3f} ± {results['brain_area_samples_std']:.3f}",
         f"{results['brain_area_real_mean']:.3f} ± {results['brain_area_real_std']:.3f} (real)"),
        ("head area W1", f"{results['brain_area_wasserstein']:.4f}", "0"),
        ("FID", fid, "0"),
    ]
    lines = [f"# Sample evaluation: {results['run_dir']} ({results['prior']} prior)", "",
             f"{results['num_samples']} samples (temperature {results['temperature']}, seed {results['seed']}) "
             f"against {results['real_slices']} real slices of the {results['split']} split of "
             f"`{results['data_dir']}`.{synthetic}", "",
             "| metric | samples | target / real |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    if sweep:
        lines += ["", "## Temperature sweep", "", "| temperature | " + " | ".join(k for k, _ in SWEEP_METRICS) + " |",
                  "|---" * (len(SWEEP_METRICS) + 1) + "|"]
        lines += [f"| {entry['temperature']} | " + " | ".join(f"{entry[k]:.4f}" for k, _ in SWEEP_METRICS) + " |"
                  for entry in sweep]
    lines += [""] + [f"![{os.path.splitext(os.path.basename(path))[0]}]({path})" for path in figures] + [""]
    return "\n".join(lines)
