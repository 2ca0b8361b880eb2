"""Runs ``python train.py ARGS`` and SIGKILLs itself at a chosen checkpoint write (fault injection).

``KILL_AT_CHECKPOINT=N`` kills the process right after the N-th checkpoint state file is written
(before ``checkpoint.json`` points at it);
with ``KILL_MID_WRITE=1`` it dies while writing the N-th, before the rename (the write is atomic,
so the previous checkpoint must survive).
"""

import os
import signal
import sys

from oasis_gen.cli import train
from oasis_gen.fileio import atomic_path
from oasis_gen.models import loading

limit = int(os.environ["KILL_AT_CHECKPOINT"])
mid_write = os.environ.get("KILL_MID_WRITE") == "1"
written = 0
original = loading.save_model_atomic


def save_then_maybe_die(model, path):
    global written
    if not os.path.basename(path).startswith("checkpoint"):
        return original(model, path)
    written += 1
    if written == limit and mid_write:
        with atomic_path(path, suffix=".keras") as temporary:
            model.save(temporary)
            os.kill(os.getpid(), signal.SIGKILL)
    original(model, path)
    if written == limit:
        os.kill(os.getpid(), signal.SIGKILL)


loading.save_model_atomic = save_then_maybe_die
sys.exit(train.main(sys.argv[1:]))
