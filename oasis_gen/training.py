"""Training-stage machinery shared by every stage: callbacks, checkpoints, resume, plots.

A stage folder holds ``model.keras`` (the best model so far), ``checkpoint.keras`` and
``checkpoint.json`` (the latest full state: weights, optimizer, epoch), ``history.csv``,
``tensorboard/`` and ``plots/``. Every file is written atomically, so a crash leaves the last
complete checkpoint, and re-running the same command resumes from it.
"""

from __future__ import annotations

import csv
import math
import os
import time

import keras
import numpy as np

from oasis_gen.fileio import atomic_path, atomic_write_json


class NonFiniteLoss(RuntimeError):
    """Training produced NaN or Inf; the last good checkpoint is kept."""


def save_model_atomic(model: keras.Model, path: str) -> None:
    """Saves ``model`` to ``path`` (a .keras file) via a temporary name and a rename."""
    with atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary)


def load_model(path: str) -> keras.Model:
    """Loads an oasis_gen ``.keras`` file with ``safe_mode=True`` (no code is run from the file).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a Keras model of a registered oasis_gen class.
    """
    import oasis_gen.prior  # noqa: F401  (importing registers the classes)
    import oasis_gen.vqvae  # noqa: F401

    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=True)
    except Exception as error:  # Keras raises many types for a foreign or broken file
        raise ValueError(f"{path} is not a loadable oasis_gen model: {error}") from error
    if not type(model).__module__.startswith("oasis_gen."):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an oasis_gen model")
    return model


class StageCheckpoint(keras.callbacks.Callback):
    """After every epoch: the full state to ``checkpoint.keras``, and ``model.keras`` when ``monitor`` improves.

    Args:
        folder: the stage folder.
        monitor: log key of the quality measure (e.g. ``val_ssim``).
        mode: ``"max"`` or ``"min"``.
        best: best value reached before a resume.
    """

    def __init__(self, folder: str, monitor: str, mode: str = "max", best: float | None = None):
        super().__init__()
        self.folder = folder
        self.monitor = monitor
        self.mode = mode
        self.best = best

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = [float(v) for v in logs.values() if isinstance(v, (int, float, np.floating))]
        if any(not math.isfinite(v) for v in values):
            return  # never checkpoint a broken state
        value = logs.get(self.monitor)
        if value is not None and self._improved(float(value)):
            self.best = float(value)
            save_model_atomic(self.model, os.path.join(self.folder, "model.keras"))
        save_model_atomic(self.model, os.path.join(self.folder, "checkpoint.keras"))
        atomic_write_json(os.path.join(self.folder, "checkpoint.json"),
                          {"epoch": epoch + 1, "best": self.best, "monitor": self.monitor})


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss and remembers the step for a clear message."""

    def __init__(self):
        super().__init__()
        self.failed_at = None
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_at = self.step
            self.model.stop_training = True


class TimeLimit(keras.callbacks.Callback):
    """Stops training cleanly (at an epoch end) once ``minutes`` have passed; 0 means no limit."""

    def __init__(self, minutes: float):
        super().__init__()
        self.minutes = minutes
        self.start = time.monotonic()
        self.reached = False

    def on_epoch_end(self, epoch, logs=None):
        if self.minutes and time.monotonic() - self.start > 60.0 * self.minutes:
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


def read_history(path: str) -> dict[str, list[float]]:
    """Columns of a Keras ``history.csv`` as float lists."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def plot_history(history_path: str, plot_path: str, panels: list[tuple[str, list[str]]]) -> None:
    """One panel per (title, keys) of the history, train and validation curves per key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(history_path)
    if not history.get("epoch"):
        return
    epochs = [e + 1 for e in history["epoch"]]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for axis, (title, keys) in zip(axes[0], panels):
        for key in keys:
            for prefix, style in (("", "-"), ("val_", "--")):
                if prefix + key in history:
                    axis.plot(epochs, history[prefix + key], style, label=("validation " if prefix else "train ") + key)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(plot_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)


def image_grid(rows: list[np.ndarray], path: str, titles: list[str] | None = None, label: str = "") -> None:
    """Saves rows of [N, H, W, 1] images in [0, 1] as one grayscale grid PNG (``label`` as the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(len(r) for r in rows)
    figure, axes = plt.subplots(len(rows), count, figsize=(1.6 * count, 1.6 * len(rows) + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(count):
            axis = axes[r][c]
            axis.axis("off")
            if c < len(row):
                axis.imshow(np.clip(row[c][..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        if titles:
            axes[r][0].set_title(titles[r], fontsize=8, loc="left")
    if label:
        figure.suptitle(label, fontsize=9)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)


def read_checkpoint_state(folder: str) -> dict | None:
    """The ``checkpoint.json`` of a stage folder, or None when there is no complete checkpoint."""
    state_path = os.path.join(folder, "checkpoint.json")
    if not (os.path.exists(state_path) and os.path.exists(os.path.join(folder, "checkpoint.keras"))):
        return None
    import json

    with open(state_path, encoding="utf-8") as handle:
        return json.load(handle)


def distribution_strategy(train_config):
    """The ``tf.distribute`` strategy a ``TrainConfig`` asks for, with its precision policy applied.

    ``default`` is the single-device strategy; ``mirrored`` replicates over the local GPUs (or
    logical CPUs); ``multiworker`` spans hosts described by ``TF_CONFIG``. The batch size is global:
    each of N replicas sees ``batch_size / N`` images per step. The learning rate is not rescaled
    automatically; when multiplying the global batch by N, the usual starting point is the
    learning rate times N (Goyal et al. 2017). ``mixed_precision`` sets Keras' ``mixed_float16``
    policy; the quantizers and losses stay float32.
    """
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_float16" if train_config.mixed_precision else "float32")
    if train_config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if train_config.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if train_config.strategy != "default":
        raise ValueError(f"strategy must be default, mirrored or multiworker, got {train_config.strategy!r}")
    return tf.distribute.get_strategy()


def make_optimizer(train_config):
    """Adam with the stage's learning rate (loss-scaled under mixed precision)."""
    optimizer = keras.optimizers.Adam(train_config.learning_rate)
    if train_config.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def scale_loss_for_replicas(optimizer, loss):
    """The loss to differentiate: divided by the replica count (gradients are summed across replicas,
    so the global step equals one device's on the whole batch) and loss-scaled under mixed precision."""
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss / replicas
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss


def fit_stage(name: str, folder: str, build, train_dataset, validation_dataset, train_config, monitor: str,
              mode: str, force: bool = False, extra_callbacks=(), panels=(), verbose: int = 2) -> dict:
    """Trains a stage's model with resume, checkpoints, logs, plots, a time limit and a NaN stop.

    Resumes from ``folder/checkpoint.keras`` unless ``force`` (then ``build()`` makes a fresh model
    inside the strategy scope, compiled with the configured optimizer). On resume the configured
    learning rate replaces the checkpoint's. ``model.keras`` ends up holding the best model by
    ``monitor``.

    Returns:
        ``epochs_trained`` (all sessions), ``train_seconds_this_session`` and ``stopped_by_time_limit``.

    Raises:
        NonFiniteLoss: the loss became NaN/Inf; the last good checkpoint is left in place.
    """
    state = None if force else read_checkpoint_state(folder)
    strategy = distribution_strategy(train_config)
    with strategy.scope():
        if state is not None:
            print(f"resuming {name} from {folder}/checkpoint.keras after epoch {state['epoch']}")
            model = load_model(os.path.join(folder, "checkpoint.keras"))
            model.optimizer.learning_rate.assign(train_config.learning_rate)
        else:
            model = build()
            model.compile(optimizer=make_optimizer(train_config), jit_compile=train_config.jit_compile)
    if state is None:
        for stale in ("history.csv", "model.keras", "checkpoint.keras", "checkpoint.json"):
            if os.path.exists(os.path.join(folder, stale)):
                os.remove(os.path.join(folder, stale))
    history_path = os.path.join(folder, "history.csv")
    non_finite = StopOnNonFinite()
    time_limit = TimeLimit(train_config.time_limit_minutes)
    callbacks = [non_finite, StageCheckpoint(folder, monitor, mode, best=state["best"] if state else None),
                 keras.callbacks.CSVLogger(history_path, append=state is not None),
                 keras.callbacks.TensorBoard(os.path.join(folder, "tensorboard"), profile_batch=0),
                 *extra_callbacks, CurvePlot(history_path, os.path.join(folder, "plots", "curves.png"), list(panels)),
                 time_limit]
    start = time.perf_counter()
    initial_epoch = state["epoch"] if state else 0
    if initial_epoch < train_config.epochs:
        model.fit(train_dataset, validation_data=validation_dataset, epochs=train_config.epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=train_config.steps_per_epoch or None,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    if non_finite.failed_at is not None:
        kept = (f"the last good checkpoint {folder}/checkpoint.keras is kept"
                if read_checkpoint_state(folder) else "no epoch had finished, so there is no checkpoint")
        raise NonFiniteLoss(f"{name}: the loss became NaN/Inf at training step {non_finite.failed_at} of this "
                            f"session; {kept}. Try a lower --learning_rate.")
    return {"epochs_trained": len(read_history(history_path).get("epoch", [])),
            "train_seconds_this_session": round(time.perf_counter() - start, 1),
            "stopped_by_time_limit": time_limit.reached}
