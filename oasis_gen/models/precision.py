"""Keras dtype policies: the ``--precision`` names, ``auto`` resolved for this hardware, a
scope that restores the previous policy, and switching a built model's compute precision."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

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
