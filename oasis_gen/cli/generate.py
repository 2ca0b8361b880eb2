"""``python generate.py --run_dir R --num_samples 16 --temperature 1.0 --seed 0 --out DIR``: new brain slices.

Rebuilds the VQ-VAE-2 and both priors from the run directory, samples top codes, then bottom
codes given them, decodes, and writes each slice as a PNG (``sample_000.png`` ...), a grid
(``grid.png``), the codes (``codes.npz``: int16 ``top``, ``bottom``) and, with ``--gif``, an
animation of the bottom code map filling in (``sampling.gif``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from oasis_gen import pipeline

REQUIRED_STAGES = ("vqvae", "prior_top", "prior_bottom")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python generate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a run directory with trained vqvae and priors")
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest codes (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="same seed and batch size, same brains")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--method", choices=("cached", "naive"), default="cached")
    parser.add_argument("--prior", choices=PRIORS, default="pixelcnn",
                        help="which trained prior samples the codes (dcgan: a single-level run's DCGAN baseline)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/samples)")
    parser.add_argument("--gif", action="store_true", help="also write an animation of the sampling")
    return parser.parse_args(argv)


PRIORS = ("pixelcnn", "dcgan")


def load_models(run: pipeline.Run, prior: str = "pixelcnn") -> dict:
    """The run's VQ-VAE-2 and priors (``top`` is None for a single-level run; with ``prior="dcgan"``
    the DCGAN is under ``dcgan``); raises RunError naming the first stage that is not trained."""
    from oasis_gen import training

    if prior == "dcgan":
        for stage in ("vqvae", "prior_dcgan"):
            run.require(stage, "generate --prior dcgan")
        return {"vqvae": training.load_model(os.path.join(run.path, "vqvae", "model.keras")), "top": None,
                "bottom": None, "dcgan": training.load_model(os.path.join(run.path, "prior_dcgan", "model.keras"))}
    if prior != "pixelcnn":
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    single = run.config.vqvae.levels == 1
    for stage in REQUIRED_STAGES:
        if not (single and stage == "prior_top"):
            run.require(stage, "generate")
    return {"vqvae": training.load_model(os.path.join(run.path, "vqvae", "model.keras")),
            "top": None if single else training.load_model(os.path.join(run.path, "prior_top", "model.keras")),
            "bottom": training.load_model(os.path.join(run.path, "prior_bottom", "model.keras"))}


def _code_colours(codes: np.ndarray, num_embeddings: int) -> np.ndarray:
    import matplotlib

    colours = matplotlib.colormaps["nipy_spectral"](np.linspace(0, 1, num_embeddings))[:, :3]
    order = np.random.default_rng(0).permutation(num_embeddings)  # neighbouring codes get distinct colours
    return (colours[order][codes] * 255).astype(np.uint8)


def write_gif(path: str, image: np.ndarray, bottom_codes: np.ndarray, num_embeddings: int, frames: int = 32) -> None:
    """Animation of one sample: the bottom code map filling in raster order beside the slice revealed row by row."""
    import imageio.v3 as iio

    from oasis_gen.fileio import atomic_path

    rows = bottom_codes.shape[0]
    scale = image.shape[0] // rows
    colours = np.kron(_code_colours(bottom_codes, num_embeddings), np.ones((scale, scale, 1), np.uint8))
    grey = np.repeat((np.clip(image[..., 0], 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    sequence = []
    for step in np.linspace(1, rows, num=min(frames, rows)).round().astype(int):
        cut = step * scale
        code_frame = np.full_like(colours, 40)
        code_frame[:cut] = colours[:cut]
        image_frame = np.zeros_like(grey)
        image_frame[:cut] = grey[:cut]
        sequence.append(np.concatenate([code_frame, image_frame], axis=1))
    sequence += [sequence[-1]] * 8
    with atomic_path(path, suffix=".gif") as temporary:
        iio.imwrite(temporary, np.stack(sequence), duration=80, loop=0)


def run_generation(run_dir: str, num_samples: int = 16, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                   batch_size: int = 8, method: str = "cached", out: str | None = None, gif: bool = False,
                   progress: bool = True, prior: str = "pixelcnn") -> dict:
    """Generates ``num_samples`` slices from a run and writes them to ``out``; returns a summary."""
    import imageio.v3 as iio

    from oasis_gen import codes as codes_lib
    from oasis_gen import sampling, training
    from oasis_gen.fileio import atomic_path, atomic_write_json

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    run = pipeline.open_run(run_dir, None, {}, create=False)
    models = load_models(run, prior)
    out = os.path.abspath(out or os.path.join(run.path, "samples" if prior == "pixelcnn" else f"samples_{prior}"))
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    result = sampling.generate_from(models, num_samples, temperature, top_k, seed, method, batch_size, progress)
    seconds = time.perf_counter() - start
    images = result["images"]
    names = [f"sample_{index:03d}.png" for index in range(num_samples)]
    for name, image in zip(names, images):
        with atomic_path(os.path.join(out, name), suffix=".png") as temporary:
            iio.imwrite(temporary, (np.clip(image[..., 0], 0, 1) * 255).round().astype(np.uint8), extension=".png")
    codes_lib.save_codes(os.path.join(out, "codes.npz"), {
        "top": result["top"], "bottom": result["bottom"],
        "files": np.asarray(names)})
    synthetic = pipeline.read_json(os.path.join(run.path, "vqvae", "metrics.json")).get("synthetic_data", False)
    columns = min(8, num_samples)
    rows = [images[i:i + columns] for i in range(0, num_samples, columns)]
    label = (f"generated slices ({prior} prior), temperature {temperature}, seed {seed}"
             + (" - model trained on SYNTHETIC phantom data" if synthetic else ""))
    training.image_grid(rows, os.path.join(out, "grid.png"), label=label)
    if gif:
        write_gif(os.path.join(out, "sampling.gif"), images[0], result["bottom"][0], models["vqvae"].num_embeddings)
    summary = {"prior": prior, "num_samples": num_samples, "temperature": temperature, "top_k": top_k, "seed": seed,
               "method": method, "batch_size": batch_size, "seconds": round(seconds, 2),
               "seconds_per_brain": round(seconds / num_samples, 3), "out": out,
               "trained_on_synthetic_data": synthetic}
    atomic_write_json(os.path.join(out, "generation.json"), {**summary, "files": names})
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from oasis_gen.data import DataError

    try:
        summary = run_generation(args.run_dir, args.num_samples, args.temperature, args.top_k, args.seed,
                                 args.batch_size, args.method, args.out, args.gif, prior=args.prior)
    except (pipeline.RunError, DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['num_samples']} slices to {summary['out']} "
          f"({summary['seconds_per_brain']:.2f} s per brain, "
          + (f"{summary['method']} sampler)" if args.prior == "pixelcnn" else f"{args.prior} prior)"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
