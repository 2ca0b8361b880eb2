"""The pipeline's stages. Each takes a ``pipeline.Run`` and returns a summary dict.

Stage outputs go to ``<run>/<stage>/``; the caller marks the stage complete only after the
function returns, so an interrupted stage is resumed (from its last checkpoint) or redone.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from oasis_gen.config import one_or_pair
from oasis_gen.data import codes as codes_lib
from oasis_gen.data.phantom import write_phantom
from oasis_gen.data.slices import PHANTOM_MARKER, SPLITS, DataError, SliceFolder, find_slices
from oasis_gen.data.stream import format_summary, load_split, make_dataset, preview_slices, read_images, summarize
from oasis_gen.evaluation.metrics import evaluate_reconstruction
from oasis_gen.evaluation.samples import evaluate_samples
from oasis_gen.fileio import atomic_write_json
from oasis_gen.models.dcgan import DiscriminatorWatch, build_dcgan
from oasis_gen.models.loading import load_model
from oasis_gen.models.precision import resolve_precision
from oasis_gen.models.priors import build_prior
from oasis_gen.models.vqvae import build_vqvae
from oasis_gen.plots import image_grid, save
from oasis_gen.rundir import STAGE, Run, RunError
from oasis_gen.sampling.generate import decode_in_batches, run_generation
from oasis_gen.training.callbacks import CodebookWatch, tensorboard_images
from oasis_gen.training.loop import fit_stage

FUNCTIONS: dict = {}  # stage name -> function(run, force) -> summary; the stages themselves are in rundir.STAGES


def _registered(name: str):
    """Registers the decorated function as stage ``name`` of ``rundir.STAGES``."""
    def register(function):
        if name not in STAGE:
            raise ValueError(f"{name!r} is not a stage of rundir.STAGES")
        FUNCTIONS[name] = function
        return function
    return register


PHANTOM_SUBJECTS = 40
PHANTOM_SLICES = 32


def _slices(run: Run) -> SliceFolder:
    cfg = run.config.data
    return find_slices(cfg.data_dir, cfg.validate_fraction, cfg.test_fraction, cfg.split_seed)


@_registered("data")
def stage_data(run: Run, force: bool = False) -> dict:
    """Writes the phantom data when no data folder is configured, then summarises the data."""

    if run.config.data.data_dir is None:
        target = os.path.join(run.path, "data")
        if force or not os.path.exists(os.path.join(target, PHANTOM_MARKER)):
            print(f"no --data given: writing the built-in SYNTHETIC phantom data to {target}")
            write_phantom(target, num_subjects=PHANTOM_SUBJECTS, slices_per_subject=PHANTOM_SLICES,
                                  progress=True)
        run.config.data.data_dir = target
        run.save_config()
    summary = summarize(run.config.data.data_dir)
    print(format_summary(summary))
    return {"data_dir": run.config.data.data_dir, "synthetic": summary["synthetic"],
            **{split: summary[split].get("count", 0) for split in SPLITS}}


def settle_precision(run: Run, train_cfg, stage: str) -> str:
    """Resolves the stage's ``precision`` (``auto`` -> what this hardware runs fastest), stores the
    choice in the run's config and prints it."""

    resolved = resolve_precision(train_cfg.precision)
    if resolved != train_cfg.precision:
        print(f"[{stage}] precision auto -> {resolved}")
        train_cfg.precision = resolved
        run.save_config()
    else:
        print(f"[{stage}] precision {resolved}")
    return resolved


def _pixel_variance(dataset) -> float:
    total, total_sq, count = 0.0, 0.0, 0
    for images in dataset:
        values = images.numpy().astype(np.float64)
        total += values.sum()
        total_sq += np.square(values).sum()
        count += values.size
    mean = total / count
    return float(total_sq / count - mean * mean)


def _reconstruction_grid_callback(images: np.ndarray, folder: str, synthetic: bool, logdir: str):
    """Keras callback: inputs over reconstructions of fixed validation slices, one PNG per epoch, and
    each input beside its reconstruction in TensorBoard's image tab (``logdir``)."""


    class ReconstructionGrid(keras.callbacks.Callback):
        writes_files = True  # the chief's alone under a multi-worker strategy

        def on_epoch_end(self, epoch, logs=None):
            reconstructions = self.model(images, training=False).numpy()
            label = f"epoch {epoch + 1}: inputs (top) over reconstructions (bottom)"
            save(image_grid([("input", images), ("reconstruction", reconstructions)],
                            label + (" - SYNTHETIC phantom data" if synthetic else "")),
                 os.path.join(folder, f"reconstructions_epoch_{epoch + 1:03d}.png"))
            tensorboard_images(logdir, "validation slice | reconstruction",
                               np.concatenate([images, reconstructions], axis=2), step=epoch + 1)

    return ReconstructionGrid()


@_registered("vqvae")
def stage_vqvae(run: Run, force: bool = False) -> dict:
    """Trains the VQ-VAE-2 (resuming from its last checkpoint), keeps the best by validation SSIM,
    and writes test-split metrics to ``vqvae/metrics.json``."""










    cfg, train_cfg = run.config, run.config.vqvae_train
    settle_precision(run, train_cfg, "vqvae")
    folder = run.stage_dir("vqvae")
    plot_folder = os.path.join(folder, "plots")
    keras.utils.set_random_seed(train_cfg.seed)
    slices = _slices(run)
    _, train_source = load_split(cfg.data, "train", train_cfg.batch_size, folder=slices)
    val_ds, val_source = load_split(cfg.data, "validate", train_cfg.batch_size, folder=slices)
    if len(train_source) < train_cfg.batch_size:
        raise DataError(f"the train split has {len(train_source)} slices, fewer than batch_size "
                             f"{train_cfg.batch_size}")

    def train_stream(step):
        return make_dataset(train_source, train_cfg.batch_size, training=True, cache=cfg.data.cache,
                                 seed=train_cfg.seed,
                                 deterministic=cfg.data.deterministic, resize_method=cfg.data.resize_method,
                                 repeat=True, drop_remainder=True, start_step=step)

    def build():
        variance = cfg.vqvae.data_variance or _pixel_variance(
            make_dataset(train_source, 64, cache=False, resize_method=cfg.data.resize_method))
        return build_vqvae(cfg.vqvae, train_source.shape[0], data_variance=variance, seed=train_cfg.seed)

    levels = ("top", "bottom") if cfg.vqvae.levels == 2 else ("bottom",)
    codebook_watch = CodebookWatch(levels)
    fitted = fit_stage(
        "stage 1", folder, build, train_stream, val_ds, train_cfg, monitor="val_ssim", mode="max",
        steps_per_epoch=train_cfg.steps_per_epoch or len(train_source) // train_cfg.batch_size, force=force,
        extra_callbacks=[_reconstruction_grid_callback(preview_slices(val_source)[0], plot_folder, train_source.synthetic,
                                                       os.path.join(folder, "tensorboard", "images")),
                         codebook_watch],
        panels=[("loss", ["loss", "reconstruction_loss"]), ("validation SSIM", ["ssim"]),
                ("codebook usage", [f"{level}_usage" for level in levels])],
        shown=("loss", "ssim", *[f"{level}_usage" for level in levels]))
    best = load_model(os.path.join(folder, "model.keras"))
    test_ds, test_source = load_split(cfg.data, "test", train_cfg.batch_size, folder=slices)
    results = evaluate_reconstruction(best, test_ds)
    results.update({"split": "test", "data_dir": cfg.data.data_dir, "synthetic_data": test_source.synthetic,
                    "parameters": int(best.count_params()), "codebook_alerts": codebook_watch.alerts, **fitted})
    atomic_write_json(os.path.join(folder, "metrics.json"), results)
    preview, _ = preview_slices(test_source)
    save(image_grid([("test slice", preview), ("reconstruction", best(preview).numpy())],
                    "test slices (top) and reconstructions (bottom)"
                    + (" - SYNTHETIC phantom data" if test_source.synthetic else "")),
         os.path.join(plot_folder, "reconstructions_test.png"))
    usage = {f"{level}_usage": results[level]["usage"] for level in levels}
    print(f"stage 1 test metrics: SSIM {results['ssim_mean']:.4f} +- {results['ssim_std']:.4f} "
          f"(min {results['ssim_min']:.4f}), MS-SSIM {results['ms_ssim_mean']:.4f}, "
          f"PSNR {results['psnr_mean']:.2f} dB; codes used "
          + ", ".join(f"{level} {results[level]['usage']:.1%}" for level in levels))
    return {key: results[key] for key in ("ssim_mean", "psnr_mean")} | usage


def load_vqvae(run: Run):
    """The run's best VQ-VAE-2 (requires a finished vqvae stage)."""

    run.require("vqvae", "this stage")
    return load_model(os.path.join(run.path, "vqvae", "model.keras"))


@_registered("codes")
def stage_codes(run: Run, force: bool = False) -> dict:
    """Encodes every split with the trained VQ-VAE-2 into ``codes/{split}.npz``, and the training
    slices mirrored left-right into ``codes/train_mirrored.npz`` (for priors trained with ``--mirror``)."""

    model = load_vqvae(run)
    folder = run.stage_dir("codes")
    slices = _slices(run)
    summary = {}
    for split in SPLITS + (codes_lib.MIRRORED,):
        source_split = "train" if split == codes_lib.MIRRORED else split
        dataset, source = load_split(run.config.data, source_split, 32, with_paths=True, folder=slices)
        if split == codes_lib.MIRRORED:
            dataset = dataset.map(lambda images, paths: (codes_lib.mirror_left_right(images), paths))
        codes = codes_lib.encode_dataset(model, dataset, description=f"encoding {split}")
        codes_lib.save_codes(os.path.join(folder, f"{split}.npz"), codes)
        summary[split] = int(len(codes["files"]))
        print(f"[codes] {split}: {len(codes['files'])} slices -> "
              + ", ".join(f"{level} {codes[level].shape[1:]}" for level in ("top", "bottom") if level in codes))
    return summary


def _training_codes(run: Run, prior_cfg, num_embeddings: int, codes: dict) -> dict:
    """The training code maps of a prior: ``codes`` (those of ``codes/train.npz``), followed by the
    mirrored slices' codes when ``prior_cfg.mirror`` is on."""

    if not prior_cfg.mirror:
        return codes
    path = os.path.join(run.path, "codes", f"{codes_lib.MIRRORED}.npz")
    if not os.path.exists(path):
        raise RunError(f"--mirror needs the mirrored training codes {path}, which codes extracted by an earlier "
                       f"version lack; run `python train.py codes --run_dir {run.path} --force` first")
    return codes_lib.concatenate(codes, codes_lib.load_codes(path, num_embeddings))


def _prior_stage(level: str):
    def stage(run: Run, force: bool = False) -> dict:
        return train_prior(run, level, force)

    stage.__name__ = f"stage_prior_{level}"
    return stage


def train_prior(run: Run, level: str, force: bool = False) -> dict:
    """Trains the ``level`` prior on the extracted codes; ``prior_{level}/metrics.json`` holds bits per code."""











    run.require("codes", f"prior_{level}")
    vqvae = load_vqvae(run)
    if level == "top" and vqvae.levels == 1:
        raise RunError(f"{run.path} holds a single-level VQ-VAE: it has no top codes; its one prior is "
                       f"`python train.py prior --level bottom` (or --kind dcgan)")
    num_embeddings = vqvae.num_embeddings
    train_cfg = getattr(run.config, f"{level}_prior_train")
    settle_precision(run, train_cfg, f"prior_{level}")
    prior_cfg = run.config.top_prior if level == "top" else run.config.bottom_prior
    folder = run.stage_dir(f"prior_{level}")
    keras.utils.set_random_seed(train_cfg.seed)
    splits = {split: codes_lib.load_codes(os.path.join(run.path, "codes", f"{split}.npz"), num_embeddings)
              for split in SPLITS}
    training_codes = _training_codes(run, prior_cfg, num_embeddings, splits["train"])
    if len(splits["train"]["bottom"]) < train_cfg.batch_size:
        raise DataError(f"{len(splits['train']['bottom'])} training code maps are fewer than batch_size "
                             f"{train_cfg.batch_size}")
    frequencies = codes_lib.position_frequencies(splits["train"]) if prior_cfg.condition_on_position else None
    with_position = frequencies is not None

    def train_stream(step):
        return codes_lib.code_dataset(training_codes, level, train_cfg.batch_size, training=True,
                                      seed=train_cfg.seed, start_step=step, with_position=with_position)

    val_ds = codes_lib.code_dataset(splits["validate"], level, train_cfg.batch_size, with_position=with_position)
    fitted = fit_stage(
        f"the {level} prior", folder,
        lambda: build_prior(level, prior_cfg, num_embeddings, vqvae.top_grid, vqvae.bottom_grid,
                            conditional=vqvae.levels == 2, position_frequencies=frequencies, seed=train_cfg.seed),
        train_stream, val_ds, train_cfg, monitor="val_bits_per_code", mode="min",
        steps_per_epoch=train_cfg.steps_per_epoch or len(training_codes["bottom"]) // train_cfg.batch_size,
        force=force,
        panels=[("NLL (bits per code)", ["bits_per_code"]), ("token accuracy (background-inflated)", ["accuracy"])],
        shown=("bits_per_code",))
    best = load_model(os.path.join(folder, "model.keras"))
    results = {"level": level, "parameters": int(best.count_params()), "num_embeddings": num_embeddings,
               "uniform_bits_per_code": float(np.log2(num_embeddings)), **fitted,
               "synthetic_data": _slices(run).synthetic, "nll_bits_per_code": {}, "accuracy": {}}
    for split in SPLITS:
        values = best.evaluate(codes_lib.code_dataset(splits[split], level, train_cfg.batch_size,
                                                      with_position=with_position), verbose=0, return_dict=True)
        results["nll_bits_per_code"][split] = float(values["bits_per_code"])
        results["accuracy"][split] = float(values["accuracy"])
    nll = results["nll_bits_per_code"]
    results["generalisation_gap_bits"] = nll["validate"] - nll["train"]
    atomic_write_json(os.path.join(folder, "metrics.json"), results)
    print(f"{level} prior: {nll['train']:.3f} / {nll['validate']:.3f} / {nll['test']:.3f} bits per code "
          f"(train / validate / test; uniform {results['uniform_bits_per_code']:.1f})")
    return {"nll_bits_per_code_test": nll["test"], "gap_bits": results["generalisation_gap_bits"],
            "parameters": results["parameters"]}


def _latent_scale(codebook: np.ndarray, codes: np.ndarray) -> float:
    """Standard deviation of the entries of the latent maps ``codebook[codes]``, from code counts."""
    counts = np.bincount(codes.ravel().astype(np.int64), minlength=len(codebook)).astype(np.float64)
    total = counts.sum() * codebook.shape[1]
    mean = float(counts @ codebook.sum(axis=1)) / total
    mean_square = float(counts @ np.square(codebook).sum(axis=1)) / total
    return float(np.sqrt(max(mean_square - mean * mean, 1e-12)))


@_registered("prior_dcgan")
def stage_prior_dcgan(run: Run, force: bool = False) -> dict:
    """Trains the DCGAN latent-map prior of a single-level run (``prior_dcgan/``): the baseline of
    earlier OASIS work, with a fixed-noise sample grid per epoch and a warning when the discriminator
    wins outright."""











    run.require("codes", "prior_dcgan")
    vqvae = load_vqvae(run)
    if vqvae.levels != 1:
        raise RunError(f"{run.path} holds a two-level VQ-VAE-2; the DCGAN prior models the single code map of "
                       f"a one-level model (train one with `python train.py vqvae --levels 1 ...`)")
    train_cfg = run.config.dcgan_train
    settle_precision(run, train_cfg, "prior_dcgan")
    folder = run.stage_dir("prior_dcgan")
    plot_folder = os.path.join(folder, "plots")
    keras.utils.set_random_seed(train_cfg.seed)
    train_codes = codes_lib.load_codes(os.path.join(run.path, "codes", "train.npz"), vqvae.num_embeddings)
    count = len(train_codes["bottom"])
    if count < train_cfg.batch_size:
        raise DataError(f"{count} training code maps are fewer than batch_size {train_cfg.batch_size}")
    codebook = vqvae.bottom_quantizer.codebook.numpy()
    scale = _latent_scale(codebook, train_codes["bottom"])
    synthetic = _slices(run).synthetic

    class SampleGrid(keras.callbacks.Callback):
        writes_files = True

        def on_epoch_end(self, epoch, logs=None):
            images = decode_in_batches(vqvae, None, self.model.sample_codes(8, seed=0))
            save(image_grid([("sample", images)], f"epoch {epoch + 1}: DCGAN samples from fixed noise"
                            + (" - SYNTHETIC phantom data" if synthetic else "")),
                 os.path.join(plot_folder, f"samples_epoch_{epoch + 1:03d}.png"))

    watch = DiscriminatorWatch()
    fitted = fit_stage(
        "the DCGAN prior", folder, lambda: build_dcgan(run.config.dcgan, codebook, vqvae.bottom_grid, scale),
        lambda step: codes_lib.code_dataset(train_codes, "bottom", train_cfg.batch_size, training=True,
                                            seed=train_cfg.seed, start_step=step),
        None, train_cfg, monitor=None, mode="min", steps_per_epoch=train_cfg.steps_per_epoch or count // train_cfg.batch_size,
        force=force, extra_callbacks=[SampleGrid(), watch],
        optimizer=lambda: keras.optimizers.Adam(train_cfg.learning_rate, beta_1=0.5),
        panels=[("losses", ["d_loss", "g_loss"]), ("discriminator accuracy", ["d_real_accuracy", "d_fake_accuracy"])],
        shown=("d_loss", "g_loss"))
    model = load_model(os.path.join(folder, "model.keras"))
    results = {"kind": "dcgan", "generator_parameters": int(model.generator.count_params()),
               "discriminator_parameters": int(model.discriminator.count_params()), "latent_scale": scale,
               "discriminator_alerts": watch.alerts, "synthetic_data": synthetic, **fitted}
    atomic_write_json(os.path.join(folder, "metrics.json"), results)
    return {"generator_parameters": results["generator_parameters"], "alerts": len(watch.alerts),
            "epochs_trained": fitted["epochs_trained"]}


stage_prior_top = _registered("prior_top")(_prior_stage("top"))
stage_prior_bottom = _registered("prior_bottom")(_prior_stage("bottom"))


def _sampling_settings(run: Run) -> dict:

    cfg = run.config.sampling
    return {"temperature": one_or_pair(cfg.temperature, float, "sampling.temperature"),
            "top_k": one_or_pair(cfg.top_k, int, "sampling.top_k"),
            "guidance": cfg.guidance_for("pixelcnn"), "seed": cfg.seed,
            "batch_size": cfg.batch_size}


@_registered("samples")
def stage_samples(run: Run, force: bool = False) -> dict:
    """Generates ``sampling.num_samples`` slices with the cached sampler into ``samples/`` (PNGs, grid, codes, GIF)."""

    out = run.stage_dir("samples")
    for name in os.listdir(out):  # a redone stage leaves no slice of its earlier batch behind
        if name.startswith("sample_") and name.endswith(".png"):
            os.remove(os.path.join(out, name))
    summary = run_generation(run.path, num_samples=run.config.sampling.num_samples, **_sampling_settings(run),
                             out=out, gif=True)
    paths = sorted(os.path.join(out, name) for name in os.listdir(out)
                   if name.startswith("sample_") and name.endswith(".png"))
    tensorboard_images(os.path.join(out, "tensorboard"), "samples", read_images(paths, run.config.data.image_size),
                       description="the samples stage's slices, as written to PNG")
    return {"samples": summary["num_samples"], "seconds_per_brain": summary["seconds_per_brain"],
            "grid": os.path.join(summary["out"], "grid.png")}


@_registered("evaluate")
def stage_evaluate(run: Run, force: bool = False) -> dict:
    """Scores ``sampling.evaluation_samples`` new samples against the test split (``evaluate/metrics.json``,
    ``evaluate/report.md``, ``evaluate/figures/``)."""

    settings = _sampling_settings(run)
    results = evaluate_samples(run.path, run.config.data.data_dir, num_samples=run.config.sampling.evaluation_samples,
                               temperature=settings["temperature"], top_k=settings["top_k"],
                               guidance=settings["guidance"], seed=settings["seed"],
                               batch_size=settings["batch_size"], out=run.stage_dir("evaluate"))
    print(f"samples vs real test slices: C2ST AUC {results['c2st_auc']:.3f} (floor {results['c2st_auc_floor']:.3f}, "
          f"reconstructions {results['c2st_auc_reconstructions']:.3f}), "
          f"FD brain {results['fd_brain']:.2f} (floor {results['fd_brain_floor']:.2f}), "
          f"pairwise MS-SSIM {results['diversity_ms_ssim_samples']:.3f} (real {results['diversity_ms_ssim_real']:.3f}), "
          f"SSIM to nearest training slice {results['novelty_ssim_nearest_mean']:.3f}; report {results['report']}")
    return {key: round(results[key], 4) for key in ("c2st_auc", "c2st_auc_floor", "fd_brain", "fd_brain_floor",
                                                    "diversity_ms_ssim_samples",
                                                    "novelty_ssim_nearest_mean", "histogram_wasserstein")}


_missing = set(STAGE) - set(FUNCTIONS)
if _missing:
    raise ImportError(f"stages without a function: {sorted(_missing)}")
