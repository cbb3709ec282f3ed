"""Transfer progress on a terminal (stderr): a bar redrawn in place on a terminal, a line every
10 % otherwise (logs and pipes stay short)."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["ProgressReport"]

_WIDTH = 30


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


class ProgressReport:
    """A ``progress(done, total)`` callback that writes to ``stream`` (default stderr)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._last = -1
        self._open = False  # a bar line is drawn without its newline

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        step = percent if self.tty else percent // 10 * 10
        if step == self._last:
            return
        self._last = step
        if self.tty:
            filled = _WIDTH * percent // 100
            bar = "#" * filled + " " * (_WIDTH - filled)
            self.stream.write(f"\r{self.label} [{bar}] {percent:3d}% {_mb(done)} of {_mb(total)}")
            self._open = percent < 100
            if percent == 100:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.label}: {step}% ({_mb(done)} of {_mb(total)})\n")
        self.stream.flush()

    def close(self) -> None:
        """End a bar left unfinished (a transfer that failed half-way)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
