"""Micro-benchmarks of the ratchet: our per-message symmetric step and DH step beside the bare
primitive cost of the same work, measured in the same run, interleaved round by round.

* ``ratchet_encrypt`` / ``ratchet_decrypt``: one message on an existing chain.  Floor: the
  chain step (2 HMAC), the message-key expansion (HKDF, 80 bytes), AES-256-CBC and the MAC.
* ``ratchet_dh_step``: decrypting the first message of a new peer ratchet key.  Floor: the
  symmetric floor plus a key pair, two X25519 and two root-KDF HKDFs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from e2ee.identity import IdentityKeyPair
from e2ee.legacy.wire import LEGACY
from e2ee.omemo2.wire import OMEMO2
from e2ee.primitives import x25519_public
from e2ee.ratchet import DoubleRatchet
from e2ee.session import PeerBundle, accept, initiate

from .floor import OLD, Prims
from .timing import Sample, timed

KM = os.urandom(48)


def _pair(flavour_name: str) -> tuple[DoubleRatchet, DoubleRatchet]:
    flavour = OMEMO2 if flavour_name == "omemo2" else LEGACY
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    spk, opk = os.urandom(32), os.urandom(32)
    spk_pub = x25519_public(spk)
    bundle = PeerBundle(
        flavour.own_identity(bob),
        1,
        flavour.encode_public(spk_pub),
        flavour.sign_prekey(bob, spk_pub),
        7,
        flavour.encode_public(x25519_public(opk)),
    )
    a = initiate(flavour, alice, bundle)
    kex, _ = a.encrypt(KM)
    b, _ = accept(flavour, bob, flavour.parse_key_exchange(kex), lambda i: spk, lambda i: opk)
    a.ratchet.decrypt(b.ratchet.encrypt(KM))
    return a.ratchet, b.ratchet


def _floor_symmetric(p: Prims, encrypt: bool) -> Callable[[], object]:
    ck, ad = os.urandom(32), os.urandom(64)
    zero = bytes(32)
    okm = p.hkdf(p.hmac(ck, b"\x01"), zero, b"OMEMO Message Key Material", 80)
    ct = p.cbc_encrypt(okm[:32], okm[64:], KM)  # decrypts (and unpads) correctly below

    def op() -> object:
        mk = p.hmac(ck, b"\x01")
        p.hmac(ck, b"\x02")
        okm = p.hkdf(mk, zero, b"OMEMO Message Key Material", 80)
        if encrypt:
            c = p.cbc_encrypt(okm[:32], okm[64:], KM)
            return p.hmac(okm[32:64], ad + c)
        p.hmac(okm[32:64], ad + ct)
        return p.cbc_decrypt(okm[:32], okm[64:], ct)

    return op


def _floor_dh(p: Prims) -> Callable[[], object]:
    sym = _floor_symmetric(p, False)
    rk, own, peer = os.urandom(32), os.urandom(32), p.x25519_base(os.urandom(32))

    def op() -> object:
        priv = p.random(32)  # our next ratchet key pair
        p.x25519_base(priv)
        p.hkdf(p.x25519(own, peer), rk, b"OMEMO Root Chain", 64)
        p.hkdf(p.x25519(priv, peer), rk, b"OMEMO Root Chain", 64)
        return sym()

    return op


def _floors(p: Prims) -> dict[str, Callable[[], object]]:
    return {
        "ratchet_encrypt": _floor_symmetric(p, True),
        "ratchet_decrypt": _floor_symmetric(p, False),
        "ratchet_dh_step": _floor_dh(p),
    }


def run(rounds: int, ops: int, prims: Prims) -> dict[str, dict[str, Sample]]:
    """Return ``{scenario: {"ours": Sample, "floor": Sample, "old_floor": Sample}}``: the floor
    on ``prims``, the old floor on the engine's own wrappers."""
    results: dict[str, dict[str, Sample]] = {}
    for flavour in ("omemo2", "legacy"):
        for name in ("ratchet_encrypt", "ratchet_decrypt", "ratchet_dh_step"):
            results[f"{name}[{flavour}]"] = {"ours": Sample(), "floor": Sample(), "old_floor": Sample()}
    floor_sets = {"floor": _floors(prims), "old_floor": _floors(OLD)}
    for _ in range(rounds):
        for flavour in ("omemo2", "legacy"):
            a, b = _pair(flavour)
            a.encrypt(KM)  # warm-up
            wires = []
            t0 = time.perf_counter()
            for _ in range(ops):
                wires.append(a.encrypt(KM))
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            for w in wires:
                b.decrypt(w)
            t_dec = time.perf_counter() - t0
            t_dh = 0.0
            sender, receiver = b, a
            for _ in range(ops // 4):
                w = sender.encrypt(KM)
                t0 = time.perf_counter()
                receiver.decrypt(w)
                t_dh += time.perf_counter() - t0
                sender, receiver = receiver, sender
            r = results
            r[f"ratchet_encrypt[{flavour}]"]["ours"].rounds.append(t_enc / ops * 1e6)
            r[f"ratchet_decrypt[{flavour}]"]["ours"].rounds.append(t_dec / ops * 1e6)
            r[f"ratchet_dh_step[{flavour}]"]["ours"].rounds.append(t_dh / (ops // 4) * 1e6)
            for kind, floors in floor_sets.items():
                for name, op in floors.items():
                    n = ops if name != "ratchet_dh_step" else ops // 4
                    r[f"{name}[{flavour}]"][kind].rounds.append(timed(op, n) / n * 1e6)
    return results
