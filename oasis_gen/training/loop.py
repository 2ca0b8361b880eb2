"""The fit loop every training stage shares: distribution strategies, the optimizer and its learning-rate
schedule, and ``fit_stage`` (resume, checkpoints, logs, plots, a time limit and a NaN stop).

A stage folder holds ``model.keras`` (the best model so far), ``checkpoint_step<N>.keras`` and
``checkpoint.json`` (the latest full state: weights, optimizer, RNG state; the JSON names the file and
records the epoch and step, and is written last, so it always points at a complete file), ``history.csv``,
``tensorboard/`` and ``plots/``. Every file is written atomically, so a crash leaves the last
complete checkpoint, and re-running the same command resumes from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from oasis_gen.fileio import read_history
from oasis_gen.models.loading import load_model
from oasis_gen.models.precision import precision_scope, resolve_precision
from oasis_gen.training.callbacks import CurvePlot, EpochLine, StopOnNonFinite, TimeLimit
from oasis_gen.training.checkpoints import StageCheckpoint, TrainClock, read_checkpoint_state, remove_stale_checkpoints


class NonFiniteLoss(RuntimeError):
    """Training produced NaN or Inf; the last good checkpoint is kept."""


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


def fit_stage(name: str, folder: str, build, train_stream, validation_dataset, train_config, monitor: str | None,
              mode: str, steps_per_epoch: int, force: bool = False, extra_callbacks=(), panels=(),
              shown=("loss",), optimizer=None) -> dict:
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
        shown: the metrics of the one-line epoch summary (``EpochLine``); all of them go to ``history.csv``.

    Returns:
        ``epochs_trained`` (all sessions), ``train_seconds_this_session`` and ``stopped_by_time_limit``.

    Raises:
        NonFiniteLoss: the loss became NaN/Inf; the last good checkpoint is left in place.
    """
    with precision_scope(train_config.precision):
        return _fit(name, folder, build, train_stream, validation_dataset, train_config, monitor, mode,
                    steps_per_epoch, force, extra_callbacks, panels, shown, optimizer)


def _fit(name, folder, build, train_stream, validation_dataset, train_config, monitor, mode, steps_per_epoch,
         force, extra_callbacks, panels, shown, optimizer) -> dict:
    if train_config.op_determinism:
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
                     CurvePlot(history_path, os.path.join(folder, "plots", "curves.png"), list(panels)), time_limit,
                     EpochLine(name.removeprefix("the "), train_config.epochs, steps, shown)]
        model.fit(train_stream(checkpoint.step), validation_data=validation_dataset, epochs=end, initial_epoch=first,
                  steps_per_epoch=steps, callbacks=callbacks, verbose=0, shuffle=False)
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
