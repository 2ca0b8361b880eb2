"""The command-line tools' console: TensorFlow's C++ start-up logging kept off it.

TensorFlow 2.21 writes its start-up notices (oneDNN, CUDA probing, an absl warning) to the
process's stderr before its own log level applies, and Grappler reports harmless rewrite failures
at ERROR level; a user saw seven such lines before the first of ours. ``quiet_tensorflow``
imports TensorFlow with stderr silenced at the file-descriptor level and sets
``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it; Python errors still surface (with their
messages), and ``--verbose`` or the user's own ``TF_CPP_MIN_LOG_LEVEL`` brings the logging back.
"""

from __future__ import annotations

import contextlib
import os
import sys

LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def stderr_silenced():
    """Sends everything written to file descriptor 2 (C++ code included) to the null device."""
    descriptor = 2  # C++ code writes to the process's descriptor 2, whatever Python's sys.stderr is (in a
    # Jupyter kernel sys.stderr is a stream of its own and descriptor 2 a pipe the kernel shows in the notebook)
    try:
        os.fstat(descriptor)
    except OSError:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(descriptor)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, descriptor)
        os.close(saved)
        os.close(null)


def quiet_tensorflow(verbose: bool = False) -> None:
    """Imports TensorFlow (and probes its devices) without its C++ logging, unless ``verbose`` or the
    user set ``TF_CPP_MIN_LOG_LEVEL``; does nothing once TensorFlow is imported. Notebooks call it in
    their first cell too (a kernel shows whatever C++ code writes to the process's stderr)."""
    if "tensorflow" in sys.modules:
        return
    from oasis_gen import USER_TF_LOG_LEVEL

    if verbose or USER_TF_LOG_LEVEL is not None:
        os.environ[LOG_LEVEL] = USER_TF_LOG_LEVEL if USER_TF_LOG_LEVEL is not None else "0"
        return
    os.environ[LOG_LEVEL] = "3"
    with stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing logs at ERROR on a machine without a GPU
    tf.get_logger().setLevel("ERROR")  # e.g. retracing notices when a sampler is rebuilt per temperature


def plain(text: str) -> str:
    """Docstring text for --help: reStructuredText literals shown plain."""
    return text.replace("``", "")


def program_name(default: str) -> str:
    """The name the user typed (``oasis-train``), or ``default`` for ``python train.py`` and ``python -m``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("oasis-") else default
