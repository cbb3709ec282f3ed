"""Shared harness of the catalogue tests (docs/security-catalogue.md): the soft :class:`Checks`,
the one "refused and unchanged" assertion, device/traffic helpers and element surgery.

Everything here runs real engines on :class:`~e2ee.storage.MemoryStorage` or real keystore files
through the fake PEP service of ``tests/engine_support.py``.

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
from pathlib import Path
from typing import Any

import pytest

from e2ee.engine import NAMESPACES, Engine, parse_device_list
from e2ee.errors import (
    E2EEError,
)
from e2ee.flavour import Flavour
from e2ee.keystore import KdfParams, Keystore
from e2ee.legacy import xml as legacy_xml
from e2ee.legacy.wire import LEGACY as LEGACY_FLAVOUR
from e2ee.model import DeviceEntry, DeviceList, EncryptedElement
from e2ee.omemo2 import xml as omemo2_xml
from e2ee.omemo2.wire import OMEMO2 as OMEMO2_FLAVOUR
from e2ee.primitives import hkdf_sha256, x25519
from e2ee.registry import backend as omemo_backend
from e2ee.results import (
    Decrypted,
    EmptyMessage,
    Outcome,
    Publish,
)
from e2ee.sessions import session_key
from e2ee.storage import TABLES, MemoryStorage
from e2ee.trust import TrustPolicy
from e2ee.wire import legacy_pb2, omemo2_pb2

from ..engine_support import LEGACY, O2, Net, snapshot
from ..support import seeded_rng, sql

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


def assert_refused_unchanged(
    state: Engine | Callable[[], object],
    call: Callable[[], object],
    errors: type[BaseException] | tuple[type[BaseException], ...],
    label: str = "",
) -> Any:
    """``call`` must raise one of ``errors`` (the typed error the catalogue asks for) and leave the
    stored state byte-identical: :func:`~tests.engine_support.snapshot` of an engine, or whatever
    ``state()`` returns (the bytes of a keystore's files, say).  Returns the error."""
    read: Callable[[], object] = (lambda: snapshot(state)) if isinstance(state, Engine) else state
    before = read()
    with pytest.raises(errors) as refused:
        call()
    assert read() == before, f"{label}: stored state changed" if label else "stored state changed"
    return refused.value


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
    keys = engine.context.own._prekeys()["keys"]
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
    backend = omemo_backend(ns)
    fname = backend.flavour.name
    with sender.storage.transaction():
        sset = sender.context.sessions.load(session_key(fname, receiver.jid, receiver.device_id))
        data, kex = sset.entries[0].session.encrypt(key_material)
        sender.context.sessions.save(sset)
    key = backend.key_element(receiver.device_id, data, kex, receiver.jid)
    if ns == LEGACY and iv is None:
        iv = bytes(12)
    enc = EncryptedElement(fname, sender.device_id, (key,), payload, iv)
    return backend.build_encrypted(enc)


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


ROOM = "room@muc.example.org"

PW = "catalogue keystore passphrase"
FAST = KdfParams.floor()


# ================================================================== devices, keystores, files (sections 3 and 5)


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
    engine.context.sessions.forget_cache()


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
