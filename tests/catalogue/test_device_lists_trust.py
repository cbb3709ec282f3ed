"""Catalogue section 3, D1-D8: device lists and trust at the engine level.

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

import copy

import pytest

from e2ee.engine import NAMESPACES
from e2ee.errors import (
    AffixMismatch,
    SenderDistrusted,
    SharedIdentityKey,
)
from e2ee.legacy import xml as legacy_xml
from e2ee.model import DeviceEntry
from e2ee.omemo2 import xml as omemo2_xml
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
from e2ee.trust import TrustLevel, TrustPolicy

from ..engine_support import DEVICE_LIST_NODE, LEGACY, O2, Net, bundle_item, snapshot
from .support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    MALLORY,
    ROOM,
    assert_refused_unchanged,
    deliver,
    kex_flag,
    legacy_list,
    o2_list,
    outcomes,
    rids,
    send,
)

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
    job: the engine only sees the JID it is given (``Engine.on_device_list`` docstring)."""
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
    res = alice.encrypt_omemo([BOB], "the secret text")
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
    res = alice.encrypt_omemo([BOB], "back again")
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
    res = alice.encrypt_omemo([MALLORY], "for mallory?")
    assert not res.ready and outcomes(res, MALLORY) == {bob.device_id: (O2, Outcome.UNDECIDED)} and not res.elements
    alice.set_trust(MALLORY, ik, TrustLevel.DISTRUSTED)
    assert alice.trust.level(BOB, ik) is TrustLevel.VERIFIED
    res = alice.encrypt_omemo([BOB], "for bob")
    assert res.ready and outcomes(res, BOB) == {bob.device_id: (O2, Outcome.ENCRYPTED)}
    assert isinstance(deliver(net, bob, res.elements[O2], alice), Decrypted)
    res = alice.encrypt_omemo([MALLORY], "for mallory?")
    assert not res.ready and outcomes(res, MALLORY) == {bob.device_id: (O2, Outcome.DISTRUSTED)}

    # (b) a distrusted sender
    net = Net()
    alice = net.device(ALICE, "d7-a2")
    carol = net.device(CAROL, "d7-c")
    deliver(net, alice, send(net, carol, ALICE, "hi"), carol)
    late = send(net, carol, ALICE, "sent before the decision")
    alice.set_trust(CAROL, carol.identity_key, TrustLevel.DISTRUSTED)
    res = alice.encrypt_omemo([CAROL], "no")
    assert not res.ready and res.elements == {} and outcomes(res, CAROL) == {carol.device_id: (O2, Outcome.DISTRUSTED)}
    net.run(carol, carol.replace_session(ALICE, alice.device_id, O2))
    fresh_kex = send(net, carol, ALICE, "a new key exchange")
    assert kex_flag(fresh_kex, alice.device_id) == "true"
    for el in (late, fresh_kex):
        assert_refused_unchanged(alice, lambda: alice.decrypt(el, CAROL, to=ALICE), SenderDistrusted)
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
    refused = assert_refused_unchanged(
        bob, lambda: bob.decrypt(copy.deepcopy(real), MALLORY, to=BOB), SharedIdentityKey
    )
    assert refused.other_jids == (ALICE,)
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
    group = alice.encrypt_omemo([BOB, CAROL], "to the room", to=ROOM)
    assert group.ready
    private = send(net, alice, BOB, "just for bob")

    for label, element, kw in [
        ("group message as a private one", group.elements[O2], {"to": BOB}),
        ("private message as a group one", private, {"to": ROOM, "require_to": True}),
        ("private message as a group one (no require_to)", private, {"to": ROOM}),
        ("group message to another room", group.elements[O2], {"to": "other@muc.example.org", "require_to": True}),
    ]:
        assert_refused_unchanged(bob, lambda: bob.decrypt(element, ALICE, **kw), AffixMismatch, label)
    out = bob.decrypt(group.elements[O2], ALICE, to=ROOM, require_to=True)
    assert isinstance(out, Decrypted) and out.body == "to the room"
    out = bob.decrypt(private, ALICE, to=BOB)
    assert isinstance(out, Decrypted) and out.body == "just for bob"
    out = carol.decrypt(group.elements[O2], ALICE, to=ROOM, require_to=True)
    assert isinstance(out, Decrypted) and out.body == "to the room"
