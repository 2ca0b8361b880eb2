"""oasis_gen: generate realistic 2D brain MRI slices with a hierarchical VQ-VAE-2 and PixelCNN priors.

The package is arranged by layer; imports run one way, from the top of this list to the bottom,
never back up, with no cycles (``tests/test_architecture.py`` checks it)::

    cli/          argparse and main of every command: train, generate, evaluate, data, figures, bench,
                  phantom, prepare; console (quiet TensorFlow start-up)
    training/     loop (fit_stage, strategies, optimizer, schedules), checkpoints, callbacks,
                  stages (one function per stage of rundir.STAGES), summary (the end-of-run table,
                  next steps and the run's report.md index)
    evaluation/   metrics, realism (C2ST), feature_net, samples, report, runs, compare, figures
    benchmarks/   speed, torch_reference
    sampling/     samplers (cached, naive), generate (a run's models -> PNGs, codes, grids, GIFs)
    models/       quantizer, vqvae, pixelcnn (layers), priors, dcgan, precision, distribute, loading
    data/         slices (finding, validating), stream (tf.data), codes, phantom, oasis1 (import)
    rundir.py     run directories, the stage registry (STAGES), staleness checks, finding a run
    plots.py      every figure: one grid painter, training curves, sample-report figures
    config.py     configuration dataclasses, presets, JSON and command-line flags
    fileio.py     atomic writes, history.csv reading
    progress.py   progress bars on a terminal, short periodic lines in a log
    seeds.py      deterministic per-purpose seeds

``training`` and ``evaluation`` sit side by side above ``sampling``; ``training`` may call
``evaluation`` (the pipeline's evaluate stage and stage-1 test metrics), never the reverse.

Importing the package does no work and does not import TensorFlow. The modules that a command
needs before its arguments are checked (``config``, ``rundir``, ``fileio``, ``progress``, ``data.slices``,
``training.summary``, ``cli``)
never import it; the model, sampling, training and evaluation modules import it at the top.
"""

import os

# TensorFlow's C++ logging (start-up notices, harmless Grappler errors) drowns the progress output;
# only fatal messages show unless the user set the level (their setting wins; see ``cli.console``).
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
