"""Speed and memory benchmarks, run by ``python -m oasis_gen.cli.bench {data,train,prior,sample} ...``.

Every speed figure in the README comes from this module, with the command that produced it.

- ``data``: images/second of the tf.data pipeline for a full pass over the training split,
  cold (decoding PNGs) and cached (decoded uint8 slices in memory).
- ``train``: VQ-VAE-2 training images/second (median of timed steps after warm-up, the real
  ``VQVAE2.fit`` on a tf.data pipeline of phantom slices), FLOPs per training image, the fraction
  of this machine's measured matmul peak (float32, or bfloat16 under ``mixed_bfloat16``) that
  reaches, and peak memory; ``--torch_reference DIR`` times the PyTorch reference in the same run.
- ``prior``: prior training code maps/second of a preset's top or bottom prior.
- ``sample``: seconds per generated brain with the ``cached`` and ``naive`` samplers (naive timed
  on a number of positions and extrapolated to the full grids, as the output says), their ratio,
  the priors' parameter counts and peak memory; trained priors from ``--run_dir`` or randomly
  initialised priors of a preset.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from oasis_gen import config
from oasis_gen.benchmarks.torch_reference import measure_in_child
from oasis_gen.data.phantom import write_phantom
from oasis_gen.data.slices import find_slices
from oasis_gen.data.stream import make_dataset, resolve_split
from oasis_gen.models.precision import precision_scope, resolve_precision, set_compute_precision
from oasis_gen.models.priors import build_prior
from oasis_gen.models.vqvae import build_vqvae
from oasis_gen.rundir import open_run
from oasis_gen.sampling.generate import load_models
from oasis_gen.sampling.samplers import NaiveSampler, PriorSampler, draw_positions
from oasis_gen.training.loop import make_optimizer


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_data(data_dir: str, batch_size: int = 32, image_size: int = 256, split: str = "train",
               cached_passes: int = 3) -> dict:
    """Times full passes of the training pipeline over ``split`` of ``data_dir``.

    The cold pass reads and decodes every PNG into the in-memory cache, then streams one shuffled
    pass; the cached figure is the median of ``cached_passes`` further passes, shuffling included.

    Returns:
        ``{"images", "cold_images_per_s", "cached_images_per_s", "peak_rss_mib", ...}``.
    """



    tf.constant(0)  # start the runtime outside the timed region
    folder = find_slices(data_dir)
    source = resolve_split(folder, split, image_size=image_size)

    def one_pass(dataset) -> int:
        count = 0
        for batch in dataset:
            count += int(batch.shape[0])
        return count

    start = time.perf_counter()
    dataset = make_dataset(source, batch_size, training=True, cache=True)
    count = one_pass(dataset)
    cold_seconds = time.perf_counter() - start
    cached = []
    for _ in range(cached_passes):
        start = time.perf_counter()
        one_pass(dataset)
        cached.append(time.perf_counter() - start)
    return {
        "images": count,
        "batch_size": batch_size,
        "image_size": image_size,
        "cold_images_per_s": round(count / cold_seconds, 1),
        "cached_images_per_s": round(count / float(np.median(cached)), 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Measured matmul throughput of this machine in GFLOP/s (best of ``repeats``) in ``dtype``."""

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    multiply = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32)))
    multiply(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        multiply(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def _peaks(precision: str) -> dict:
    """The float32 matmul peak, and the bfloat16 one when ``precision`` computes in bfloat16."""
    peaks = {"matmul_peak_gflops_float32": round(matmul_peak_gflops(), 1)}
    if precision == "mixed_bfloat16":
        peaks["matmul_peak_gflops_bfloat16"] = round(matmul_peak_gflops(dtype="bfloat16"), 1)
    return peaks


def _time_fit(model, dataset, steps: int, warmup: int) -> float:
    """Median seconds of ``steps`` training steps after ``warmup`` untimed ones."""

    times: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[StepTimer()], shuffle=False)
    return float(np.median(times[warmup:]))


def forward_gflops(model, image_size: int) -> float:
    """Forward-pass GFLOPs of one image, counted by TensorFlow's graph profiler."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, image_size, image_size, 1), tf.float32))
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()
                                                  ).with_empty_output().build()
    profile = model_analyzer.profile(concrete.graph, options=options)
    return profile.total_float_ops / 1e9


def bench_train(preset_name: str, batch_size: int, steps: int = 20, warmup: int = 5, jit_compile: bool = False,
                image_size: int | None = None, precision: str = "float32", torch_reference: str | None = None) -> dict:
    """Times ``VQVAE2.fit`` steps of a preset's model on phantom slices streamed by tf.data.

    With ``torch_reference`` (a folder holding the PyTorch reference's ``vqvae.py``) the reference is
    timed in the same run, in child processes with the tuned malloc: float32, and bfloat16 autocast.

    Returns:
        ``images_per_s`` (median step), ``gflop_per_image`` (3x the forward pass: forward and
        backward), ``peak_fraction`` (of the measured matmul peak in the compute precision),
        ``peak_rss_mib``, the reference's figures and context.
    """


    cfg = config.preset(preset_name)
    size = image_size or cfg.data.image_size
    precision = resolve_precision(precision)
    with tempfile.TemporaryDirectory() as folder, precision_scope(precision):
        write_phantom(folder, num_subjects=4, slices_per_subject=max(8, batch_size // 2), size=size)
        source = resolve_split(find_slices(folder), "train", image_size=size)
        dataset = make_dataset(source, batch_size, training=True, repeat=True, drop_remainder=True)
        model = build_vqvae(cfg.vqvae, size, data_variance=0.06)
        model.compile(optimizer=make_optimizer(config.TrainConfig(precision=precision)),
                      jit_compile=jit_compile)
        step_seconds = _time_fit(model, dataset, steps, warmup)
    images_per_s = batch_size / step_seconds
    gflop_per_image = 3.0 * forward_gflops(model, size)
    peaks = _peaks(precision)
    peak = peaks.get("matmul_peak_gflops_bfloat16", peaks["matmul_peak_gflops_float32"])
    results = {
        "preset": preset_name, "batch_size": batch_size, "image_size": size, "precision": precision,
        "jit_compile": jit_compile, "images_per_s": round(images_per_s, 2), "gflop_per_image": round(gflop_per_image, 2),
        "achieved_gflops": round(images_per_s * gflop_per_image, 1), **peaks,
        "peak_fraction": round(images_per_s * gflop_per_image / peak, 3),
        "parameters": int(model.count_params()), "timed_steps": steps, "peak_rss_mib": round(peak_rss_mib(), 1),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }
    if torch_reference:

        for key, bfloat16 in (("torch_float32_tuned_malloc", False), ("torch_bfloat16_autocast", True)):
            reference = measure_in_child(torch_reference, batch_size, steps, warmup, bfloat16)
            results[f"{key}_images_per_s"] = reference["images_per_s"]
        results["speedup_vs_torch_float32"] = round(images_per_s / results["torch_float32_tuned_malloc_images_per_s"], 2)
    return results


def bench_prior(preset_name: str, level: str, batch_size: int, steps: int = 20, warmup: int = 5,
                precision: str = "float32") -> dict:
    """Times ``fit`` steps of a preset's top or bottom prior on random codes (code maps per second)."""


    cfg = config.preset(preset_name)
    precision = resolve_precision(precision)
    bottom_grid = cfg.data.image_size // 4
    top_grid = bottom_grid // cfg.vqvae.top_downsample
    rng = np.random.default_rng(0)
    count = batch_size * 4
    top = rng.integers(0, cfg.vqvae.num_embeddings, (count, top_grid, top_grid)).astype(np.int32)
    bottom = rng.integers(0, cfg.vqvae.num_embeddings, (count, bottom_grid, bottom_grid)).astype(np.int32)
    inputs = top if level == "top" else {"top": top, "bottom": bottom}
    dataset = tf.data.Dataset.from_tensor_slices(inputs).repeat().batch(batch_size, drop_remainder=True)
    prior_cfg = cfg.top_prior if level == "top" else cfg.bottom_prior
    with precision_scope(precision):
        model = build_prior(level, prior_cfg, cfg.vqvae.num_embeddings, top_grid, bottom_grid)
        model.compile(optimizer=make_optimizer(config.TrainConfig(precision=precision)))
        step_seconds = _time_fit(model, dataset, steps, warmup)
    return {"preset": preset_name, "level": level, "batch_size": batch_size, "precision": precision,
            "code_maps_per_s": round(batch_size / step_seconds, 2), "parameters": int(model.count_params()),
            "timed_steps": steps, **_peaks(precision), "peak_rss_mib": round(peak_rss_mib(), 1)}


def _sample_models(preset_name: str, run_dir: str | None):
    """(vqvae, top_prior, bottom_prior): trained ones from a run, or freshly initialised ones of a preset."""
    if run_dir:

        models = load_models(open_run(run_dir, None, {}, create=False))
        if models["top"] is None:
            raise ValueError(f"{run_dir} is a single-level run; the sampling benchmark measures two-level runs")
        return models["vqvae"], models["top"], models["bottom"]

    cfg = config.preset(preset_name)
    vqvae = build_vqvae(cfg.vqvae, cfg.data.image_size, data_variance=0.06)
    top = build_prior("top", cfg.top_prior, cfg.vqvae.num_embeddings, vqvae.top_grid, vqvae.bottom_grid)
    bottom = build_prior("bottom", cfg.bottom_prior, cfg.vqvae.num_embeddings, vqvae.top_grid, vqvae.bottom_grid)
    return vqvae, top, bottom


def bench_sample(preset_name: str = "quick", batch_size: int = 8, run_dir: str | None = None,
                 naive_positions: int = 16, precision: str = "float32") -> dict:
    """Seconds per brain for the cached sampler (full run) and the naive one (extrapolated), with the
    models computing in ``precision``.

    Compilation is excluded: each sampler first runs once on the same shapes.
    """







    precision = resolve_precision(precision)
    vqvae, top, bottom = (set_compute_precision(model, precision)
                          for model in _sample_models(preset_name, run_dir))
    top_cached = PriorSampler(top, "cached", batch_size)
    bottom_cached = PriorSampler(bottom, "cached", batch_size)
    # positions only for position-conditioned priors (a run's priors may be either)
    where = {prior.name: draw_positions(prior, batch_size) if prior.num_positions else None for prior in (top, bottom)}
    warm_top = top_cached(batch_size, seed=99, slice_positions=where[top.name])
    bottom_cached(batch_size, warm_top, seed=99, slice_positions=where[bottom.name])
    vqvae.decode_codes(warm_top, np.zeros((batch_size, bottom.height, bottom.width), np.int32))
    start = time.perf_counter()
    top_codes = top_cached(batch_size, seed=0, slice_positions=where[top.name])
    top_seconds = time.perf_counter() - start
    bottom_codes = bottom_cached(batch_size, top_codes, seed=1, slice_positions=where[bottom.name])
    bottom_seconds = time.perf_counter() - start - top_seconds
    vqvae.decode_codes(top_codes, bottom_codes).numpy()
    cached_seconds = time.perf_counter() - start
    decode_seconds = cached_seconds - top_seconds - bottom_seconds

    naive_seconds = decode_seconds
    for prior, condition in ((top, None), (bottom, top_codes)):
        sampler = NaiveSampler(prior)
        count = min(naive_positions, prior.height * prior.width)
        sampler(batch_size, condition, positions=1, slice_positions=where[prior.name])  # compile
        start = time.perf_counter()
        sampler(batch_size, condition, positions=count, slice_positions=where[prior.name]).numpy()
        naive_seconds += (time.perf_counter() - start) / count * prior.height * prior.width
    return {
        "preset": preset_name if not run_dir else None, "run_dir": run_dir, "batch_size": batch_size,
        "precision": precision, "cached_seconds_per_brain": round(cached_seconds / batch_size, 3),
        "cached_top_seconds_per_brain": round(top_seconds / batch_size, 3),
        "cached_bottom_seconds_per_brain": round(bottom_seconds / batch_size, 3),
        "naive_seconds_per_brain": round(naive_seconds / batch_size, 2),
        "naive_extrapolated_from_positions": naive_positions,
        "speedup": round(naive_seconds / cached_seconds, 1),
        "top_prior_params": int(top.count_params()), "bottom_prior_params": int(bottom.count_params()),
        "top_grid": [top.height, top.width], "bottom_grid": [bottom.height, bottom.width],
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
