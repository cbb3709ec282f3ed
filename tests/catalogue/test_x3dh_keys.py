"""Catalogue section 2, X1-X5: signatures, low-order and non-canonical keys, missing, unknown
and used prekeys, key-exchange replays.
"""

from __future__ import annotations

import base64
import copy
import random
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import nacl.bindings as nacl_bindings
import pytest

from e2ee.engine import Engine
from e2ee.errors import (
    AuthenticationFailed,
    InvalidBundle,
    InvalidKey,
    InvalidSignature,
    MissingPreKey,
    ReusedBaseKey,
    UnknownPreKey,
    UnknownSignedPreKey,
)
from e2ee.limits import (
    SPK_GRACE,
    SPK_ROTATION,
)
from e2ee.primitives import x25519_public
from e2ee.results import (
    Decrypted,
    Duplicate,
    SendMessage,
)
from e2ee.wire import legacy_pb2

from ..engine_support import LEGACY, O2, Net, snapshot
from ..support import seeded_rng
from .support import (
    ALICE,
    BOB,
    BUNDLE_TAGS,
    CAROL,
    DAVE,
    FLAVOUR,
    LOW_ORDER_ED,
    LOW_ORDER_U,
    MALLORY,
    NS_BOTH,
    Checks,
    L,
    P,
    add_torsion,
    b64,
    dev,
    flip,
    flip_inner_mac,
    flush,
    is_kex,
    kex_bytes,
    kex_proto,
    kex_with_raw_ek,
    key_bytes,
    prekey_ids,
    q,
    recv_body,
    repack,
    repack_kex,
    round_trip,
    send,
    with_key,
)

# ================================================================== X1


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X1_bad_signed_prekey_signature_or_swapped_identity_key_is_refused(ns: str) -> None:
    c = Checks()
    net = Net()
    b = dev(net, BOB, "b", ns)
    other = dev(net, CAROL, "c", ns)
    a = dev(net, ALICE, "a", ns)
    a.on_device_list(BOB, ns, net.pep.device_list(BOB, ns))
    orig = net.pep.bundle(BOB, ns, b.device_id)
    carol_bundle = net.pep.bundle(CAROL, ns, other.device_id)
    assert orig is not None and carol_bundle is not None
    tags = BUNDLE_TAGS[ns]

    def part(elem: ET.Element, name: str) -> ET.Element:
        found = elem.find(q(ns, tags[name]))
        assert found is not None
        return found

    sig = base64.b64decode(part(orig, "spks").text or "")
    work = copy.deepcopy(orig)
    spks = part(work, "spks")

    def on_bundle() -> Any:
        return a.on_bundle(BOB, b.device_id, ns, work)

    for bit in range(len(sig) * 8):  # every bit of spks
        spks.text = b64(flip(sig, bit))
        c.rejected(f"spks bit {bit}", a, on_bundle, InvalidSignature)
    # S + L (malleability; legacy keeps its sign bit in bit 255)
    s = int.from_bytes(sig[32:], "little")
    sign = s >> 255
    s_big = ((s & ~(1 << 255)) + L) | sign << 255
    spks.text = b64(sig[:32] + s_big.to_bytes(32, "little"))
    c.rejected("S + L", a, on_bundle, InvalidSignature)
    for r_bad in ((P + 1).to_bytes(32, "little"), (P + 3).to_bytes(32, "little"), bytes(32)):
        spks.text = b64(r_bad + sig[32:])
        c.rejected(f"non-canonical R {r_bad[:2].hex()}..", a, on_bundle, InvalidSignature)
    spks.text = part(orig, "spks").text
    # another identity key, spk and spks kept
    part(work, "ik").text = part(carol_bundle, "ik").text
    c.rejected("swapped ik", a, on_bundle, InvalidSignature)
    spks.text = part(carol_bundle, "spks").text  # and carol's signature (over carol's spk)
    c.rejected("swapped ik and spks", a, on_bundle, InvalidSignature)
    c.expect(a.devices(BOB)[0].identity_key is None, "a refused bundle's identity key is known")
    c.expect(not a.encrypt_omemo([BOB], "x").ready, "a session was possible after refused bundles")

    # the unmodified bundle is accepted and works
    assert a.on_bundle(BOB, b.device_id, ns, orig) == []
    recv_body(net, b, send(net, a, BOB, "signed", ns), ALICE, "signed")
    c.done()


# ================================================================== X2


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X2_low_order_and_non_canonical_keys_are_refused(ns: str) -> None:
    c = Checks()
    rnd = random.Random(f"X2/{ns}")
    net = Net()
    b = dev(net, BOB, "b", ns)
    a = dev(net, ALICE, "a", ns)
    a.on_device_list(BOB, ns, net.pep.device_list(BOB, ns))
    orig = net.pep.bundle(BOB, ns, b.device_id)
    assert orig is not None
    tags = BUNDLE_TAGS[ns]
    prefix = b"\x05" if ns == LEGACY else b""

    def variant(name: str, value: bytes, index: int = 0) -> ET.Element:
        out = copy.deepcopy(orig)
        if name == "pk":
            target = out.findall(f"{q(ns, 'prekeys')}/{q(ns, tags['pk'])}")[index]
        else:
            found = out.find(q(ns, tags[name]))
            assert found is not None
            target = found
        target.text = b64(value)
        return out

    bad_x = {f"low-order u #{i}": u for i, u in enumerate(LOW_ORDER_U)}
    good_u = x25519_public(rnd.randbytes(32))
    bad_x["high bit set"] = good_u[:31] + bytes([good_u[31] | 0x80])
    bad_x["u = p + 1"] = (P + 1).to_bytes(32, "little")
    for label, u in bad_x.items():
        for name in ("spk", "pk"):
            bundle = variant(name, prefix + u)
            c.rejected(
                f"bundle {name}: {label}",
                a,
                lambda bundle=bundle: a.on_bundle(BOB, b.device_id, ns, bundle),
                (InvalidKey, InvalidBundle),
            )
    if ns == LEGACY:
        for label, u in bad_x.items():
            bundle = variant("ik", b"\x05" + u)
            c.rejected(
                f"bundle ik: {label}",
                a,
                lambda bundle=bundle: a.on_bundle(BOB, b.device_id, ns, bundle),
                (InvalidKey, InvalidBundle),
            )
        wrong = {"spk without 0x05": b"\x06" + good_u, "ik without 0x05": b"\x06" + good_u}
        for label, value in wrong.items():
            bundle = variant(label.split()[0], value)
            c.rejected(
                f"bundle {label}",
                a,
                lambda bundle=bundle: a.on_bundle(BOB, b.device_id, ns, bundle),
                (InvalidKey, InvalidBundle),
            )
    else:
        for i, e in enumerate(LOW_ORDER_ED):
            bundle = variant("ik", e)
            if i == 0:  # the neutral element: R = [s]B, s makes a signature a lax verifier accepts
                s_bytes = (rnd.randrange(1, L)).to_bytes(32, "little")
                r_point = nacl_bindings.crypto_scalarmult_ed25519_base_noclamp(s_bytes)
                found = bundle.find(q(ns, tags["spks"]))
                assert found is not None
                found.text = b64(r_point + s_bytes)
            c.rejected(
                f"bundle ik: low-order Ed25519 #{i}",
                a,
                lambda bundle=bundle: a.on_bundle(BOB, b.device_id, ns, bundle),
                (InvalidKey, InvalidBundle),
            )
    key_len = 32 + len(prefix)
    for n in (key_len - 1, key_len + 1, key_len + 2):
        bundle = variant("spk", (prefix + good_u + bytes(4))[:n])
        c.rejected(
            f"bundle spk of {n} bytes",
            a,
            lambda bundle=bundle: a.on_bundle(BOB, b.device_id, ns, bundle),
            (InvalidKey, InvalidBundle),
        )

    # key exchanges with a bad base key, and a message with a bad ratchet key
    assert a.on_bundle(BOB, b.device_id, ns, orig) == []
    first = send(net, a, BOB, "first", ns)
    rid = b.device_id
    kdata = key_bytes(first, rid)
    for label, u in bad_x.items():
        c.decrypt_rejected(
            f"base key: {label}", b, with_key(first, rid, kex_with_raw_ek(ns, kdata, prefix + u)), ALICE, InvalidKey
        )
    ek = FLAVOUR[ns].parse_key_exchange(kdata).ek
    for n in (key_len - 1, key_len + 1, key_len + 2):
        c.decrypt_rejected(
            f"base key of {n} bytes",
            b,
            with_key(first, rid, kex_with_raw_ek(ns, kdata, (prefix + ek + bytes(2))[:n])),
            ALICE,
            InvalidKey,
        )
    if ns == LEGACY:
        c.decrypt_rejected(
            "base key without 0x05",
            b,
            with_key(first, rid, kex_with_raw_ek(ns, kdata, b"\x06" + ek)),
            ALICE,
            InvalidKey,
        )
        c.decrypt_rejected(
            "base key 32 bytes, no prefix", b, with_key(first, rid, kex_with_raw_ek(ns, kdata, ek)), ALICE, InvalidKey
        )
    recv_body(net, b, first, ALICE, "first")
    flush(net)
    msg = send(net, a, BOB, "msg", ns)
    mdata = key_bytes(msg, rid)
    for label, u in bad_x.items():
        forged = repack(ns, mdata, rnd, dh=u) if ns == O2 else _legacy_with_raw_ratchet_key(mdata, b"\x05" + u)
        c.decrypt_rejected(f"ratchet key: {label}", b, with_key(msg, rid, forged), ALICE, InvalidKey)
    recv_body(net, b, msg, ALICE, "msg")
    flush(net)

    # a base key with a torsion component: the same DH results, so it must be refused outright
    second_sender = dev(net, CAROL, "c", ns)
    kc = send(net, second_sender, BOB, "torsion", ns)
    kcd = key_bytes(kc, rid)
    twisted = add_torsion(FLAVOUR[ns].parse_key_exchange(kcd).ek)
    c.decrypt_rejected(
        "base key with a torsion component",
        b,
        with_key(kc, rid, kex_with_raw_ek(ns, kcd, prefix + twisted)),
        CAROL,
        InvalidKey,
    )
    genuine = c.returns(
        "the genuine kex after the torsioned one", b, lambda: b.decrypt(kc, CAROL, to=BOB), Decrypted, unchanged=False
    )
    c.expect(getattr(genuine, "body", None) == "torsion", f"the genuine kex: {genuine}")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


def _legacy_with_raw_ratchet_key(data: bytes, key: bytes) -> bytes:
    msg = legacy_pb2.SignalMessage()
    msg.MergeFromString(data[1:-8])
    msg.ratchetKey = key
    return b"\x33" + msg.SerializeToString() + bytes(8)


# ================================================================== X3


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X3_key_exchange_without_one_time_prekey_is_MissingPreKey(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    rid = b.device_id
    first = send(net, a, BOB, "first", ns)
    m = kex_proto(ns, key_bytes(first, rid))
    m.ClearField("pk_id" if ns == O2 else "preKeyId")
    c.decrypt_rejected("kex without pk_id", b, with_key(first, rid, kex_bytes(ns, m)), ALICE, MissingPreKey)
    c.expect(not b.devices(ALICE) or b.devices(ALICE)[0].identity_key is None, "a session/identity after MissingPreKey")
    recv_body(net, b, first, ALICE, "first")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== X4


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X4_unknown_or_used_prekeys_and_signed_prekey_rotation(ns: str) -> None:
    c = Checks()
    net = Net()
    b = dev(net, BOB, "b", ns)
    a = dev(net, ALICE, "a", ns)
    rid = b.device_id

    # an existing session stays untouched by key exchanges naming unknown keys
    k1 = send(net, a, BOB, "k1", ns)
    recv_body(net, b, k1, ALICE, "k1")
    net.take_outbox()  # bob's answer is not delivered yet: alice keeps sending key exchanges
    k2 = send(net, a, BOB, "k2", ns)
    assert is_kex(k2, rid)
    d2 = key_bytes(k2, rid)
    unknown_pk = max(prekey_ids(b)) + 1000
    c.decrypt_rejected(
        "unknown pk_id", b, with_key(k2, rid, repack_kex(ns, d2, pk_id=unknown_pk)), ALICE, UnknownPreKey
    )
    c.decrypt_rejected(
        "unknown spk_id", b, with_key(k2, rid, repack_kex(ns, d2, spk_id=4242)), ALICE, UnknownSignedPreKey
    )
    used_pk = FLAVOUR[ns].parse_key_exchange(d2).pk_id
    c.expect(used_pk not in prekey_ids(b), "the prekey of an accepted key exchange was kept")
    recv_body(net, b, k2, ALICE, "k2")

    # a corrupted key exchange naming a valid prekey does not consume it; the valid one does
    carol = dev(net, CAROL, "c", ns)
    kc = send(net, carol, BOB, "carol", ns)
    dc = key_bytes(kc, rid)
    pk_c = FLAVOUR[ns].parse_key_exchange(dc).pk_id
    c.decrypt_rejected(
        "corrupted kex (inner MAC)", b, with_key(kc, rid, flip_inner_mac(ns, dc)), CAROL, AuthenticationFailed
    )
    c.expect(pk_c in prekey_ids(b), "a corrupted key exchange consumed the prekey")
    recv_body(net, b, kc, CAROL, "carol")
    c.expect(pk_c not in prekey_ids(b), "a valid key exchange did not consume the prekey")
    flush(net)
    round_trip(net, a, b, ns, "session")

    # signed-prekey rotation: the previous spk works for one grace period, then never again
    dave = dev(net, DAVE, "d", ns)
    mallory = dev(net, MALLORY, "m", ns)
    net.prepare(dave, [BOB])
    net.prepare(mallory, [BOB])  # both hold bob's bundle with the current spk
    old_spk = b.context.own._spk()["current"]
    net.clock.advance(SPK_ROTATION + timedelta(hours=1))
    net.run(b, b.maintenance())
    assert b.context.own._spk()["current"]["id"] != old_spk["id"]
    kd = dave.encrypt_omemo([BOB], "inside grace").elements[ns]
    km = mallory.encrypt_omemo([BOB], "after grace").elements[ns]
    assert FLAVOUR[ns].parse_key_exchange(key_bytes(km, rid)).spk_id == old_spk["id"]
    net.clock.advance(SPK_GRACE - timedelta(hours=2))
    recv_body(net, b, kd, DAVE, "inside grace")
    net.clock.advance(timedelta(hours=3))
    c.decrypt_rejected("previous spk after the grace period", b, km, MALLORY, UnknownSignedPreKey)
    net.run(b, b.maintenance())
    priv = old_spk["priv"].encode()
    c.expect(
        not any(priv in v for t in snapshot(b).values() for v in t.values()),
        "the previous signed prekey's private key is still stored after the grace period",
    )
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== X5


@pytest.mark.parametrize("ns", NS_BOTH)
def test_X5_key_exchange_replays(ns: str) -> None:
    c = Checks()
    net = Net()
    b = dev(net, BOB, "b", ns)
    rid = b.device_id

    # (a) the same key exchange redelivered: only its message is processed -> Duplicate
    a = dev(net, ALICE, "a", ns)
    ka = send(net, a, BOB, "a", ns)
    recv_body(net, b, ka, ALICE, "a")
    c.returns("(a) same kex again", b, lambda: b.decrypt(ka, ALICE, to=BOB), Duplicate, unchanged=True)
    flush(net)
    c.returns("(a) same kex after the answer", b, lambda: b.decrypt(ka, ALICE, to=BOB), Duplicate, unchanged=True)
    # (c, outside a catch-up) alice's key exchange replayed as mallory's: the prekey is gone
    c.decrypt_rejected("(c) replay from mallory, no catch-up", b, ka, MALLORY, UnknownPreKey)

    # (c, inside a catch-up) the prekey is still kept, its base key is not reusable
    carol = dev(net, CAROL, "c", ns)
    kc = send(net, carol, BOB, "c", ns)
    b.begin_catch_up()
    recv_body(net, b, kc, CAROL, "c")
    c.returns("(a) same kex in catch-up", b, lambda: b.decrypt(kc, CAROL, to=BOB), Duplicate, unchanged=True)
    c.decrypt_rejected("(c) replay from mallory in catch-up", b, kc, MALLORY, ReusedBaseKey)
    # (b) after the catch-up the kept prekey is gone
    net.run(b, b.end_catch_up())
    flush(net)
    c.decrypt_rejected("(b) replay from mallory after catch-up", b, kc, MALLORY, UnknownPreKey)
    c.expect(b.devices(MALLORY) == [], "something is recorded for mallory")

    # (d) a crash in the middle of a catch-up: the kept prekeys are deleted when it completes
    dave = dev(net, DAVE, "d", ns)
    kd = send(net, dave, BOB, "d", ns)
    pk_d = FLAVOUR[ns].parse_key_exchange(key_bytes(kd, rid)).pk_id
    b.begin_catch_up()
    recv_body(net, b, kd, DAVE, "d")
    c.expect(pk_d in prekey_ids(b), "the prekey is not kept during the catch-up")
    restarted = Engine(b.storage, rng=seeded_rng("b-restart"), clock=net.clock)
    net.engines[net.engines.index(b)] = restarted
    c.expect(restarted.catching_up, "the catch-up state was not persisted")
    restarted.begin_catch_up()
    effects = restarted.end_catch_up()
    c.expect(pk_d not in prekey_ids(restarted), "a prekey kept in the crashed catch-up survived its end")
    c.expect(not [k for k, v in restarted.context.own._prekeys()["keys"].items() if v["used"]], "used prekeys left")
    answers = [e for e in effects if isinstance(e, SendMessage)]
    c.expect([m.reason for m in answers] == ["catch-up-end"], f"catch-up-end answers: {[m.reason for m in answers]}")
    net.run(restarted, effects)
    flush(net)
    round_trip(net, dave, restarted, ns, "after restart")

    # (c) with a torsioned base key, inside a catch-up: the same X3DH secret under a "new" base key
    eve_sender = dev(net, "erin@example.com", "e", ns)
    ke = send(net, eve_sender, BOB, "e", ns)
    restarted.begin_catch_up()
    recv_body(net, restarted, ke, "erin@example.com", "e")
    ked = key_bytes(ke, rid)
    twisted = add_torsion(FLAVOUR[ns].parse_key_exchange(ked).ek)
    prefix = b"\x05" if ns == LEGACY else b""
    forged = with_key(ke, rid, kex_with_raw_ek(ns, ked, prefix + twisted))
    c.decrypt_rejected(
        "(c) torsioned replay from mallory in catch-up", restarted, forged, MALLORY, (ReusedBaseKey, InvalidKey)
    )
    c.expect(restarted.devices(MALLORY) == [], "a device/identity recorded for mallory")
    net.run(restarted, restarted.end_catch_up())
    flush(net)
    c.done()
