"""Security catalogue sections 1 (R1-R12) and 2 (X1-X8) at the engine level.

Everything goes through the public surface a client uses: ``<encrypted/>`` and ``<bundle/>``
elements in (``Engine.decrypt`` / ``Engine.on_bundle``), result values or typed errors out.
Forged inputs are built by editing received elements (base64 text of ``<key>``/``<payload>``,
attributes), re-packing their protobuf with the flavour codecs where needed.

For every rejected input we check (a) the typed error (or result type) the catalogue asks for,
(b) that the stored bytes (``snapshot``) are identical before and after the call, and (c) that
legitimate traffic still decrypts afterwards.  Deviations are collected with :class:`Checks`, so
one run of an anchor lists every case that departs from the catalogue, not only the first one.

R13/R14 (keystore) are not covered here.  The few places where a test reaches below the public
API are test hooks the catalogue itself calls for: a *sender* that puts chosen key material into
its own ratchet (R6 bad padding behind a valid HMAC, R7/R8 key material of a wrong length or a
16-byte IV), and a spy on the payload layer that hands a co-recipient the key material it
legitimately learned (R7).
"""

from __future__ import annotations

import base64
import copy
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import nacl.bindings as nacl_bindings
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import e2ee.ratchet as ratchet_mod
from e2ee.core import _BY_NS
from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import (
    AuthenticationFailed,
    E2EEError,
    InvalidBundle,
    InvalidKey,
    InvalidSignature,
    MalformedMessage,
    MissingPreKey,
    ReusedBaseKey,
    SenderDistrusted,
    TooManySkippedKeys,
    UnknownPreKey,
    UnknownSignedPreKey,
    UnsupportedVersion,
)
from e2ee.flavour import Flavour
from e2ee.legacy import payload as legacy_payload
from e2ee.legacy.wire import LEGACY as LEGACY_FLAVOUR
from e2ee.limits import (
    HEARTBEAT_THRESHOLD,
    MAX_SKIP,
    MAX_SKIPPED_KEYS_PER_SESSION,
    PREKEY_COUNT,
    SPK_GRACE,
    SPK_ROTATION,
    STALE_SESSION_AGE,
)
from e2ee.model import EncryptedElement, KeyElement
from e2ee.omemo2 import envelope as sce
from e2ee.omemo2 import payload as omemo2_payload
from e2ee.omemo2.wire import OMEMO2 as OMEMO2_FLAVOUR
from e2ee.primitives import aes_cbc_encrypt, aes_gcm_encrypt, hkdf_sha256, hmac_sha256, x25519, x25519_public
from e2ee.results import (
    Decrypted,
    Duplicate,
    EmptyMessage,
    FetchBundle,
    Outcome,
    Publish,
    SendMessage,
    UntrustedIdentity,
)
from e2ee.sessions import session_key
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel
from e2ee.wire import legacy_pb2, omemo2_pb2

from .engine_support import LEGACY, O2, Net, snapshot
from .support import seeded_rng

NS_BOTH = [O2, LEGACY]
FLAVOUR: dict[str, Flavour] = {O2: OMEMO2_FLAVOUR, LEGACY: LEGACY_FLAVOUR}
KEX_ATTR = {O2: "kex", LEGACY: "prekey"}

ALICE = "alice@example.org"
BOB = "bob@example.net"
CAROL = "carol@example.com"
DAVE = "dave@example.com"
MALLORY = "mallory@evil.example"

P = 2**255 - 19
#: Ed25519 group order
L = 2**252 + 27742317777372353535851937790883648493

#: canonical u-coordinates of the Curve25519 points of order 1, 2, 4 and 8
LOW_ORDER_U = [
    bytes(32),
    (1).to_bytes(32, "little"),
    (P - 1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]
#: Ed25519 encodings of small-order points: the neutral element (y = 1), the point of order 2
#: (y = -1) and one of order 4 (y = 0)
LOW_ORDER_ED = [(1).to_bytes(32, "little"), (P - 1).to_bytes(32, "little"), bytes(32)]

BUNDLE_TAGS = {
    O2: {"spk": "spk", "spks": "spks", "ik": "ik", "pk": "pk", "spk_id": "id", "pk_id": "id"},
    LEGACY: {
        "spk": "signedPreKeyPublic",
        "spks": "signedPreKeySignature",
        "ik": "identityKey",
        "pk": "preKeyPublic",
        "spk_id": "signedPreKeyId",
        "pk_id": "preKeyId",
    },
}


# ================================================================== soft checks


class Checks:
    """Collects every departure from the catalogue; :meth:`done` fails with the whole list."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def rejected(
        self,
        label: str,
        engine: Engine,
        call: Callable[[], Any],
        errors: type[E2EEError] | tuple[type[E2EEError], ...],
    ) -> E2EEError | None:
        """``call`` must raise one of ``errors`` and leave the stored bytes unchanged.  Errors
        that are not ours propagate (the catalogue forbids them)."""
        names = "/".join(e.__name__ for e in (errors if isinstance(errors, tuple) else (errors,)))
        before = snapshot(engine)
        caught: E2EEError | None = None
        try:
            got = call()
        except errors as e:
            caught = e
        except E2EEError as e:
            self.problems.append(f"{label}: raised {type(e).__name__}({e}), expected {names}")
        else:
            self.problems.append(f"{label}: accepted (returned {type(got).__name__}), expected {names}")
        if snapshot(engine) != before:
            self.problems.append(f"{label}: stored state changed")
        return caught

    def decrypt_rejected(
        self,
        label: str,
        engine: Engine,
        element: ET.Element,
        sender: str,
        errors: type[E2EEError] | tuple[type[E2EEError], ...],
    ) -> E2EEError | None:
        return self.rejected(label, engine, lambda: engine.decrypt(element, sender, to=engine.jid), errors)

    def returns(self, label: str, engine: Engine, call: Callable[[], Any], rtype: type, unchanged: bool) -> Any:
        """``call`` must return a ``rtype`` (and, if ``unchanged``, store nothing)."""
        before = snapshot(engine)
        try:
            got = call()
        except E2EEError as e:
            self.problems.append(f"{label}: raised {type(e).__name__}({e}), expected {rtype.__name__}")
            return None
        if not isinstance(got, rtype):
            self.problems.append(f"{label}: returned {type(got).__name__}, expected {rtype.__name__}")
        if unchanged and snapshot(engine) != before:
            self.problems.append(f"{label}: stored state changed")
        return got

    def expect(self, condition: bool, label: str) -> None:
        if not condition:
            self.problems.append(label)

    def done(self) -> None:
        assert not self.problems, "catalogue deviations:\n  " + "\n  ".join(self.problems)


# ================================================================== devices and traffic


def dev(net: Net, jid: str, seed: str, ns: str) -> Engine:
    """A device peers reach in ``ns``: legacy-only devices are only on the legacy list."""
    return net.device(jid, seed, namespaces=(ns,) if ns == LEGACY else NAMESPACES)


def device_with_rng(net: Net, jid: str, rng: Callable[[int], bytes], ns: str) -> Engine:
    """Like :meth:`Net.device`, with a caller-supplied randomness source."""
    engine = Engine.create(MemoryStorage(), jid, rng=rng, clock=net.clock)
    net.engines.append(engine)
    wanted = (ns,) if ns == LEGACY else NAMESPACES
    for effect in engine.publish():
        if isinstance(effect, Publish) and net._namespace_of(effect.node) in wanted:
            net.publish(engine, effect)
    return engine


def find_engine(net: Net, jid: str, device_id: int) -> Engine:
    (engine,) = [e for e in net.engines if e.jid == jid and e.device_id == device_id]
    return engine


def send(net: Net, sender: Engine, to: str, body: str, ns: str) -> ET.Element:
    res = net.encrypt(sender, [to], body)
    assert res.ready, res.devices
    return res.elements[ns]


def recv(net: Net, receiver: Engine, element: ET.Element, sender: str, **kw: Any) -> Any:
    """Decrypt and carry out the effects (publications, fetches; empty messages are queued)."""
    out = receiver.decrypt(element, sender, to=receiver.jid, **kw)
    net.run(receiver, out.effects)
    return out


def recv_body(net: Net, receiver: Engine, element: ET.Element, sender: str, body: str) -> None:
    out = recv(net, receiver, element, sender)
    assert isinstance(out, Decrypted) and out.body == body, out


def flush(net: Net) -> list[Any]:
    """Deliver every queued empty message (key-exchange answers, heartbeats...); messages to a
    device that does not exist (an attacker's made-up one) are dropped."""
    results = []
    while net.outbox:
        for sender, msg in net.take_outbox():
            targets = [e for e in net.engines if e.jid == msg.jid and e.device_id == msg.device_id]
            if targets:
                results.append(recv(net, targets[0], msg.encrypted, sender.jid))
    return results


def establish(net: Net, a: Engine, b: Engine, ns: str) -> None:
    """a starts a session with b; b's answer reaches a (the session is confirmed)."""
    recv_body(net, b, send(net, a, b.jid, "hello", ns), a.jid, "hello")
    answers = flush(net)
    assert answers and all(isinstance(r, EmptyMessage) for r in answers)


def round_trip(net: Net, a: Engine, b: Engine, ns: str, tag: str, back_ns: str | None = None) -> None:
    """Legitimate traffic both ways still decrypts (``back_ns``: the namespace b reaches a in)."""
    recv_body(net, b, send(net, a, b.jid, f"{tag} a->b", ns), a.jid, f"{tag} a->b")
    recv_body(net, a, send(net, b, a.jid, f"{tag} b->a", back_ns or ns), b.jid, f"{tag} b->a")
    flush(net)


def prekey_ids(engine: Engine, *, include_used: bool = True) -> set[int]:
    keys = engine._own._prekeys()["keys"]
    return {int(k) for k, v in keys.items() if include_used or not v["used"]}


# ================================================================== element surgery


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def ns_of(element: ET.Element) -> str:
    return element.tag[1:].partition("}")[0]


def key_elem(element: ET.Element, rid: int) -> ET.Element:
    (k,) = [k for k in element.iter() if str(k.tag).endswith("}key") and k.get("rid") == str(rid)]
    return k


def key_bytes(element: ET.Element, rid: int) -> bytes:
    return base64.b64decode(key_elem(element, rid).text or "")


def is_kex(element: ET.Element, rid: int) -> bool:
    return key_elem(element, rid).get(KEX_ATTR[ns_of(element)]) == "true"


_KEEP = object()


def with_key(element: ET.Element, rid: int, data: bytes | None = None, *, kex: Any = _KEEP) -> ET.Element:
    """A copy of ``element`` whose key for ``rid`` carries ``data`` (and the kex flag set/removed)."""
    out = copy.deepcopy(element)
    k = key_elem(out, rid)
    if data is not None:
        k.text = base64.b64encode(data).decode()
    if kex is not _KEEP:
        attr = KEX_ATTR[ns_of(out)]
        if kex:
            k.set(attr, "true")
        else:
            k.attrib.pop(attr, None)
    return out


def with_payload(element: ET.Element, text: str | None) -> ET.Element:
    out = copy.deepcopy(element)
    p = out.find(q(ns_of(out), "payload"))
    assert p is not None
    p.text = text
    return out


def payload_bytes(element: ET.Element) -> bytes:
    p = element.find(q(ns_of(element), "payload"))
    assert p is not None
    return base64.b64decode(p.text or "")


def legacy_iv(element: ET.Element) -> ET.Element:
    iv = element.find(f"{q(LEGACY, 'header')}/{q(LEGACY, 'iv')}")
    assert iv is not None
    return iv


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def repack(ns: str, data: bytes, rnd: random.Random, **changes: Any) -> bytes:
    """A ratchet message with header fields changed (dh, n, pn, ciphertext) and a MAC under a
    random key: framing valid, authentication impossible."""
    m = FLAVOUR[ns].parse_message(data)
    fields = {"dh": m.dh_pub, "n": m.n, "pn": m.pn, "ct": m.ciphertext} | changes
    return FLAVOUR[ns].pack_message(fields["dh"], fields["n"], fields["pn"], fields["ct"], rnd.randbytes(32), b"")


def kex_proto(ns: str, data: bytes) -> Any:
    if ns == O2:
        m = omemo2_pb2.OMEMOKeyExchange()
        m.MergeFromString(data)
    else:
        assert data[0] == 0x33
        m = legacy_pb2.PreKeySignalMessage()
        m.MergeFromString(data[1:])
    return m


def kex_bytes(ns: str, m: Any) -> bytes:
    if ns == O2:
        return bytes(m.SerializePartialToString())
    return b"\x33" + m.SerializeToString()


def repack_kex(ns: str, data: bytes, **changes: Any) -> bytes:
    """A key exchange with pk_id/spk_id/ek (raw)/message changed, through the flavour codec."""
    k = FLAVOUR[ns].parse_key_exchange(data)
    fields = {"pk_id": k.pk_id, "spk_id": k.spk_id, "ik": k.ik, "ek": k.ek, "message": k.message} | changes
    return FLAVOUR[ns].pack_key_exchange(
        fields["pk_id"], fields["spk_id"], fields["ik"], fields["ek"], fields["message"]
    )


def kex_with_raw_ek(ns: str, data: bytes, ek_wire: bytes) -> bytes:
    """A key exchange whose base key field holds exactly ``ek_wire`` (any length/prefix)."""
    m = kex_proto(ns, data)
    if ns == O2:
        m.ek = ek_wire
    else:
        m.baseKey = ek_wire
    return kex_bytes(ns, m)


def flip_inner_mac(ns: str, kex_data: bytes) -> bytes:
    """The key exchange with one bit of its embedded message's MAC flipped."""
    k = FLAVOUR[ns].parse_key_exchange(kex_data)
    if ns == O2:
        outer = omemo2_pb2.OMEMOAuthenticatedMessage()
        outer.MergeFromString(k.message)
        outer.mac = flip(outer.mac, 0)
        message = outer.SerializeToString()
    else:
        message = flip(k.message, len(k.message) * 8 - 1)
    return repack_kex(ns, kex_data, message=message)


def encode_key(ns: str, raw: bytes) -> bytes:
    return FLAVOUR[ns].encode_public(raw)


# ---- a sender that chooses its key material (test hook) -----------------------------------


def forge_from_sender(
    sender: Engine, receiver: Engine, ns: str, key_material: bytes, payload: bytes | None, iv: bytes | None = None
) -> ET.Element:
    """An ``<encrypted/>`` whose key for ``receiver`` is ``key_material`` under the sender's real
    ratchet (advanced and saved, as a send would), with the given payload and legacy iv."""
    backend = _BY_NS[ns]
    fname = backend.flavour.name
    with sender.storage.transaction():
        sset = sender._sessions.load(session_key(fname, receiver.jid, receiver.device_id))
        data, kex = sset.entries[0].session.encrypt(key_material)
        sender._sessions.save(sset)
    key = KeyElement(receiver.device_id, data, kex, receiver.jid if ns == O2 else None)
    if ns == LEGACY and iv is None:
        iv = bytes(12)
    enc = EncryptedElement(fname, sender.device_id, (key,), payload, iv)
    return backend.xml.build_encrypted(enc)


def omemo2_keys(key: bytes) -> tuple[bytes, bytes, bytes]:
    okm = hkdf_sha256(key, bytes(32), b"OMEMO Payload", 80)
    return okm[:32], okm[32:64], okm[64:80]


# ---- Curve25519 arithmetic for a torsioned base key -----------------------------------------

_D = (-121665 * pow(121666, P - 2, P)) % P


def _sqrt(a: int) -> int:
    a %= P
    r = pow(a, (P + 3) // 8, P)
    if r * r % P != a:
        r = r * pow(2, (P - 1) // 4, P) % P
    assert r * r % P == a, "not a square"
    return r


def _edwards(u: int) -> tuple[int, int]:
    y = (u - 1) * pow(u + 1, P - 2, P) % P
    x = _sqrt((y * y - 1) * pow(_D * y * y + 1, P - 2, P))
    return x, y


def add_torsion(u_bytes: bytes) -> bytes:
    """The u-coordinate of (the point of) ``u_bytes`` plus a point of order 8.  Clamped X25519
    scalars are multiples of 8, so every DH with it equals the DH with the original key."""
    x1, y1 = _edwards(int.from_bytes(u_bytes, "little"))
    x2, y2 = _edwards(int.from_bytes(LOW_ORDER_U[3], "little"))
    t = _D * x1 * x2 * y1 * y2 % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    out = ((1 + y3) * pow(1 - y3, P - 2, P) % P).to_bytes(32, "little")
    probe = seeded_rng("torsion-probe")(32)
    assert out != u_bytes and x25519(probe, out) == x25519(probe, u_bytes)
    return out


# ================================================================== R1


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R1_held_back_and_shuffled_delivery_decrypt_exactly_once_and_skipped_store_empties(ns: str) -> None:
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)

    held = [(send(net, a, BOB, f"held {i}", ns), f"held {i}") for i in range(10)]
    for i in range(10):
        recv_body(net, b, send(net, a, BOB, f"a {i}", ns), ALICE, f"a {i}")
    for i in range(10):  # one DH step each way
        recv_body(net, a, send(net, b, ALICE, f"b {i}", ns), BOB, f"b {i}")
    recv_body(net, b, send(net, a, BOB, "after", ns), ALICE, "after")  # bob leaves the held chain
    flush(net)
    assert len(snapshot(b)["skipped"]) >= 10  # the held-back keys wait in the store
    for el, body in held:
        recv_body(net, b, el, ALICE, body)
    for el, _ in held:  # exactly once
        before = snapshot(b)
        assert isinstance(b.decrypt(el, ALICE, to=BOB), Duplicate)
        assert snapshot(b) == before

    # 50 each way, sent interleaved, delivered shuffled and interleaved with the sending
    rnd = random.Random(f"R1/{ns}")
    order = ["a"] * 50 + ["b"] * 50
    rnd.shuffle(order)
    pending: list[tuple[Engine, Engine, ET.Element, str]] = []
    delivered: list[tuple[Engine, Engine, ET.Element, str]] = []
    counts = {"a": 0, "b": 0}
    for who in order:
        s, r = (a, b) if who == "a" else (b, a)
        body = f"shuffled {who} {counts[who]}"
        counts[who] += 1
        pending.append((s, r, send(net, s, r.jid, body, ns), body))
        if rnd.random() < 0.4:
            rnd.shuffle(pending)
            item = pending.pop()
            recv_body(net, item[1], item[2], item[0].jid, item[3])
            delivered.append(item)
    rnd.shuffle(pending)
    for item in pending:
        recv_body(net, item[1], item[2], item[0].jid, item[3])
        delivered.append(item)
    assert len(delivered) == 100
    for s, r, el, _ in delivered:
        assert isinstance(r.decrypt(el, s.jid, to=r.jid), Duplicate)
    flush(net)
    round_trip(net, a, b, ns, "final")

    # the skipped-key store returns to empty
    left = {e.jid: len(snapshot(e)["skipped"]) for e in (a, b)}
    assert left == {ALICE: 0, BOB: 0}, f"skipped keys left over after every message was delivered: {left}"


# ================================================================== R2


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R2_redelivered_replayed_and_evicted_messages_are_Duplicate_and_change_nothing(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)

    live = send(net, a, BOB, "live", ns)
    recv_body(net, b, live, ALICE, "live")
    c.returns("live duplicate", b, lambda: b.decrypt(live, ALICE, to=BOB), Duplicate, unchanged=True)

    # a message delivered out of order (its key came from the skipped store), then replayed
    late = send(net, a, BOB, "late", ns)
    recv_body(net, b, send(net, a, BOB, "early", ns), ALICE, "early")
    recv_body(net, b, late, ALICE, "late")
    c.returns("skipped-key duplicate", b, lambda: b.decrypt(late, ALICE, to=BOB), Duplicate, unchanged=True)

    # a MAM duplicate after several DH steps (its chain is now an old one), with a delay stamp
    for i in range(3):
        round_trip(net, a, b, ns, f"step {i}")
    stamp = net.clock() - timedelta(hours=1)
    for label, el in (("MAM duplicate", live), ("MAM duplicate of skipped", late)):
        c.returns(label, b, lambda el=el: b.decrypt(el, ALICE, to=BOB, timestamp=stamp), Duplicate, unchanged=True)

    # a message whose skipped key was evicted (FIFO beyond MAX_SKIPPED_KEYS_PER_SESSION)
    net.prepare(a, [BOB])
    burst = [a.encrypt([BOB], f"burst {i}").elements[ns] for i in range(MAX_SKIPPED_KEYS_PER_SESSION + 3)]
    recv_body(net, b, burst[MAX_SKIPPED_KEYS_PER_SESSION], ALICE, f"burst {MAX_SKIPPED_KEYS_PER_SESSION}")
    recv_body(net, b, burst[-1], ALICE, f"burst {len(burst) - 1}")  # one more skip: burst 0 evicted
    c.expect(len(snapshot(b)["skipped"]) == MAX_SKIPPED_KEYS_PER_SESSION, "skipped store not capped at its limit")
    c.returns("evicted-key replay", b, lambda: b.decrypt(burst[0], ALICE, to=BOB), Duplicate, unchanged=True)
    recv_body(net, b, burst[1], ALICE, "burst 1")  # the next-oldest key was kept
    recv_body(net, b, burst[-2], ALICE, f"burst {len(burst) - 2}")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R3


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R3_counter_jumps_beyond_MAX_SKIP_are_refused_before_any_derivation(
    ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Checks()
    rnd = random.Random(f"R3/{ns}")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    recv_body(net, b, send(net, a, BOB, "0", ns), ALICE, "0")  # bob's receiving chain: nr = 1
    legit = send(net, a, BOB, "1", ns)
    rid = b.device_id
    data = key_bytes(legit, rid)
    m = FLAVOUR[ns].parse_message(data)
    assert m.n == 1

    def fresh() -> bytes:
        return x25519_public(rnd.randbytes(32))

    cases = {
        # (a) same chain, counter jump above the limit
        "same chain, n = nr + MAX_SKIP + 1": repack(ns, data, rnd, n=1 + MAX_SKIP + 1),
        "same chain, n = 2^32 - 1": repack(ns, data, rnd, n=2**32 - 1),
        # (b) a new ratchet key forcing skips on the old chain
        "new key, pn = 2^32 - 1": repack(ns, data, rnd, dh=fresh(), n=0, pn=2**32 - 1),
        "new key, n = MAX_SKIP + 1": repack(ns, data, rnd, dh=fresh(), n=MAX_SKIP + 1, pn=0),
        "new key, old + new chain together above the limit": repack(ns, data, rnd, dh=fresh(), n=401, pn=1 + 600),
    }
    calls = {"hmac": 0, "dh": 0}
    real_hmac, real_dh = ratchet_mod.hmac_sha256, ratchet_mod.x25519

    def counting_hmac(key: bytes, msg: bytes) -> bytes:
        calls["hmac"] += 1
        return real_hmac(key, msg)

    def counting_dh(priv: bytes, pub: bytes) -> bytes:
        calls["dh"] += 1
        return real_dh(priv, pub)

    monkeypatch.setattr(ratchet_mod, "hmac_sha256", counting_hmac)
    monkeypatch.setattr(ratchet_mod, "x25519", counting_dh)
    for label, forged in cases.items():
        c.decrypt_rejected(label, b, with_key(legit, rid, forged), ALICE, TooManySkippedKeys)
    # (c) 10^4 such messages
    template = copy.deepcopy(legit)
    k = key_elem(template, rid)
    before = snapshot(b)
    wrong = 0
    for i in range(10_000):
        if i % 2:
            forged = repack(ns, data, rnd, n=2 + MAX_SKIP + rnd.randrange(2**31))
        else:
            forged = repack(ns, data, rnd, dh=fresh(), n=rnd.randrange(1000), pn=1 + MAX_SKIP + rnd.randrange(2**31))
        k.text = b64(forged)
        try:
            b.decrypt(template, ALICE, to=BOB)
        except TooManySkippedKeys:
            continue
        except E2EEError:
            wrong += 1
    c.expect(wrong == 0, f"10^4 flood: {wrong} messages not refused as TooManySkippedKeys")
    c.expect(snapshot(b) == before, "10^4 flood: stored state changed")
    c.expect(calls == {"hmac": 0, "dh": 0}, f"keys were derived before the refusal: {calls}")

    # exactly at the limit: keys are derived (so the counters above are live), then the forged
    # MAC fails; nothing is kept
    c.decrypt_rejected(
        "same chain, n = nr + MAX_SKIP (bad MAC)",
        b,
        with_key(legit, rid, repack(ns, data, rnd, n=1 + MAX_SKIP)),
        ALICE,
        AuthenticationFailed,
    )
    c.expect(calls["hmac"] >= 2 * MAX_SKIP, f"derivation counter not live: {calls}")
    monkeypatch.undo()
    c.expect(len(snapshot(b)["skipped"]) <= MAX_SKIPPED_KEYS_PER_SESSION, "skipped store above its limit")
    recv_body(net, b, legit, ALICE, "1")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R4


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R4_bit_flips_of_the_authenticated_message_are_rejected_and_change_nothing(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    legit = send(net, a, BOB, "flip me", ns)  # the first message of alice's new ratchet key
    rid = b.device_id
    assert not is_kex(legit, rid)
    data = key_bytes(legit, rid)
    m = FLAVOUR[ns].parse_message(data)
    assert m.n == 0

    def region(part: bytes) -> range:
        start = data.find(part)
        assert start >= 0 and data.find(part, start + 1) < 0
        return range(start, start + len(part))

    key_bytes_range = region(encode_key(ns, m.dh_pub))
    ct_bytes = region(m.ciphertext)
    mac_bytes = region(m.mac)
    header = [i for i in range(len(data)) if i not in ct_bytes and i not in mac_bytes]
    rnd = random.Random(f"R4/{ns}")
    bits = set(range(8))  # the first byte (legacy: the version byte)
    bits |= set(rnd.sample([i * 8 + j for i in header for j in range(8)], 24))
    bits |= set(rnd.sample([i * 8 + j for i in ct_bytes for j in range(8)], 20))
    bits |= set(rnd.sample([i * 8 + j for i in mac_bytes for j in range(8)], 20))
    bits |= {key_bytes_range[-1] * 8 + 7}  # the top bit of the ratchet key
    template = copy.deepcopy(legit)
    k = key_elem(template, rid)
    seen: dict[str, int] = {}
    for bit in sorted(bits):
        k.text = b64(flip(data, bit))
        allowed: tuple[type[E2EEError], ...] = (AuthenticationFailed, MalformedMessage)
        if bit // 8 in key_bytes_range:  # catalogue X2: a malformed ratchet key is InvalidKey
            allowed += (InvalidKey,)
        err = c.decrypt_rejected(f"bit {bit} (byte {bit // 8} of {len(data)})", b, template, ALICE, allowed)
        if err is not None:
            seen[type(err).__name__] = seen.get(type(err).__name__, 0) + 1
    c.expect(seen.get("AuthenticationFailed", 0) >= 40, f"most flips must reach the MAC check: {seen}")
    if ns == LEGACY:
        c.decrypt_rejected("version byte 0x32", b, with_key(legit, rid, b"\x32" + data[1:]), ALICE, UnsupportedVersion)
    recv_body(net, b, legit, ALICE, "flip me")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R5


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R5_garbage_with_fresh_ratchet_keys_and_a_forged_kex_leave_no_trace(ns: str) -> None:
    c = Checks()
    rnd = random.Random(f"R5/{ns}")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    rid = b.device_id

    # a forged key exchange: alice's ciphertext under a swapped base key
    first = send(net, a, BOB, "first", ns)
    assert is_kex(first, rid)
    kdata = key_bytes(first, rid)
    pk_id = FLAVOUR[ns].parse_key_exchange(kdata).pk_id
    for i in range(3):
        forged = repack_kex(ns, kdata, ek=x25519_public(rnd.randbytes(32)))
        c.decrypt_rejected(
            f"kex with swapped base key #{i}", b, with_key(first, rid, forged), ALICE, AuthenticationFailed
        )
    c.expect(pk_id in prekey_ids(b), "the forged key exchange consumed the prekey")
    recv_body(net, b, first, ALICE, "first")
    flush(net)

    # 1000 garbage messages with fresh ratchet keys and valid framing
    template_src = send(net, a, BOB, "after garbage", ns)
    template = copy.deepcopy(template_src)
    k = key_elem(template, rid)
    before = snapshot(b)
    outcomes: dict[str, int] = {}
    for _ in range(1000):
        garbage = FLAVOUR[ns].pack_message(
            x25519_public(rnd.randbytes(32)),
            rnd.randrange(20),
            rnd.randrange(20),
            rnd.randbytes(16 * rnd.randint(1, 4)),
            rnd.randbytes(32),
            rnd.randbytes(64),
        )
        k.text = b64(garbage)
        try:
            got = b.decrypt(template, ALICE, to=BOB)
            name = f"accepted:{type(got).__name__}"
        except E2EEError as e:
            name = type(e).__name__
        outcomes[name] = outcomes.get(name, 0) + 1
        if snapshot(b) != before:
            c.problems.append("garbage message changed the stored state")
            break
    c.expect(outcomes == {"AuthenticationFailed": 1000}, f"garbage outcomes: {outcomes}")
    recv_body(net, b, template_src, ALICE, "after garbage")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


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
        res = sender.encrypt([BOB], "x")
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
    sa = a._sessions.load(session_key(FLAVOUR[ns].name, BOB, b.device_id)).entries[0].session.ratchet
    sb = b._sessions.load(session_key(FLAVOUR[ns].name, ALICE, a.device_id)).entries[0].session.ratchet
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
    msgs = [a.encrypt([BOB], f"m{i}").elements[ns] for i in range(HEARTBEAT_THRESHOLD + 10)]
    order = [HEARTBEAT_THRESHOLD] + [i for i in range(len(msgs)) if i != HEARTBEAT_THRESHOLD]
    heartbeats: list[SendMessage] = []
    for i in order:
        out = b.decrypt(msgs[i], ALICE, to=BOB)
        assert isinstance(out, Decrypted) and out.body == f"m{i}"
        heartbeats += [e for e in out.effects if isinstance(e, SendMessage)]
    for i in range(HEARTBEAT_THRESHOLD + 5):  # and alice keeps talking before the heartbeat arrives
        out = b.decrypt(a.encrypt([BOB], f"n{i}").elements[ns], ALICE, to=BOB)
        heartbeats += [e for e in out.effects if isinstance(e, SendMessage)]
    c.expect([h.reason for h in heartbeats] == ["heartbeat"], f"heartbeats: {[h.reason for h in heartbeats]}")
    if heartbeats:
        got = a.decrypt(heartbeats[0].encrypted, BOB, to=ALICE)
        c.expect(isinstance(got, EmptyMessage), f"the heartbeat is shown as {type(got).__name__}")
        c.expect(not hasattr(got, "body"), "an empty message carries a body")

    # empty messages need no trust, either way
    a.set_trust(BOB, b.identity_key, TrustLevel.UNDECIDED)
    b.set_trust(ALICE, a.identity_key, TrustLevel.UNDECIDED)
    c.expect(not a.encrypt([BOB], "content").ready, "content encrypted for an undecided key")
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
    still = a.encrypt([BOB], "still")
    assert still.ready and FLAVOUR[ns].parse_key_exchange(key_bytes(still.elements[ns], rid)).ek == ek1

    net.clock.advance(timedelta(days=2))  # stale: not used, a fresh bundle is fetched
    before = snapshot(a)
    res = a.encrypt([BOB], "again")
    assert not res.ready and not res.elements
    assert FetchBundle(BOB, rid, ns) in res.effects
    assert [d.outcome for d in res.devices if d.jid == BOB] == [Outcome.NO_BUNDLE]
    assert snapshot(a) == before
    net.run(a, res.effects)
    res = a.encrypt([BOB], "again")
    assert res.ready
    ek2 = FLAVOUR[ns].parse_key_exchange(key_bytes(res.elements[ns], rid)).ek
    assert ek2 != ek1
    recv_body(net, b, res.elements[ns], ALICE, "again")
    flush(net)
    round_trip(net, a, b, ns, "after")


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
    c.expect(not a.encrypt([BOB], "x").ready, "a session was possible after refused bundles")

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
    old_spk = b._own._spk()["current"]
    net.clock.advance(SPK_ROTATION + timedelta(hours=1))
    net.run(b, b.maintenance())
    assert b._own._spk()["current"]["id"] != old_spk["id"]
    kd = dave.encrypt([BOB], "inside grace").elements[ns]
    km = mallory.encrypt([BOB], "after grace").elements[ns]
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
    c.expect(not [k for k, v in restarted._own._prekeys()["keys"].items() if v["used"]], "used prekeys left")
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
    c.expect(not a.encrypt([BOB], "x").ready, "a refused bundle was kept")

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
    stored = carol._devices.bundle(FLAVOUR[ns].name, BOB, rid)
    assert stored is not None
    forced.append(sorted(stored.bundle.prekeys).index(pk).to_bytes(4, "big"))
    kc = carol.encrypt([BOB], "carol").elements[ns]
    assert FLAVOUR[ns].parse_key_exchange(key_bytes(kc, rid)).pk_id == pk, "could not steer carol's choice"

    def published_prekeys() -> dict[str, set[int]]:
        out = {}
        for n in NS_BOTH:
            elem = net.pep.bundle(BOB, n, rid)
            assert elem is not None
            out[n] = set(_BY_NS[n].xml.parse_bundle(elem).prekeys)
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
    res = impostor.encrypt([ALICE], "new identity")
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

    first = mallory.encrypt([ALICE], "hi, it is bob")
    assert first.ready
    got = recv(net, a, _as_device(first.elements[ns], ns, b1.device_id), BOB)
    assert isinstance(got, Decrypted) and got.identity_key == ik_m and got.trust is TrustLevel.BLIND
    _answer_to(net, a, b1.device_id, mallory)  # the impostor's session is confirmed: normal messages

    a.set_trust(BOB, ik_b, TrustLevel.VERIFIED)
    a.set_trust(BOB, ik_m, archived_level)
    recv_body(net, a, send(net, b1, ALICE, "the real bob", ns), BOB, "the real bob")
    flush(net)

    later = mallory.encrypt([ALICE], "now listen to me")
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
    res = twin.encrypt([ALICE], "device 2 is mine now")
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
    c.expect(a._devices.identity(BOB, b2.device_id) == ik1, "the slot's key changed")

    a.set_trust(BOB, ik2, TrustLevel.DISTRUSTED)
    c.decrypt_rejected(
        "device 2 after its key was distrusted", a, send(net, b2, ALICE, "again", ns), BOB, SenderDistrusted
    )
    c.done()


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
