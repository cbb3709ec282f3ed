"""Stopping a long-running command by signal: SIGINT (Ctrl-C) and SIGTERM (``kill``, systemd,
a supervisor) end ``recv --follow`` and ``chat`` cleanly instead of interrupting them wherever
they are, so the session is closed, the archive position kept and the keystore closed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["StopSignals", "stop_on_sigterm"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While entered (in a running event loop), SIGINT and SIGTERM set :attr:`stopped` and call
    ``on_stop`` instead of their usual action; the previous handlers come back at exit."""

    def __init__(self, on_stop: Callable[[], None] | None = None) -> None:
        self.stopped = asyncio.Event()
        #: the signal that stopped us, if any
        self.signal: signal.Signals | None = None
        self._on_stop = on_stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _stop(self, sig: signal.Signals) -> None:
        self.signal = sig
        self.stopped.set()
        if self._on_stop is not None:
            self._on_stop()

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            self._loop.add_signal_handler(sig, self._stop, sig)
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        assert self._loop is not None
        for sig, previous in self._previous.items():
            self._loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)
        self._previous.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait until stopped, at most ``timeout`` seconds: whether stopped."""
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout)
        except TimeoutError:
            return False
        return True


def stop_on_sigterm() -> None:
    """Make SIGTERM interrupt like SIGINT (:exc:`KeyboardInterrupt`) outside :class:`StopSignals`:
    a SIGTERM during the login of a long-running command ends it through the CLI's usual path
    (keystore closed, ``e2ee: interrupted``, status 1) instead of killing the process."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
