"""The engine on the durable keystore (issues 4 and 7).

* ``<scenario>[keystore]``: every scenario of :mod:`bench.engine_bench` with the measured device
  on a keystore (WAL, commits not fsync'ed: they survive a crash of the process, not a power
  cut).  Each op is one engine operation, committed before it returns (before a ciphertext is
  handed out).
* ``encrypt[keystore+sync]`` / ``decrypt[keystore+sync]``: every commit fsync'ed as well
  (``Keystore(sync=True)``: SQLite ``synchronous=FULL``).
* ``keystore_open``: opening a keystore with the default Argon2id parameters (64 MiB, 3 passes);
  floor: the Argon2id derivation alone.

Keystores are created with the cheapest allowed Argon2id parameters (the KDF runs only when a
store is opened, never per operation) in a temporary directory that :func:`cleanup` removes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import nacl.pwhash

from e2ee.keystore import KdfParams, Keystore
from e2ee.storage import Storage

__all__ = ["durable", "cleanup", "keystore_open", "floor_open", "scratch_dir", "PW"]

Op = Callable[[], object]
PW = "benchmark passphrase"
_DIRS: list[str] = []


def scratch_dir() -> Path:
    """A temporary directory removed by :func:`cleanup`."""
    base = tempfile.mkdtemp(prefix="e2ee-bench-")
    _DIRS.append(base)
    return Path(base)


def durable(sync: bool = False) -> Callable[[str], Storage]:
    """A storage factory for :mod:`bench.engine_bench`: a fresh keystore per device."""
    base = scratch_dir()

    def make(name: str) -> Storage:
        return Keystore.create(base / f"{name}.db", PW, kdf=KdfParams.floor(), sync=sync)

    return make


def keystore_open(count: int) -> Op:
    path = scratch_dir() / "open.db"
    Keystore.create(path, PW).close()  # default parameters

    def op() -> object:
        Keystore.open(path, PW).close()
        return None

    return op


def floor_open() -> Op:
    params = KdfParams()
    salt = os.urandom(16)
    return lambda: nacl.pwhash.argon2id.kdf(
        32, PW.encode(), salt, opslimit=params.passes, memlimit=params.memory_kib * 1024
    )


def cleanup() -> None:
    for d in _DIRS:
        shutil.rmtree(d, ignore_errors=True)
    _DIRS.clear()
