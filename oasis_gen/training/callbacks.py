"""Keras callbacks of the training stages (besides checkpoints): stop at a NaN, warn of an exploding
codebook, stop at the time budget, redraw the training curves."""

from __future__ import annotations

import math

import keras

from oasis_gen.plots import plot_history
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
