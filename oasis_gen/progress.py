"""Progress that suits where it goes: a tqdm bar on a terminal or in a notebook, and in a redirected
log a short line now and then (at most one per ``LOG_INTERVAL`` seconds) and one when the work ends.

tqdm redraws its bar with carriage returns; written to a file, every redraw lands on one line (a user
found lines of 1,700 characters with the next message glued on). ``progress_bar`` decides once, from the
stream, which of the two to give; both take the same calls (iteration, ``update``, ``set_postfix``,
``close``, use as a context manager).
"""

from __future__ import annotations

import sys
import time
from typing import Iterable

from tqdm import tqdm  # the text bar: tqdm.auto would want ipywidgets in a notebook

LOG_INTERVAL = 30.0  # seconds between two lines of a redirected log


def interactive(stream=None) -> bool:
    """True on a terminal or in a Jupyter kernel, where a redrawn bar is readable."""
    if "ipykernel" in sys.modules:
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """The log form: ``desc: 120/400 steps (30%, 41 s)`` every ``interval`` seconds, and a last line
    ``desc: 400 steps in 2.1 min`` when closed."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, interval: float = LOG_INTERVAL, stream=None,
                 summary: bool = True, **_):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.perf_counter()
        self.closed = False
        self.summary = summary

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self, text: str) -> None:
        if not self.disable:
            print(text, file=self.stream, flush=True)

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs) -> None:
        values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            share = f"{self.n / self.total:.0%}, " if self.total else ""
            of = f"/{self.total}" if self.total else ""
            extra = f"; {self.postfix}" if self.postfix else ""
            self._write(f"{self.desc}: {self.n}{of} {self.unit} ({share}{format_seconds(now - self.start)}){extra}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.summary:
            return
        extra = f"; {self.postfix}" if self.postfix else ""
        self._write(f"{self.desc}: {self.n} {self.unit} in {format_seconds(time.perf_counter() - self.start)}{extra}")


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, leave: bool = False, stream=None, summary: bool = True):
    """A tqdm bar where one is readable (``interactive``), else a ``LogProgress``; same calls for both.
    ``summary=False`` leaves out the log form's closing line (when the caller prints its own)."""
    if interactive(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, stream=stream, summary=summary)


def format_seconds(seconds: float) -> str:
    """``41 s``, ``2.1 min`` or ``1.5 h``: how long, in the unit a reader takes in at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
