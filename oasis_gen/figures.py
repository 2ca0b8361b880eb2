"""The README's figures, made from a run and a data folder: ``python -m oasis_gen.figures --run_dir R --data DIR --out images``.

Writes (each only when the run has the stages it needs):
    data.png             real slices from several subjects and slice levels (train split)
    reconstructions.png  test slices, their reconstructions and the absolute error
    code_maps.png        a test slice with its top and bottom code maps
    vqvae_curves.png     stage 1 training curves
    prior_curves.png     NLL curves of both priors
    samples.png          generated slices (seed 0, temperature 1.0)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from oasis_gen import data, pipeline
from oasis_gen.fileio import save_figure


def _save(figure, path: str) -> None:
    print(f"wrote {save_figure(figure, path)}")


def _slices(data_config, split: str, count: int) -> tuple[np.ndarray, list[str]]:
    from oasis_gen.stages import preview_slices

    folder = data.find_slices(data_config.data_dir)
    source = data.resolve_split(folder, split, data_config.image_size, data_config.resize_method)
    images, paths = preview_slices(source, count)
    return images, [os.path.basename(path).replace(".nii.png", "") for path in paths]


def _grid(rows: list[tuple[str, np.ndarray]], titles: list[str] | None, suptitle: str, cmap="gray"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(rows[0][1])
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.9 * columns, 2.0 * len(rows) + 0.3), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            image = images[c][..., 0] if images[c].ndim == 3 else images[c]
            axis.imshow(image, cmap=cmap, vmin=0, vmax=1 if cmap == "gray" else None)
            if r == 0 and titles:
                axis.set_title(titles[c], fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=9)
    figure.suptitle(suptitle, fontsize=10)
    figure.tight_layout()
    return figure


def make_figures(run_dir: str, data_dir: str, out: str, num_samples: int = 8) -> list[str]:
    """Writes the figures the run supports into ``out``; returns their paths."""
    import dataclasses

    from oasis_gen import training

    run = pipeline.open_run(run_dir, None, {}, create=False)
    data_config = dataclasses.replace(run.config.data, data_dir=os.path.abspath(data_dir))
    synthetic = data.find_slices(data_config.data_dir).synthetic
    tag = " (SYNTHETIC phantom data)" if synthetic else ""
    os.makedirs(out, exist_ok=True)
    written = []

    images, names = _slices(data_config, "train", 8)
    path = os.path.join(out, "data.png")
    _save(_grid([("slices", images)], names, f"training slices of {os.path.basename(data_config.data_dir)}{tag}"),
          path)
    written.append(path)

    if run.is_complete("vqvae"):
        model = training.load_model(os.path.join(run.path, "vqvae", "model.keras"))
        test_images, test_names = _slices(data_config, "test", 8)
        reconstructions = model(test_images).numpy()
        error = np.abs(reconstructions - test_images)
        path = os.path.join(out, "reconstructions.png")
        _save(_grid([("test slice", test_images), ("reconstruction", reconstructions),
                     ("|error| x4", np.clip(4 * error, 0, 1))], test_names,
                    f"held-out subjects: inputs, VQ-VAE-2 reconstructions, errors{tag}"), path)
        written.append(path)

        maps = [(name, codes) for name, codes in zip(("top", "bottom"), model.encode(test_images[:4]))
                if codes is not None]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1 + len(maps), 4, figsize=(8, 2.1 * (1 + len(maps)) + 0.1), squeeze=False)
        for c in range(4):
            rows = [("slice", test_images[c][..., 0], "gray")] + [
                (f"{name} codes {codes.shape[1]}x{codes.shape[2]}", codes[c], "nipy_spectral") for name, codes in maps]
            for r, (label, image, cmap) in enumerate(rows):
                axes[r][c].imshow(np.asarray(image), cmap=cmap, interpolation="nearest")
                axes[r][c].set_xticks([])
                axes[r][c].set_yticks([])
                if c == 0:
                    axes[r][c].set_ylabel(label, fontsize=9)
        figure.suptitle(f"code maps (colour = codebook index){tag}", fontsize=10)
        figure.tight_layout()
        path = os.path.join(out, "code_maps.png")
        _save(figure, path)
        written.append(path)

        path = os.path.join(out, "vqvae_curves.png")
        training.plot_history(os.path.join(run.path, "vqvae", "history.csv"), path,
                              [("loss", ["loss", "reconstruction_loss"]), ("validation SSIM", ["ssim"]),
                               ("codebook usage", [f"{name}_usage" for name in model.level_names])])
        written.append(path)

    prior_levels = ("bottom",) if run.config.vqvae.levels == 1 else ("top", "bottom")
    if all(run.is_complete(f"prior_{level}") for level in prior_levels):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, len(prior_levels), figsize=(4.5 * len(prior_levels), 3.4), squeeze=False)
        for axis, level in zip(axes[0], prior_levels):
            history = training.read_history(os.path.join(run.path, f"prior_{level}", "history.csv"))
            epochs = [e + 1 for e in history["epoch"]]
            axis.plot(epochs, history["bits_per_code"], "-", label="train")
            axis.plot(epochs, history["val_bits_per_code"], "--", label="validation")
            axis.set_title(f"{level} prior: NLL (bits per code)")
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        path = os.path.join(out, "prior_curves.png")
        _save(figure, path)
        written.append(path)

        from oasis_gen.cli.generate import load_models
        from oasis_gen.sampling import generate_from

        result = generate_from(load_models(run), num_samples, temperature=1.0, seed=0, batch_size=num_samples)
        path = os.path.join(out, "samples.png")
        _save(_grid([("generated", result["images"])], None,
                    f"new slices sampled from the priors (seed 0, temperature 1.0){tag}"), path)
        written.append(path)
    return written


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m oasis_gen.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="images")
    parser.add_argument("--num_samples", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        make_figures(args.run_dir, args.data, args.out, args.num_samples)
    except (pipeline.RunError, data.DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
