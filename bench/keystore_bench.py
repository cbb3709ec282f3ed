"""The engine on the durable keystore beside the in-memory store (issue 4 and 7).

* ``encrypt[keystore]`` / ``decrypt[keystore]``: the steady-state scenarios of
  :mod:`bench.engine_bench` with both devices on keystores (WAL, commits not fsync'ed: durable
  against a crash of the process); ``...[keystore+sync]`` with every commit fsync'ed.  Each op is
  one engine operation, committed before it returns.  The floor is the same operation on the
  in-memory store, so ``ours/floor`` is the price of durability.
* ``keystore_open``: opening a keystore with the default Argon2id parameters (64 MiB, 3 passes);
  floor: the Argon2id derivation alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import nacl.pwhash

from e2ee.storage import Storage
from keystore import KdfParams, Keystore

from .engine_bench import ALICE, BOB, MSG, _pair
from tests.engine_support import O2, Net

__all__ = ["SCENARIOS", "cleanup", "floor_open"]

Op = Callable[[], object]
PW = "benchmark passphrase"
_DIRS: list[str] = []


def _stores(sync: bool) -> Callable[[str], Storage]:
    base = Path(tempfile.mkdtemp(prefix="e2ee-bench-"))
    _DIRS.append(str(base))

    def make(name: str) -> Storage:
        return Keystore.create(base / f"{name}.db", PW, kdf=KdfParams.floor(), sync=sync)

    return make


def _encrypt(sync: bool) -> Callable[[int], Op]:
    def setup(count: int) -> Op:
        alice, _ = _pair(Net(), storage=_stores(sync))
        return lambda: alice.encrypt([BOB], MSG)

    return setup


def _decrypt(sync: bool) -> Callable[[int], Op]:
    def setup(count: int) -> Op:
        alice, (bob,) = _pair(Net(), storage=_stores(sync))
        supply = iter([alice.encrypt([BOB], MSG).elements[O2] for _ in range(count)])
        return lambda: bob.decrypt(next(supply), ALICE, to=BOB)

    return setup


def _keystore_open(count: int) -> Op:
    base = Path(tempfile.mkdtemp(prefix="e2ee-bench-"))
    _DIRS.append(str(base))
    path = base / "open.db"
    Keystore.create(path, PW).close()  # default parameters

    def op() -> object:
        Keystore.open(path, PW).close()
        return None

    return op


def floor_open() -> Op:
    params = KdfParams()
    salt = os.urandom(16)
    return lambda: nacl.pwhash.argon2id.kdf(32, PW.encode(), salt, opslimit=params.passes, memlimit=params.memory_kib * 1024)


SCENARIOS: dict[str, Callable[[int], Op]] = {
    "encrypt[keystore]": _encrypt(False),
    "decrypt[keystore]": _decrypt(False),
    "encrypt[keystore+sync]": _encrypt(True),
    "decrypt[keystore+sync]": _decrypt(True),
    "keystore_open": _keystore_open,
}


def cleanup() -> None:
    for d in _DIRS:
        shutil.rmtree(d, ignore_errors=True)
    _DIRS.clear()

