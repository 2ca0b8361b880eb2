"""Training-stage machinery shared by every stage: callbacks, checkpoints, resume, plots.

A stage folder holds ``model.keras`` (the best model so far), ``checkpoint_step<N>.keras`` and
``checkpoint.json`` (the latest full state: weights, optimizer, RNG state; the JSON names the file and
records the epoch and step, and is written last, so it always points at a complete file), ``history.csv``,
``tensorboard/`` and ``plots/``. Every file is written atomically, so a crash leaves the last
complete checkpoint, and re-running the same command resumes from it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
import time
import zipfile

import keras
import numpy as np

from oasis_gen.fileio import atomic_path, atomic_write_json


class NonFiniteLoss(RuntimeError):
    """Training produced NaN or Inf; the last good checkpoint is kept."""


def save_model_atomic(model: keras.Model, path: str) -> None:
    """Saves ``model`` to ``path`` (a .keras file) via a temporary name and a rename."""
    with atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary)


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def cpu_has_bfloat16() -> bool:
    """True on a CPU with bfloat16 arithmetic (x86 AVX512-BF16 or AMX-BF16; ARM BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = set(handle.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(requested: str) -> str:
    """The policy ``requested`` names; ``auto`` becomes ``mixed_bfloat16`` where the hardware has bfloat16
    arithmetic (GPUs of compute capability 8.0+, CPUs with AVX512-BF16 or AMX when no GPU is visible)
    and ``float32`` elsewhere.

    Raises:
        ValueError: an unknown name.
    """
    import tensorflow as tf

    if requested in PRECISIONS:
        return requested
    if requested != "auto":
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {requested!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return "mixed_bfloat16" if capability and tuple(capability) >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"


@contextlib.contextmanager
def precision_scope(precision: str):
    """Sets Keras' global dtype policy to ``precision`` for the block and restores the previous one after,
    so one stage's policy never leaks into the next stage of the same process."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def set_compute_precision(model: keras.Model, precision: str = "float32") -> keras.Model:
    """Makes every layer of ``model`` compute in ``precision`` (its variables are float32 under every
    policy, so this changes no weight); returns the model."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        layer.dtype_policy = precision
    return model


def _stored_precision(path: str) -> str:
    """The dtype policy a ``.keras`` file's model was saved under (float32 when it names none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            dtype = json.loads(archive.read("config.json")).get("config", {}).get("dtype")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return "float32"  # not a readable archive: let Keras report what is wrong with it
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    return name if name in PRECISIONS else "float32"


def load_model(path: str, precision: str | None = "float32") -> keras.Model:
    """Loads an oasis_gen ``.keras`` file with ``safe_mode=True`` (no code is run from the file).

    A model trained under a mixed policy stores it; ``precision`` (default float32) makes the loaded
    model compute in that precision instead, so codes, evaluation and sampling do not depend on how
    the model was trained. ``None`` keeps the stored policies (to resume training).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a Keras model of a registered oasis_gen class.
    """
    import oasis_gen.dcgan  # noqa: F401  (importing registers the classes)
    import oasis_gen.prior  # noqa: F401
    import oasis_gen.vqvae  # noqa: F401

    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:
        # rebuilt under the policy it was trained with, so every sub-layer is made as it was saved
        with precision_scope(_stored_precision(path)):
            model = keras.models.load_model(path, safe_mode=True, compile=True)
    except Exception as error:  # Keras raises many types for a foreign or broken file
        raise ValueError(f"{path} is not a loadable oasis_gen model: {error}") from error
    if not type(model).__module__.startswith("oasis_gen."):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an oasis_gen model")
    return model if precision is None else set_compute_precision(model, precision)


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


class TrainClock:
    """Training seconds of a stage over all its sessions: those a checkpoint recorded plus this session's."""

    def __init__(self, before: float = 0.0):
        self.before = float(before)
        self.start = time.monotonic()

    def total(self) -> float:
        return self.before + time.monotonic() - self.start


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


def image_grid(rows: list[np.ndarray], path: str, titles: list[str] | None = None, label: str = "",
               captions: list[list[str]] | None = None) -> None:
    """Saves rows of [N, H, W, 1] images in [0, 1] as one grayscale grid PNG (``label`` as the title,
    ``titles`` one per row, ``captions`` one per image)."""
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
                if captions:
                    axis.set_title(captions[r][c], fontsize=7)
        if titles:
            axes[r][0].set_title(titles[r], fontsize=8, loc="left")
    if label:
        figure.suptitle(label, fontsize=9)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)


def read_checkpoint_state(folder: str) -> dict | None:
    """The ``checkpoint.json`` of a stage folder (with ``path``: the state file it names), or None
    when there is no complete checkpoint."""
    import json

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


_PROCESS_STRATEGY = None  # the multi-worker strategy, created once at process start


class WorkerFinished(Exception):
    """A non-chief worker has done its share of a multi-worker training stage; the chief writes the results."""


def start_multiworker():
    """Creates the ``MultiWorkerMirroredStrategy`` that ``TF_CONFIG`` describes, once per process.

    TensorFlow configures collective ops only before its first operation, so ``train.py`` calls
    this at start-up, before any stage touches TensorFlow.

    Raises:
        ValueError: ``TF_CONFIG`` is not set.
        RuntimeError: TensorFlow already ran an operation in this process.
    """
    global _PROCESS_STRATEGY
    if _PROCESS_STRATEGY is None:
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable (the cluster and "
                             "this worker's task) on every worker")
        import tensorflow as tf

        _PROCESS_STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
    return _PROCESS_STRATEGY


def is_chief(strategy=None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy (the chief is task
    ``chief``, or worker 0 of a cluster without one)."""
    resolver = getattr(strategy or _PROCESS_STRATEGY, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def distribution_strategy(train_config):
    """The ``tf.distribute`` strategy a ``TrainConfig`` asks for, with its precision policy applied.

    ``default`` is the single-device strategy; ``mirrored`` replicates over the local GPUs (or
    logical CPUs); ``multiworker`` spans hosts described by ``TF_CONFIG``. The batch size is global:
    each of N replicas sees ``batch_size / N`` images per step. The learning rate is not rescaled
    automatically; when multiplying the global batch by N, the usual starting point is the
    learning rate times N (Goyal et al. 2017).
    """
    import tensorflow as tf

    if train_config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if train_config.strategy == "multiworker":
        if _PROCESS_STRATEGY is None:
            raise RuntimeError("the multi-worker strategy must exist before TensorFlow's first operation: train "
                               "through `python train.py STAGE --strategy multiworker` (or call "
                               "oasis_gen.training.start_multiworker() first thing)")
        return _PROCESS_STRATEGY
    if train_config.strategy != "default":
        raise ValueError(f"strategy must be default, mirrored or multiworker, got {train_config.strategy!r}")
    return tf.distribute.get_strategy()


def learning_rate(train_config, total_steps: int):
    """The stage's learning rate: a float, or linear warm-up to it and cosine decay to zero over ``total_steps``."""
    if train_config.lr_schedule == "constant":
        return train_config.learning_rate
    if train_config.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be cosine or constant, got {train_config.lr_schedule!r}")
    warmup = min(train_config.warmup_steps, total_steps // 2)
    return keras.optimizers.schedules.CosineDecay(0.0, max(1, total_steps - warmup), warmup_target=train_config.learning_rate,
                                                  warmup_steps=warmup)


def make_optimizer(train_config, optimizer=None, total_steps: int = 0):
    """``optimizer`` (default: Adam with ``learning_rate(train_config, total_steps)`` and global-norm
    clipping at ``clip_norm``), loss-scaled under ``mixed_float16`` (float16 gradients underflow;
    bfloat16 has float32's range and needs no scaling)."""
    if optimizer is None:
        optimizer = keras.optimizers.Adam(learning_rate(train_config, max(total_steps, 1)),
                                          global_clipnorm=train_config.clip_norm or None)
    if resolve_precision(train_config.precision) == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def replica_logs(logs: dict) -> dict:
    """A train/test step's logs, shaped for the strategy that will reduce them.

    Keras 3 reduces the logs of a multi-worker step with ``strategy.reduce("MEAN", value, axis=0)``,
    which fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"); there
    each value becomes a 1-vector, whose mean over replicas is the scalar again. Elsewhere the logs
    pass unchanged."""
    import tensorflow as tf

    extended = tf.distribute.get_strategy().extended
    if getattr(extended, "_in_multi_worker_mode", lambda: False)():  # the test Keras itself makes
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


def scale_loss_for_replicas(optimizer, loss):
    """The loss to differentiate: divided by the replica count (gradients are summed across replicas,
    so the global step equals one device's on the whole batch) and loss-scaled under mixed precision."""
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss / replicas
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss


def fit_stage(name: str, folder: str, build, train_stream, validation_dataset, train_config, monitor: str | None,
              mode: str, steps_per_epoch: int, force: bool = False, extra_callbacks=(), panels=(),
              verbose: int = 2, optimizer=None) -> dict:
    """Trains a stage's model with resume, checkpoints, logs, plots, a time limit and a NaN stop.

    Resumes from the checkpoint ``folder/checkpoint.json`` names unless ``force`` (then ``build()`` makes a fresh model
    inside the strategy scope, compiled with the configured optimizer). On resume the configured
    learning rate replaces the checkpoint's. A resume in the middle of an epoch first finishes that
    epoch (its logged averages then cover only the steps after the resume), then continues;
    because ``train_stream(step)`` yields the same batches an uninterrupted run sees from global
    step ``step`` on, the final weights match an uninterrupted run's. ``model.keras`` ends up
    holding the best model by ``monitor``. The whole stage runs under ``train_config.precision``
    (``precision_scope``); the global policy is restored afterwards.

    Args:
        train_stream: ``step -> tf.data.Dataset``, the endless training batches from global step ``step``.
        steps_per_epoch: training steps per epoch.
        optimizer: ``() -> optimizer`` for a fresh model (default: ``make_optimizer(train_config)``).

    Returns:
        ``epochs_trained`` (all sessions), ``train_seconds_this_session`` and ``stopped_by_time_limit``.

    Raises:
        NonFiniteLoss: the loss became NaN/Inf; the last good checkpoint is left in place.
    """
    with precision_scope(train_config.precision):
        return _fit(name, folder, build, train_stream, validation_dataset, train_config, monitor, mode,
                    steps_per_epoch, force, extra_callbacks, panels, verbose, optimizer)


def _fit(name, folder, build, train_stream, validation_dataset, train_config, monitor, mode, steps_per_epoch,
         force, extra_callbacks, panels, verbose, optimizer) -> dict:
    if train_config.op_determinism:
        import tensorflow as tf

        # Process-wide and permanent: GPU kernels (convolution backprop, segment sums, scatter) take
        # their deterministic, slower paths. CPU kernels here are deterministic already.
        tf.config.experimental.enable_op_determinism()
        print(f"{name}: deterministic kernels on (tf.config.experimental.enable_op_determinism)")
    state = None if force else read_checkpoint_state(folder)  # every worker resumes from the chief's checkpoint
    strategy = distribution_strategy(train_config)
    chief = is_chief(strategy)
    if train_config.strategy == "multiworker" and train_config.time_limit_minutes:
        raise ValueError(f"{name}: --time_limit_minutes cannot be used with --strategy multiworker (workers whose "
                         "clocks disagree would stop at different epochs and wait for each other); set --epochs")
    if not chief:
        # A worker trains in step with the chief but writes only to a scratch folder of its own.
        folder = tempfile.mkdtemp(prefix=f"oasis_gen_worker{strategy.cluster_resolver.task_id}_")
        extra_callbacks = [c for c in extra_callbacks if not getattr(c, "writes_files", False)]
    with strategy.scope():
        total_steps = train_config.epochs * steps_per_epoch
        if state is not None:
            model = load_model(state["path"], precision=None)
            # the configured rate or schedule replaces the checkpoint's, so a new learning rate is honoured
            inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
            try:
                inner.learning_rate = (learning_rate(train_config, total_steps) if optimizer is None
                                       else train_config.learning_rate)
            except TypeError as error:  # Keras cannot turn a scheduled optimizer into a constant-rate one
                raise ValueError(f"{name}: the checkpoint was trained with a learning-rate schedule; a constant "
                                 "rate needs a fresh start (--force)") from error
        else:
            model = build()
            model.compile(optimizer=make_optimizer(train_config, optimizer() if optimizer else None, total_steps),
                          jit_compile=train_config.jit_compile)
            # Built on every trainable variable, as Keras builds it when loading a checkpoint (a model
            # that updates subsets with it, like the DCGAN, would otherwise save slots that do not load).
            model.optimizer.build(model.trainable_variables)
    if state is None:
        for stale in ("history.csv", "model.keras", "checkpoint.json"):
            if os.path.exists(os.path.join(folder, stale)):
                os.remove(os.path.join(folder, stale))
    remove_stale_checkpoints(folder, keep=os.path.basename(state["path"]) if state else None)
    epoch = state["epoch"] if state else 0
    step = state.get("step", epoch * steps_per_epoch) if state else 0
    done_in_epoch = step - epoch * steps_per_epoch
    if state is not None:
        print(f"resuming {name} from {state['path']} at epoch {epoch + 1}, step {step}")
    history_path = os.path.join(folder, "history.csv")
    non_finite = StopOnNonFinite(step)
    clock = TrainClock(state.get("train_seconds", 0.0) if state else 0.0)
    if state is not None and train_config.time_limit_minutes:
        print(f"{name}: {clock.before / 60:.1f} of its {train_config.time_limit_minutes:g} minutes were trained "
              "before this resume")
    time_limit = TimeLimit(train_config.time_limit_minutes, clock)
    if train_config.time_limit_minutes and clock.before >= 60.0 * train_config.time_limit_minutes:
        time_limit.reached = True  # the budget was spent before the interruption: nothing more to train
    checkpoint = StageCheckpoint(folder, monitor, mode, best=state["best"] if state else None,
                                 steps_per_epoch=steps_per_epoch, every_steps=train_config.checkpoint_steps,
                                 epoch=epoch, step=step, clock=clock)
    phases = []  # (first epoch, end epoch, steps per epoch): a partial epoch first when resuming mid-epoch
    if 0 < done_in_epoch < steps_per_epoch:
        phases.append((epoch, epoch + 1, steps_per_epoch - done_in_epoch))
        epoch += 1
    phases.append((epoch, train_config.epochs, steps_per_epoch))
    start = time.perf_counter()
    for index, (first, end, steps) in enumerate(phases):
        if first >= end or non_finite.failed_at is not None or time_limit.reached:
            continue
        callbacks = [non_finite, checkpoint,
                     keras.callbacks.CSVLogger(history_path, append=state is not None or index > 0),
                     keras.callbacks.TensorBoard(os.path.join(folder, "tensorboard"), profile_batch=0),
                     *extra_callbacks,
                     CurvePlot(history_path, os.path.join(folder, "plots", "curves.png"), list(panels)), time_limit]
        model.fit(train_stream(checkpoint.step), validation_data=validation_dataset, epochs=end, initial_epoch=first,
                  steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
    if non_finite.failed_at is not None:
        last = read_checkpoint_state(folder)
        kept = (f"the last good checkpoint {last['path']} (step {last['step']}) is kept"
                if last else "no checkpoint had been written, so there is none")
        raise NonFiniteLoss(f"{name}: the loss became NaN/Inf at training step {non_finite.failed_at}; {kept}. "
                            f"Try a lower --learning_rate.")
    if not chief:
        shutil.rmtree(folder, ignore_errors=True)
        raise WorkerFinished(f"{name}: this worker's share is done; the chief writes the model and results")
    return {"epochs_trained": len(read_history(history_path).get("epoch", [])),
            "train_seconds_this_session": round(time.perf_counter() - start, 1),
            "train_seconds_total": round(clock.total(), 1),
            "stopped_by_time_limit": time_limit.reached}
