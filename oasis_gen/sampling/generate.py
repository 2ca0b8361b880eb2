"""Generating brains from a run: loading its models, batched sampling and decoding, and writing the
slices as 8-bit PNGs (names carry the slice position), their codes, a grid and an optional GIF."""

from __future__ import annotations

import os
import time

import imageio.v3 as iio
import matplotlib
import numpy as np

from oasis_gen import plots, rundir
from oasis_gen.data import codes as codes_lib
from oasis_gen.fileio import atomic_path, atomic_write_json
from oasis_gen.models.loading import load_model
from oasis_gen.progress import progress_bar
from oasis_gen.rundir import PRIORS
from oasis_gen.sampling.samplers import PriorSampler, draw_positions, per_level
from oasis_gen.seeds import derive_seed


def load_models(run: rundir.Run, prior: str = "pixelcnn") -> dict:
    """The run's VQ-VAE-2 and priors (``top`` is None for a single-level run; with ``prior="dcgan"``
    the DCGAN is under ``dcgan``); raises RunError naming the first stage that is not trained."""

    if prior == "dcgan":
        for stage in ("vqvae", "prior_dcgan"):
            run.require(stage, "generate --prior dcgan")
        return {"vqvae": load_model(os.path.join(run.path, "vqvae", "model.keras")), "top": None,
                "bottom": None, "dcgan": load_model(os.path.join(run.path, "prior_dcgan", "model.keras"))}
    if prior != "pixelcnn":
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    single = run.config.vqvae.levels == 1
    for stage in REQUIRED_STAGES:
        if not (single and stage == "prior_top"):
            run.require(stage, "generate")
    return {"vqvae": load_model(os.path.join(run.path, "vqvae", "model.keras")),
            "top": None if single else load_model(os.path.join(run.path, "prior_top", "model.keras")),
            "bottom": load_model(os.path.join(run.path, "prior_bottom", "model.keras"))}


def _code_colours(codes: np.ndarray, num_embeddings: int) -> np.ndarray:
    colours = matplotlib.colormaps["nipy_spectral"](np.linspace(0, 1, num_embeddings))[:, :3]
    order = np.random.default_rng(0).permutation(num_embeddings)  # neighbouring codes get distinct colours
    return (colours[order][codes] * 255).astype(np.uint8)


def write_gif(path: str, image: np.ndarray, bottom_codes: np.ndarray, num_embeddings: int, frames: int = 32) -> None:
    """Animation of one sample: the bottom code map filling in raster order beside the slice revealed row by row."""


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
                   progress: bool = True, prior: str = "pixelcnn", slice_positions=None, guidance=0.0) -> dict:
    """Generates ``num_samples`` slices from a run and writes them to ``out``; returns a summary.

    With position-conditioned priors the slices are made at ``slice_positions`` (int [N]; default:
    drawn from the training data) and their file names carry the position (``sample_003_slice_12.png``).
    """

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    run = rundir.open_run(run_dir, None, {}, create=False)
    models = load_models(run, prior)
    out = os.path.abspath(out or os.path.join(run.path, "samples" if prior == "pixelcnn" else f"samples_{prior}"))
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    result = generate_from(models, num_samples, temperature, top_k, seed, method, batch_size, progress,
                           slice_positions, guidance)
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
    synthetic = rundir.read_json(os.path.join(run.path, "vqvae", "metrics.json")).get("synthetic_data", False)
    columns = min(8, num_samples)
    rows = [("", images[i:i + columns]) for i in range(0, num_samples, columns)]
    label = (f"generated slices ({prior} prior), temperature {temperature}"
             + (f", guidance {guidance}" if guidance and prior == "pixelcnn" else "") + f", seed {seed}"
             + (" - model trained on SYNTHETIC phantom data" if synthetic else ""))
    captions = None if positions is None else [[f"slice {p}" for p in positions[i:i + columns]]
                                               for i in range(0, num_samples, columns)]
    plots.save(plots.image_grid(rows, label, captions=captions), os.path.join(out, "grid.png"))
    if gif:
        write_gif(os.path.join(out, "sampling.gif"), images[0], result["bottom"][0], models["vqvae"].num_embeddings)
    summary = {"prior": prior, "num_samples": num_samples, "temperature": temperature, "top_k": top_k,
               "guidance": guidance, "seed": seed,
               "method": method, "batch_size": batch_size, "seconds": round(seconds, 2),
               "seconds_per_brain": round(seconds / num_samples, 3), "out": out,
               "trained_on_synthetic_data": synthetic,
               "slice_positions": None if positions is None else positions.tolist()}
    atomic_write_json(os.path.join(out, "generation.json"), {**summary, "files": names})
    return summary


REQUIRED_STAGES = ("vqvae", "prior_top", "prior_bottom")


def generate(vqvae, top_prior, bottom_prior, num_samples: int, temperature=1.0, top_k=0,
             seed: int = 0, method: str = "cached", batch_size: int = 8, progress: bool = True,
             slice_positions=None, guidance=0.0) -> dict:
    """New slices: top codes from the top prior, bottom codes from the bottom prior given them, then decoding.

    For a single-level VQ-VAE pass ``top_prior=None``: the bottom prior is then unconditional.
    ``temperature``, ``top_k`` and ``guidance`` (classifier-free guidance on the slice position, for
    priors trained with position dropout) are one value for both priors or a ``(top, bottom)`` pair.
    Position-conditioned priors generate the slices at ``slice_positions`` (int [N]); without them,
    positions are drawn from the training data's distribution (``draw_positions``).

    Returns:
        ``{"images": float32 [N, S, S, 1] in [0, 1], "top": int32 [N, h, w] or None, "bottom": int32 [N, 2h, 2w],
        "position": int32 [N] or None}``.
    """

    conditioned = [prior for prior in (top_prior, bottom_prior) if prior is not None and prior.num_positions]
    if conditioned and slice_positions is None:
        slice_positions = draw_positions(conditioned[0], num_samples, seed)
    if not conditioned and slice_positions is not None:
        raise ValueError("these priors were trained without slice positions: --slice_index does not apply")
    levels = 1 if top_prior is None else 2
    (top_temperature, bottom_temperature), (top_top_k, bottom_top_k) = per_level(temperature), per_level(top_k)
    top_guidance, bottom_guidance = per_level(guidance)
    with progress_bar(total=levels * num_samples, desc=f"sampling ({method})", unit="code maps",
                      disable=not progress) as bar:
        top = None
        if top_prior is not None:
            top = PriorSampler(top_prior, method, batch_size)(
                num_samples, None, top_temperature, top_top_k, derive_seed(seed, "sampling/top"), bar,
                slice_positions if top_prior.num_positions else None, top_guidance)
        bottom = PriorSampler(bottom_prior, method, batch_size)(
            num_samples, top, bottom_temperature, bottom_top_k, derive_seed(seed, "sampling/bottom"), bar,
            slice_positions if bottom_prior.num_positions else None, bottom_guidance)
    return {"images": decode_in_batches(vqvae, top, bottom, batch_size), "top": top, "bottom": bottom,
            "position": None if slice_positions is None else np.asarray(slice_positions, np.int32)}


def decode_in_batches(vqvae, top, bottom, batch_size: int = 8) -> np.ndarray:
    """Decoded images [N, S, S, 1] of code maps (``top`` None for a single-level model)."""
    if len(bottom) == 0:
        return np.zeros((0, vqvae.image_size, vqvae.image_size, 1), np.float32)
    return np.concatenate([vqvae.decode_codes(None if top is None else top[i:i + batch_size],
                                              bottom[i:i + batch_size]).numpy()
                           for i in range(0, len(bottom), batch_size)])


def generate_from(models: dict, num_samples: int, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                  method: str = "cached", batch_size: int = 8, progress: bool = True, slice_positions=None,
                  guidance=0.0) -> dict:
    """``generate`` with the models ``load_models`` returns: the PixelCNN priors, or the DCGAN prior
    when ``models["dcgan"]`` is set (temperature, ``top_k``, ``method``, guidance and positions then do not apply)."""
    if models.get("dcgan") is not None:
        if slice_positions is not None:
            raise ValueError("the DCGAN prior takes no slice position")
        codes = models["dcgan"].sample_codes(num_samples, seed)
        return {"images": decode_in_batches(models["vqvae"], None, codes, batch_size), "top": None, "bottom": codes,
                "position": None}
    return generate(models["vqvae"], models["top"], models["bottom"], num_samples, temperature, top_k, seed, method,
                    batch_size, progress, slice_positions, guidance)
