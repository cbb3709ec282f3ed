"""Memory and laziness with many sessions stored (10,000 in a full run).

:func:`build` makes a keystore whose device has a session with each of ``sessions`` contact
devices: contact 0 is a real device that set its session up with a key exchange (and will send
one more message); the others are accounts whose device list and bundle we received and to
which we encrypted once (active X3DH), as a client does for a new contact.  (They all show the
same device and bundle, which changes nothing for us: each is stored under its own JID.)

A fresh interpreter (:func:`probe`, run as ``python -m bench.memory_bench``) then opens the
keystore, builds the engine and decrypts contact 0's message, and reports the time, the
resident memory added (``VmRSS``) and how many records it read from the file.  The same probe on
a keystore with one session is the comparison: the times and the records read must not grow
with the number of sessions stored.  Then (``--touch-all``) it encrypts once to every contact,
which loads every session, to show the resident memory per session in use.

Rows: ``open+decrypt[N sessions]`` (ours: N sessions; floor column: the same with 1 session),
with extras: records read (both), keystore bytes per session, resident memory added by opening
and decrypting, resident memory per session in use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2ee.engine import Engine
from e2ee.keystore import KdfParams, Keystore
from e2ee.results import Decrypted
from e2ee.rng import system_random

from .keystore_bench import PW

__all__ = ["build", "Built", "probe", "run_probe", "record_reads"]

ME = "me@example.org"
O2 = "urn:xmpp:omemo:2"
LEGACY = "eu.siacs.conversations.axolotl"


def contact(i: int) -> str:
    return f"contact{i}@example.net"


@dataclass
class Built:
    path: Path
    sessions: int
    message: str  #: contact 0's next message to us, serialised
    sender: str
    seconds: float  #: time to build (not a measurement)


def build(path: Path, sessions: int, kdf: KdfParams | None = None, batch: int = 500) -> Built:
    """A closed keystore at ``path`` with ``sessions`` sessions (see the module docstring)."""
    from tests.engine_support import Net

    t0 = time.perf_counter()
    net = Net()
    ks = Keystore.create(path, PW, kdf=KdfParams.floor() if kdf is None else kdf)
    me = net.device(ME, "me", rng=system_random, storage=ks)
    c0 = net.device(contact(0), "c0", rng=system_random)
    first = net.encrypt(c0, [ME], "hello")
    out = me.decrypt(first.elements[O2], c0.jid, to=ME)
    net.run(me, out.effects)
    for _sender, e in net.take_outbox():
        c0.decrypt(e.encrypted, ME, to=c0.jid)
    if sessions > 1:
        template = net.device("template@example.net", "t", rng=system_random)
        device_list = net.pep.device_list(template.jid, O2)
        bundle = net.pep.bundle(template.jid, O2, template.device_id)
        assert device_list is not None and bundle is not None
        for start in range(1, sessions, batch):
            with me.batch():  # nothing leaves the process: the ciphertexts are dropped
                for i in range(start, min(sessions, start + batch)):
                    jid = contact(i)
                    me.on_device_list(jid, O2, device_list)
                    me.on_device_list(jid, LEGACY, None)
                    me.on_bundle(jid, template.device_id, O2, bundle)
                    if not me.encrypt_omemo([jid], "hi").ready:
                        raise RuntimeError(f"no session with {jid}")
    message = ET.tostring(c0.encrypt_omemo([ME], "after reopening").elements[O2], encoding="unicode")
    ks.close()
    return Built(path, sessions, message, c0.jid, time.perf_counter() - t0)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextmanager
def record_reads() -> Iterator[list[str]]:
    """Record every SQL statement that reads the records table, on every SQLite connection
    opened inside the block (so opening the keystore is seen too)."""
    seen: list[str] = []
    real = sqlite3.connect

    def trace(statement: str) -> None:
        if "from records" in statement.lower():
            seen.append(statement)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = real(*args, **kwargs)
        db.set_trace_callback(trace)
        return db

    sqlite3.connect = connect  # type: ignore[assignment]
    try:
        yield seen
    finally:
        sqlite3.connect = real


def probe(path: Path, message: str, sender: str, touch_all: int = 0) -> dict[str, float | int]:
    """Open, build the engine, decrypt ``message``; optionally encrypt once to contacts
    1..``touch_all``-1 afterwards.  Times in µs, memory in KiB."""
    import gc

    gc.collect()
    rss0 = _rss_kib()
    with record_reads() as reads:
        t0 = time.perf_counter()
        ks = Keystore.open(path, PW)
        t_open = time.perf_counter()
        engine = Engine(ks, rng=system_random)
        result = engine.decrypt(ET.fromstring(message), sender, to=ME)
        t_done = time.perf_counter()
        counted = list(reads)
    if not isinstance(result, Decrypted) or result.body != "after reopening":
        raise RuntimeError(f"probe: the message did not decrypt: {result!r}")
    gc.collect()
    out: dict[str, float | int] = {
        "open_us": (t_open - t0) * 1e6,
        "decrypt_us": (t_done - t_open) * 1e6,
        "total_us": (t_done - t0) * 1e6,
        "records_read": len(counted),
        "full_scans": sum(1 for s in counted if "where" not in s.lower()),
        "rss_added_kib": _rss_kib() - rss0,
    }
    if touch_all > 1:
        rss1 = _rss_kib()
        for i in range(1, touch_all):
            if not engine.encrypt_omemo([contact(i)], "again").ready:
                raise RuntimeError(f"probe: no session with {contact(i)}")
        gc.collect()
        out["rss_per_session_in_use_bytes"] = (_rss_kib() - rss1) * 1024 / (touch_all - 1)
    ks.close()
    return out


def run_probe(built: Built, touch_all: bool = False) -> dict[str, float | int]:
    """:func:`probe` in a fresh interpreter (so that its resident memory is its own), on a copy
    of the keystore (the probe writes: the decrypted message is then a duplicate)."""
    copy = built.path.with_name(f"probe-{built.path.name}")
    for suffix in ("", ".generation"):
        shutil.copy(f"{built.path}{suffix}", f"{copy}{suffix}")
    args = [sys.executable, "-m", "bench.memory_bench", "--probe", str(copy), built.sender]
    if touch_all:
        args += ["--touch-all", str(built.sessions)]
    root = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(args, input=built.message, capture_output=True, text=True, cwd=root, timeout=600)
    finally:
        for suffix in ("", "-wal", "-shm", ".generation", ".lock"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-2000:]}")
    result: dict[str, float | int] = json.loads(proc.stdout)
    return result


def file_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_bench")
    parser.add_argument("--probe", nargs=2, metavar=("KEYSTORE", "SENDER"), required=True)
    parser.add_argument("--touch-all", type=int, default=0)
    args = parser.parse_args(argv)
    message = sys.stdin.read()
    print(json.dumps(probe(Path(args.probe[0]), message, args.probe[1], args.touch_all)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
