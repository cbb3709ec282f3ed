"""Catalogue section 1, R6-R12: payload authentication, co-recipient substitution, legacy GCM
IVs, simultaneous initiation, heartbeats, message-kind confusion, stale sessions.
"""

from __future__ import annotations

import base64
import copy
import random
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from e2ee.engine import Engine
from e2ee.errors import (
    AuthenticationFailed,
    MalformedMessage,
    SenderDistrusted,
    UnsupportedVersion,
)
from e2ee.legacy import payload as legacy_payload
from e2ee.limits import (
    HEARTBEAT_THRESHOLD,
    STALE_SESSION_AGE,
)
from e2ee.omemo2 import envelope as sce
from e2ee.omemo2 import payload as omemo2_payload
from e2ee.primitives import aes_cbc_encrypt, aes_gcm_encrypt, hmac_sha256
from e2ee.results import (
    Decrypted,
    Duplicate,
    EmptyMessage,
    FetchBundle,
    Outcome,
    SendMessage,
)
from e2ee.sessions import session_key
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from ..engine_support import LEGACY, O2, Net, snapshot
from ..support import seeded_rng
from .support import (
    ALICE,
    BOB,
    FLAVOUR,
    NS_BOTH,
    Checks,
    b64,
    dev,
    establish,
    flip,
    flush,
    forge_from_sender,
    is_kex,
    key_bytes,
    legacy_iv,
    omemo2_keys,
    payload_bytes,
    q,
    recv,
    recv_body,
    round_trip,
    send,
    with_key,
    with_payload,
)

# ================================================================== R6


def test_R6_tampered_omemo2_payload_fails_authentication_and_rolls_the_ratchet_back() -> None:
    c = Checks()
    ns = O2
    rnd = random.Random("R6")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    legit = send(net, a, BOB, "secret", ns)  # first message of a new ratchet key: a DH step
    ct = payload_bytes(legit)
    nbits = len(ct) * 8
    for bit in sorted({0, 7, 127, 128, nbits - 1, nbits - 8, nbits - 129, *rnd.sample(range(nbits), 12)}):
        c.decrypt_rejected(
            f"payload bit {bit}", b, with_payload(legit, b64(flip(ct, bit))), ALICE, AuthenticationFailed
        )
    for label, bad in {
        "payload one block short": ct[:-16],
        "payload one block longer": ct + rnd.randbytes(16),
        "payload not a whole block": ct[:-1],
        "payload of another length entirely": rnd.randbytes(48),
    }.items():
        c.decrypt_rejected(label, b, with_payload(legit, b64(bad)), ALICE, AuthenticationFailed)
    c.decrypt_rejected("payload not base64", b, with_payload(legit, "@@not base64@@"), ALICE, MalformedMessage)
    # the ratchet step of every failed attempt was rolled back: the genuine message decrypts
    recv_body(net, b, legit, ALICE, "secret")
    flush(net)

    # a valid HMAC over a ciphertext with bad PKCS#7 padding (the sender controls the key)
    for pad in (0, 17, 255):
        key = rnd.randbytes(32)
        enc_key, auth_key, iv = omemo2_keys(key)
        block = rnd.randbytes(15) + bytes([pad])
        enc = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
        bad_ct = enc.update(rnd.randbytes(16) + block) + enc.finalize()
        km = key + hmac_sha256(auth_key, bad_ct)[:16]
        forged = forge_from_sender(a, b, ns, km, bad_ct)
        c.decrypt_rejected(f"valid HMAC, padding byte {pad}", b, forged, ALICE, AuthenticationFailed)
    # inconsistent padding bytes (last byte 2, the one before it not)
    key = rnd.randbytes(32)
    enc_key, auth_key, iv = omemo2_keys(key)
    enc = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    bad_ct = enc.update(rnd.randbytes(14) + b"\x05\x02") + enc.finalize()
    forged = forge_from_sender(a, b, ns, key + hmac_sha256(auth_key, bad_ct)[:16], bad_ct)
    c.decrypt_rejected("valid HMAC, inconsistent padding", b, forged, ALICE, AuthenticationFailed)
    # a truncated HMAC: key material of 32 + 8 bytes.  The project raises MalformedMessage here
    # (the length comes out of the authenticated ratchet message, so it is no oracle).
    env = sce.build([_body("truncated")], ALICE, BOB, net.clock(), rnd.randbytes)
    good_ct, km = omemo2_payload.encrypt(env, rnd.randbytes)
    forged = forge_from_sender(a, b, ns, km[:40], good_ct)
    c.decrypt_rejected("HMAC truncated to 8 bytes", b, forged, ALICE, (MalformedMessage, AuthenticationFailed))
    # the same sender hook with intact material decrypts (the hook itself is sound)
    ok = forge_from_sender(a, b, ns, km, good_ct)
    out = c.returns("sender hook sanity", b, lambda: b.decrypt(ok, ALICE, to=BOB), Decrypted, unchanged=False)
    c.expect(out is not None and getattr(out, "body", None) == "truncated", "sender hook message did not decrypt")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


def _body(text: str) -> ET.Element:
    e = ET.Element("{jabber:client}body")
    e.text = text
    return e


# ================================================================== R7


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R7_a_co_recipient_cannot_substitute_the_payload(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Checks()
    rnd = random.Random(f"R7/{ns}")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b1 = dev(net, BOB, "b1", ns)
    b2 = dev(net, BOB, "b2", ns)
    hello = send(net, a, BOB, "hello", ns)
    recv_body(net, b1, hello, ALICE, "hello")
    recv_body(net, b2, hello, ALICE, "hello")
    flush(net)

    # b1 learns the key material legitimately (a spy on its payload layer hands it over)
    learned: list[bytes] = []
    layer = omemo2_payload if ns == O2 else legacy_payload
    real = layer.decrypt

    def spy(payload: bytes, *rest: bytes) -> bytes:
        learned.append(rest[-1])
        return real(payload, *rest)

    monkeypatch.setattr(layer, "decrypt", spy)
    original = send(net, a, BOB, "original", ns)
    other = send(net, a, BOB, "other", ns)
    recv_body(net, b1, original, ALICE, "original")
    monkeypatch.undo()
    km = learned[-1]

    # b1 builds its own payload under the same key and hands b2 the original header with it
    if ns == O2:
        assert len(km) == 48
        enc_key, _auth, iv = omemo2_keys(km[:32])
        env = sce.build([_body("evil")], ALICE, BOB, net.clock(), rnd.randbytes)
        evil = with_payload(original, b64(aes_cbc_encrypt(enc_key, iv, env)))
    else:
        assert len(km) == 32
        iv = base64.b64decode(legacy_iv(original).text or "")
        evil = with_payload(original, b64(aes_gcm_encrypt(km[:16], iv, b"evil")[:-16]))
    c.decrypt_rejected("payload rebuilt under the same key", b2, evil, ALICE, AuthenticationFailed)
    # the payload of another message grafted onto this header (with its iv too, for legacy)
    grafted = with_payload(original, base64.b64encode(payload_bytes(other)).decode())
    c.decrypt_rejected("payload of another message", b2, grafted, ALICE, AuthenticationFailed)
    if ns == LEGACY:
        both = copy.deepcopy(grafted)
        legacy_iv(both).text = legacy_iv(other).text
        c.decrypt_rejected("payload and iv of another message", b2, both, ALICE, AuthenticationFailed)
    # nothing lost: b2 still decrypts the genuine messages
    recv_body(net, b2, original, ALICE, "original")
    recv_body(net, b2, other, ALICE, "other")
    recv_body(net, b1, other, ALICE, "other")
    flush(net)

    if ns == LEGACY:  # key material of a length other than 32 (16 is the opt-in historical variant)
        payload, iv12, good = legacy_payload.encrypt(b"length", rnd.randbytes)
        for n in (24, 31, 33, 48):
            material = (good + rnd.randbytes(16))[:n]
            forged = forge_from_sender(a, b2, ns, material, payload, iv12)
            c.decrypt_rejected(f"legacy key material of {n} bytes", b2, forged, ALICE, MalformedMessage)
    elif ns == O2:
        env = sce.build([_body("length")], ALICE, BOB, net.clock(), rnd.randbytes)
        ct, good = omemo2_payload.encrypt(env, rnd.randbytes)
        for n in (47, 49, 64):
            material = (good + rnd.randbytes(16))[:n]
            forged = forge_from_sender(a, b2, ns, material, ct)
            c.decrypt_rejected(f"OMEMO 2 key material of {n} bytes", b2, forged, ALICE, MalformedMessage)
    round_trip(net, a, b2, ns, "after")
    c.done()


# ================================================================== R8


def test_R8_legacy_gcm_iv_sizes_tampering_and_iv_uniqueness(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Checks()
    ns = LEGACY
    rnd = random.Random("R8")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    legit = send(net, a, BOB, "gcm", ns)
    iv = base64.b64decode(legacy_iv(legit).text or "")
    assert len(iv) == 12

    def with_iv(text: str | None) -> ET.Element:
        out = copy.deepcopy(legit)
        legacy_iv(out).text = text
        return out

    for bit in (0, 45, 95):
        c.decrypt_rejected(f"iv bit {bit}", b, with_iv(b64(flip(iv, bit))), ALICE, AuthenticationFailed)
    c.decrypt_rejected(
        "another 16-byte iv", b, with_iv(b64(iv + bytes(4))), ALICE, (AuthenticationFailed, MalformedMessage)
    )
    c.decrypt_rejected("empty iv", b, with_iv(None), ALICE, MalformedMessage)
    c.decrypt_rejected("empty iv text ''", b, with_iv(""), ALICE, MalformedMessage)
    for n in (8, 11, 13, 15, 17):
        c.decrypt_rejected(f"{n}-byte iv", b, with_iv(b64(rnd.randbytes(n))), ALICE, MalformedMessage)
    no_iv = copy.deepcopy(legit)
    header = no_iv.find(q(ns, "header"))
    assert header is not None
    header.remove(legacy_iv(no_iv))
    c.decrypt_rejected("payload without iv", b, no_iv, ALICE, MalformedMessage)
    pl = payload_bytes(legit)
    c.decrypt_rejected("payload bit flipped", b, with_payload(legit, b64(flip(pl, 3))), ALICE, AuthenticationFailed)
    recv_body(net, b, legit, ALICE, "gcm")

    # the sender side (test hook): a 16-byte IV decrypts; a modified tag does not
    for n in (12, 16):
        key, iv_n = rnd.randbytes(16), rnd.randbytes(n)
        sealed = aes_gcm_encrypt(key, iv_n, f"iv of {n}".encode())
        ok = forge_from_sender(a, b, ns, key + sealed[-16:], sealed[:-16], iv_n)
        out = c.returns(
            f"{n}-byte iv accepted", b, lambda ok=ok: b.decrypt(ok, ALICE, to=BOB), Decrypted, unchanged=False
        )
        c.expect(getattr(out, "body", None) == f"iv of {n}", f"{n}-byte iv: wrong body {out}")
    for bit in (0, 64, 127):
        key, iv12 = rnd.randbytes(16), rnd.randbytes(12)
        sealed = aes_gcm_encrypt(key, iv12, b"tag")
        bad = forge_from_sender(a, b, ns, key + flip(sealed[-16:], bit), sealed[:-16], iv12)
        c.decrypt_rejected(f"tag bit {bit}", b, bad, ALICE, AuthenticationFailed)
    flush(net)
    round_trip(net, a, b, ns, "after")

    # the sender draws a fresh key and a fresh 12-byte IV for every message (system RNG)
    keys: list[bytes] = []
    real = legacy_payload.encrypt

    def spy(plaintext: bytes, rng: Any) -> tuple[bytes, bytes, bytes]:
        out = real(plaintext, rng)
        keys.append(out[2][:16])
        return out

    monkeypatch.setattr(legacy_payload, "encrypt", spy)
    sender = Engine.create(MemoryStorage(), "sender@example.org")
    sender.on_device_list(BOB, ns, net.pep.device_list(BOB, ns))
    bundle = net.pep.bundle(BOB, ns, b.device_id)
    assert bundle is not None
    sender.on_bundle(BOB, b.device_id, ns, bundle)
    ivs = []
    for _ in range(10_000):
        res = sender.encrypt_omemo([BOB], "x")
        assert res.ready
        ivs.append(base64.b64decode(legacy_iv(res.elements[ns]).text or ""))
    c.expect({len(i) for i in ivs} == {12}, "sender IVs are not all 12 bytes")
    c.expect(len(set(ivs)) == len(ivs), "an IV repeated over 10^4 sends")
    c.expect(len(keys) == 10_000 and len(set(keys)) == len(keys), "a payload key repeated over 10^4 sends")
    c.done()


# ================================================================== R9


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R9_simultaneous_initiation_with_a_lost_and_a_repeated_message_converges(ns: str) -> None:
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    net.prepare(a, [BOB])
    net.prepare(b, [ALICE])
    ka = send(net, a, BOB, "a0", ns)  # the same round: both initiate
    kb = send(net, b, ALICE, "b0", ns)
    assert is_kex(ka, b.device_id) and is_kex(kb, a.device_id)
    recv_body(net, b, ka, ALICE, "a0")
    recv_body(net, a, kb, BOB, "b0")
    answers = net.take_outbox()
    assert sorted(m.jid for _, m in answers) == [ALICE, BOB]
    for sender, msg in answers:  # bob's answer to alice is lost
        if msg.jid == BOB:
            assert isinstance(recv(net, b, msg.encrypted, ALICE), EmptyMessage)
    before = snapshot(b)  # alice's key exchange arrives again
    assert isinstance(b.decrypt(ka, ALICE, to=BOB), Duplicate)
    assert snapshot(b) == before

    converged_at = None
    for rnd in range(1, 6):
        ma = send(net, a, BOB, f"a{rnd}", ns)
        mb = send(net, b, ALICE, f"b{rnd}", ns)
        kex_now = is_kex(ma, b.device_id) or is_kex(mb, a.device_id)
        recv_body(net, b, ma, ALICE, f"a{rnd}")
        recv_body(net, a, mb, BOB, f"b{rnd}")
        flush(net)
        if not kex_now and converged_at is None:
            converged_at = rnd
        if converged_at is not None:
            assert not kex_now, "a key exchange again after convergence"
    assert converged_at is not None and converged_at <= 3, converged_at
    # both sides use one session pair: the current sessions mirror each other
    sa = a.context.sessions.load(session_key(FLAVOUR[ns].name, BOB, b.device_id)).entries[0].session.ratchet
    sb = b.context.sessions.load(session_key(FLAVOUR[ns].name, ALICE, a.device_id)).entries[0].session.ratchet
    assert sa.dhr == sb.dhs_pub or sb.dhr == sa.dhs_pub


# ================================================================== R10


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R10_one_heartbeat_and_empty_messages_need_no_trust(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)

    # the first message bob sees on alice's new ratchet key has counter 53; then the rest
    net.prepare(a, [BOB])
    msgs = [a.encrypt_omemo([BOB], f"m{i}").elements[ns] for i in range(HEARTBEAT_THRESHOLD + 10)]
    order = [HEARTBEAT_THRESHOLD] + [i for i in range(len(msgs)) if i != HEARTBEAT_THRESHOLD]
    heartbeats: list[SendMessage] = []
    for i in order:
        out = b.decrypt(msgs[i], ALICE, to=BOB)
        assert isinstance(out, Decrypted) and out.body == f"m{i}"
        heartbeats += [e for e in out.effects if isinstance(e, SendMessage)]
    for i in range(HEARTBEAT_THRESHOLD + 5):  # and alice keeps talking before the heartbeat arrives
        out = b.decrypt(a.encrypt_omemo([BOB], f"n{i}").elements[ns], ALICE, to=BOB)
        heartbeats += [e for e in out.effects if isinstance(e, SendMessage)]
    c.expect([h.reason for h in heartbeats] == ["heartbeat"], f"heartbeats: {[h.reason for h in heartbeats]}")
    if heartbeats:
        got = a.decrypt(heartbeats[0].encrypted, BOB, to=ALICE)
        c.expect(isinstance(got, EmptyMessage), f"the heartbeat is shown as {type(got).__name__}")
        c.expect(not hasattr(got, "body"), "an empty message carries a body")

    # empty messages need no trust, either way
    a.set_trust(BOB, b.identity_key, TrustLevel.UNDECIDED)
    b.set_trust(ALICE, a.identity_key, TrustLevel.UNDECIDED)
    c.expect(not a.encrypt_omemo([BOB], "content").ready, "content encrypted for an undecided key")
    (empty,) = [e for e in a.empty_message(BOB, b.device_id, ns) if isinstance(e, SendMessage)]
    c.returns(
        "empty message from an undecided sender",
        b,
        lambda: b.decrypt(empty.encrypted, ALICE, to=BOB),
        EmptyMessage,
        unchanged=False,
    )
    (back,) = [e for e in b.empty_message(ALICE, a.device_id, ns) if isinstance(e, SendMessage)]
    c.returns("empty message back", a, lambda: a.decrypt(back.encrypted, BOB, to=ALICE), EmptyMessage, unchanged=False)
    # the catalogue's form: 32 zero bytes under the ratchet, no <payload> (legacy: 16-byte key transport)
    zero = forge_from_sender(a, b, ns, bytes(32), None)
    c.returns("32 zero bytes, no payload", b, lambda: b.decrypt(zero, ALICE, to=BOB), EmptyMessage, unchanged=False)
    if ns == O2:
        forged = forge_from_sender(a, b, ns, bytes(48), None)
        c.decrypt_rejected("OMEMO 2 empty message with 48 bytes", b, forged, ALICE, MalformedMessage)
    # a distrusted sender's empty message is refused, and decrypts once trust is back
    b.set_trust(ALICE, a.identity_key, TrustLevel.DISTRUSTED)
    (refused,) = [e for e in a.empty_message(BOB, b.device_id, ns) if isinstance(e, SendMessage)]
    c.decrypt_rejected("empty message from a distrusted sender", b, refused.encrypted, ALICE, SenderDistrusted)
    b.set_trust(ALICE, a.identity_key, TrustLevel.BLIND)
    a.set_trust(BOB, b.identity_key, TrustLevel.BLIND)
    c.returns(
        "the refused empty message, trust restored",
        b,
        lambda: b.decrypt(refused.encrypted, ALICE, to=BOB),
        EmptyMessage,
        unchanged=False,
    )
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R11


def test_R11_message_kind_confusion_is_refused_and_changes_nothing() -> None:
    c = Checks()
    net = Net()
    a = net.device(ALICE, "a")  # both namespaces
    bo = net.device(BOB, "bo")  # reached with OMEMO 2
    bl = net.device(BOB, "bl", namespaces=(LEGACY,))  # reached with legacy OMEMO
    first = net.encrypt(a, [BOB], "first")
    assert first.ready and set(first.elements) == {O2, LEGACY}
    o2_el, lg_el = first.elements[O2], first.elements[LEGACY]
    o2_kex, lg_kex = key_bytes(o2_el, bo.device_id), key_bytes(lg_el, bl.device_id)
    assert is_kex(o2_el, bo.device_id) and is_kex(lg_el, bl.device_id)

    # key exchanges of one namespace in the other (no session yet)
    c.decrypt_rejected(
        "OMEMO 2 kex in a legacy element", bl, with_key(lg_el, bl.device_id, o2_kex), ALICE, UnsupportedVersion
    )
    c.decrypt_rejected(
        "legacy kex in an OMEMO 2 element", bo, with_key(o2_el, bo.device_id, lg_kex), ALICE, MalformedMessage
    )
    for vb in (0x32, 0x34, 0x43, 0x23):
        c.decrypt_rejected(
            f"legacy kex, version byte {vb:#x}",
            bl,
            with_key(lg_el, bl.device_id, bytes([vb]) + lg_kex[1:]),
            ALICE,
            UnsupportedVersion,
        )
    recv_body(net, bo, o2_el, ALICE, "first")
    recv_body(net, bl, lg_el, ALICE, "first")
    # a repeated key exchange (alice has no answer yet) with the kex flag removed: a key-exchange
    # body where a normal message is expected (the sessions exist now)
    again = net.encrypt(a, [BOB], "again")
    o2_again, lg_again = again.elements[O2], again.elements[LEGACY]
    assert is_kex(o2_again, bo.device_id) and is_kex(lg_again, bl.device_id)
    c.decrypt_rejected(
        "OMEMO 2 kex without kex='true'", bo, with_key(o2_again, bo.device_id, kex=False), ALICE, MalformedMessage
    )
    c.decrypt_rejected(
        "legacy kex without prekey='true'", bl, with_key(lg_again, bl.device_id, kex=False), ALICE, MalformedMessage
    )
    recv_body(net, bo, o2_again, ALICE, "again")
    recv_body(net, bl, lg_again, ALICE, "again")
    flush(net)

    second = net.encrypt(a, [BOB], "second")
    o2_el, lg_el = second.elements[O2], second.elements[LEGACY]
    assert not is_kex(o2_el, bo.device_id) and not is_kex(lg_el, bl.device_id)
    o2_msg, lg_msg = key_bytes(o2_el, bo.device_id), key_bytes(lg_el, bl.device_id)
    c.decrypt_rejected(
        "OMEMO 2 message in a legacy element", bl, with_key(lg_el, bl.device_id, o2_msg), ALICE, UnsupportedVersion
    )
    c.decrypt_rejected(
        "legacy message in an OMEMO 2 element", bo, with_key(o2_el, bo.device_id, lg_msg), ALICE, MalformedMessage
    )
    for vb in (0x32, 0x34, 0x43, 0x23, 0x00):
        c.decrypt_rejected(
            f"legacy message, version byte {vb:#x}",
            bl,
            with_key(lg_el, bl.device_id, bytes([vb]) + lg_msg[1:]),
            ALICE,
            UnsupportedVersion,
        )
    # kex='true' on a normal message
    c.decrypt_rejected(
        "OMEMO 2 message with kex='true'", bo, with_key(o2_el, bo.device_id, kex=True), ALICE, MalformedMessage
    )
    c.decrypt_rejected(
        "legacy message with prekey='true'", bl, with_key(lg_el, bl.device_id, kex=True), ALICE, MalformedMessage
    )
    # the legitimate messages still decrypt
    recv_body(net, bo, o2_el, ALICE, "second")
    recv_body(net, bl, lg_el, ALICE, "second")
    flush(net)
    round_trip(net, a, bo, O2, "after")
    round_trip(net, a, bl, LEGACY, "after", back_ns=O2)  # alice is on the OMEMO 2 list
    c.done()


# ================================================================== R12


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R12_stale_unanswered_session_is_not_used_and_a_fresh_bundle_is_fetched(ns: str) -> None:
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    rid = b.device_id
    first = send(net, a, BOB, "never answered", ns)
    ek1 = FLAVOUR[ns].parse_key_exchange(key_bytes(first, rid)).ek

    net.clock.advance(STALE_SESSION_AGE - timedelta(days=1))  # not yet stale: the session is used
    still = a.encrypt_omemo([BOB], "still")
    assert still.ready and FLAVOUR[ns].parse_key_exchange(key_bytes(still.elements[ns], rid)).ek == ek1

    net.clock.advance(timedelta(days=2))  # stale: not used, a fresh bundle is fetched
    before = snapshot(a)
    res = a.encrypt_omemo([BOB], "again")
    assert not res.ready and not res.elements
    assert FetchBundle(BOB, rid, ns) in res.effects
    assert [d.outcome for d in res.devices if d.jid == BOB] == [Outcome.NO_BUNDLE]
    assert snapshot(a) == before
    net.run(a, res.effects)
    res = a.encrypt_omemo([BOB], "again")
    assert res.ready
    ek2 = FLAVOUR[ns].parse_key_exchange(key_bytes(res.elements[ns], rid)).ek
    assert ek2 != ek1
    recv_body(net, b, res.elements[ns], ALICE, "again")
    flush(net)
    round_trip(net, a, b, ns, "after")


# ================================================================== R8 (opt-in variant)


def test_R8_the_legacy_tag_in_payload_variant_is_opt_in() -> None:
    """Issue 14.7: 16-byte key material with the GCM tag at the end of ``<payload/>`` (the
    historical legacy variant; no current sender produces it, current Conversations rejects it)
    is ``MalformedMessage`` with the state unchanged, unless the engine is built with
    ``legacy_tag_in_payload=True``."""
    ns = LEGACY
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    rnd = random.Random(148)
    key, iv = rnd.randbytes(16), rnd.randbytes(12)
    old_style = forge_from_sender(a, b, ns, key, aes_gcm_encrypt(key, iv, b"very old sender"), iv)
    c.decrypt_rejected("tag in the payload, by default", b, old_style, ALICE, MalformedMessage)
    opted = Engine(b.storage, rng=seeded_rng("b-opt"), clock=net.clock, legacy_tag_in_payload=True)
    out = c.returns(
        "tag in the payload, opted in",
        opted,
        lambda: opted.decrypt(old_style, ALICE, to=BOB),
        Decrypted,
        unchanged=False,
    )
    c.expect(getattr(out, "body", None) == "very old sender", f"{out!r}")
    c.done()
