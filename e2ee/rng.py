"""The one place that reads the operating system's randomness by default.

Everything that needs randomness takes a :data:`Random` callable, so tests can inject a
deterministic one (vectors, crash tests).
"""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["Random", "system_random"]

#: A source of randomness: ``rng(n)`` returns ``n`` random bytes.
Random = Callable[[int], bytes]


def system_random(n: int) -> bytes:
    """Cryptographically secure random bytes from the operating system."""
    return os.urandom(n)
