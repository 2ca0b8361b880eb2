"""Every figure of the package: one grid painter, training curves, the sample-evaluation figures.

Figures are drawn on ``matplotlib.figure.Figure`` objects, never through pyplot's global state, so
nothing here switches the backend: inline plots in a notebook keep working after any report ran.
``save`` writes a PNG atomically.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from oasis_gen.fileio import atomic_path, read_history


def subplots(rows: int, columns: int, figsize: tuple[float, float], squeeze: bool = True):
    """A new figure and its axes (as ``pyplot.subplots`` returns them), outside pyplot's figure manager."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=squeeze)


def save(figure, path: str | os.PathLike, dpi: int = 100) -> str:
    """Writes ``figure`` as a PNG atomically and returns ``path``."""
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=dpi, bbox_inches="tight", format="png")
    return os.fspath(path)


def image_grid(rows: list[tuple], title: str = "", column_titles: list[str] | None = None,
               captions: list[list[str]] | None = None, columns: int | None = None):
    """A grid of images, one labelled row per ``(label, images)`` or ``(label, images, cmap)``.

    Images are [H, W] or [H, W, 1]; grayscale rows are shown on [0, 1], other colour maps (code
    maps) on their own range without interpolation. ``column_titles`` head the first row,
    ``captions`` (one list per row) title each image. Returns the figure (see ``save``)."""
    columns = columns or max(len(row[1]) for row in rows)
    figure, axes = subplots(len(rows), columns, figsize=(1.8 * columns + 0.6, 1.9 * len(rows) + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        label, images = row[0], row[1]
        cmap = row[2] if len(row) > 2 else "gray"
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(images):
                axis.axis("off")
                continue
            image = np.asarray(images[c])
            image = image[..., 0] if image.ndim == 3 else image
            if cmap == "gray":
                axis.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(image, cmap=cmap, interpolation="nearest")
            if captions and c < len(captions[r]):
                axis.set_title(captions[r][c], fontsize=7)
            elif r == 0 and column_titles:
                axis.set_title(column_titles[c], fontsize=7)
        if label:
            axes[r][0].set_ylabel(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def history_curves(history_path: str, panels: list[tuple[str, list[str]]]):
    """One panel per (title, keys) of a Keras ``history.csv``: train solid, validation dashed; None before
    the first epoch."""
    history = read_history(history_path)
    if not history.get("epoch"):
        return None
    epochs = [e + 1 for e in history["epoch"]]
    figure, axes = subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for axis, (title, keys) in zip(axes[0], panels):
        for key in keys:
            for prefix, style in (("", "-"), ("val_", "--")):
                if prefix + key in history:
                    axis.plot(epochs, history[prefix + key], style, label=("validation " if prefix else "train ") + key)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_history(history_path: str, plot_path: str, panels: list[tuple[str, list[str]]]) -> None:
    """Saves ``history_curves`` to ``plot_path`` (nothing before the first epoch)."""
    figure = history_curves(history_path, panels)
    if figure is not None:
        save(figure, plot_path, dpi=110)


# ------------------------------------------------------------------------------ sample evaluation
def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order].astype(bool)
    true_positive = np.concatenate([[0], np.cumsum(hits)]) / max(hits.sum(), 1)
    false_positive = np.concatenate([[0], np.cumsum(~hits)]) / max((~hits).sum(), 1)
    return false_positive, true_positive


def sample_figures(samples: np.ndarray, reference, details: dict, scores: dict, folder: str,
                   tissue_threshold: float) -> list[str]:
    """The sample report's figures in ``folder``: samples beside real slices, the samples nearest a
    training slice, the statistics panel (novelty, intensities, head area, C2ST ROC) and the
    per-position bands; returns their paths."""
    tag = " - SYNTHETIC phantom data" if reference.synthetic else ""
    written = []
    heldout = reference.heldout.spread(len(samples), 0).images  # shown across subjects, not one subject's stack
    columns = min(8, len(samples), len(heldout))
    figure = image_grid([("samples", samples[:columns]), ("real (held out)", heldout[:columns])],
                        "generated slices (top) and real held-out slices (bottom)" + tag)
    written.append(save(figure, os.path.join(folder, "samples_vs_real.png")))

    closest = np.argsort(-details["nearest"])[:columns]
    nearest = reference.train.images[details["nearest_index"][closest]]
    figure = image_grid([("sample", samples[closest]), ("nearest training", nearest)],
                        "the samples closest to a training slice, above that slice" + tag,
                        captions=[[f"SSIM {details['nearest'][index]:.3f}" for index in closest], []])
    written.append(save(figure, os.path.join(folder, "nearest_neighbours.png")))

    figure, axes = subplots(1, 4, figsize=(17, 3.6))
    bins = np.linspace(0, 1, 51)
    axes[0].hist(reference.floors["details"]["nearest_real"], bins=bins, alpha=0.6, density=True, label="real held-out slices")
    axes[0].hist(details["nearest"], bins=bins, alpha=0.6, density=True, label="samples")
    axes[0].axvline(scores["copy_threshold"], color="k", linestyle="--", linewidth=1, label="copy threshold")
    axes[0].set(title="novelty: SSIM to the nearest training slice", xlabel="SSIM")
    intensity_bins = np.linspace(tissue_threshold, 1, 61)
    for label, images in (("real held-out slices", reference.heldout.images), ("samples", samples)):
        values = images.ravel()
        axes[1].hist(values[values > tissue_threshold], bins=intensity_bins, alpha=0.6, density=True, label=label)
    axes[1].set(title=f"tissue intensities (W1 {scores['histogram_wasserstein_foreground']:.4f})",
                xlabel="intensity")
    area_bins = np.linspace(0, max(details["area_real"].max(), details["area_samples"].max()) + 1e-3, 31)
    axes[2].hist(details["area_real"], bins=area_bins, alpha=0.6, density=True, label="real held-out slices")
    axes[2].hist(details["area_samples"], bins=area_bins, alpha=0.6, density=True, label="samples")
    axes[2].set(title="head area per slice", xlabel=f"fraction of pixels > {tissue_threshold}")
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
    written.append(save(figure, os.path.join(folder, "sample_statistics.png")))
    written.append(position_bands(scores, os.path.join(folder, "position_bands.png"), tag))
    return written


def position_bands(scores: dict, path: str, tag: str) -> str:
    """Per position band: C2ST AUC of samples (floor dashed) and position confidence of samples and real slices."""
    rows = scores["per_band"]
    names = [f"slices {row['slices']}" for row in rows]
    x = np.arange(len(rows))
    figure, axes = subplots(1, 2, figsize=(11, 3.4))
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
    return save(figure, path)


def temperature_sweep(sweep: list[dict], path: str, metrics) -> str:
    """One panel per metric against sampling temperature; real-data references dashed."""
    temperatures = [entry["temperature"] for entry in sweep]
    figure, axes = subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    references = {"c2st_auc": sweep[0]["c2st_auc_floor"], "fd_brain": sweep[0]["fd_brain_floor"],
                  "diversity_ms_ssim_samples": sweep[0]["diversity_ms_ssim_real"],
                  "novelty_ssim_nearest_mean": sweep[0]["novelty_ssim_nearest_real_mean"],
                  "histogram_wasserstein_foreground": 0.0}
    for axis, (key, label) in zip(axes, metrics):
        axis.plot(temperatures, [entry[key] for entry in sweep], marker="o", label="samples")
        axis.axhline(references[key], color="grey", linestyle="--", label="real data (floor)")
        axis.set(title=label, xlabel="temperature")
        axis.legend(fontsize=7)
    figure.suptitle("sample quality against sampling temperature", fontsize=10, y=1.04)
    return save(figure, path)
