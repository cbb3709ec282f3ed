"""The one place that reads the operating system's randomness and clock by default.

Everything that needs randomness takes a :data:`Random` callable, so tests can inject a
deterministic one (vectors, crash tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "Random", "system_clock", "system_random"]

#: A clock: returns the current time, timezone-aware.
Clock = Callable[[], datetime]

#: A source of randomness: ``rng(n)`` returns ``n`` random bytes.
Random = Callable[[int], bytes]


def system_random(n: int) -> bytes:
    """Cryptographically secure random bytes from the operating system."""
    return os.urandom(n)


def system_clock() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)
