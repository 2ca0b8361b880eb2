"""Checkpoints and exact resume: the stage's full training state after every epoch and every
``checkpoint_steps`` steps, the best model by the monitored metric, the training clock carried over
resumes, and cleanup of state files a newer checkpoint replaced."""

from __future__ import annotations

import json
import math
import os
import time

import keras
import numpy as np

from oasis_gen.fileio import atomic_write_json
from oasis_gen.models.loading import save_model_atomic


def _finite(logs) -> bool:
    for value in (logs or {}).values():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            return False
    return True


class StageCheckpoint(keras.callbacks.Callback):
    """Saves the full training state to ``checkpoint_step<N>.keras`` + ``checkpoint.json``, and the best model.

    The state (weights, optimizer slots and step, quantizer EMA statistics, dropout RNG state) is
    saved after every epoch and every ``every_steps`` training steps; ``checkpoint.json`` records
    the completed epochs and the global step, which fix the data position on resume (see
    ``data.shuffled_passes``). ``model.keras`` is rewritten when ``monitor`` improves at an epoch
    end. A state with a NaN/Inf logged value is never saved.

    Args:
        folder: the stage folder.
        monitor: log key of the quality measure (e.g. ``val_ssim``); None keeps the latest model.
        mode: ``"max"`` or ``"min"``.
        best: best value reached before a resume.
        steps_per_epoch: training steps in a full epoch.
        every_steps: step interval of mid-epoch checkpoints (0: epoch ends only).
        epoch, step: completed epochs and global step at the start (from a resumed checkpoint).
    """

    def __init__(self, folder: str, monitor: str, mode: str = "max", best: float | None = None,
                 steps_per_epoch: int = 1, every_steps: int = 0, epoch: int = 0, step: int = 0,
                 clock: "TrainClock | None" = None):
        super().__init__()
        self.clock = clock or TrainClock()
        self.folder = folder
        self.monitor = monitor
        self.mode = mode
        self.best = best
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.epoch = epoch
        self.step = step

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _weights_finite(self) -> bool:
        # Logged losses predate the step's update, so check the weights themselves: never save a
        # state a diverging step has already broken.
        return all(np.isfinite(weights).all() for weights in self.model.get_weights()
                   if np.issubdtype(np.asarray(weights).dtype, np.floating))

    def _save(self) -> None:
        if not self._weights_finite():
            return
        # The state file first, then the JSON that points at it (the commit), then older state files:
        # a crash at any point leaves a JSON naming a complete file whose step it records.
        name = f"checkpoint_step{self.step:09d}.keras"
        save_model_atomic(self.model, os.path.join(self.folder, name))
        atomic_write_json(os.path.join(self.folder, "checkpoint.json"),
                          {"file": name, "epoch": self.epoch, "step": self.step,
                           "steps_per_epoch": self.steps_per_epoch, "best": self.best, "monitor": self.monitor,
                           "train_seconds": round(self.clock.total(), 1)})
        remove_stale_checkpoints(self.folder, keep=name)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        in_epoch = self.step - self.epoch * self.steps_per_epoch
        if self.every_steps and self.step % self.every_steps == 0 and in_epoch < self.steps_per_epoch \
                and _finite(logs):
            self._save()  # the epoch's last step is saved by on_epoch_end, after validation

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not _finite(logs):
            return  # never checkpoint a broken state
        if self.step >= (epoch + 1) * self.steps_per_epoch:
            self.epoch = epoch + 1
            self.step = self.epoch * self.steps_per_epoch
        # else the epoch was cut short (a time limit): the state is saved at the step it reached
        value = logs.get(self.monitor) if self.monitor else None
        improved = self.monitor is None or (value is not None and self._improved(float(value)))
        if improved and self._weights_finite():  # unmonitored models (the DCGAN) too: never a NaN model.keras
            self.best = None if value is None else float(value)
            save_model_atomic(self.model, os.path.join(self.folder, "model.keras"))
        self._save()


class TrainClock:
    """Training seconds of a stage over all its sessions: those a checkpoint recorded plus this session's."""

    def __init__(self, before: float = 0.0):
        self.before = float(before)
        self.start = time.monotonic()

    def total(self) -> float:
        return self.before + time.monotonic() - self.start


def read_checkpoint_state(folder: str) -> dict | None:
    """The ``checkpoint.json`` of a stage folder (with ``path``: the state file it names), or None
    when there is no complete checkpoint."""
    state_path = os.path.join(folder, "checkpoint.json")
    if not os.path.exists(state_path):
        return None
    with open(state_path, encoding="utf-8") as handle:
        state = json.load(handle)
    state["path"] = os.path.join(folder, state.get("file", "checkpoint.keras"))
    return state if os.path.exists(state["path"]) else None


def remove_stale_checkpoints(folder: str, keep: str | None = None) -> None:
    """Deletes state files other than ``keep`` and temporaries a killed write left behind."""
    for name in os.listdir(folder):
        stale_state = name.startswith("checkpoint") and name.endswith(".keras") and name != keep
        if stale_state or (name.startswith(".") and ".tmp" in name):
            os.remove(os.path.join(folder, name))
