"""Syncing the WAL ahead of SQLite's checkpoint, on a thread of its own.

With ``synchronous=NORMAL`` a commit is not synced; the keystore's checkpoint (every
``_WAL_PAGES`` pages, after the COMMIT of the operation that crosses the threshold; SQLite's own
automatic checkpoint is only a backstop at twice that) first syncs the whole WAL, about 1 MiB: ~1.3 ms of the ~1.8 ms a checkpoint takes, paid in the latency of
whichever message happened to cross it.  :class:`WalSyncer` syncs the WAL file on a thread
shortly before that (when seven eighths of the interval are written), so that the checkpoint
finds little left to write.  An extra ``fdatasync`` never changes what SQLite guarantees: the
checkpoint still syncs the WAL itself, in the same order.  The thread only holds a read-only
descriptor of the WAL file (sealed pages, no key) and releases the GIL while it syncs.  With
``sync=True`` every commit is synced already and no thread is started.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["WalSyncer"]


class WalSyncer:
    """A daemon thread that runs ``fdatasync`` on the WAL file on :meth:`request`."""

    def __init__(self, wal: Path) -> None:
        self._wal = wal
        self._wake = threading.Event()
        self._stopping = False
        #: WAL syncs done so far (for tests; the syncs are an optimisation, failures are ignored).
        self.syncs = 0
        self._thread = threading.Thread(target=self._run, name="keystore-wal-sync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Let a running sync finish, then end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        fd = -1
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if fd < 0:
                        fd = os.open(self._wal, os.O_RDONLY)
                    os.fdatasync(fd)
                    self.syncs += 1
                except OSError:
                    pass  # only an optimisation: SQLite's checkpoint syncs the WAL anyway
        finally:
            if fd >= 0:
                os.close(fd)
