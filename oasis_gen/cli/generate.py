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

from oasis_gen import config as config_lib
from oasis_gen import pipeline
from oasis_gen.console import quiet_tensorflow

REQUIRED_STAGES = ("vqvae", "prior_top", "prior_bottom")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python generate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a run directory with trained vqvae and priors")
    parser.add_argument("--num_samples", type=int, default=16,
                        help="slices to generate (with a --slice_index range: one per position, so this is ignored)")
    parser.add_argument("--slice_index", default=None,
                        help="axial position(s) for priors trained with positions: 12 (every sample there) or a range "
                             "0:32 (one sample per position, in order: a whole synthetic stack); default: drawn "
                             "from the training data")
    parser.add_argument("--temperature", default="1.0",
                        help="softmax temperature (0: greedy); one value, or TOP,BOTTOM for each prior (e.g. 0.9,1.0)")
    parser.add_argument("--top_k", default="0",
                        help="sample among the k likeliest codes (0: all); one value, or TOP,BOTTOM")
    parser.add_argument("--seed", type=int, default=0, help="same seed and batch size, same brains")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--method", choices=("cached", "naive"), default="cached")
    parser.add_argument("--prior", choices=PRIORS, default="pixelcnn",
                        help="which trained prior samples the codes (dcgan: a single-level run's DCGAN baseline)")
    parser.add_argument("--out", default=None, help="output folder, new or without earlier samples (default: a new "
                                                     "RUN_DIR/generated/<date-time> per call)")
    parser.add_argument("--gif", action="store_true", help="also write an animation of the sampling")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ logging (hidden by default)")
    args = parser.parse_args(argv)
    try:
        args.slice_positions = parse_slice_index(args.slice_index, args.num_samples)
        args.temperature = config_lib.one_or_pair(args.temperature, float, "--temperature")
        args.top_k = config_lib.one_or_pair(args.top_k, int, "--top_k")
    except ValueError as error:
        parser.error(str(error))
    if args.slice_positions is not None:
        args.num_samples = len(args.slice_positions)
    return args


def parse_slice_index(text: str | None, num_samples: int) -> np.ndarray | None:
    """Positions int32 [N] from ``--slice_index``: ``"12"`` repeats 12 ``num_samples`` times; ``"0:32"`` (or
    ``"0:32:4"``) is a range, one sample per position; None stays None.

    Raises:
        ValueError: text that is neither an integer nor a non-empty range of non-negative integers.
    """
    if text is None:
        return None
    try:
        parts = [int(part) for part in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1 and parts[0] >= 0:
        return np.full(num_samples, parts[0], np.int32)
    if 2 <= len(parts) <= 3 and min(parts[:2]) >= 0 and len(range(*parts)) > 0:
        return np.arange(*parts, dtype=np.int32)
    raise ValueError(f"--slice_index takes a position like 12 or a range like 0:32, got {text!r}")


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
                   progress: bool = True, prior: str = "pixelcnn", slice_positions=None) -> dict:
    """Generates ``num_samples`` slices from a run and writes them to ``out``; returns a summary.

    With position-conditioned priors the slices are made at ``slice_positions`` (int [N]; default:
    drawn from the training data) and their file names carry the position (``sample_003_slice_12.png``).
    """
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
    result = sampling.generate_from(models, num_samples, temperature, top_k, seed, method, batch_size, progress,
                                    slice_positions)
    seconds = time.perf_counter() - start
    images, positions = result["images"], result["position"]
    names = [f"sample_{index:03d}.png" if positions is None else f"sample_{index:03d}_slice_{positions[index]}.png"
             for index in range(num_samples)]
    for name, image in zip(names, images):
        with atomic_path(os.path.join(out, name), suffix=".png") as temporary:
            iio.imwrite(temporary, (np.clip(image[..., 0], 0, 1) * 255).round().astype(np.uint8), extension=".png")
    codes_lib.save_codes(os.path.join(out, "codes.npz"), {
        "top": result["top"], "bottom": result["bottom"],
        "files": np.asarray(names), "position": positions})
    synthetic = pipeline.read_json(os.path.join(run.path, "vqvae", "metrics.json")).get("synthetic_data", False)
    columns = min(8, num_samples)
    rows = [images[i:i + columns] for i in range(0, num_samples, columns)]
    label = (f"generated slices ({prior} prior), temperature {temperature}, seed {seed}"
             + (" - model trained on SYNTHETIC phantom data" if synthetic else ""))
    captions = None if positions is None else [[f"slice {p}" for p in positions[i:i + columns]]
                                               for i in range(0, num_samples, columns)]
    training.image_grid(rows, os.path.join(out, "grid.png"), label=label, captions=captions)
    if gif:
        write_gif(os.path.join(out, "sampling.gif"), images[0], result["bottom"][0], models["vqvae"].num_embeddings)
    summary = {"prior": prior, "num_samples": num_samples, "temperature": temperature, "top_k": top_k, "seed": seed,
               "method": method, "batch_size": batch_size, "seconds": round(seconds, 2),
               "seconds_per_brain": round(seconds / num_samples, 3), "out": out,
               "trained_on_synthetic_data": synthetic,
               "slice_positions": None if positions is None else positions.tolist()}
    atomic_write_json(os.path.join(out, "generation.json"), {**summary, "files": names})
    return summary


def output_folder(run_dir: str, out: str | None) -> str:
    """``out``, refused when it holds slices of an earlier batch; by default a new folder per call
    under ``run_dir/generated/`` (the pipeline's ``samples/`` and ``evaluate/`` are the stages' own)."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(os.path.abspath(run_dir), "generated", stamp)
        out, number = base, 1
        while os.path.exists(out):
            number += 1
            out = f"{base}-{number}"
        return out
    earlier = sorted(name for name in os.listdir(out) if name.startswith("sample_") and name.endswith(".png")) \
        if os.path.isdir(out) else []
    if earlier:
        raise ValueError(f"{out} already holds {len(earlier)} slices of an earlier batch ({earlier[0]}, ...); "
                         "choose another --out, or leave it out for a new folder per call")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from oasis_gen.data import DataError

    try:
        pipeline.open_run(args.run_dir, None, {}, create=False)  # a wrong path is named before TensorFlow loads
        out = output_folder(args.run_dir, args.out)
        quiet_tensorflow(args.verbose)
        summary = run_generation(args.run_dir, args.num_samples, args.temperature, args.top_k, args.seed,
                                 args.batch_size, args.method, out, args.gif, prior=args.prior,
                                 slice_positions=args.slice_positions)
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
