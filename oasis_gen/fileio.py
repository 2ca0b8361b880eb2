"""Atomic file writes (every output is written under a temporary name, then renamed) and small readers.

A crash therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``path``; on success renames it onto ``path``.

    Args:
        path: final destination; its folder is created when missing.
        suffix: ending of the temporary name (some writers, such as Keras, insist on one).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}",
                                         dir=folder)
    os.close(handle)
    try:
        yield temporary
        # mkstemp makes the file private (0600); give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_json(path: str | os.PathLike, values: Any) -> None:
    """Writes ``values`` as indented, key-sorted JSON atomically."""
    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


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
