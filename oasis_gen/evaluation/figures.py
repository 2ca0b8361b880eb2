"""The README's figures, made from a run and a data folder (``python -m oasis_gen.cli.figures``).

Writes (each only when the run has the stages it needs):
    data.png             real slices from several subjects and slice levels (train split)
    reconstructions.png  test slices, their reconstructions and the absolute error
    code_maps.png        a test slice with its top and bottom code maps
    vqvae_curves.png     stage 1 training curves
    prior_curves.png     NLL curves of both priors
    samples.png          generated slices (seed 0, temperature 1.0)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from oasis_gen import plots, rundir
from oasis_gen.data.slices import find_slices
from oasis_gen.data.stream import preview_slices, resolve_split
from oasis_gen.fileio import read_history
from oasis_gen.models.loading import load_model
from oasis_gen.sampling.generate import generate_from, load_models


def _slices(data_config, split: str, count: int) -> tuple[np.ndarray, list[str]]:
    folder = find_slices(data_config.data_dir)
    source = resolve_split(folder, split, data_config.image_size, data_config.resize_method)
    images, paths = preview_slices(source, count)
    return images, [os.path.basename(path).replace(".nii.png", "") for path in paths]


def _write(figure, out: str, name: str) -> str:
    path = plots.save(figure, os.path.join(out, name))
    print(f"wrote {path}")
    return path


def _stage1_figures(run: rundir.Run, data_config, out: str, tag: str) -> list[str]:
    model = load_model(run.model_path("vqvae"))
    images, names = _slices(data_config, "test", 8)
    reconstructions = model(images).numpy()
    error = np.clip(4 * np.abs(reconstructions - images), 0, 1)
    written = [_write(plots.image_grid(
        [("test slice", images), ("reconstruction", reconstructions), ("|error| x4", error)],
        f"held-out subjects: inputs, VQ-VAE-2 reconstructions, errors{tag}", column_titles=names),
        out, "reconstructions.png")]
    maps = [(f"{name} codes {codes.shape[1]}x{codes.shape[2]}", np.asarray(codes), "nipy_spectral")
            for name, codes in zip(("top", "bottom"), model.encode(images[:4])) if codes is not None]
    written.append(_write(plots.image_grid([("slice", images[:4])] + maps, f"code maps (colour = codebook index){tag}"),
                          out, "code_maps.png"))
    curves = plots.history_curves(os.path.join(run.path, "vqvae", "history.csv"),
                                  [("loss", ["loss", "reconstruction_loss"]), ("validation SSIM", ["ssim"]),
                                   ("codebook usage", [f"{name}_usage" for name in model.level_names])])
    if curves is not None:
        written.append(_write(curves, out, "vqvae_curves.png"))
    return written


def _prior_curves(run: rundir.Run, levels: tuple[str, ...]):
    figure, axes = plots.subplots(1, len(levels), figsize=(4.5 * len(levels), 3.4), squeeze=False)
    for axis, level in zip(axes[0], levels):
        history = read_history(os.path.join(run.path, f"prior_{level}", "history.csv"))
        epochs = [e + 1 for e in history["epoch"]]
        axis.plot(epochs, history["bits_per_code"], "-", label="train")
        axis.plot(epochs, history["val_bits_per_code"], "--", label="validation")
        axis.set_title(f"{level} prior: NLL (bits per code)")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def make_figures(run_dir: str, data_dir: str, out: str, num_samples: int = 8) -> list[str]:
    """Writes the figures the run supports into ``out``; returns their paths."""
    run = rundir.open_run(run_dir, None, {}, create=False)
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir))
    tag = " (SYNTHETIC phantom data)" if find_slices(data_config.data_dir).synthetic else ""
    os.makedirs(out, exist_ok=True)
    images, names = _slices(data_config, "train", 8)
    written = [_write(plots.image_grid([("slices", images)], f"training slices of "
                                       f"{os.path.basename(data_config.data_dir)}{tag}", column_titles=names),
                      out, "data.png")]
    if run.is_complete("vqvae"):
        written += _stage1_figures(run, data_config, out, tag)
    levels = ("bottom",) if run.config.vqvae.levels == 1 else ("top", "bottom")
    if all(run.is_complete(f"prior_{level}") for level in levels):
        written.append(_write(_prior_curves(run, levels), out, "prior_curves.png"))
        result = generate_from(load_models(run), num_samples, temperature=1.0, seed=0, batch_size=num_samples)
        written.append(_write(plots.image_grid([("generated", result["images"])],
                                               f"new slices sampled from the priors (seed 0, temperature 1.0){tag}"),
                              out, "samples.png"))
    return written
