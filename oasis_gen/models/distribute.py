"""Loss and log shaping for ``tf.distribute`` replicas, used by every model's train step."""

from __future__ import annotations

import tensorflow as tf


def replica_logs(logs: dict) -> dict:
    """A train/test step's logs, shaped for the strategy that will reduce them.

    Keras 3 reduces the logs of a multi-worker step with ``strategy.reduce("MEAN", value, axis=0)``,
    which fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"); there
    each value becomes a 1-vector, whose mean over replicas is the scalar again. Elsewhere the logs
    pass unchanged."""

    extended = tf.distribute.get_strategy().extended
    if getattr(extended, "_in_multi_worker_mode", lambda: False)():  # the test Keras itself makes
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


def scale_loss_for_replicas(optimizer, loss):
    """The loss to differentiate: divided by the replica count (gradients are summed across replicas,
    so the global step equals one device's on the whole batch) and loss-scaled under mixed precision."""

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss / replicas
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
