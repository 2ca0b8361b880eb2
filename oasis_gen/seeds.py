"""Independent seed streams: one user seed, a separate stream for every purpose.

Deriving a purpose's seed by hashing keeps streams apart: with ``seed + 1`` for a second purpose,
the first purpose at seed ``s + 1`` would draw exactly what the second draws at seed ``s``.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, purpose: str) -> int:
    """A 31-bit seed for ``purpose`` (e.g. ``"sampling/top"``) from the user's ``seed``."""
    digest = hashlib.sha256(f"{int(seed)}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
