"""Keras callbacks of the training stages (besides checkpoints): stop at a NaN, warn of an exploding
codebook, stop at the time budget, redraw the training curves, print one short line per epoch."""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from oasis_gen.plots import plot_history
from oasis_gen.progress import format_seconds, progress_bar
from oasis_gen.training.checkpoints import TrainClock


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss and remembers the global step for a clear message."""

    def __init__(self, step: int = 0):
        super().__init__()
        self.failed_at = None
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_at = self.step
            self.model.stop_training = True


class CodebookWatch(keras.callbacks.Callback):
    """Reports an exploding codebook: a level whose largest code vector in use is ``limit`` times (or
    more) the largest encoder output in an epoch (the ``{level}_norm_ratio`` logs), or non-finite.

    Alerts are printed when they happen and kept in ``alerts`` for the stage's metrics.
    """

    def __init__(self, levels=("top", "bottom"), limit: float = 10.0):
        super().__init__()
        self.levels = levels
        self.limit = limit
        self.alerts: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        for level in self.levels:
            ratio = (logs or {}).get(f"{level}_norm_ratio")
            if ratio is None or (math.isfinite(float(ratio)) and float(ratio) < self.limit):
                continue
            alert = {"epoch": epoch + 1, "level": level, "norm_ratio": float(ratio)}
            self.alerts.append(alert)
            print(f"WARNING: exploding {level} codebook at epoch {epoch + 1}: the largest code vector in use is "
                  f"{float(ratio):.1f}x the largest encoder output (healthy: about 1 or less), so quantization "
                  f"no longer tracks the encoder; try a lower --learning_rate or a lower --decay.", flush=True)


class TimeLimit(keras.callbacks.Callback):
    """Stops training once ``minutes`` of training have passed, counting the time earlier sessions
    recorded in their checkpoint (``clock``); 0 means no limit.

    The clock is read after every step, so a stage stops within one step of its budget, not at the
    end of an epoch that may take minutes; Keras then validates, and ``StageCheckpoint`` saves the
    state mid-epoch, so a resume with a larger budget continues from that step."""

    def __init__(self, minutes: float, clock: TrainClock | None = None):
        super().__init__()
        self.minutes = minutes
        self.clock = clock or TrainClock()
        self.reached = False

    def on_train_batch_end(self, batch, logs=None):
        if self.minutes and self.clock.total() > 60.0 * self.minutes:
            self.reached = True
            self.model.stop_training = True


class CurvePlot(keras.callbacks.Callback):
    """Redraws the training curves from ``history.csv`` after every epoch."""

    def __init__(self, history_path: str, plot_path: str, panels: list[tuple[str, list[str]]]):
        super().__init__()
        self.history_path = history_path
        self.plot_path = plot_path
        self.panels = panels

    def on_epoch_end(self, epoch, logs=None):
        plot_history(self.history_path, self.plot_path, self.panels)


def format_epoch(name: str, epoch: int, epochs: int, logs: dict, keys, seconds: float) -> str:
    """``stage 1 epoch 3/10: loss 0.0123 (val 0.0145), val ssim 0.912, top_usage 0.78 (45 s)``: the
    ``keys`` a reader follows, each with its validation value when there is one."""
    parts = []
    for key in keys:
        train, val = logs.get(key), logs.get(f"val_{key}")
        if train is not None and val is not None:
            parts.append(f"{key} {float(train):.4g} (val {float(val):.4g})")
        elif val is not None:
            parts.append(f"val {key} {float(val):.4g}")
        elif train is not None:
            parts.append(f"{key} {float(train):.4g}")
    return f"{name} epoch {epoch + 1}/{epochs}: {', '.join(parts)} ({format_seconds(seconds)})"


class EpochLine(keras.callbacks.Callback):
    """One short line per epoch with the few metrics a user reads (every metric still goes to
    ``history.csv`` and TensorBoard), and a bar over the epoch's steps: redrawn on a terminal, a line
    now and then in a log (see ``oasis_gen.progress``). Replaces Keras' own epoch lines, which carry
    every metric (540 characters for stage 1)."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, keys=("loss",)):
        super().__init__()
        self.name, self.epochs, self.steps, self.keys = name, epochs, steps_per_epoch, tuple(keys)
        self.bar = None
        self.start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.bar = progress_bar(total=self.steps, desc=f"{self.name} epoch {epoch + 1}/{self.epochs}", unit="steps",
                                summary=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(format_epoch(self.name, epoch, self.epochs, logs or {}, self.keys, time.perf_counter() - self.start),
              flush=True)


def tensorboard_images(logdir: str, tag: str, images: np.ndarray, step: int = 0, description: str | None = None) -> None:
    """Writes ``images`` (N, H, W, 1) in [0, 1] to TensorBoard's image tab under ``logdir``."""
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        tf.summary.image(tag, np.clip(np.asarray(images, np.float32), 0.0, 1.0), step=step,
                         max_outputs=len(images), description=description)
    writer.close()
