"""Our side of the engine scenarios, and the bare primitive cost ("floor") of each.

The scenarios mirror :mod:`bench.peer_omemo` one for one (OMEMO 2, one device per side unless
noted, in-memory storage, XML elements in and out), so that ``ours_us / peer_us`` compares the
same work:

* ``encrypt``: :meth:`Engine.encrypt` of a short body for bob's one device on a confirmed session
  (SCE envelope, payload, one ratchet step, session saved, ``<encrypted>`` built).
* ``decrypt``: :meth:`Engine.decrypt` of the next in-order message (parse, ratchet step, payload,
  SCE envelope parse, session saved).
* ``session_init``: bob's bundle arrives at a fresh alice device (parse, signature check) and she
  encrypts her first message (X3DH, ratchet start, encryption); bob's device list is known.
* ``session_accept``: bob decrypts the key exchange of a fresh alice device (passive X3DH, first
  DH step, decryption, prekey consumed and refilled, bundle republication built, empty answer
  encrypted).
* ``fanout_100``: one message for bob's 100 devices, all sessions confirmed.
* ``reverse_1000``: 1000 messages of one chain decrypted last-first (total time).

Each scenario takes ``storage``: a factory ``storage(name)`` for the measured device's store
(default: :class:`~e2ee.storage.MemoryStorage`; :mod:`bench.keystore_bench` passes keystores).
Only the measured side (alice for ``encrypt``/``session_init``/``fanout_100``, bob for the others)
gets it; the other devices stay in memory.

Floors (:func:`floors`): only the primitives the protocol demands for the same work
(HMAC/HKDF/AES/X25519/Ed25519), no parsing, no storage, on the call paths :mod:`bench.floor`
hands in (the fastest available, or the engine's own wrappers for the old floor).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

from nacl.bindings import crypto_sign_seed_keypair

from e2ee.engine import Engine
from e2ee.omemo2.wire import OMEMO2
from e2ee.results import Decrypted, FetchBundle, SendMessage
from e2ee.rng import system_random
from e2ee.storage import MemoryStorage, Storage
from tests.engine_support import O2, Net

from .floor import Prims

__all__ = ["SCENARIOS", "floors"]

ALICE, BOB = "alice@example.org", "bob@example.net"
MSG = "Hello Bob, this is a short message."

Op = Callable[[], object]
#: messages per ``reverse_1000`` op (``python -m bench --quick`` lowers it to 100)
REVERSE_LENGTH = 1000
StorageFactory = Callable[[str], Storage]


def _memory(_name: str) -> Storage:
    return MemoryStorage()


def _pair(
    net: Net, bob_devices: int = 1, alice_storage: StorageFactory = _memory, bob_storage: StorageFactory = _memory
) -> tuple[Engine, list[Engine]]:
    """Alice and bob's devices with confirmed sessions, the DH step taken.  ``..._storage(name)``
    makes each device's store."""
    bobs = [net.device(BOB, f"b{i}", rng=system_random, storage=bob_storage(f"b{i}")) for i in range(bob_devices)]
    alice = net.device(ALICE, "a", rng=system_random, storage=alice_storage("a"))
    first = net.encrypt(alice, [BOB], "start")
    for b in bobs:
        out = b.decrypt(first.elements[O2], ALICE, to=BOB)
        for e in out.effects:
            if isinstance(e, SendMessage):
                alice.decrypt(e.encrypted, BOB, to=ALICE)
    back = bobs[0].encrypt_omemo([ALICE], "back")
    alice.decrypt(back.elements[O2], BOB, to=ALICE)
    again = alice.encrypt_omemo([BOB], "again")
    for b in bobs:
        b.decrypt(again.elements[O2], ALICE, to=BOB)
    return alice, bobs


def _encrypt(count: int, storage: StorageFactory = _memory) -> Op:
    alice, _ = _pair(Net(), alice_storage=storage)
    return lambda: alice.encrypt_omemo([BOB], MSG)


def _decrypt(count: int, storage: StorageFactory = _memory) -> Op:
    alice, (bob,) = _pair(Net(), bob_storage=storage)
    supply = iter([alice.encrypt_omemo([BOB], MSG).elements[O2] for _ in range(count)])
    return lambda: bob.decrypt(next(supply), ALICE, to=BOB)


def _session_init(count: int, storage: StorageFactory = _memory) -> Op:
    """Each op: bob's bundle arrives (parse, signature check) and a fresh alice encrypts her
    first message (X3DH, ratchet start, encryption); bob's device list is already known."""
    net = Net()
    bob = net.device(BOB, "b", rng=system_random)
    bundle = net.pep.bundle(BOB, O2, bob.device_id)
    alices = []
    for i in range(count):
        a = net.device(f"alice{i}@example.org", f"a{i}", rng=system_random, storage=storage(f"a{i}"))
        net.run(a, [e for e in a.prepare([BOB]) if not isinstance(e, FetchBundle)])
        alices.append(a)
    it = iter(alices)

    def op() -> object:
        a = next(it)
        a.on_bundle(BOB, bob.device_id, O2, bundle)  # type: ignore[arg-type]
        return a.encrypt_omemo([BOB], MSG)

    return op


def _session_accept(count: int, storage: StorageFactory = _memory) -> Op:
    """Each key exchange names a prekey no other one uses: after each alice encrypted, her prekey
    is taken out of bob's published bundle (as bob's republication would); a bob serves 70."""
    kexes = []
    for start in range(0, count, 70):
        net = Net()
        bob = net.device(BOB, f"b{start}", rng=system_random, storage=storage(f"b{start}"))
        bundle = net.pep.bundle(BOB, O2, bob.device_id)
        assert bundle is not None
        prekeys = bundle.find("{urn:xmpp:omemo:2}prekeys")
        assert prekeys is not None
        for i in range(start, min(count, start + 70)):
            a = net.device(f"alice{i}@example.org", f"a{i}", rng=system_random)
            elem = net.encrypt(a, [BOB], MSG).elements[O2]
            key = elem.find(".//{urn:xmpp:omemo:2}key")
            assert key is not None and key.text
            pk_id = OMEMO2.parse_key_exchange(base64.b64decode(key.text)).pk_id
            for pk in list(prekeys):
                if pk.get("id") == str(pk_id):
                    prekeys.remove(pk)
            kexes.append((bob, a.jid, elem))
    it = iter(kexes)

    def op() -> object:
        bob, jid, elem = next(it)
        out = bob.decrypt(elem, jid, to=BOB)
        assert isinstance(out, Decrypted)
        return out

    return op


def _fanout_100(count: int, storage: StorageFactory = _memory) -> Op:
    alice, _ = _pair(Net(), bob_devices=100, alice_storage=storage)
    return lambda: alice.encrypt_omemo([BOB], MSG)


def _reverse_1000(count: int, storage: StorageFactory = _memory) -> Op:
    alice, (bob,) = _pair(Net(), bob_storage=storage)
    batches = iter(
        [[alice.encrypt_omemo([BOB], MSG).elements[O2] for _ in range(REVERSE_LENGTH)] for _ in range(count)]
    )

    def op() -> object:
        for elem in reversed(next(batches)):
            bob.decrypt(elem, ALICE, to=BOB)
        return None

    return op


SCENARIOS: dict[str, Callable[[int, StorageFactory], Op]] = {
    "encrypt": _encrypt,
    "decrypt": _decrypt,
    "session_init": _session_init,
    "session_accept": _session_accept,
    "fanout_100": _fanout_100,
    "reverse_1000": _reverse_1000,
}


# ---- floors ------------------------------------------------------------------------------------

_ENVELOPE = os.urandom(300)  # about the size of a short message's SCE envelope
_KM = os.urandom(48)
_AD = os.urandom(64)
_ZERO = bytes(32)
_INFO_MK = b"OMEMO Message Key Material"
_INFO_PAYLOAD = b"OMEMO Payload"
_INFO_ROOT = b"OMEMO Root Chain"
_INFO_X3DH = b"OMEMO X3DH"


class _Floor:
    """The bare cryptographic work of each scenario on the primitives ``p``."""

    def __init__(self, p: Prims) -> None:
        self.p = p
        fk = p.hkdf(b"k", _ZERO, _INFO_MK, 80)
        self.ratchet_ct = p.cbc_encrypt(fk[:32], fk[64:], _KM)  # really decrypts under the key of b"k"
        pok = p.hkdf(b"p", _ZERO, _INFO_PAYLOAD, 80)
        self.payload_ct = p.cbc_encrypt(pok[:32], pok[64:], _ENVELOPE)
        self.seed = os.urandom(32)
        self.ik_pub = crypto_sign_seed_keypair(self.seed)[0]  # set-up, not timed
        self.spk = p.x25519_base(os.urandom(32))
        self.sig = p.ed25519_sign(self.seed, self.ik_pub, self.spk)

    def payload_encrypt(self) -> None:
        p = self.p
        okm = p.hkdf(p.random(32), _ZERO, _INFO_PAYLOAD, 80)
        ct = p.cbc_encrypt(okm[:32], okm[64:], _ENVELOPE)
        p.hmac(okm[32:64], ct)

    def ratchet_encrypt(self, ck: bytes) -> None:
        p = self.p
        mk = p.hmac(ck, b"\x01")
        p.hmac(ck, b"\x02")
        okm = p.hkdf(mk, _ZERO, _INFO_MK, 80)
        c = p.cbc_encrypt(okm[:32], okm[64:], _KM)
        p.hmac(okm[32:64], _AD + c)

    def ratchet_open(self) -> None:
        p = self.p
        okm = p.hkdf(b"k", _ZERO, _INFO_MK, 80)
        p.hmac(okm[32:64], _AD + self.ratchet_ct)
        p.cbc_decrypt(okm[:32], okm[64:], self.ratchet_ct)

    def ratchet_decrypt(self, ck: bytes) -> None:
        self.p.hmac(ck, b"\x01")
        self.p.hmac(ck, b"\x02")
        self.ratchet_open()

    def payload_decrypt(self) -> None:
        p = self.p
        okm = p.hkdf(b"p", _ZERO, _INFO_PAYLOAD, 80)
        p.hmac(okm[32:64], self.payload_ct)
        p.cbc_decrypt(okm[:32], okm[64:], self.payload_ct)

    def encrypt(self) -> Op:
        ck = os.urandom(32)

        def op() -> None:
            self.payload_encrypt()
            self.ratchet_encrypt(ck)

        return op

    def decrypt(self) -> Op:
        ck = os.urandom(32)

        def op() -> None:
            self.ratchet_decrypt(ck)
            self.payload_decrypt()

        return op

    def session_init(self) -> Op:
        p = self.p
        own, peer = os.urandom(32), p.x25519_base(os.urandom(32))

        def op() -> None:
            p.ed25519_verify(self.ik_pub, self.spk, self.sig)  # the bundle's signed prekey
            ik_b = p.ed25519_to_x25519(self.ik_pub)
            ek = p.random(32)
            p.x25519_base(ek)
            dh = p.x25519(own, self.spk) + p.x25519(ek, ik_b) + p.x25519(ek, self.spk) + p.x25519(ek, peer)
            sk = p.hkdf(b"\xff" * 32 + dh, _ZERO, _INFO_X3DH, 32)
            r = p.random(32)  # first ratchet key pair, one DH and root KDF
            p.x25519_base(r)
            p.hkdf(p.x25519(r, self.spk), sk, _INFO_ROOT, 64)
            self.payload_encrypt()
            self.ratchet_encrypt(sk)

        return op

    def session_accept(self) -> Op:
        p = self.p
        spk, opk, ik = os.urandom(32), os.urandom(32), os.urandom(32)
        peer_ik, peer_ek = p.x25519_base(os.urandom(32)), p.x25519_base(os.urandom(32))

        def op() -> None:
            dh = p.x25519(spk, peer_ik) + p.x25519(ik, peer_ek) + p.x25519(spk, peer_ek) + p.x25519(opk, peer_ek)
            sk = p.hkdf(b"\xff" * 32 + dh, _ZERO, _INFO_X3DH, 32)
            rk = p.hkdf(p.x25519(spk, peer_ek), sk, _INFO_ROOT, 64)  # receiving chain
            r = p.random(32)  # our next ratchet key pair and sending chain
            p.x25519_base(r)
            p.hkdf(p.x25519(r, peer_ek), rk[:32], _INFO_ROOT, 64)
            self.ratchet_decrypt(sk)
            self.payload_decrypt()
            p.x25519_base(p.random(32))  # the replacement one-time prekey
            self.ratchet_encrypt(sk)  # the empty answer

        return op

    def fanout(self, devices: int = 100) -> Op:
        ck = os.urandom(32)

        def op() -> None:
            self.payload_encrypt()
            for _ in range(devices):
                self.ratchet_encrypt(ck)

        return op

    def reverse(self) -> Op:
        ck = os.urandom(32)
        hmac = self.p.hmac

        def op() -> None:
            for _ in range(REVERSE_LENGTH):  # the first message derives every key of the chain
                hmac(ck, b"\x01")
                hmac(ck, b"\x02")
            for _ in range(REVERSE_LENGTH):
                self.ratchet_open()
                self.payload_decrypt()

        return op


def floors(p: Prims) -> dict[str, Callable[[], Op]]:
    """Scenario name -> a factory of its floor op, on the primitives ``p``."""
    f = _Floor(p)
    return {
        "encrypt": f.encrypt,
        "decrypt": f.decrypt,
        "session_init": f.session_init,
        "session_accept": f.session_accept,
        "fanout_100": f.fanout,
        "reverse_1000": f.reverse,
    }


def fanout_floor(p: Prims, devices: int) -> Op:
    """One message to ``devices`` devices (one payload, one ratchet step per device)."""
    return _Floor(p).fanout(devices)
