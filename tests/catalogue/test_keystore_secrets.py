"""Catalogue section 5, K6-K8: no sealed bytes left behind, no secret in repr/exceptions/logs,
concurrent encrypts serialised.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from e2ee.engine import Engine
from e2ee.errors import (
    AuthenticationFailed,
    E2EEError,
    InvalidSignature,
    MalformedMessage,
    SenderDistrusted,
    UsageError,
)
from e2ee.keystore import KdfParams, Keystore
from e2ee.keystore.errors import CorruptRecord, KeystoreDowngrade, WrongPassphrase
from e2ee.limits import SPK_GRACE, SPK_ROTATION
from e2ee.omemo2.wire import OMEMO2 as OMEMO2_FLAVOUR
from e2ee.results import (
    Decrypted,
)
from e2ee.storage import TABLES
from e2ee.trust import TrustLevel

from ..engine_support import O2, Net
from ..support import seeded_rng, sql
from .support import (
    ALICE,
    BOB,
    FAST,
    PW,
    Checks,
    deliver,
    kex_flag,
    ks_device,
    raw_records,
    replace_engine,
    send,
)

# ================================================================== K6


def chunks(blob: bytes, size: int = 32, step: int = 200) -> list[bytes]:
    """Pieces of ``blob`` to look for: a record longer than a page is split over overflow pages,
    so the whole record would not be found even if most of it were still there."""
    return [blob[i : i + size] for i in range(0, max(1, len(blob) - size + 1), step)] + [blob[-size:]]


def test_K6_deleted_and_overwritten_secret_records_leave_no_sealed_bytes_in_the_files(tmp_path: Path) -> None:
    """K6.  On alice's keystore: a skipped message key is used (its record deleted), a one-time
    prekey is used (the prekey record rewritten without it, then refilled), and a signed prekey is
    rotated out (rotation, then the end of its grace period).  The sealed bytes of every removed
    or overwritten version of those records, read from the ``records`` table beforehand, are
    then searched in the database file and its WAL after ``close()``: none is found (``PRAGMA
    secure_delete=ON`` zeroes freed cells and pages; ``close()`` checkpoints and truncates the
    WAL).  Documented limit, not tested: copies in memory (Python ``bytes``) cannot be wiped
    (``keystore/store.py`` module docstring).  Observed, not asserted: while the store is open,
    the old sealed versions are still in WAL frames until the next checkpoint (``close()`` or
    SQLite's automatic one), so a copy of the files taken together with the passphrase while the
    client runs can still recover them.  (``test_keystore_engine.py`` scans the open store for
    plaintext and keys, which the sealing hides.)"""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k6-a")
    bob = net.device(BOB, "k6-b")
    blind = ks._k().blind_key

    def sealed(table: str, key: str) -> bytes | None:
        rows = sql(path, "SELECT v FROM records WHERE k=?", blind(table, key))  # beside the open store
        return bytes(rows[0][0]) if rows else None

    gone: dict[str, bytes] = {}
    where: dict[str, tuple[str, str]] = {}

    def remember(what: str, table: str, key: str) -> None:
        value = sealed(table, key)
        assert value is not None, what
        gone[what] = value
        where[what] = (table, key)

    # a one-time prekey used by bob's key exchange
    remember("prekeys before the key exchange", "own", "prekeys")
    kex = send(net, bob, ALICE, "kex")
    used_pk = OMEMO2_FLAVOUR.parse_key_exchange(
        base64.b64decode(
            next(k.text or "" for k in kex.iter("{urn:xmpp:omemo:2}key") if k.get("rid") == str(alice.device_id))
        )
    ).pk_id
    assert str(used_pk) in alice.context.own._prekeys()["keys"]
    deliver(net, alice, kex, bob)
    assert str(used_pk) not in alice.context.own._prekeys()["keys"]
    # a skipped message key, then used
    held = send(net, bob, ALICE, "held back")
    deliver(net, alice, send(net, bob, ALICE, "overtakes"), bob)
    skipped = ks.keys("skipped")
    assert len(skipped) == 1
    remember("skipped message key", "skipped", skipped[0])
    out = deliver(net, alice, held, bob)
    assert isinstance(out, Decrypted) and out.body == "held back" and ks.keys("skipped") == []
    # a signed prekey rotated out and expired
    remember("signed prekey 1", "own", "spk")
    net.clock.advance(SPK_ROTATION + timedelta(hours=1))
    assert alice.maintenance()
    remember("signed prekeys 1 and 2", "own", "spk")
    net.clock.advance(SPK_GRACE + timedelta(hours=1))
    alice.maintenance()
    assert alice.context.own._spk()["previous"]["id"] == 2  # spk 1 is gone for good
    for what, value in gone.items():
        assert sealed(*where[what]) != value, f"{what} is still the current record"
    ks.close()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.name.endswith(".lock")}
    assert path.name in files
    found = [
        f"{what} in {name}"
        for what, value in gone.items()
        for name, blob in files.items()
        if any(piece in blob for piece in chunks(value))
    ]
    assert not found, found


# ================================================================== K7


def text_forms(secret: bytes) -> list[str]:
    """How ``secret`` could show up in text: hex, base64 (two alignments of a middle piece, so
    that it is found inside a longer encoded blob), bytes-repr escapes."""
    forms = [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ]
    if len(secret) >= 12:
        for shift in (1, 2):
            forms.append(base64.b64encode(secret[shift:]).decode()[4:-4])
    esc = repr(secret)[2:-1]
    if len(esc) >= 16:
        forms.append(esc[2:-2])
    return forms


def test_K7_no_secret_or_plaintext_in_repr_exceptions_or_debug_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """K7.  With DEBUG logging on, alice (on a keystore) and bob exchange messages, with skipped
    keys and a key exchange; then bad input is forced through the crypto paths (flipped MAC and
    payload bits, a truncated key, a forged bundle signature, a distrusted sender, a wrong
    passphrase, a damaged record, usage errors).  Searched for: the passphrase, the data key and
    the keys derived from it, both identity private keys, every prekey and signed-prekey private
    key, every root, chain and ratchet private key, every skipped message key, and every message
    body -- in raw (bytes-repr escapes), hex and base64 -- in: the captured log text, ``repr()``
    of the engine, keystore, derived keys, identity key pair, own device, session sets, sessions,
    ratchets, every result and effect value, device infos, and ``str``/``repr``/formatted
    traceback of every exception raised.  A result that *is* the decrypted message
    (``Decrypted``) must not print its body either: a client that logs results with ``%r`` would
    otherwise write plaintext into its log.  (Today neither ``e2ee`` nor ``keystore`` logs
    anything, so the log scan guards future logging.)"""
    import traceback

    from e2ee.omemo2 import xml as o2xml

    caplog.set_level(logging.DEBUG)
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k7-a")
    bob = net.device(BOB, "k7-b")
    bodies = [f"k7 secret body number {i} with some words" for i in range(8)]
    objects: list[object] = [
        alice,
        bob,
        ks,
        ks._k(),
        alice.context.own,
        alice.context.own.identity,
        bob.context.own.identity,
        FAST,
        KdfParams(),
    ]
    errors: list[BaseException] = []

    def keep(*items: object) -> None:
        for item in items:
            objects.append(item)
            for attr in ("effects", "devices"):
                objects.extend(getattr(item, attr, ()))

    res = net.encrypt(alice, [BOB], bodies[0])
    keep(res, *alice.prepare([BOB]))
    keep(deliver(net, bob, res.elements[O2], alice))
    held = send(net, bob, ALICE, bodies[1])
    keep(deliver(net, alice, send(net, bob, ALICE, bodies[2]), bob))
    for i in (3, 4):
        res = net.encrypt(alice, [BOB], bodies[i])
        keep(res, deliver(net, bob, res.elements[O2], alice))
    keep(deliver(net, alice, held, bob))
    keep(alice.decrypt(copy.deepcopy(held), BOB, to=ALICE))  # Duplicate
    keep(alice.decrypt(net.encrypt(alice, [BOB], bodies[5]).elements[O2], ALICE))  # reflection
    keep(*alice.devices(BOB), *alice.devices(ALICE), *alice.publish(), *alice.maintenance())

    # bad input through the crypto paths
    def expect_error(call: Callable[[], object], error: type[BaseException]) -> None:
        with pytest.raises(error) as info:
            call()
        errors.append(info.value)

    good = send(net, bob, ALICE, bodies[6])
    key = next(k for k in good.iter("{urn:xmpp:omemo:2}key") if k.get("rid") == str(alice.device_id))
    raw = base64.b64decode(key.text or "")
    for bit in (len(raw) * 8 - 1, len(raw) * 4, 8 * 40):
        forged = copy.deepcopy(good)
        k2 = next(k for k in forged.iter("{urn:xmpp:omemo:2}key") if k.get("rid") == str(alice.device_id))
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        k2.text = base64.b64encode(bytes(flipped)).decode()
        expect_error(lambda forged=forged: alice.decrypt(forged, BOB, to=ALICE), E2EEError)
    forged = copy.deepcopy(good)
    payload = forged.find("{urn:xmpp:omemo:2}payload")
    assert payload is not None
    p = bytearray(base64.b64decode(payload.text or ""))
    p[3] ^= 1
    payload.text = base64.b64encode(bytes(p)).decode()
    expect_error(lambda: alice.decrypt(forged, BOB, to=ALICE), AuthenticationFailed)
    forged = copy.deepcopy(good)
    k2 = next(k for k in forged.iter("{urn:xmpp:omemo:2}key") if k.get("rid") == str(alice.device_id))
    k2.text = base64.b64encode(raw[:10]).decode()
    expect_error(lambda: alice.decrypt(forged, BOB, to=ALICE), MalformedMessage)
    bundle = copy.deepcopy(net.pep.bundle(BOB, O2, bob.device_id))
    spks = bundle.find("{urn:xmpp:omemo:2}spks")
    assert spks is not None
    sig = bytearray(base64.b64decode(spks.text or ""))
    sig[5] ^= 1
    spks.text = base64.b64encode(bytes(sig)).decode()
    expect_error(lambda: alice.on_bundle(BOB, bob.device_id, O2, bundle), InvalidSignature)
    expect_error(
        lambda: alice.set_trust(BOB, alice.context.own.identity.x25519_private[:31], TrustLevel.VERIFIED), UsageError
    )
    expect_error(lambda: alice.encrypt_omemo([BOB], None), UsageError)
    expect_error(lambda: ks.change_passphrase(PW, KdfParams(1, 1024)), KeystoreDowngrade)
    alice.set_trust(BOB, bob.identity_key, TrustLevel.DISTRUSTED)
    expect_error(lambda: alice.decrypt(good, BOB, to=ALICE), SenderDistrusted)
    alice.set_trust(BOB, bob.identity_key, TrustLevel.BLIND)
    keep(alice.decrypt(good, BOB, to=ALICE))
    expect_error(lambda: o2xml.parse_bundle(ET.Element("{urn:xmpp:omemo:2}bundle")), E2EEError)

    # the secrets
    secrets: dict[str, bytes] = {"passphrase": PW.encode()}
    assert ks._dek is not None
    keys = ks._k()
    secrets |= {
        "data key": ks._dek,
        "record key": keys.record,
        "blind key": keys.blind,
        "generation key": keys.generation,
    }
    for e in (alice, bob):
        who = e.jid.split("@")[0]
        secrets[f"{who} identity seed"] = e.context.own.identity.seed
        secrets[f"{who} identity x25519 private"] = e.context.own.identity.x25519_private
        for pk_id, entry in e.context.own._prekeys()["keys"].items():
            secrets[f"{who} prekey {pk_id}"] = bytes.fromhex(entry["priv"])
        spk = e.context.own._spk()
        for slot in ("current", "previous"):
            if spk.get(slot):
                secrets[f"{who} spk {slot}"] = bytes.fromhex(spk[slot]["priv"])
        for skey in e.storage.keys("session"):
            sset = e.context.sessions.load(skey)
            objects.extend(
                [
                    sset,
                    *sset.entries,
                    *(en.session for en in sset.entries),
                    *(en.session.ratchet for en in sset.entries),
                ]
            )
            for en in sset.entries:
                r = en.session.ratchet
                for name in ("root_key", "dhs_priv", "cks", "ckr"):
                    if getattr(r, name):
                        secrets[f"{who} {skey} {name}"] = getattr(r, name)
        for skey in e.storage.keys("skipped"):
            value = e.storage.get("skipped", skey)
            assert value is not None
            secrets[f"{who} skipped key {skey}"] = value
    ks.close()
    expect_error(lambda: Keystore.open(path, PW + "!"), WrongPassphrase)
    row, value = raw_records(path)[0]
    sql(path, "UPDATE records SET v=? WHERE k=?", value[:40] + bytes([value[40] ^ 1]) + value[41:], row)
    with Keystore.open(path, PW) as ks2:
        objects.append(ks2)
        damaged = ks2  # one record of it is now corrupt: find it through the engine or a listing
        expect_error(lambda: [damaged.get(t, k) for t in TABLES for k in damaged.keys(t)], CorruptRecord)

    texts: dict[str, str] = {"log": caplog.text}
    texts |= {f"log record {i} args": repr(r.args) for i, r in enumerate(caplog.records)}
    for i, obj in enumerate(objects):
        texts[f"repr of {type(obj).__name__} #{i}"] = repr(obj)
    for i, err in enumerate(errors):
        texts[f"{type(err).__name__} #{i}"] = "\n".join(
            [str(err), repr(err), repr(err.args), *traceback.format_exception(err)]
        )
    # the scan finds what it looks for, inside longer text too
    for what in ("alice identity seed", "data key"):
        secret = secrets[what]
        for planted in (
            repr(b"<" + secret + b">"),
            (b"xy" + secret).hex(),
            base64.b64encode(b"x" + secret + b"y").decode(),
        ):
            assert any(form in planted for form in text_forms(secret)), (what, planted)
    checks = Checks()
    for name, text in texts.items():
        for what, secret in secrets.items():
            if any(form in text for form in text_forms(secret)):
                checks.expect(False, f"{what} in {name}")
        for body in bodies:
            if any(form in text for form in [body, *text_forms(body.encode())]):
                checks.expect(False, f"plaintext {body!r} in {name}: {text[:160]}")
    assert len(secrets) > 200 and len(errors) >= 12
    checks.done()


# ================================================================== K8


def test_K8_one_hundred_concurrent_encrypts_from_asyncio_tasks_are_serialised_with_unique_counters(
    tmp_path: Path,
) -> None:
    """K8.  A second opener of the same keystore gets ``KeystoreLocked``
    (``test_keystore.py::test_second_opener_gets_keystore_locked`` in one process,
    ``::test_second_process_gets_keystore_locked`` across processes).  Here: 100 ``encrypt``
    calls to bob's device from 100 asyncio tasks in one event loop, on alice's keystore.  The
    engine is synchronous, so each call runs to completion (one transaction) before another task
    runs; every element decrypts at bob in the order the calls completed, every (ratchet key,
    counter) pair is used once, and after reopening the store the next message continues the
    chain (no lost update)."""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k8-a")
    bob = net.device(BOB, "k8-b", namespaces=(O2,))
    deliver(net, bob, send(net, alice, BOB, "hello"), alice)  # confirmed session: plain messages
    net.prepare(alice, [BOB])
    made: list[tuple[int, ET.Element]] = []  # in the order the calls ran
    import random

    rnd = random.Random(8)
    pauses = [(rnd.randrange(4), rnd.randrange(4)) for _ in range(100)]

    async def one(i: int) -> None:
        for _ in range(pauses[i][0]):  # the tasks reach encrypt() in a shuffled order
            await asyncio.sleep(0)
        res = alice.encrypt_omemo([BOB], f"concurrent {i}")
        made.append((i, res.elements[O2]))
        for _ in range(pauses[i][1]):
            await asyncio.sleep(0)
        assert res.ready

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(100)))

    asyncio.run(main())
    assert sorted(i for i, _ in made) == list(range(100)) and [i for i, _ in made] != list(range(100))
    ids: list[tuple[bytes, int]] = []
    for i, el in made:
        data = base64.b64decode(
            next(k.text or "" for k in el.iter("{urn:xmpp:omemo:2}key") if k.get("rid") == str(bob.device_id))
        )
        assert kex_flag(el, bob.device_id) is None
        msg = OMEMO2_FLAVOUR.parse_message(data)
        ids.append((msg.dh_pub, msg.n))
    assert len(set(ids)) == 100
    assert [n for _dh, n in ids] == sorted(n for _dh, n in ids)  # the order of creation
    for i, el in made:
        out = bob.decrypt(el, ALICE, to=BOB)
        assert isinstance(out, Decrypted) and out.body == f"concurrent {i}"
    assert bob.storage.keys("skipped") == []  # in order: nothing had to be skipped
    ks.close()
    ks = Keystore.open(path, PW)
    alice = replace_engine(net, alice, Engine(ks, rng=seeded_rng("k8-a2"), clock=net.clock))
    el = send(net, alice, BOB, "after reopening")
    msg = OMEMO2_FLAVOUR.parse_message(
        base64.b64decode(
            next(k.text or "" for k in el.iter("{urn:xmpp:omemo:2}key") if k.get("rid") == str(bob.device_id))
        )
    )
    assert (msg.dh_pub, msg.n) not in set(ids) and msg.n == ids[-1][1] + 1
    out = bob.decrypt(el, ALICE, to=BOB)
    assert isinstance(out, Decrypted) and out.body == "after reopening"
    ks.close()
