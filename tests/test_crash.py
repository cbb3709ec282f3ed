"""Crash consistency (issue 4, catalogue R14/K5): alice runs in a child process on a keystore
file, sending to bob and decrypting bob's answers; the child is killed with SIGKILL at random
moments, over 200 times.  After every kill:

* the keystore opens;
* no (ratchet key, counter) pair has ever been put on the wire twice (a message is "on the wire"
  once the child wrote it to the outbox file, which it does only after ``encrypt`` returned, that
  is after the commit);
* every message alice put on the wire decrypts at bob, and every message of bob's decrypts at
  alice exactly once (replays of already processed ones come back as duplicates).

Bob lives in the parent process on a MemoryStorage.  The child is forked from the parent (no
interpreter start-up), so a kill lands anywhere in the engine, SQLite or the sidecar write.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from e2ee.engine import Engine
from e2ee.keystore import KdfParams, Keystore
from e2ee.omemo2.wire import OMEMO2
from e2ee.results import Decrypted, Duplicate, EmptyMessage, SendMessage
from e2ee.rng import system_random
from e2ee.xmlsafe import parse_xml, serialize

from .engine_support import O2, Net

PW = "crash test passphrase"
ALICE, BOB = "alice@example.org", "bob@example.net"
KILLS = 200


def _lines(path: Path) -> list[bytes]:
    """Complete lines only: a line cut by the kill was never 'sent'."""
    data = path.read_bytes() if path.exists() else b""
    return data.split(b"\n")[:-1]


def _trim(path: Path) -> None:
    """Drop a line cut short by a kill, so that the next run's first line does not join it."""
    if path.exists():
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            with path.open("r+b") as fh:
                fh.truncate(cut)


def _write_line(fd: int, data: bytes) -> None:
    os.write(fd, data + b"\n")  # one write(2): the kernel keeps it when the process dies


def _done(outbox: Path) -> dict[int, str]:
    """Inbox index -> what alice made of it, from the ack file."""
    out = {}
    for line in _lines(Path(f"{outbox}.ack")):
        index, kind = line.decode().split(" ", 1)
        out[int(index)] = kind
    return out


def _process_inbox(alice: Engine, inbox: Path, ack: int, done: dict[int, str]) -> None:  # pragma: no cover
    """Decrypt bob's messages not yet acknowledged.  The ack is written after the decrypt
    committed; a kill in between makes the next run see a duplicate, which is recorded too."""
    for index, line in enumerate(_lines(inbox)):
        if index in done:
            continue
        res = alice.decrypt(parse_xml(base64.b64decode(line)), BOB, to=ALICE)
        if isinstance(res, Decrypted):
            kind = f"decrypted {res.body}"
        elif isinstance(res, (EmptyMessage, Duplicate)):
            kind = type(res).__name__
        else:
            raise AssertionError(f"unexpected {res}")
        _write_line(ack, f"{index} {kind}".encode())
        done[index] = kind


def _child(db: Path, outbox: Path, inbox: Path, clock: object) -> None:  # pragma: no cover - runs forked
    try:
        ks = Keystore.open(db, PW)
        alice = Engine(ks, rng=system_random, clock=clock)  # type: ignore[arg-type]
        out = os.open(outbox, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        ack = os.open(f"{outbox}.ack", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        done = _done(outbox)
        i = 0
        while True:
            _process_inbox(alice, inbox, ack, done)
            for _ in range(3):
                i += 1
                result = alice.encrypt_omemo([BOB], f"alice {os.getpid()} {i}")
                assert result.ready
                _write_line(out, base64.b64encode(serialize(result.elements[O2])))
    except BaseException as e:  # report, then die: the parent treats any report as a failure
        import traceback

        with open(f"{outbox}.errors", "a") as fh:
            fh.write(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        os._exit(3)


def _ratchet_ids(elem: ET.Element, device_id: int) -> list[tuple[bytes, int]]:
    out = []
    for key in elem.iter("{urn:xmpp:omemo:2}key"):
        if key.get("rid") != str(device_id):
            continue
        data = base64.b64decode(key.text or "")
        if key.get("kex") == "true":
            data = OMEMO2.parse_key_exchange(data).message
        msg = OMEMO2.parse_message(data)
        out.append((msg.dh_pub, msg.n))
    return out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_at_random_moments_never_reuses_a_key_and_loses_nothing(tmp_path: Path) -> None:
    net = Net()
    bob = net.device(BOB, "crash-bob", namespaces=(O2,))
    db = tmp_path / "alice.db"
    with Keystore.create(db, PW, kdf=KdfParams.floor()) as ks:
        alice = Engine.create(ks, ALICE, rng=system_random, clock=net.clock)
        net.engines.append(alice)
        for e in alice.publish():
            net.run(alice, [e])
        net.prepare(alice, [BOB])
        assert alice.encrypt_omemo([BOB], "hello").ready is True  # first message: a key exchange, never sent
        net.engines.remove(alice)
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    inbox.touch()
    rnd = random.Random(20261120)
    seen: dict[tuple[bytes, int], int] = {}
    delivered = 0
    bob_sent: list[str] = []
    kills = 0
    waited = 0  #: rounds in which the child was killed only after it put a message on the wire
    while kills < KILLS:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            _child(db, outbox, inbox, net.clock)
            os._exit(0)
        if rnd.random() < 0.5:
            # half the kills land after the child got work done (however loaded the machine):
            # wait for a new line on the wire, bounded; the other half land anywhere, start-up
            # included
            _wait_for_progress(outbox, delivered, Path(f"{outbox}.errors"))
            waited += 1
        time.sleep(rnd.uniform(0.0, 0.06))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        kills += 1
        errors = Path(f"{outbox}.errors")
        assert not errors.exists(), errors.read_text()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        Keystore.open(db, PW).close()  # the keystore opens after every kill
        _trim(outbox)
        _trim(Path(f"{outbox}.ack"))
        # bob reads what went on the wire since the last round
        lines = _lines(outbox)
        for line in lines[delivered:]:
            elem = parse_xml(base64.b64decode(line))
            for rid in _ratchet_ids(elem, bob.device_id):
                assert rid not in seen, f"(ratchet key, counter) {rid[0].hex()[:16]}…/{rid[1]} sent twice"
                seen[rid] = 1
            res = bob.decrypt(elem, ALICE, to=BOB)
            assert isinstance(res, Decrypted), res
            for e in res.effects:
                if isinstance(e, SendMessage):
                    with inbox.open("ab") as fh:
                        fh.write(base64.b64encode(serialize(e.encrypted)) + b"\n")
        delivered = len(lines)
        if rnd.random() < 0.3:  # bob answers now and then
            body = f"bob {kills}"
            res = bob.encrypt_omemo([ALICE], body)
            if res.ready:
                bob_sent.append(body)
                with inbox.open("ab") as fh:
                    fh.write(base64.b64encode(serialize(res.elements[O2])) + b"\n")
    # a last, unkilled run lets alice catch up with everything bob sent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            _child_drain(db, outbox, inbox, net.clock)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert not Path(f"{outbox}.errors").exists()
    # every message of bob's was processed; each body decrypted at most once, and a body never
    # seen decrypted was decrypted in a run killed between the commit and the ack (the next run
    # then saw a duplicate): nothing became undecryptable
    acks = [line.decode().split(" ", 1) for line in _lines(Path(f"{outbox}.ack"))]
    kinds = {int(i): k for i, k in acks}
    assert sorted(kinds) == list(range(len(_lines(inbox))))
    bodies = [k.split(" ", 1)[1] for _i, k in acks if k.startswith("decrypted ")]
    assert len(bodies) == len(set(bodies))
    unseen = set(bob_sent) - set(bodies)
    duplicates = sum(1 for _i, k in acks if k == "Duplicate")
    assert len(unseen) <= duplicates
    assert len(bodies) >= len(bob_sent) - duplicates
    assert waited > KILLS // 4 and delivered >= waited  # real work was done between kills


def _wait_for_progress(outbox: Path, delivered: int, errors: Path, bound: float = 120.0) -> None:
    """Poll until the outbox holds more complete lines than ``delivered`` (the child encrypted
    and wrote a message); fail after ``bound`` seconds or on a reported error."""
    deadline = time.monotonic() + bound
    while len(_lines(outbox)) <= delivered:
        assert not errors.exists(), errors.read_text()
        assert time.monotonic() < deadline, f"the child put nothing on the wire in {bound:.0f} s"
        time.sleep(0.005)


def _child_drain(db: Path, outbox: Path, inbox: Path, clock: object) -> None:  # pragma: no cover
    try:
        with Keystore.open(db, PW) as ks:
            alice = Engine(ks, rng=system_random, clock=clock)  # type: ignore[arg-type]
            ack = os.open(f"{outbox}.ack", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            _process_inbox(alice, inbox, ack, _done(outbox))
    except BaseException as e:
        with open(f"{outbox}.errors", "a") as fh:
            fh.write(f"{type(e).__name__}: {e}\n")
