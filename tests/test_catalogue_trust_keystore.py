"""Security catalogue sections 3 (device lists and trust, D1-D8) and 5 (keystore at rest and
crash consistency, K1-K8).

Everything goes through what a client uses: :class:`~e2ee.engine.Engine` (device lists, bundles,
``<encrypted/>`` elements in; results, effects and typed errors out) and
:class:`~e2ee.keystore.Keystore` (create/open/close/change_passphrase).  Peers run on the fake PEP
harness of ``tests/engine_support.py``; a device under test that must live on disk runs on a real
keystore file.  Damage to the keystore is done with ``sqlite3`` on the closed file.  Looks below
the API: ``Keystore._k().blind_key(table, key)`` to find which (blinded) row belongs to which
record; in K5, wrappers around the store's write calls, its SQLite connection and its
generation-file write that inject the "crash"; in K6/K7 the engine's own records (``_own``,
``_sessions``, ``Keystore._dek``) are read to know which secrets to look for.

What the catalogue asks of the *client* (the ``from`` attribute of PEP events, plaintext
``<body>`` fallbacks, MUC room configuration and real-JID mapping, ``muc#user`` in archives) is
not the engine's; the docstrings below say which part of each anchor is covered here and which
is the client's.  Related tests elsewhere are named in each docstring rather than repeated.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from e2ee.engine import NAMESPACES, Engine, parse_device_list
from e2ee.errors import (
    AffixMismatch,
    AuthenticationFailed,
    CorruptRecord,
    E2EEError,
    InvalidSignature,
    KeystoreCorrupt,
    KeystoreDowngrade,
    MalformedMessage,
    RollbackDetected,
    SenderDistrusted,
    SharedIdentityKey,
    UnsupportedKeystoreVersion,
    UsageError,
    WrongPassphrase,
)
from e2ee.keystore import KdfParams, Keystore
from e2ee.keystore.sealing import MAX_MEMORY_KIB, MAX_PASSES
from e2ee.legacy import xml as legacy_xml
from e2ee.limits import SPK_GRACE, SPK_ROTATION
from e2ee.model import DeviceEntry, DeviceList
from e2ee.omemo2 import xml as omemo2_xml
from e2ee.omemo2.wire import OMEMO2 as OMEMO2_FLAVOUR
from e2ee.results import (
    Decrypted,
    EmptyMessage,
    FetchDeviceList,
    NotForThisDevice,
    Outcome,
    Publish,
    SendMessage,
)
from e2ee.sessions import session_key
from e2ee.storage import TABLES
from e2ee.trust import TrustLevel, TrustPolicy

from .engine_support import DEVICE_LIST_NODE, LEGACY, O2, Net, bundle_item, snapshot
from .support import seeded_rng, sql

ALICE = "alice@example.org"
BOB = "bob@example.net"
CAROL = "carol@example.com"
DAVE = "dave@example.com"
MALLORY = "mallory@evil.example"
ROOM = "room@muc.example.org"

PW = "catalogue keystore passphrase"
FAST = KdfParams.floor()


# ================================================================== helpers


def rids(result_elements: dict[str, ET.Element]) -> set[int]:
    """Every device id an encrypt result holds a key for (both namespaces)."""
    return {int(k.get("rid", "0")) for el in result_elements.values() for k in el.iter() if str(k.tag).endswith("}key")}


def outcomes(result: Any, jid: str) -> dict[int, tuple[str, Outcome]]:
    return {d.device_id: (d.namespace, d.outcome) for d in result.devices if d.jid == jid}


def deliver(net: Net, receiver: Engine, element: ET.Element, sender: Engine, **kw: Any) -> Any:
    """Decrypt at ``receiver`` and carry out its effects; empty answers are delivered at once."""
    kw.setdefault("to", receiver.jid)
    out = receiver.decrypt(element, sender.jid, **kw)
    net.run(receiver, out.effects)
    for src, msg in net.take_outbox():
        for e in net.engines:
            if e.jid == msg.jid and e.device_id == msg.device_id:
                e.decrypt(msg.encrypted, src.jid, to=e.jid)
    return out


def send(net: Net, sender: Engine, to: str, body: str, ns: str = O2) -> ET.Element:
    res = net.encrypt(sender, [to], body)
    assert res.ready, res.devices
    return res.elements[ns]


def kex_flag(element: ET.Element, rid: int) -> str | None:
    """The key-exchange flag of the key for device ``rid`` (either namespace)."""
    (key,) = [k for k in element.iter() if str(k.tag).endswith("}key") and k.get("rid") == str(rid)]
    return key.get("kex", key.get("prekey"))


def o2_list(*entries: DeviceEntry) -> ET.Element:
    return omemo2_xml.build_device_list(DeviceList("omemo2", tuple(entries)))


def legacy_list(*ids: int) -> ET.Element:
    return legacy_xml.build_device_list(DeviceList("legacy", tuple(DeviceEntry(i) for i in ids)))


def ks_device(
    net: Net,
    path: Path,
    jid: str,
    seed: str,
    *,
    namespaces: tuple[str, ...] = NAMESPACES,
    policy: TrustPolicy = TrustPolicy.BTBV,
) -> tuple[Engine, Keystore]:
    """Like :meth:`Net.device`, on a new keystore file."""
    ks = Keystore.create(path, PW, kdf=FAST)
    lists = [parse_device_list(ns, el) for ns in NAMESPACES if (el := net.pep.device_list(jid, ns)) is not None]
    engine = Engine.create(ks, jid, lists, rng=seeded_rng(seed), clock=net.clock, policy=policy)
    net.engines.append(engine)
    for effect in engine.publish():
        if isinstance(effect, Publish) and net._namespace_of(effect.node) in namespaces:
            net.publish(engine, effect)
    return engine, ks


def replace_engine(net: Net, old: Engine, new: Engine) -> Engine:
    """``new`` (the same device on a reopened keystore) takes ``old``'s place in ``net``."""
    net.engines[net.engines.index(old)] = new
    return new


def dump(storage: Any) -> dict[str, dict[str, bytes]]:
    """Every record, decrypted: {table: {key: value}}."""
    out = {}
    for table in TABLES:
        rows = {}
        for key in storage.keys(table):
            value = storage.get(table, key)
            assert value is not None
            rows[key] = value
        out[table] = rows
    return out


def restore_memory(engine: Engine, state: dict[str, dict[str, bytes]]) -> None:
    """Put a ``snapshot`` back into an engine on MemoryStorage (and drop its decoded sessions)."""
    engine.storage._tables = {t: dict(rows) for t, rows in state.items()}  # type: ignore[attr-defined]
    engine._sessions.forget_cache()


def raw_records(path: Path) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in sql(path, "SELECT k, v FROM records ORDER BY k")]


def store_files(path: Path) -> dict[str, bytes]:
    """The bytes of the keystore file and everything beside it that holds data."""
    out = {}
    for p in (path, Path(f"{path}-wal"), Path(f"{path}.generation")):
        if p.exists():
            out[p.name] = p.read_bytes()
    return out


def identity_of(path: Path, passphrase: str = PW, **kw: Any) -> bytes:
    """The identity key the keystore at ``path`` holds (opened and closed again)."""
    with Keystore.open(path, passphrase, **kw) as ks:
        return Engine(ks).identity_key


class Checks:
    """Collects departures from the catalogue; :meth:`done` fails with all of them."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def expect(self, condition: bool, label: str) -> None:
        if not condition:
            self.problems.append(label)

    def done(self) -> None:
        assert not self.problems, "catalogue deviations:\n  " + "\n  ".join(self.problems)


# ================================================================== D1


def test_D1_ghost_device_on_a_contact_is_undecided_never_encrypted_and_flagged_when_it_writes() -> None:
    """D1.  A device the server adds to bob's list (with its own valid bundle) after alice verified
    one of bob's devices is ``UNDECIDED``: reported in ``EncryptResult.devices``, given no key;
    a message from it decrypts with ``trust is UNDECIDED``.  Before any verification, BTBV trusts
    it blindly (the catalogue allows that) and its messages say ``BLIND``; under MANUAL it is
    undecided from the start.  The outcome alone is covered by
    ``test_engine.py::test_btbv_new_device_after_verification_is_undecided_and_reported``; this
    adds the ghost's own messages and the other policies."""
    # --- BTBV, one of bob's devices verified
    net = Net()
    alice = net.device(ALICE, "d1-a")
    bob = net.device(BOB, "d1-b")
    deliver(net, bob, send(net, alice, BOB, "hello"), alice)
    alice.set_trust(BOB, bob.identity_key, TrustLevel.VERIFIED)
    evil = net.device(BOB, "d1-evil")  # the server adds it to bob's list (pushed to everyone)
    assert evil.device_id in {d.device_id for d in alice.devices(BOB) if d.namespaces}
    for i in range(3):
        res = net.encrypt(alice, [BOB], f"for bob {i}")
        assert res.ready
        assert outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED), evil.device_id: (O2, Outcome.UNDECIDED)}
        (und,) = [d for d in res.devices if d.device_id == evil.device_id]
        assert und.identity_key == evil.identity_key
        assert evil.device_id not in rids(res.elements)
        assert isinstance(deliver(net, bob, res.elements[O2], alice), Decrypted)
        assert isinstance(evil.decrypt(res.elements[O2], ALICE, to=BOB), NotForThisDevice)
    out = deliver(net, alice, send(net, evil, ALICE, "trust me"), evil)
    assert isinstance(out, Decrypted) and out.body == "trust me"
    assert out.trust is TrustLevel.UNDECIDED and out.identity_key == evil.identity_key
    # decrypting its message did not trust it: still nothing for it
    res = net.encrypt(alice, [BOB], "after the ghost wrote")
    assert outcomes(res, BOB)[evil.device_id] == (O2, Outcome.UNDECIDED) and evil.device_id not in rids(res.elements)

    # --- BTBV, nothing verified yet: blind trust (allowed), and marked as such
    net = Net()
    alice = net.device(ALICE, "d1-a")
    bob = net.device(BOB, "d1-b")
    deliver(net, bob, send(net, alice, BOB, "hello"), alice)
    evil = net.device(BOB, "d1-evil")
    res = net.encrypt(alice, [BOB], "x")
    assert outcomes(res, BOB)[evil.device_id] == (O2, Outcome.ENCRYPTED)
    out = deliver(net, alice, send(net, evil, ALICE, "hi"), evil)
    assert isinstance(out, Decrypted) and out.trust is TrustLevel.BLIND

    # --- MANUAL: undecided from the start, in both directions
    net = Net()
    alice = net.device(ALICE, "d1-a", policy=TrustPolicy.MANUAL)
    bob = net.device(BOB, "d1-b")
    alice.set_trust(BOB, bob.identity_key, TrustLevel.VERIFIED)
    evil = net.device(BOB, "d1-evil")
    res = net.encrypt(alice, [BOB], "x")
    assert outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED), evil.device_id: (O2, Outcome.UNDECIDED)}
    assert evil.device_id not in rids(res.elements)
    out = deliver(net, alice, send(net, evil, ALICE, "hi"), evil)
    assert isinstance(out, Decrypted) and out.trust is TrustLevel.UNDECIDED


# ================================================================== D2


def test_D2_ghost_device_on_our_own_account_needs_trust_and_our_removed_id_is_re_announced() -> None:
    """D2.  Our own other devices follow the contact rules (trust-atm.md section 3, rule 3): after
    alice verified her second device, a third one that appears on her list is ``UNDECIDED`` and
    gets no copy of what she sends; its messages decrypt marked ``UNDECIDED``.  When a push of
    our own list lacks our id (either namespace), ``on_device_list`` returns the ``Publish`` that
    re-adds it, keeping the other entries.  The bare re-add is covered by
    ``test_engine.py::test_own_device_id_is_re_added_when_a_push_lacks_it`` and
    ``test_engine.py::test_own_id_re_added_to_a_legacy_list_push_too``."""
    net = Net()
    a1 = net.device(ALICE, "d2-a1")
    a2 = net.device(ALICE, "d2-a2")
    bob = net.device(BOB, "d2-b")
    res = net.encrypt(a1, [BOB], "first")
    assert outcomes(res, ALICE) == {a2.device_id: (O2, Outcome.ENCRYPTED)}
    a1.set_trust(ALICE, a2.identity_key, TrustLevel.VERIFIED)
    ghost = net.device(ALICE, "d2-ghost")
    res = net.encrypt(a1, [BOB], "second")
    assert res.ready
    assert outcomes(res, ALICE) == {a2.device_id: (O2, Outcome.ENCRYPTED), ghost.device_id: (O2, Outcome.UNDECIDED)}
    assert ghost.device_id not in rids(res.elements) and {a2.device_id, bob.device_id} <= rids(res.elements)
    out = deliver(net, a2, res.elements[O2], a1, to=BOB)  # the copy for alice's other device
    assert isinstance(out, Decrypted) and out.body == "second"
    # the ghost writes to alice (its "own" account)
    out = deliver(net, a1, send(net, ghost, BOB, "from the ghost"), ghost, to=BOB)
    assert isinstance(out, Decrypted) and out.trust is TrustLevel.UNDECIDED

    # our id removed from our lists: re-announced, the others kept
    others = {a2.device_id, ghost.device_id}
    (pub,) = a1.on_device_list(ALICE, O2, o2_list(*(DeviceEntry(i) for i in sorted(others))))
    assert isinstance(pub, Publish) and pub.node == DEVICE_LIST_NODE[O2] and pub.item_id == "current"
    assert omemo2_xml.parse_device_list(pub.payload).ids == others | {a1.device_id}
    (pub,) = a1.on_device_list(ALICE, LEGACY, legacy_list(*sorted(others)))
    assert pub.node == DEVICE_LIST_NODE[LEGACY]
    assert legacy_xml.parse_device_list(pub.payload).ids == others | {a1.device_id}
    (pub,) = a1.on_device_list(ALICE, O2, None)  # the node was deleted
    assert omemo2_xml.parse_device_list(pub.payload).ids == {a1.device_id}
    # a list that has us needs no republication
    assert a1.on_device_list(ALICE, O2, net.pep.device_list(ALICE, O2)) == []


# ================================================================== D3


def test_D3_a_device_list_or_bundle_event_only_changes_the_jid_the_caller_names() -> None:
    """D3 (engine part).  ``on_device_list``/``on_bundle`` apply an update to the bare JID the
    caller passes and to nothing else.  An event that "describes alice's devices" but is handed
    in for mallory (the JID of its ``from``) changes mallory's records only: alice's own record
    of her account and bob's record of alice stay byte-identical, and no republication happens.

    The ``from`` rule itself (a missing ``from`` is our own account; a ``from`` naming another
    account than the node owner, or a full JID, is dropped as *SpoofedEvent*) is the client's
    job: the engine only sees the JID it is given (``Engine.on_device_list`` docstring).
    ``SpoofedEvent`` exists in ``e2ee.errors`` for the client to raise."""
    net = Net()
    alice = net.device(ALICE, "d3-a")
    bob = net.device(BOB, "d3-b")
    deliver(net, bob, send(net, alice, BOB, "hello"), alice)
    evil_id = 4242
    forged_o2 = o2_list(DeviceEntry(evil_id), DeviceEntry(bob.device_id))  # "alice's list", without alice
    forged_legacy = legacy_list(evil_id)
    mallory_bundle = copy.deepcopy(net.pep.bundle(BOB, O2, bob.device_id))  # a valid bundle

    for engine in (alice, bob):
        before = snapshot(engine)
        assert engine.on_device_list(MALLORY, O2, copy.deepcopy(forged_o2)) == []
        assert engine.on_device_list(MALLORY, LEGACY, copy.deepcopy(forged_legacy)) == []
        assert engine.on_bundle(MALLORY, alice.device_id, O2, copy.deepcopy(mallory_bundle)) == []
        after = snapshot(engine)
        assert engine.storage.get("device", ALICE) == before["device"][ALICE]
        for table in ("device", "bundle", "trust", "session", "own"):
            changed = {
                k for k in after[table].keys() | before[table].keys() if after[table].get(k) != before[table].get(k)
            }
            assert all(k.endswith(MALLORY) or k == MALLORY for k in changed), (table, changed)
        assert {d.device_id for d in engine.devices(MALLORY)} >= {evil_id, bob.device_id}
    assert {d.device_id for d in alice.devices(ALICE) if d.namespaces} == {alice.device_id}
    # traffic between alice and bob is unaffected
    out = deliver(net, bob, send(net, alice, BOB, "still you"), alice)
    assert isinstance(out, Decrypted) and out.body == "still you"
    res = net.encrypt(bob, [ALICE], "and back")
    assert set(outcomes(res, ALICE)) == {alice.device_id} and evil_id not in rids(res.elements)


# ================================================================== D4


@pytest.mark.parametrize("how", ["empty lists", "nodes gone"])
def test_D4_all_devices_removed_nothing_is_encrypted_nothing_in_plaintext_and_data_kept(how: str) -> None:
    """D4 (engine part).  When bob's lists become empty (or the nodes no longer exist), encrypt
    produces no element at all, ``ready`` is False and ``unreachable == (bob,)``; the removed
    device stays known as inactive (``namespaces == ()``) with its identity key, trust and session.
    When the list comes back, the old session is used again.  A fetch that fails or times out is
    reported by the client either as "no node" (``None``, the second case) or not at all (the
    cached list stays).  Showing an injected plain ``<body>`` as unencrypted and ignoring a
    fallback body next to ``<encrypted>`` are the client's job.
    (``test_engine.py::test_unknown_recipient_without_devices_never_gets_plaintext`` covers a
    recipient never seen.)"""
    net = Net()
    alice = net.device(ALICE, "d4-a")
    a2 = net.device(ALICE, "d4-a2")  # an own device that could still be reached
    bob = net.device(BOB, "d4-b")
    deliver(net, bob, send(net, alice, BOB, "hello"), alice)
    levels_before = alice.trust.levels(BOB)
    skey = session_key("omemo2", BOB, bob.device_id)
    session_before = alice.storage.get("session", skey)
    removal = {O2: o2_list(), LEGACY: legacy_list()} if how == "empty lists" else {O2: None, LEGACY: None}
    for ns, element in removal.items():
        assert alice.on_device_list(BOB, ns, element) == []
    before = snapshot(alice)
    res = alice.encrypt([BOB], "the secret text")
    assert not res.ready and res.elements == {} and res.unreachable == (BOB,)
    assert not [d for d in res.devices if d.outcome is Outcome.ENCRYPTED]
    assert [d.outcome for d in res.devices if d.jid == ALICE] == [Outcome.NOT_SENT]  # a2: eligible, not sent
    assert snapshot(alice) == before  # nothing was encrypted, no ratchet moved
    (info,) = alice.devices(BOB)
    assert info.device_id == bob.device_id and info.namespaces == ()
    assert info.identity_key == bob.identity_key and info.trust is TrustLevel.BLIND
    assert alice.trust.levels(BOB) == levels_before and alice.storage.get("session", skey) == session_before
    # the list comes back: the kept session is used, no new key exchange
    alice.on_device_list(BOB, O2, net.pep.device_list(BOB, O2))
    res = alice.encrypt([BOB], "back again")
    assert res.ready and outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED)}
    assert kex_flag(res.elements[O2], bob.device_id) is None
    out = deliver(net, bob, res.elements[O2], alice)
    assert isinstance(out, Decrypted) and out.body == "back again"
    assert a2.device_id in rids(res.elements)


# ================================================================== D5


def test_D5_omemo2_list_stripped_while_legacy_list_remains_pins_current_behaviour() -> None:
    """D5 -- KNOWN GAP, this test pins today's behaviour.  Bob was seen with an OMEMO 2 device
    list; then the server strips it (the OMEMO 2 node is gone) while the legacy list still names
    his device.  The engine has no ``DowngradeDetected`` (and no warning in the result): it
    encrypts for that device in legacy OMEMO, starting a legacy session from the legacy bundle,
    exactly as for a legacy-only device.  What it does keep: the OMEMO 2 session is not deleted
    and is used again (without a new key exchange) once the OMEMO 2 list is back; nothing ever
    goes out in plaintext (with no list at all, D4 applies).  When a downgrade signal is added,
    this test must change with it."""
    net = Net()
    alice = net.device(ALICE, "d5-a")
    bob = net.device(BOB, "d5-b")  # on both lists
    deliver(net, bob, send(net, alice, BOB, "omemo 2"), alice)
    o2_session = alice.storage.get("session", session_key("omemo2", BOB, bob.device_id))
    assert o2_session is not None
    # the server strips bob's OMEMO 2 list
    del net.pep.items[(BOB, DEVICE_LIST_NODE[O2], "current")]
    alice.on_device_list(BOB, O2, None)
    res = net.encrypt(alice, [BOB], "after the strip")
    assert res.ready
    assert outcomes(res, BOB) == {bob.device_id: (LEGACY, Outcome.ENCRYPTED)}  # the downgrade
    assert all(d.error is None for d in res.devices)  # ... with no warning of any kind
    assert set(res.elements) == {LEGACY}
    out = deliver(net, bob, res.elements[LEGACY], alice)
    assert isinstance(out, Decrypted) and out.body == "after the strip" and out.namespace == LEGACY
    assert alice.storage.get("session", session_key("omemo2", BOB, bob.device_id)) == o2_session
    # the OMEMO 2 list comes back: OMEMO 2 again, on the kept session
    net.run(bob, bob.publish())
    res = net.encrypt(alice, [BOB], "omemo 2 again")
    assert outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED)} and set(res.elements) == {O2}
    assert kex_flag(res.elements[O2], bob.device_id) is None
    out = deliver(net, bob, res.elements[O2], alice)
    assert isinstance(out, Decrypted) and out.body == "omemo 2 again"


# ================================================================== D6


def test_D6_sender_not_on_the_list_decrypts_flagged_with_one_fetch_per_message_and_gets_nothing() -> None:
    """D6.  Messages from a device of bob that is not on alice's cached lists decrypt, and each
    result carries exactly one ``FetchDeviceList`` per namespace (a re-fetch per message, no
    storm); once alice verified another of bob's devices the unlisted one is also flagged
    ``UNDECIDED``.  Although alice now holds a session with it (built by its key exchange) and
    even after she trusts its key, ``encrypt`` never includes it while it is not listed: no
    outcome, no key.  Only the empty key-exchange answer goes to it (exempt, XEP-0384)."""
    net = Net()
    alice = net.device(ALICE, "d6-a")
    bob = net.device(BOB, "d6-b")
    deliver(net, bob, send(net, alice, BOB, "hello"), alice)
    alice.set_trust(BOB, bob.identity_key, TrustLevel.VERIFIED)
    x = net.device(BOB, "d6-x")
    # the server keeps serving lists without x (and alice's cache lacks it)
    net.pep.items[(BOB, DEVICE_LIST_NODE[O2], "current")] = o2_list(DeviceEntry(bob.device_id))
    net.pep.items[(BOB, DEVICE_LIST_NODE[LEGACY], "current")] = legacy_list(bob.device_id)
    for ns in NAMESPACES:
        alice.on_device_list(BOB, ns, net.pep.device_list(BOB, ns))
    for i in range(3):
        el = send(net, x, ALICE, f"from x {i}")
        out = alice.decrypt(el, BOB, to=ALICE)
        assert isinstance(out, Decrypted) and out.body == f"from x {i}"
        assert out.trust is TrustLevel.UNDECIDED and out.identity_key == x.identity_key
        fetches = [e for e in out.effects if isinstance(e, FetchDeviceList)]
        assert sorted(fetches, key=lambda f: f.namespace) == sorted(
            [FetchDeviceList(BOB, O2), FetchDeviceList(BOB, LEGACY)], key=lambda f: f.namespace
        )
        sends = [e for e in out.effects if isinstance(e, SendMessage)]
        assert all(s.device_id == x.device_id and s.reason == "key-exchange-answer" for s in sends)
        net.run(alice, out.effects)  # the re-fetch: x is still absent
        for _src, msg in net.take_outbox():
            assert isinstance(x.decrypt(msg.encrypted, ALICE, to=BOB), EmptyMessage)
    assert alice.storage.get("session", session_key("omemo2", BOB, x.device_id)) is not None
    for level in (TrustLevel.UNDECIDED, TrustLevel.VERIFIED):
        alice.set_trust(BOB, x.identity_key, level)
        res = net.encrypt(alice, [BOB], "to bob's listed devices")
        assert res.ready and set(outcomes(res, BOB)) == {bob.device_id}
        assert x.device_id not in rids(res.elements)


# ================================================================== D7


def test_D7_trust_is_per_jid_and_key_distrusted_senders_are_refused_and_bad_labels_ignored() -> None:
    """D7.  (a) Unknown key-share: mallory publishes bob's bundle (same identity key, valid
    signature) under her own JID.  Trust is keyed by (bare JID, identity key), so verifying the
    key for bob does not trust it for mallory, and distrusting it for mallory leaves bob's
    verification alone.  The shared key is visible (``devices()`` of both JIDs shows the same
    identity key); a legacy key exchange under it is refused (``SharedIdentityKey``, the test
    below); for bundles it is not flagged.  (b) A distrusted sender: ``SenderDistrusted``
    for a ratchet message sent before the decision and for a fresh key exchange, stored state
    unchanged, and it is excluded from encryption by the next ``encrypt``; undoing the decision
    makes the refused message decrypt (nothing was consumed).  The basic case is
    ``test_engine.py::test_distrusted_device_is_excluded_and_its_messages_refused_state_unchanged``;
    the atomicity of a trust change is in K5.  (c) A label with no ``labelsig``, a garbage one, one
    signed for another label, or one signed by another device's key is not shown, and labels play
    no part in what is encrypted."""
    # (a) unknown key-share
    net = Net()
    alice = net.device(ALICE, "d7-a", policy=TrustPolicy.MANUAL)
    bob = net.device(BOB, "d7-b")
    for ns in NAMESPACES:
        net.pep.items[(MALLORY, DEVICE_LIST_NODE[ns], "current")] = copy.deepcopy(net.pep.device_list(BOB, ns))
        item = bundle_item(ns, bob.device_id)
        net.pep.items[(MALLORY, *item)] = copy.deepcopy(net.pep.get(BOB, *item))
    net.prepare(alice, [BOB])
    net.prepare(alice, [MALLORY])
    ik = bob.identity_key
    assert [d.identity_key for d in alice.devices(MALLORY)] == [ik] == [d.identity_key for d in alice.devices(BOB)]
    alice.set_trust(BOB, ik, TrustLevel.VERIFIED)
    assert alice.trust.level(BOB, ik) is TrustLevel.VERIFIED
    assert alice.trust.level(MALLORY, ik) is TrustLevel.UNDECIDED
    res = alice.encrypt([MALLORY], "for mallory?")
    assert not res.ready and outcomes(res, MALLORY) == {bob.device_id: (O2, Outcome.UNDECIDED)} and not res.elements
    alice.set_trust(MALLORY, ik, TrustLevel.DISTRUSTED)
    assert alice.trust.level(BOB, ik) is TrustLevel.VERIFIED
    res = alice.encrypt([BOB], "for bob")
    assert res.ready and outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED)}
    assert isinstance(deliver(net, bob, res.elements[O2], alice), Decrypted)
    res = alice.encrypt([MALLORY], "for mallory?")
    assert not res.ready and outcomes(res, MALLORY) == {bob.device_id: (O2, Outcome.DISTRUSTED)}

    # (b) a distrusted sender
    net = Net()
    alice = net.device(ALICE, "d7-a2")
    carol = net.device(CAROL, "d7-c")
    deliver(net, alice, send(net, carol, ALICE, "hi"), carol)
    late = send(net, carol, ALICE, "sent before the decision")
    alice.set_trust(CAROL, carol.identity_key, TrustLevel.DISTRUSTED)
    res = alice.encrypt([CAROL], "no")
    assert not res.ready and res.elements == {} and outcomes(res, CAROL) == {carol.device_id: (O2, Outcome.DISTRUSTED)}
    net.run(carol, carol.replace_session(ALICE, alice.device_id, O2))
    fresh_kex = send(net, carol, ALICE, "a new key exchange")
    assert kex_flag(fresh_kex, alice.device_id) == "true"
    for el in (late, fresh_kex):
        before = snapshot(alice)
        with pytest.raises(SenderDistrusted):
            alice.decrypt(el, CAROL, to=ALICE)
        assert snapshot(alice) == before
    # the decision is undone by the user: both messages decrypt (nothing was consumed)
    alice.set_trust(CAROL, carol.identity_key, TrustLevel.VERIFIED)
    out = alice.decrypt(late, CAROL, to=ALICE)
    assert isinstance(out, Decrypted) and out.body == "sent before the decision"

    # (c) labels
    net = Net()
    alice = net.device(ALICE, "d7-a3")
    bob = net.device(BOB, "d7-b3", label="Bob's phone")
    net.device(DAVE, "d7-d3", label="Bob's phone")  # another device, same label text
    net.prepare(alice, [BOB])
    assert [d.label for d in alice.devices(BOB)] == ["Bob's phone"]
    (good,) = omemo2_xml.parse_device_list(net.pep.device_list(BOB, O2)).devices
    (foreign,) = omemo2_xml.parse_device_list(net.pep.device_list(DAVE, O2)).devices
    assert good.label_signature is not None and foreign.label_signature is not None
    for label, sig in [
        ("Evil", None),
        ("Bob's phone", None),
        ("Evil", good.label_signature),
        ("Bob's phone", bytes(64)),
        ("Bob's phone", foreign.label_signature),
    ]:
        alice.on_device_list(BOB, O2, o2_list(DeviceEntry(bob.device_id, label, sig)))
        (info,) = alice.devices(BOB)
        assert info.label is None, (label, sig)
        res = net.encrypt(alice, [BOB], "labels do not matter for sending")
        assert outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED)}
    alice.on_device_list(BOB, O2, o2_list(good))
    assert [d.label for d in alice.devices(BOB)] == ["Bob's phone"]


def test_D7_a_legacy_key_exchange_under_a_key_known_for_another_jid_is_refused_and_consumes_nothing() -> None:
    """Issue 14.4 (D7, shared key, legacy OMEMO): alice's legacy key exchange for bob is forwarded
    to bob as a 1:1 message from mallory before alice's own copy arrives.  Legacy messages name no
    sender; alice's key is known to bob for alice, so the forged copy is ``SharedIdentityKey``
    (naming alice), with bob's stored state unchanged: no session, no trust for mallory, the
    one-time prekey kept.  Alice's own copy then decrypts.  Verifying the key for mallory is the
    way to accept a genuinely shared key.  (OMEMO 2 is covered by the envelope's ``<from>``.)"""
    net = Net()
    alice = net.device(ALICE, "d7-a5")
    bob = net.device(BOB, "d7-b5", namespaces=(LEGACY,))
    net.prepare(bob, [ALICE])  # bob has seen alice's devices: her key is known for alice
    assert bob.trust.level(ALICE, alice.identity_key) is not None
    real = send(net, alice, BOB, "for bob", LEGACY)
    assert kex_flag(real, bob.device_id) == "true"
    before = snapshot(bob)
    with pytest.raises(SharedIdentityKey) as refused:
        bob.decrypt(copy.deepcopy(real), MALLORY, to=BOB)
    assert refused.value.other_jids == (ALICE,)
    assert snapshot(bob) == before
    assert bob.trust.level(MALLORY, alice.identity_key) is None
    out = deliver(net, bob, real, alice)
    assert isinstance(out, Decrypted) and out.body == "for bob" and out.jid == ALICE

    # a key the user verified for the other JID too is accepted there
    net2 = Net()
    carol = net2.device(CAROL, "d7-c5")
    dave = net2.device(DAVE, "d7-d5", namespaces=(LEGACY,))
    net2.prepare(dave, [CAROL])
    dave.set_trust(MALLORY, carol.identity_key, TrustLevel.VERIFIED)
    got = dave.decrypt(send(net2, carol, DAVE, "shared on purpose", LEGACY), MALLORY, to=DAVE)
    assert isinstance(got, Decrypted) and got.jid == MALLORY


def test_D7_a_label_is_verified_with_the_key_the_device_is_bound_to_not_a_replaced_bundle() -> None:
    """Issue 14.7: the server replaces bob's bundle (same device id) with one of its own key and
    lists a label signed by that key.  The device's sessions and trust are on bob's key: the
    label is not shown; bob's own signed label still is."""
    net = Net()
    alice = net.device(ALICE, "d7-a4")
    bob = net.device(BOB, "d7-b4", label="Bob's phone")
    deliver(net, bob, send(net, alice, BOB, "hi"), alice)
    assert [(d.identity_key, d.label) for d in alice.devices(BOB)] == [(bob.identity_key, "Bob's phone")]
    server = net.device(MALLORY, "d7-m4", label="Bob's new phone")
    (forged,) = omemo2_xml.parse_device_list(net.pep.device_list(MALLORY, O2)).devices
    assert forged.label_signature is not None
    replaced = net.pep.get(MALLORY, *bundle_item(O2, server.device_id))
    assert replaced is not None
    alice.on_bundle(BOB, bob.device_id, O2, replaced)
    alice.on_device_list(BOB, O2, o2_list(DeviceEntry(bob.device_id, forged.label, forged.label_signature)))
    (info,) = alice.devices(BOB)
    assert info.identity_key == bob.identity_key and info.label is None, info
    (good,) = omemo2_xml.parse_device_list(net.pep.device_list(BOB, O2)).devices
    alice.on_device_list(BOB, O2, o2_list(good))
    assert [d.label for d in alice.devices(BOB)] == ["Bob's phone"]


# ================================================================== D8


def test_D8_group_and_private_messages_cannot_be_turned_into_each_other() -> None:
    """D8 (engine part).  A group message carries the room in its SCE ``<to>``: it decrypts with
    ``to=room, require_to=True``.  The same bytes presented as a 1:1 message (``to=bob``) and a
    1:1 message presented as a group message (``to=room, require_to=True``) raise
    ``AffixMismatch`` with the stored state unchanged, and later traffic still decrypts.
    Refusing semi-anonymous rooms, keying sessions by real JID, ``UnknownSender`` for an unknown
    real JID and trusting ``muc#user`` only from the room's own archive are the client's job (the
    engine is given the occupant's real JID as ``sender``): ``tests/test_server_muc.py`` and
    ``tests/test_muc_state.py`` show the first three (no room archive is read yet)."""
    net = Net()
    alice = net.device(ALICE, "d8-a")
    bob = net.device(BOB, "d8-b")
    carol = net.device(CAROL, "d8-c")
    deliver(net, bob, send(net, alice, BOB, "hello bob"), alice)
    deliver(net, carol, send(net, alice, CAROL, "hello carol"), alice)
    group = alice.encrypt([BOB, CAROL], "to the room", to=ROOM)
    assert group.ready
    private = send(net, alice, BOB, "just for bob")

    for label, element, kw in [
        ("group message as a private one", group.elements[O2], {"to": BOB}),
        ("private message as a group one", private, {"to": ROOM, "require_to": True}),
        ("private message as a group one (no require_to)", private, {"to": ROOM}),
        ("group message to another room", group.elements[O2], {"to": "other@muc.example.org", "require_to": True}),
    ]:
        before = snapshot(bob)
        with pytest.raises(AffixMismatch):
            bob.decrypt(element, ALICE, **kw)
        assert snapshot(bob) == before, label
    out = bob.decrypt(group.elements[O2], ALICE, to=ROOM, require_to=True)
    assert isinstance(out, Decrypted) and out.body == "to the room"
    out = bob.decrypt(private, ALICE, to=BOB)
    assert isinstance(out, Decrypted) and out.body == "just for bob"
    out = carol.decrypt(group.elements[O2], ALICE, to=ROOM, require_to=True)
    assert isinstance(out, Decrypted) and out.body == "to the room"


# ================================================================== K1


def test_K1_wrong_passphrase_and_header_edits_are_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K1.  A wrong passphrase is ``WrongPassphrase`` after the same Argon2id work as the right one
    (same parameters, one derivation each); a header lowered below the floor is
    ``KeystoreDowngrade`` before any derivation; every other header edit fails (the header is the
    associated data of the wrapped key).  In every case the database, its WAL and the generation
    file are byte-identical afterwards, and the store still opens with its identity.
    (``test_keystore.py::test_wrong_passphrase`` and ``::test_header_edits`` cover the error
    types; this adds the cost check and "nothing is written".)"""
    import nacl.pwhash

    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k1-a")
    ik = alice.identity_key
    ks.close()

    calls: list[tuple[int, int]] = []
    real_kdf = nacl.pwhash.argon2id.kdf

    def spy(size: int, password: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
        calls.append((opslimit, memlimit))
        return real_kdf(size, password, salt, opslimit=opslimit, memlimit=memlimit)

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", spy)
    files = store_files(path)
    for wrong in ("not it", PW + " ", PW.upper(), "x" * 1000):
        calls.clear()
        with pytest.raises(WrongPassphrase):
            Keystore.open(path, wrong)
        assert calls == [(FAST.passes, FAST.memory_kib * 1024)]
        assert store_files(path) == files
    calls.clear()
    assert identity_of(path) == ik
    assert calls == [(FAST.passes, FAST.memory_kib * 1024)]  # the same cost as a wrong one

    (header,) = sql(path, "SELECT value FROM meta WHERE name='header'")[0]
    header = bytes(header)
    # magic 6, version 1, kdf 1, t 4, m 4, p 1, salt 16
    edits: list[tuple[str, int, bytes, type[E2EEError], bool]] = [
        ("passes 1", 8, (1).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("passes 0", 8, (0).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("memory 8 MiB", 12, (8 * 1024).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("memory 1 KiB", 12, (1).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("memory floor - 1", 12, (FAST.memory_kib - 1).to_bytes(4, "big"), KeystoreDowngrade, False),
        # issue 14.5: above the ceiling, refused before any derivation (minutes, or killed for memory)
        ("passes 2^32 - 1", 8, b"\xff\xff\xff\xff", KeystoreCorrupt, False),
        ("passes ceiling + 1", 8, (MAX_PASSES + 1).to_bytes(4, "big"), KeystoreCorrupt, False),
        ("memory 4 TiB", 12, b"\xff\xff\xff\xff", KeystoreCorrupt, False),
        ("memory ceiling + 1", 12, (MAX_MEMORY_KIB + 1).to_bytes(4, "big"), KeystoreCorrupt, False),
        ("memory high byte", 12, bytes([header[12] | 0x80]), KeystoreCorrupt, False),
        ("passes up", 8, (FAST.passes + 1).to_bytes(4, "big"), WrongPassphrase, True),
        ("memory up", 12, (FAST.memory_kib + 1024).to_bytes(4, "big"), WrongPassphrase, True),
        ("salt", 17, bytes(16), WrongPassphrase, True),
        ("salt bit", 32, bytes([header[32] ^ 1]), WrongPassphrase, True),
        ("lanes", 16, b"\x02", UnsupportedKeystoreVersion, False),
        ("version", 6, b"\x02", UnsupportedKeystoreVersion, False),
        ("kdf id", 7, b"\x02", UnsupportedKeystoreVersion, False),
        ("magic", 0, b"E2EEKX", KeystoreCorrupt, False),
    ]
    for label, at, value, error, derives in edits:
        edited = header[:at] + value + header[at + len(value) :]
        assert len(edited) == len(header) and edited != header, label
        sql(path, "UPDATE meta SET value=? WHERE name='header'", edited)
        damaged = store_files(path)
        calls.clear()
        with pytest.raises(error):
            Keystore.open(path, PW)
        assert store_files(path) == damaged, f"{label}: the failed open wrote to the store"
        assert bool(calls) == derives, f"{label}: derivations {calls}"
    for label, edited in [("truncated", header[:-1]), ("longer", header + b"\x00"), ("empty", b"")]:
        sql(path, "UPDATE meta SET value=? WHERE name='header'", edited)
        damaged = store_files(path)
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)
        assert store_files(path) == damaged, label
    sql(path, "UPDATE meta SET value=? WHERE name='header'", header)
    assert identity_of(path) == ik


# ================================================================== K2


def test_K2_a_moved_record_is_CorruptRecord_through_the_engine_never_a_missing_one(tmp_path: Path) -> None:
    """K2.  On alice's keystore: (a) the sealed session of bob's device 1 copied over the session
    row of bob's device 2; (b) carol's trust record copied over bob's; (c) bob's device-1 session
    moved into the row of bob's *trust* record (another table).  Through the engine, ``encrypt`` to
    bob and ``decrypt`` of bob's messages raise ``CorruptRecord`` -- never a silent "no session"
    (a new key exchange) or "no trust" (a new first sight) -- and the stored rows are unchanged
    afterwards.  Sessions and trust of other contacts keep working.  ``Keystore.get`` alone is
    covered by ``test_keystore.py::test_a_record_copied_into_another_row_is_corrupt_not_missing``.
    There is a single prekey record (``own/prekeys``), so "swap two prekey rows" has no rows to
    swap; moving it is the same kind of damage as (a)."""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k2-a")
    b1 = net.device(BOB, "k2-b1")
    b2 = net.device(BOB, "k2-b2")
    carol = net.device(CAROL, "k2-c")
    res = net.encrypt(alice, [BOB], "hello bob")
    for b in (b1, b2):
        deliver(net, b, res.elements[O2], alice)
    deliver(net, carol, send(net, alice, CAROL, "hello carol"), alice)
    from_b1 = send(net, b1, ALICE, "from b1")
    from_b2 = send(net, b2, ALICE, "from b2")
    blind = ks._k().blind_key
    rows = {
        "s1": blind("session", session_key("omemo2", BOB, b1.device_id)),
        "s2": blind("session", session_key("omemo2", BOB, b2.device_id)),
        "trust bob": blind("trust", BOB),
        "trust carol": blind("trust", CAROL),
    }
    ks.close()
    net.engines.remove(alice)
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for p in (path, Path(f"{path}.generation")):
        shutil.copy(p, pristine / p.name)
    value = {name: bytes(sql(path, "SELECT v FROM records WHERE k=?", k)[0][0]) for name, k in rows.items()}
    carol_state = snapshot(carol)

    for label, src, dst, hits in [
        ("session of b1 over b2", "s1", "s2", [from_b2]),
        ("carol's trust over bob's", "trust carol", "trust bob", [from_b1, from_b2]),
        ("session of b1 into bob's trust row", "s1", "trust bob", [from_b1, from_b2]),
    ]:
        for p in (path, Path(f"{path}.generation")):
            shutil.copy(pristine / p.name, p)
        sql(path, "UPDATE records SET v=? WHERE k=?", value[src], rows[dst])
        damaged = raw_records(path)
        ks = Keystore.open(path, PW)
        engine = Engine(ks, rng=seeded_rng(f"k2-{label}"), clock=net.clock)
        with pytest.raises(CorruptRecord):
            engine.encrypt([BOB], "must not start a new session")
        with pytest.raises(CorruptRecord):
            engine.prepare([BOB])
        for el in hits:
            with pytest.raises(CorruptRecord):
                engine.decrypt(el, BOB, to=ALICE)
        assert raw_records(path) == damaged, f"{label}: a failed operation wrote"  # read beside the open store
        if label == "session of b1 over b2":  # b1's own row is intact
            out = engine.decrypt(copy.deepcopy(from_b1), BOB, to=ALICE)
            assert isinstance(out, Decrypted) and out.body == "from b1"
        # other contacts are unaffected (carol is reset too: alice's store restarts from the copy)
        restore_memory(carol, carol_state)
        res = engine.encrypt([CAROL], f"carol after {label}")
        assert res.ready and outcomes(res, CAROL) == {carol.device_id: (O2, Outcome.ENCRYPTED)}
        out = carol.decrypt(res.elements[O2], ALICE, to=CAROL)
        assert isinstance(out, Decrypted) and out.body == f"carol after {label}"
        ks.close()
        after = dict(raw_records(path))
        assert after[rows[dst]] == value[src], f"{label}: the damaged row was replaced"


# ================================================================== K3


def test_K3_corruption_and_unknown_versions_are_typed_and_never_reset_the_identity(tmp_path: Path) -> None:
    """K3.  An unknown schema version is ``UnsupportedKeystoreVersion``; a flipped byte in the
    sealed ``generation`` row is ``KeystoreCorrupt``; a damaged generation file beside the database
    is ``KeystoreCorrupt``; a damaged identity record opens the store but the engine gets
    ``CorruptRecord`` from both ``Engine(...)`` and ``Engine.create(...)`` (no fresh identity is
    made over it); a deleted identity record is a ``UsageError``, not a silent new identity.
    Torn WAL writes (the files copied while the store was open, then one WAL frame damaged): SQLite
    drops the commits from that frame on, and the loss is never silent -- ``RollbackDetected``
    (the file is behind its generation counter) for the last frame, ``KeystoreCorrupt`` for the
    first (nothing had been checkpointed, so the file has no tables); accepting the rollback gives
    back the same identity.  After undoing each damage in place, the store opens with the same
    identity key.  (``test_keystore.py`` covers flipped record bytes, truncation and foreign
    files.)  GAP: no schema migration exists yet (one version only), so there are no golden files
    to migrate from."""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k3-a")
    ik = alice.identity_key
    identity_row = ks._k().blind_key("own", "identity")
    ks.close()
    net.engines.remove(alice)
    records = raw_records(path)

    # unknown schema version
    (header,) = sql(path, "SELECT value FROM meta WHERE name='header'")[0]
    header = bytes(header)
    for version in (0, 2, 255):
        sql(path, "UPDATE meta SET value=? WHERE name='header'", header[:6] + bytes([version]) + header[7:])
        with pytest.raises(UnsupportedKeystoreVersion):
            Keystore.open(path, PW)
        sql(path, "UPDATE meta SET value=? WHERE name='header'", header)
        assert identity_of(path) == ik and raw_records(path) == records

    # the sealed generation row
    (gen,) = sql(path, "SELECT value FROM meta WHERE name='generation'")[0]
    gen = bytes(gen)
    for i in (0, 1, 12, 30, len(gen) - 1):
        flipped = bytearray(gen)
        flipped[i] ^= 0x40
        sql(path, "UPDATE meta SET value=? WHERE name='generation'", bytes(flipped))
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)
        sql(path, "UPDATE meta SET value=? WHERE name='generation'", gen)
        assert identity_of(path) == ik
    sql(path, "DELETE FROM meta WHERE name='generation'")
    with pytest.raises(KeystoreCorrupt):
        Keystore.open(path, PW)
    sql(path, "INSERT INTO meta VALUES ('generation', ?)", gen)
    assert identity_of(path) == ik

    # the generation file beside the database
    sidecar = Path(f"{path}.generation")
    good = sidecar.read_bytes()
    for bad in (good[:-1], bytes([good[0] ^ 1]) + good[1:], good[:8] + bytes(32)):
        sidecar.write_bytes(bad)
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)
        sidecar.write_bytes(good)
    assert identity_of(path) == ik

    # the identity record
    (sealed,) = sql(path, "SELECT v FROM records WHERE k=?", identity_row)[0]
    sealed = bytes(sealed)
    flipped = bytearray(sealed)
    flipped[len(flipped) // 2] ^= 0x01
    sql(path, "UPDATE records SET v=? WHERE k=?", bytes(flipped), identity_row)
    with Keystore.open(path, PW) as ks:
        with pytest.raises(CorruptRecord):
            Engine(ks)
        with pytest.raises(CorruptRecord):
            Engine.create(ks, ALICE)
    sql(path, "UPDATE records SET v=? WHERE k=?", sealed, identity_row)
    assert identity_of(path) == ik and raw_records(path) == records
    sql(path, "DELETE FROM records WHERE k=?", identity_row)
    with Keystore.open(path, PW) as ks, pytest.raises(UsageError):
        Engine(ks)
    sql(path, "INSERT INTO records VALUES (?, ?)", identity_row, sealed)
    assert identity_of(path) == ik and raw_records(path) == records

    # a torn write at the end of the WAL (files copied while the store is open)
    ks = Keystore.open(path, PW)
    alice = Engine(ks, rng=seeded_rng("k3-a2"), clock=net.clock)
    bob = net.device(BOB, "k3-b")
    net.engines.append(alice)
    for i in range(3):
        deliver(net, bob, send(net, alice, BOB, f"m{i}"), alice)
    crash = tmp_path / "crash"
    crash.mkdir()
    copied = crash / path.name
    for suffix in ("", "-wal", ".generation"):
        shutil.copy(f"{path}{suffix}", f"{copied}{suffix}")
    ks.close()
    wal = Path(f"{copied}-wal")
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    frame = 24 + page_size
    assert len(data) >= 32 + 2 * frame and (len(data) - 32) % frame == 0
    seen = set()
    last = len(data) - frame
    # undamaged; page data and header of the last frame (its commit is lost); the first frame
    # (nothing before it was ever checkpointed: the file looks empty)
    for where in (None, last + 24 + 100, last + 3, 32 + 24 + 5):
        torn = crash / f"torn{where}"
        torn.mkdir()
        db = torn / path.name
        shutil.copy(copied, db)
        shutil.copy(f"{copied}.generation", f"{db}.generation")
        damaged = bytearray(data)
        if where is None:
            Path(f"{db}-wal").write_bytes(data)
            assert identity_of(db) == ik  # a crash copy as such opens, at its last commit
            continue
        damaged[where] ^= 0xFF
        Path(f"{db}-wal").write_bytes(bytes(damaged))
        try:
            assert identity_of(db) == ik
            seen.add("opened")
        except RollbackDetected:
            assert identity_of(db, accept_rollback=True) == ik
            seen.add("rollback")
        except KeystoreCorrupt:
            seen.add("corrupt")
            with pytest.raises(KeystoreCorrupt):  # and stays so: nothing was "repaired" into a new store
                Keystore.open(db, PW)
    assert seen and "opened" not in seen, seen  # a lost commit is always reported
    assert identity_of(path) == ik


def test_K3_a_damaged_schema_or_meta_row_is_KeystoreCorrupt_and_the_file_is_unchanged(tmp_path: Path) -> None:
    """Issue 14.6: names in the schema that are not UTF-8 (sqlite3 then raises
    ``UnicodeDecodeError`` from its error message), a malformed schema, and a header row that is
    an integer or text instead of bytes are ``KeystoreCorrupt``, with the file left as it was."""
    path = tmp_path / "alice.db"
    Keystore.create(path, PW, kdf=FAST).close()
    pristine = path.read_bytes()
    damages = {
        "schema name not UTF-8": "UPDATE sqlite_master SET name = CAST(X'ff41' AS TEXT), sql = CAST(X'4352454154452054414231' AS TEXT) WHERE name = 'meta'",
        "schema sql malformed": "UPDATE sqlite_master SET sql = 'CREATE TABLE meta(' WHERE name = 'meta'",
        "header an integer": "UPDATE meta SET value = 1000000000000 WHERE name = 'header'",
        "header text": "UPDATE meta SET value = 'abc' WHERE name = 'header'",
    }

    def restore() -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(pristine)

    for label, statement in damages.items():
        restore()
        db = sqlite3.connect(path)
        db.execute("PRAGMA writable_schema=ON")
        db.execute(statement)
        db.commit()
        db.close()
        damaged = path.read_bytes()
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)
        assert path.read_bytes() == damaged, label
    restore()
    Keystore.open(path, PW).close()


# ================================================================== K4


def test_K4_restored_copy_after_accept_rollback_keeps_distrust_and_resets_other_trust(tmp_path: Path) -> None:
    """K4.  A week-old copy of alice's keystore is put back.  Opening it is ``RollbackDetected``;
    after ``accept_rollback=True`` and ``Engine.after_rollback()``: a key DISTRUSTED in the copy
    stays DISTRUSTED; BLIND and VERIFIED keys go back to UNDECIDED -- including carol's key, which
    the copy still has as BLIND although the user distrusted it after the copy was made -- so
    nothing is encrypted for them until the user decides again; the restored sessions are
    quarantined.  (``test_keystore.py::test_restored_older_copy_is_rollback_detected`` and
    ``test_keystore_engine.py::test_restored_copy_is_detected_and_no_ratchet_key_is_reused``
    cover detection, quarantine, session replacement and no (ratchet key, counter) reuse.)"""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k4-a")
    a2 = net.device(ALICE, "k4-a2")
    peers = {jid: net.device(jid, f"k4-{jid}") for jid in (BOB, CAROL, DAVE, MALLORY)}
    for jid, peer in peers.items():
        deliver(net, peer, send(net, alice, jid, f"hello {jid}"), alice)
    alice.set_trust(BOB, peers[BOB].identity_key, TrustLevel.VERIFIED)
    alice.set_trust(DAVE, peers[DAVE].identity_key, TrustLevel.DISTRUSTED)
    alice.set_trust(MALLORY, peers[MALLORY].identity_key, TrustLevel.UNDECIDED)
    in_copy = {
        BOB: TrustLevel.VERIFIED,
        CAROL: TrustLevel.BLIND,
        DAVE: TrustLevel.DISTRUSTED,
        MALLORY: TrustLevel.UNDECIDED,
    }
    for jid, level in in_copy.items():
        assert alice.trust.level(jid, peers[jid].identity_key) is level
    assert alice.trust.level(ALICE, a2.identity_key) is TrustLevel.BLIND
    ks.close()  # closed: a consistent copy
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy(path, backup / path.name)
    net.clock.advance(timedelta(days=7))
    ks = Keystore.open(path, PW)
    alice = replace_engine(net, alice, Engine(ks, rng=seeded_rng("k4-a-later"), clock=net.clock))
    alice.set_trust(CAROL, peers[CAROL].identity_key, TrustLevel.DISTRUSTED)  # after the copy
    deliver(net, peers[BOB], send(net, alice, BOB, "after the copy"), alice)
    ks.close()
    shutil.copy(backup / path.name, path)  # the restore (the generation file stays)
    with pytest.raises(RollbackDetected):
        Keystore.open(path, PW)
    ks = Keystore.open(path, PW, accept_rollback=True)
    assert ks.rolled_back
    alice = replace_engine(net, alice, Engine(ks, rng=seeded_rng("k4-a-restored"), clock=net.clock))
    assert alice.trust.level(CAROL, peers[CAROL].identity_key) is TrustLevel.BLIND  # what the copy says
    assert alice.after_rollback() == len(peers) + 1  # one session per peer and one with a2
    expected = {
        BOB: TrustLevel.UNDECIDED,
        CAROL: TrustLevel.UNDECIDED,
        DAVE: TrustLevel.DISTRUSTED,
        MALLORY: TrustLevel.UNDECIDED,
    }
    for jid, level in expected.items():
        assert alice.trust.level(jid, peers[jid].identity_key) is level, jid
        assert {d.trust for d in alice.devices(jid)} == {level}
    assert alice.trust.level(ALICE, a2.identity_key) is TrustLevel.UNDECIDED  # own devices too
    # nothing goes out until the user acts: quarantined sessions, undecided or distrusted keys
    for jid in peers:
        res = alice.encrypt([jid], "stale state")
        assert not res.ready and res.elements == {}
    # after replacing carol's session, carol is still undecided: no silent re-trust
    net.run(alice, alice.replace_session(CAROL, peers[CAROL].device_id, O2))
    res = net.encrypt(alice, [CAROL], "carol?")
    assert outcomes(res, CAROL) == {peers[CAROL].device_id: (O2, Outcome.UNDECIDED)} and not res.ready
    ks.close()


def test_K4_a_copy_restored_without_its_generation_file_is_RollbackDetected(tmp_path: Path) -> None:
    """Issue 14.3: an older copy of the database is put back and the ``.generation`` file beside
    it is gone (not copied, deleted).  A database whose sealed generation is above 0 with no
    generation file is ``RollbackDetected`` with the file unchanged; ``accept_rollback`` opens it
    as rolled back.  A new keystore (generation 0) never written to opens without the file."""
    path = tmp_path / "alice.db"
    sidecar = Path(f"{path}.generation")
    Keystore.create(path, PW, kdf=FAST).close()
    sidecar.unlink()
    with Keystore.open(path, PW) as ks:  # generation 0: nothing was ever committed
        assert not ks.rolled_back and ks.generation == 0
    net = Net()
    alice, ks = ks_device(net, tmp_path / "a2.db", ALICE, "k4-gen")
    assert ks.generation > 0
    ks.close()
    path = tmp_path / "a2.db"
    Path(f"{path}.generation").unlink()
    before = path.read_bytes()
    with pytest.raises(RollbackDetected):
        Keystore.open(path, PW)
    assert path.read_bytes() == before and not Path(f"{path}.generation").exists()
    with Keystore.open(path, PW, accept_rollback=True) as ks:
        assert ks.rolled_back
        engine = Engine(ks, rng=seeded_rng("k4-gen-2"), clock=net.clock)
        assert engine.jid == ALICE
    with Keystore.open(path, PW) as ks:  # the file is back: no rollback from now on
        assert not ks.rolled_back


# ================================================================== K5


class Crash(BaseException):
    """The simulated crash (not an ``Exception``: nothing in the engine may swallow it)."""


class HookedConnection:
    """Stands in for the keystore's sqlite3 connection: calls ``before(statement)`` before every
    statement, which may raise :class:`Crash` or copy the files (a kill at that moment)."""

    def __init__(self, db: sqlite3.Connection, before: Callable[[str], None]) -> None:
        self._db = db
        self._before = before

    def execute(self, statement: str, *args: Any) -> sqlite3.Cursor:
        self._before(statement)
        return self._db.execute(statement, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def is_write(statement: str) -> bool:
    return not statement.lstrip().upper().startswith(("SELECT", "PRAGMA"))


def copy_store(src: Path, dst_dir: Path) -> Path:
    """Copy a keystore's files (database, WAL when present, generation file) into ``dst_dir``."""
    dst_dir.mkdir(parents=True)
    for suffix in ("", "-wal", ".generation"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy(f"{src}{suffix}", dst_dir / f"{src.name}{suffix}")
    return dst_dir / src.name


def crash_everywhere(tmp: Path, base: Path, label: str, op: Callable[[Engine], object], clock: Any) -> None:
    """Run ``op`` on copies of the closed keystore ``base`` and check K5 for it:

    * the write calls (``Keystore.put``/``delete``) it makes are counted; for N = 1..k the N-th
      raises :class:`Crash`; after closing and reopening, the store equals the old state, the
      identity is the same, and running ``op`` again reaches exactly the new state;
    * a crash after the commit, before the generation file is written: the new state, no
      ``RollbackDetected``;
    * a kill before every write statement and before the generation file (the files copied
      as they are on disk at that moment, without any rollback in the process): each copy opens
      in the old or the new state, the old one up to the COMMIT and the new one after it.
    """

    def engine(ks: Keystore) -> Engine:
        return Engine(ks, rng=seeded_rng(f"k5-{label}"), clock=clock)

    def fresh(tag: str) -> Keystore:
        return Keystore.open(copy_store(base, tmp / label / tag), PW)

    ks = fresh("clean")
    old = dump(ks)
    ik = engine(ks).identity_key
    writes = 0
    real_put, real_delete = ks.put, ks.delete

    def counting_put(table: str, key: str, value: bytes) -> None:
        nonlocal writes
        writes += 1
        real_put(table, key, value)

    def counting_delete(table: str, key: str) -> bool:
        nonlocal writes
        writes += 1
        return real_delete(table, key)

    ks.put, ks.delete = counting_put, counting_delete  # type: ignore[method-assign]
    op(engine(ks))
    new = dump(ks)
    ks.close()
    assert new != old and writes >= 1, label
    with Keystore.open(ks.path, PW) as again:
        assert dump(again) == new

    for n in range(1, writes + 1):
        ks = fresh(f"raise-{n}")
        count = 0
        real_put, real_delete = ks.put, ks.delete

        def crashing_put(table: str, key: str, value: bytes, n: int = n, real: Any = real_put) -> None:
            nonlocal count
            count += 1
            if count == n:
                raise Crash(f"before write {n}")
            real(table, key, value)

        def crashing_delete(table: str, key: str, n: int = n, real: Any = real_delete) -> bool:
            nonlocal count
            count += 1
            if count == n:
                raise Crash(f"before write {n}")
            return bool(real(table, key))

        ks.put, ks.delete = crashing_put, crashing_delete  # type: ignore[method-assign]
        with pytest.raises(Crash):
            op(engine(ks))
        ks.close()
        with Keystore.open(ks.path, PW) as again:
            assert dump(again) == old, f"{label}: crash before write {n}/{writes} left a partial state"
            e = engine(again)
            assert e.identity_key == ik
            op(e)
            assert dump(again) == new, f"{label}: after a crash at {n}, running it again differs"

    ks = fresh("after-commit")
    real_sidecar = ks._write_sidecar

    def no_sidecar(generation: int) -> None:
        raise Crash("after the commit")

    ks._write_sidecar = no_sidecar  # type: ignore[method-assign]
    with pytest.raises(Crash):
        op(engine(ks))
    ks._write_sidecar = real_sidecar  # type: ignore[method-assign]
    ks.close()
    with Keystore.open(ks.path, PW) as again:
        assert dump(again) == new and engine(again).identity_key == ik

    ks = fresh("kills")
    snaps: list[tuple[str, Path]] = []
    committed = False

    def kill_here(what: str) -> None:
        snaps.append((f"{what} (committed: {committed})", copy_store(ks.path, tmp / label / f"kill-{len(snaps)}")))

    def before(statement: str) -> None:
        nonlocal committed
        if is_write(statement):
            kill_here(statement.split("(")[0][:40])
            committed = committed or statement.strip().upper() == "COMMIT"

    assert ks._db is not None
    ks._db = HookedConnection(ks._db, before)  # type: ignore[assignment]
    real_sidecar = ks._write_sidecar

    def sidecar_then_kill(generation: int) -> None:
        kill_here("generation file")
        real_sidecar(generation)

    ks._write_sidecar = sidecar_then_kill  # type: ignore[method-assign]
    op(engine(ks))
    ks._db = ks._db._db  # type: ignore[union-attr]
    ks._write_sidecar = real_sidecar  # type: ignore[method-assign]
    kill_here("after the operation")
    ks.close()
    assert len(snaps) >= writes + 3, snaps  # BEGIN, the writes, the generation, COMMIT, the file
    for what, copied in snaps:
        with Keystore.open(copied, PW) as again:
            state = dump(again)
            assert state in (old, new), f"{label}: killed at {what}: neither the old nor the new state"
            expect_new = "generation file" in what or "after the operation" in what
            assert (state == new) is expect_new, f"{label}: killed at {what}"
            assert engine(again).identity_key == ik


def test_K5_every_multi_record_operation_is_all_or_nothing_under_injected_crashes(tmp_path: Path) -> None:
    """K5 without processes (``test_crash.py`` SIGKILLs a real process 200 times; R14).  For
    signed-prekey rotation (``maintenance`` with the previous key expiring and the current one due),
    ``publish`` (rotation and both own device lists), prekey consumption and refill (decrypting a
    key exchange), the end of a catch-up (hidden prekeys deleted, sessions answered), a trust
    change, the trust and session reset after a rollback, and device-list updates (a contact's,
    and our own list lacking us, which is rewritten): a crash before each write call, after the
    commit, and a kill (file copy) before each SQL write statement all leave exactly the old or
    the new state, with the same identity; redoing the operation reaches the same new state.
    See :func:`crash_everywhere`.  The passphrase change: a crash before each of its statements
    and after its commit leaves a store that exactly one of the two passphrases opens (the old
    one before the COMMIT, the new one after), records untouched.  No schema migration exists yet
    (one keystore version), so there is none to crash."""
    net = Net()
    base = tmp_path / "base" / "alice.db"
    base.parent.mkdir()
    alice, ks = ks_device(net, base, ALICE, "k5-a")
    bob = net.device(BOB, "k5-b")
    carol = net.device(CAROL, "k5-c")
    dave = net.device(DAVE, "k5-d")
    deliver(net, bob, send(net, alice, BOB, "hello bob"), alice)
    deliver(net, carol, send(net, alice, CAROL, "hello carol"), alice)
    alice.set_trust(BOB, bob.identity_key, TrustLevel.VERIFIED)
    t0 = net.clock.now
    net.clock.advance(SPK_ROTATION + timedelta(days=1))
    assert alice.maintenance()  # spk 2; spk 1 kept for the grace period
    net.run(alice, alice.publish())
    kex = send(net, dave, ALICE, "a key exchange")  # on spk 2, not yet decrypted
    assert kex_flag(kex, alice.device_id) == "true"
    ks.close()
    net.engines.remove(alice)
    t1 = net.clock.now

    clock = net.clock

    def timed(when: Any, op: Callable[[Engine], object]) -> Callable[[Engine], object]:
        def run(e: Engine) -> object:
            clock.now = when
            return op(e)

        return run

    later = t0 + SPK_ROTATION + SPK_GRACE + timedelta(days=2)  # spk 1 expired, spk 2 due
    scenarios: dict[str, Callable[[Engine], object]] = {
        "spk-rotation": timed(later, lambda e: e.maintenance()),
        "publish": timed(later, lambda e: e.publish()),
        "prekey-consumption": timed(t1, lambda e: e.decrypt(copy.deepcopy(kex), DAVE, to=ALICE)),
        "trust-change": timed(t1, lambda e: e.set_trust(CAROL, carol.identity_key, TrustLevel.DISTRUSTED)),
        "trust-reset-after-rollback": timed(t1, lambda e: e.after_rollback()),
        "contact-device-list": timed(
            t1, lambda e: e.on_device_list(BOB, O2, o2_list(DeviceEntry(bob.device_id), DeviceEntry(77)))
        ),
        "own-device-list-without-us": timed(t1, lambda e: e.on_device_list(ALICE, O2, o2_list(DeviceEntry(55)))),
    }
    for label, op in scenarios.items():
        crash_everywhere(tmp_path, base, label, op, clock)

    # the end of a catch-up, from a store in the middle of one
    catching = copy_store(base, tmp_path / "catch-up-base")
    with Keystore.open(catching, PW) as ks:
        clock.now = t1
        e = Engine(ks, rng=seeded_rng("k5-catch-up"), clock=clock)
        e.begin_catch_up()
        assert isinstance(e.decrypt(copy.deepcopy(kex), DAVE, to=ALICE), Decrypted)
    crash_everywhere(tmp_path, catching, "end-catch-up", timed(t1, lambda e: e.end_catch_up()), clock)

    # the passphrase change
    new_pw = "the new passphrase"

    def opens(path: Path) -> list[str]:
        ok = []
        for pw in (PW, new_pw):
            try:
                Keystore.open(path, pw).close()
                ok.append(pw)
            except WrongPassphrase:
                pass
        return ok

    with Keystore.open(base, PW) as ks:
        records = dump(ks)
    # a clean run, with a kill (file copy) before every write statement
    path = copy_store(base, tmp_path / "passphrase" / "clean")
    ks = Keystore.open(path, PW)
    statements: list[str] = []
    kills: list[Path] = []

    def record(statement: str) -> None:
        if is_write(statement):
            statements.append(statement.split("(")[0].strip()[:48])
            kills.append(copy_store(path, tmp_path / "passphrase" / f"kill-{len(statements)}"))

    assert ks._db is not None
    ks._db = HookedConnection(ks._db, record)  # type: ignore[assignment]
    ks.change_passphrase(new_pw)
    ks.close()
    assert opens(path) == [new_pw]
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT" and len(statements) >= 4, statements
    for statement, copied in zip(statements, kills, strict=True):
        assert opens(copied) == [PW], f"passphrase change killed before {statement!r}"
    # a crash before each statement
    for n, statement in enumerate(statements, 1):
        path = copy_store(base, tmp_path / "passphrase" / f"raise-{n}")
        ks = Keystore.open(path, PW)
        count = 0

        def crash_at(statement: str, n: int = n) -> None:
            nonlocal count
            if is_write(statement):
                count += 1
                if count == n:
                    raise Crash(statement)

        assert ks._db is not None
        ks._db = HookedConnection(ks._db, crash_at)  # type: ignore[assignment]
        with pytest.raises(Crash):
            ks.change_passphrase(new_pw)
        ks.close()
        assert opens(path) == [PW], f"passphrase change crashed before {statement!r}"
        with Keystore.open(path, PW) as again:
            assert dump(again) == records
    # after the commit, before the generation file: the new passphrase, records untouched
    path = copy_store(base, tmp_path / "passphrase" / "after-commit")
    ks = Keystore.open(path, PW)

    def no_sidecar(generation: int) -> None:
        raise Crash("after the commit")

    ks._write_sidecar = no_sidecar  # type: ignore[method-assign]
    with pytest.raises(Crash):
        ks.change_passphrase(new_pw)
    ks.close()
    assert opens(path) == [new_pw]
    with Keystore.open(path, new_pw) as again:
        assert dump(again) == records


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
    assert str(used_pk) in alice._own._prekeys()["keys"]
    deliver(net, alice, kex, bob)
    assert str(used_pk) not in alice._own._prekeys()["keys"]
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
    assert alice._own._spk()["previous"]["id"] == 2  # spk 1 is gone for good
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
        alice._own,
        alice._own.identity,
        bob._own.identity,
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
    expect_error(lambda: alice.set_trust(BOB, alice._own.identity.x25519_private[:31], TrustLevel.VERIFIED), UsageError)
    expect_error(lambda: alice.encrypt([BOB], None), UsageError)
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
        secrets[f"{who} identity seed"] = e._own.identity.seed
        secrets[f"{who} identity x25519 private"] = e._own.identity.x25519_private
        for pk_id, entry in e._own._prekeys()["keys"].items():
            secrets[f"{who} prekey {pk_id}"] = bytes.fromhex(entry["priv"])
        spk = e._own._spk()
        for slot in ("current", "previous"):
            if spk.get(slot):
                secrets[f"{who} spk {slot}"] = bytes.fromhex(spk[slot]["priv"])
        for skey in e.storage.keys("session"):
            sset = e._sessions.load(skey)
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
        res = alice.encrypt([BOB], f"concurrent {i}")
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
