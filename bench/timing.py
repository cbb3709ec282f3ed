"""Small timing helpers shared by the benchmark scenarios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Sample:
    """Per-operation times in microseconds, one value per round."""

    rounds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def low(self) -> float:
        return min(self.rounds)

    @property
    def high(self) -> float:
        return max(self.rounds)


def timed(fn: Callable[[], object], ops: int) -> float:
    """Seconds for ``ops`` calls of ``fn``."""
    t0 = time.perf_counter()
    for _ in range(ops):
        fn()
    return time.perf_counter() - t0
