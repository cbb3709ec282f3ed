"""Catalogue section 2, X6-X9: structurally abusive bundles, prekey collisions, identity-key
changes and device slots taken over by another key.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from e2ee.engine import Engine
from e2ee.errors import (
    InvalidBundle,
    SenderDistrusted,
    UnknownPreKey,
)
from e2ee.limits import (
    PREKEY_COUNT,
)
from e2ee.registry import backend as omemo_backend
from e2ee.results import (
    Decrypted,
    EmptyMessage,
    Outcome,
    Publish,
    UntrustedIdentity,
)
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from ..engine_support import O2, Net, snapshot
from ..support import seeded_rng
from .support import (
    ALICE,
    BOB,
    BUNDLE_TAGS,
    CAROL,
    FLAVOUR,
    NS_BOTH,
    Checks,
    dev,
    device_with_rng,
    establish,
    flush,
    is_kex,
    key_bytes,
    key_elem,
    q,
    recv,
    recv_body,
    round_trip,
    send,
)

# ================================================================== X6


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X6_bundle_structural_abuse_is_InvalidBundle_and_nothing_is_stored(ns: str) -> None:
    c = Checks()
    net = Net()
    b = dev(net, BOB, "b", ns)
    a = dev(net, ALICE, "a", ns)
    a.on_device_list(BOB, ns, net.pep.device_list(BOB, ns))
    orig = net.pep.bundle(BOB, ns, b.device_id)
    assert orig is not None
    tags = BUNDLE_TAGS[ns]
    minimum = 25 if ns == O2 else 20

    def pks(elem: ET.Element) -> list[ET.Element]:
        return elem.findall(f"{q(ns, 'prekeys')}/{q(ns, tags['pk'])}")

    def edit(fn: Callable[[ET.Element], None]) -> ET.Element:
        out = copy.deepcopy(orig)
        fn(out)
        return out

    def keep(n: int) -> Callable[[ET.Element], None]:
        def f(e: ET.Element) -> None:
            holder = e.find(q(ns, "prekeys"))
            assert holder is not None
            for pk in pks(e)[n:]:
                holder.remove(pk)

        return f

    def set_attr(which: str, index: int, value: str | None) -> Callable[[ET.Element], None]:
        def f(e: ET.Element) -> None:
            target = pks(e)[index] if which == "pk" else e.find(q(ns, tags["spk"]))
            assert target is not None
            attr = tags["pk_id" if which == "pk" else "spk_id"]
            if value is None:
                target.attrib.pop(attr, None)
            else:
                target.set(attr, value)

        return f

    def set_text(name: str, value: str | None) -> Callable[[ET.Element], None]:
        def f(e: ET.Element) -> None:
            target = pks(e)[0] if name == "pk" else e.find(q(ns, tags[name]))
            assert target is not None
            target.text = value

        return f

    def remove(name: str) -> Callable[[ET.Element], None]:
        def f(e: ET.Element) -> None:
            target = e.find(q(ns, name if name == "prekeys" else tags[name]))
            assert target is not None
            e.remove(target)

        return f

    def many(n: int) -> Callable[[ET.Element], None]:
        def f(e: ET.Element) -> None:
            holder = e.find(q(ns, "prekeys"))
            assert holder is not None
            text = pks(e)[0].text
            for i in range(n):
                ET.SubElement(holder, q(ns, tags["pk"]), {tags["pk_id"]: str(100_000 + i)}).text = text

        return f

    def huge(e: ET.Element) -> None:
        ET.SubElement(e, "{urn:example:junk}padding").text = "A" * (1 << 20)

    def dup(e: ET.Element) -> None:
        p = pks(e)
        p[1].set(tags["pk_id"], p[0].get(tags["pk_id"]) or "")

    def wrong_root(e: ET.Element) -> None:
        e.tag = q(ns, "bundlex")

    cases: dict[str, Callable[[ET.Element], None]] = {
        "0 prekeys": keep(0),
        "19 prekeys": keep(19),
        f"{minimum - 1} prekeys": keep(minimum - 1),
        "duplicate pk id": dup,
        "pk id 2^31": set_attr("pk", 0, str(2**31)),
        "pk id 2^32": set_attr("pk", 0, str(2**32)),
        "pk id -1": set_attr("pk", 0, "-1"),
        "pk id not a number": set_attr("pk", 0, "one"),
        "pk without id": set_attr("pk", 0, None),
        "spk id 2^31": set_attr("spk", 0, str(2**31)),
        "non-base64 pk": set_text("pk", "!!!notbase64"),
        "non-base64 spk": set_text("spk", "@@@@"),
        "non-base64 spks": set_text("spks", "*" * 88),
        "non-base64 ik": set_text("ik", "%%%%"),
        "empty ik": set_text("ik", None),
        "missing spk": remove("spk"),
        "missing spks": remove("spks"),
        "missing ik": remove("ik"),
        "missing prekeys": remove("prekeys"),
        "10,000 prekeys": many(10_000),
        "1 MiB bundle": huge,
        "wrong root element": wrong_root,
    }
    for label, fn in cases.items():
        bundle = edit(fn)
        c.rejected(label, a, lambda bundle=bundle: a.on_bundle(BOB, b.device_id, ns, bundle), InvalidBundle)
    c.expect(not a.encrypt_omemo([BOB], "x").ready, "a refused bundle was kept")

    # accepted: the minimum number of prekeys; an unknown extra element
    c.returns(
        f"{minimum} prekeys", a, lambda: a.on_bundle(BOB, b.device_id, ns, edit(keep(minimum))), list, unchanged=False
    )

    def extra(e: ET.Element) -> None:
        ET.SubElement(e, "{urn:example:future}extension", {"x": "1"}).text = "ignored"
        holder = e.find(q(ns, "prekeys"))
        assert holder is not None
        ET.SubElement(holder, "{urn:example:future}note").text = "ignored too"

    with_extra = edit(extra)
    c.returns("extra unknown elements", a, lambda: a.on_bundle(BOB, b.device_id, ns, with_extra), list, unchanged=False)
    recv_body(net, b, send(net, a, BOB, "works", ns), ALICE, "works")
    c.done()


# ================================================================== X7


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X7_prekey_collision_fails_deterministically_and_bundles_are_replenished(ns: str) -> None:
    c = Checks()
    net = Net()
    b = dev(net, BOB, "b", ns)
    rid = b.device_id
    a = dev(net, ALICE, "a", ns)

    forced: list[bytes] = []
    base = seeded_rng("carol-steered")

    def steered(n: int) -> bytes:
        if forced and n == 4:  # the engine draws 4 bytes to pick a prekey
            return forced.pop(0)
        return base(n)

    carol = device_with_rng(net, CAROL, steered, ns)
    ka = send(net, a, BOB, "alice", ns)
    pk = FLAVOUR[ns].parse_key_exchange(key_bytes(ka, rid)).pk_id
    net.prepare(carol, [BOB])  # carol holds the same bundle alice used
    stored = carol.context.devices.bundle(FLAVOUR[ns].name, BOB, rid)
    assert stored is not None
    forced.append(sorted(stored.bundle.prekeys).index(pk).to_bytes(4, "big"))
    kc = carol.encrypt_omemo([BOB], "carol").elements[ns]
    assert FLAVOUR[ns].parse_key_exchange(key_bytes(kc, rid)).pk_id == pk, "could not steer carol's choice"

    def published_prekeys() -> dict[str, set[int]]:
        out = {}
        for n in NS_BOTH:
            elem = net.pep.bundle(BOB, n, rid)
            assert elem is not None
            out[n] = set(omemo_backend(n).parse_bundle(elem).prekeys)
        return out

    recv_body(net, b, ka, ALICE, "alice")
    for n, ids in published_prekeys().items():
        c.expect(len(ids) == PREKEY_COUNT and pk not in ids, f"{n} bundle after a used prekey: {len(ids)} prekeys")
    c.decrypt_rejected("second kex with the same prekey", b, kc, CAROL, UnknownPreKey)
    c.decrypt_rejected("second kex with the same prekey, again", b, kc, CAROL, UnknownPreKey)
    flush(net)

    # more senders, in and out of a catch-up: after every consumed prekey the bundles hold 100
    for i in range(4):
        if i == 2:
            b.begin_catch_up()
        s = dev(net, f"s{i}@example.com", f"s{i}", ns)
        recv_body(net, b, send(net, s, BOB, f"s{i}", ns), s.jid, f"s{i}")
        for n, ids in published_prekeys().items():
            c.expect(len(ids) == PREKEY_COUNT, f"{n} bundle after sender {i}: {len(ids)} prekeys")
    net.run(b, b.end_catch_up())
    flush(net)
    for n, ids in published_prekeys().items():
        c.expect(len(ids) == PREKEY_COUNT, f"{n} bundle after the catch-up: {len(ids)} prekeys")
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== X8


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X8_identity_key_change_on_a_known_device_is_UntrustedIdentity(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b1 = dev(net, BOB, "b1", ns)
    establish(net, a, b1, ns)
    round_trip(net, a, b1, ns, "before")
    old_ik = b1.identity_key
    assert a.trust.level(BOB, old_ik) is TrustLevel.BLIND

    # a new identity key claiming bob's known device id (not on any list, never fetched by alice)
    impostor = _impostor(net, a, BOB, "bob-new", ns)
    res = impostor.encrypt_omemo([ALICE], "new identity")
    assert res.ready
    forged = copy.deepcopy(res.elements[ns])
    header = forged.find(q(ns, "header"))
    assert header is not None
    header.set("sid", str(b1.device_id))
    new_ik = impostor.identity_key
    assert is_kex(forged, a.device_id) and new_ik != old_ik

    out = c.returns(
        "kex under a new identity key", a, lambda: a.decrypt(forged, BOB, to=ALICE), UntrustedIdentity, unchanged=True
    )
    if isinstance(out, UntrustedIdentity):
        c.expect(
            out.identity_key == new_ik and out.previous_identity_key == old_ik and out.device_id == b1.device_id,
            f"{out}",
        )
    c.expect(not hasattr(out, "body"), "plaintext returned for an untrusted identity")
    round_trip(net, a, b1, ns, "old session")  # the old session still works

    # a bundle under the same id now shows the new key: undecided, the old decision stays with the old key
    new_bundle = next(
        e.payload
        for e in impostor.publish()
        if isinstance(e, Publish)
        and net._namespace_of(e.node) == ns
        and e.node.endswith(("bundles", f"bundles:{impostor.device_id}"))
    )
    assert a.on_bundle(BOB, b1.device_id, ns, new_bundle) == []
    c.expect(a.trust.level(BOB, new_ik) is TrustLevel.UNDECIDED, f"new key level {a.trust.level(BOB, new_ik)}")
    c.expect(a.trust.level(BOB, old_ik) is TrustLevel.BLIND, "the old key's trust changed")
    c.returns(
        "kex under a new identity key, bundle seen",
        a,
        lambda: a.decrypt(forged, BOB, to=ALICE),
        UntrustedIdentity,
        unchanged=True,
    )
    sent = net.encrypt(a, [BOB], "still the old session")
    c.expect(
        [(d.outcome, d.identity_key) for d in sent.devices if d.device_id == b1.device_id]
        == [(Outcome.ENCRYPTED, old_ik)],
        "the old session was replaced or dropped",
    )
    recv_body(net, b1, sent.elements[ns], ALICE, "still the old session")
    flush(net)

    # the user accepts the new key: the retried message decrypts
    a.set_trust(BOB, new_ik, TrustLevel.VERIFIED)
    got = a.decrypt(forged, BOB, to=ALICE)
    assert isinstance(got, Decrypted) and got.body == "new identity" and got.identity_key == new_ik
    c.done()


# ================================================================== sessions bound to their key


def _impostor(net: Net, victim: Engine, jid: str, seed: str, ns: str) -> Engine:
    """A device of ``jid`` that is on no list, with the victim's list and bundle fetched."""
    return _learn(net, Engine.create(MemoryStorage(), jid, rng=seeded_rng(seed), clock=net.clock), victim, ns)


def _learn(net: Net, engine: Engine, victim: Engine, ns: str) -> Engine:
    """``engine`` with the victim's device lists and its bundle in ``ns`` fetched."""
    for n in NS_BOTH:
        dl = net.pep.device_list(victim.jid, n)
        if dl is not None:
            engine.on_device_list(victim.jid, n, dl)
    bundle = net.pep.bundle(victim.jid, ns, victim.device_id)
    assert bundle is not None
    engine.on_bundle(victim.jid, victim.device_id, ns, bundle)
    return engine


def _as_device(element: ET.Element, ns: str, sid: int) -> ET.Element:
    forged = copy.deepcopy(element)
    header = forged.find(q(ns, "header"))
    assert header is not None
    header.set("sid", str(sid))
    return forged


def _answer_to(net: Net, victim: Engine, claimed: int, impostor: Engine) -> None:
    """Hand the victim's queued empty messages for device ``claimed`` to the impostor."""
    for sender, msg in net.take_outbox():
        if sender is victim and msg.device_id == claimed:
            elem = copy.deepcopy(msg.encrypted)
            key_elem(elem, claimed).set("rid", str(impostor.device_id))
            assert isinstance(impostor.decrypt(elem, victim.jid, to=impostor.jid), EmptyMessage)


@pytest.mark.parametrize("archived_level", [TrustLevel.DISTRUSTED, TrustLevel.UNDECIDED])
@pytest.mark.parametrize("ns", NS_BOTH)
def test_X9_an_archived_session_of_a_replaced_key_is_refused_and_never_becomes_current(
    ns: str, archived_level: TrustLevel
) -> None:
    """Issue 14.1: an impostor makes first contact as bob's device D (blindly trusted); the user
    verifies bob's real key and distrusts (or un-decides) the impostor's; bob's real key exchange
    arrives.  A normal message on the impostor's archived session is refused with the stored
    state unchanged; our next message goes to the real bob, who decrypts it."""
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b1 = dev(net, BOB, "b1", ns)
    mallory = _impostor(net, a, BOB, "impostor", ns)
    ik_m, ik_b = mallory.identity_key, b1.identity_key

    first = mallory.encrypt_omemo([ALICE], "hi, it is bob")
    assert first.ready
    got = recv(net, a, _as_device(first.elements[ns], ns, b1.device_id), BOB)
    assert isinstance(got, Decrypted) and got.identity_key == ik_m and got.trust is TrustLevel.BLIND
    _answer_to(net, a, b1.device_id, mallory)  # the impostor's session is confirmed: normal messages

    a.set_trust(BOB, ik_b, TrustLevel.VERIFIED)
    a.set_trust(BOB, ik_m, archived_level)
    recv_body(net, a, send(net, b1, ALICE, "the real bob", ns), BOB, "the real bob")
    flush(net)

    later = mallory.encrypt_omemo([ALICE], "now listen to me")
    assert later.ready and not is_kex(later.elements[ns], a.device_id)
    forged = _as_device(later.elements[ns], ns, b1.device_id)
    if archived_level is TrustLevel.DISTRUSTED:
        c.decrypt_rejected("message on the impostor's archived session", a, forged, BOB, SenderDistrusted)
    else:
        out = c.returns(
            "message on the impostor's archived session",
            a,
            lambda: a.decrypt(forged, BOB, to=ALICE),
            UntrustedIdentity,
            unchanged=True,
        )
        if isinstance(out, UntrustedIdentity):
            c.expect(out.identity_key == ik_m and out.previous_identity_key == ik_b, f"{out}")

    sent = net.encrypt(a, [BOB], "for the real bob")
    c.expect(
        [(d.outcome, d.identity_key) for d in sent.devices if d.device_id == b1.device_id]
        == [(Outcome.ENCRYPTED, ik_b)],
        f"sent to {[(d.outcome, d.identity_key) for d in sent.devices]}",
    )
    out = b1.decrypt(sent.elements[ns], ALICE, to=BOB)
    c.expect(isinstance(out, Decrypted) and out.body == "for the real bob", f"the real bob got {out!r}")
    c.done()


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X9_a_trusted_key_taking_over_another_device_slot_keeps_each_session_on_its_key(ns: str) -> None:
    """Issue 14.1: bob's device 1 key (trusted) sends a key exchange claiming device 2's id.  It
    takes the slot (its key is trusted); device 2's archived session then decrypts as device 2's
    own key (never reported as the new one) without becoming current, and is refused once that
    key is distrusted.  Sending uses the session of the key the slot is bound to."""
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b1 = dev(net, BOB, "b1", ns)
    b2 = dev(net, BOB, "b2", ns)
    for b in (b1, b2):
        establish(net, b, a, ns)
    ik1, ik2 = b1.identity_key, b2.identity_key
    assert a.trust.level(BOB, ik1) is a.trust.level(BOB, ik2) is TrustLevel.BLIND

    # b1's key in a fresh engine (same identity) claims b2's device id
    twin_storage = MemoryStorage()
    for table, rows in snapshot(b1).items():
        for k, v in rows.items():
            if table in ("own",):
                twin_storage.put(table, k, v)
    twin = Engine(twin_storage, rng=seeded_rng("twin"), clock=net.clock)
    assert twin.identity_key == ik1
    _learn(net, twin, a, ns)
    res = twin.encrypt_omemo([ALICE], "device 2 is mine now")
    assert res.ready
    got = recv(net, a, _as_device(res.elements[ns], ns, b2.device_id), BOB)
    assert isinstance(got, Decrypted) and got.identity_key == ik1, got
    net.take_outbox()

    # device 2's own message on its (now archived) session: its own key, not promoted
    msg = send(net, b2, ALICE, "from device 2", ns)
    got = a.decrypt(msg, BOB, to=ALICE)
    c.expect(isinstance(got, Decrypted) and got.body == "from device 2" and got.identity_key == ik2, f"{got!r}")
    sent = net.encrypt(a, [BOB], "to the slot")
    c.expect(
        [(d.outcome, d.identity_key) for d in sent.devices if d.device_id == b2.device_id]
        == [(Outcome.ENCRYPTED, ik1)],
        f"slot 2 sent to {[(d.device_id, d.outcome, d.identity_key) for d in sent.devices]}",
    )
    c.expect(a.context.devices.identity(BOB, b2.device_id) == ik1, "the slot's key changed")

    a.set_trust(BOB, ik2, TrustLevel.DISTRUSTED)
    c.decrypt_rejected(
        "device 2 after its key was distrusted", a, send(net, b2, ALICE, "again", ns), BOB, SenderDistrusted
    )
    c.done()
