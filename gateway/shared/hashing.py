"""
A hash of a string that every process agrees on, held exactly by a double.

The shared-memory tables (`ratelimit.py`, `ejections.py`) are arrays of doubles that several
processes read. Python's own `hash()` of a string differs from process to process, so keys are
hashed with BLAKE2b instead and cut to 52 bits, which a double holds exactly.
"""

from __future__ import annotations

import hashlib

__all__ = ["double_hash"]


def double_hash(text: str) -> float:
    """A stable, non-zero hash of `text` as a float (0.0 stays free to mean "nothing")."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return float((int.from_bytes(digest, "little") >> 12) or 1)
