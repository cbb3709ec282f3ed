"""The primitive floor (issue 16): what the cryptographic work of a scenario costs on the fastest
call path of each primitive available on this machine, and nothing else (no parsing, no
storage, no argument checks of ours).

Every primitive the protocol needs has one or more call paths here (the standard library's
OpenSSL, ``cryptography`` (OpenSSL through Rust) and libsodium through PyNaCl's low-level
bindings).  :func:`choose` measures each call path on the input sizes the scenarios use and
picks the fastest per primitive; :func:`bindings` builds the floor's functions from the
choice.  ``python -m bench`` records every candidate's time and the choice in ``results.json``
(``floor_bindings``) and ``RESULTS.md``.

:data:`OLD` is the floor of issue 7: the engine's own wrappers in :mod:`e2ee.primitives`
(including a hand-written HKDF and the wrappers' argument checks).  It is still measured, as the
"old floor" figure of each row, so that the two can be compared.
"""

from __future__ import annotations

import gc
import hmac as _hmac
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings as na

from e2ee import primitives as ours

__all__ = ["Prims", "OLD", "CANDIDATES", "choose", "bindings"]


@dataclass(frozen=True)
class Prims:
    """The primitives a floor uses, all bytes in, bytes out."""

    name: str
    hmac: Callable[[bytes, bytes], bytes]
    hkdf: Callable[[bytes, bytes, bytes, int], bytes]
    cbc_encrypt: Callable[[bytes, bytes, bytes], bytes]  #: with PKCS#7 padding
    cbc_decrypt: Callable[[bytes, bytes, bytes], bytes]  #: and unpadding (not constant time: a floor)
    gcm_encrypt: Callable[[bytes, bytes, bytes], bytes]
    x25519: Callable[[bytes, bytes], bytes]
    x25519_base: Callable[[bytes], bytes]
    ed25519_sign: Callable[[bytes, bytes, bytes], bytes]  #: (seed, public, message)
    ed25519_verify: Callable[[bytes, bytes, bytes], object]  #: (public, message, signature); raises if bad
    ed25519_to_x25519: Callable[[bytes], bytes]
    random: Callable[[int], bytes]


# ---- the call paths -----------------------------------------------------------------------------

_SHA256 = hashes.SHA256()


def _hmac_stdlib(key: bytes, data: bytes) -> bytes:
    return _hmac.digest(key, data, "sha256")


def _hmac_cryptography(key: bytes, data: bytes) -> bytes:
    h = c_hmac.HMAC(key, _SHA256)
    h.update(data)
    return h.finalize()


def _hkdf_stdlib(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    digest = _hmac.digest
    prk = digest(salt, ikm, "sha256")
    out = block = b""
    counter = 1
    while len(out) < length:
        block = digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def _hkdf_cryptography(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(_SHA256, length, salt, info).derive(ikm)


def _pad(data: bytes) -> bytes:
    n = 16 - (len(data) & 15)
    return data + bytes((n,)) * n


def _cbc_encrypt_cryptography(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(_pad(plaintext)) + enc.finalize()


def _cbc_decrypt_cryptography(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    return padded[: -padded[-1]]


def _gcm_cryptography(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    return AESGCM(key).encrypt(iv, plaintext, None)


def _x25519_cryptography(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def _x25519_base_cryptography(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _sign_sodium(seed: bytes, public: bytes, message: bytes) -> bytes:
    signed: bytes = na.crypto_sign(message, seed + public)
    return signed[:64]


def _sign_cryptography(seed: bytes, public: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def _verify_sodium(public: bytes, message: bytes, signature: bytes) -> object:
    return na.crypto_sign_open(signature + message, public)


def _verify_cryptography(public: bytes, message: bytes, signature: bytes) -> object:
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    return None


def _sodium_gcm() -> Callable[[bytes, bytes, bytes], bytes] | None:
    enc = getattr(na, "crypto_aead_aes256gcm_encrypt", None)
    available = getattr(na, "crypto_aead_aes256gcm_is_available", None)
    if enc is None or available is None or not available():
        return None
    return lambda key, iv, plaintext: enc(plaintext, None, iv, key)  # type: ignore[no-any-return]


#: primitive -> call path -> implementation.  The standard library has HMAC (and an HKDF built
#: on it); ``cryptography`` has all but the Ed25519 -> X25519 map; PyNaCl's low-level bindings
#: (libsodium) have X25519, Ed25519, the map and, on CPUs with AES-NI, AES-256-GCM, but no CBC.
CANDIDATES: dict[str, dict[str, Callable[..., Any]]] = {
    "hmac": {"stdlib hmac.digest": _hmac_stdlib, "cryptography HMAC": _hmac_cryptography},
    "hkdf": {"stdlib hmac.digest (RFC 5869 by hand)": _hkdf_stdlib, "cryptography HKDF": _hkdf_cryptography},
    "cbc_encrypt": {"cryptography Cipher": _cbc_encrypt_cryptography},
    "cbc_decrypt": {"cryptography Cipher": _cbc_decrypt_cryptography},
    "gcm_encrypt": {"cryptography AESGCM": _gcm_cryptography},
    "x25519": {"libsodium crypto_scalarmult": na.crypto_scalarmult, "cryptography X25519": _x25519_cryptography},
    "x25519_base": {
        "libsodium crypto_scalarmult_base": na.crypto_scalarmult_base,
        "cryptography X25519": _x25519_base_cryptography,
    },
    "ed25519_sign": {"libsodium crypto_sign": _sign_sodium, "cryptography Ed25519": _sign_cryptography},
    "ed25519_verify": {"libsodium crypto_sign_open": _verify_sodium, "cryptography Ed25519": _verify_cryptography},
    "ed25519_to_x25519": {"libsodium crypto_sign_ed25519_pk_to_curve25519": na.crypto_sign_ed25519_pk_to_curve25519},
    "random": {"os.urandom": os.urandom},
}
_gcm = _sodium_gcm()
if _gcm is not None:
    CANDIDATES["gcm_encrypt"]["libsodium crypto_aead_aes256gcm"] = _gcm

_SEED = os.urandom(32)
_PUB = na.crypto_sign_seed_keypair(_SEED)[0]
_SIG_MSG = os.urandom(32)
_SIG = _sign_sodium(_SEED, _PUB, _SIG_MSG)
_K32, _IV, _DATA = os.urandom(32), os.urandom(16), os.urandom(304)
_CT = _cbc_encrypt_cryptography(_K32, _IV, _DATA)
_X_PUB = na.crypto_scalarmult_base(os.urandom(32))

#: the representative call of each primitive (the sizes of a short message's payload and key
#: material, an HKDF of 80 bytes as the message keys take)
_ARGS: dict[str, tuple[object, ...]] = {
    "hmac": (_K32, _DATA[:80]),
    "hkdf": (_K32, bytes(32), b"OMEMO Message Key Material", 80),
    "cbc_encrypt": (_K32, _IV, _DATA[:300]),
    "cbc_decrypt": (_K32, _IV, _CT),
    "gcm_encrypt": (_K32, _IV[:12], _DATA[:300]),
    "x25519": (_K32, _X_PUB),
    "x25519_base": (_K32,),
    "ed25519_sign": (_SEED, _PUB, _SIG_MSG),
    "ed25519_verify": (_PUB, _SIG_MSG, _SIG),
    "ed25519_to_x25519": (_PUB,),
    "random": (32,),
}


def _us(fn: Callable[..., Any], args: tuple[object, ...], n: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(*args)
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        gc.enable()


@dataclass
class Choice:
    """Per primitive: each call path's median time (µs per call) and the fastest one."""

    times: dict[str, dict[str, float]]
    chosen: dict[str, str]

    def to_json(self) -> dict[str, object]:
        return {
            p: {"chosen": self.chosen[p], "us_per_call": {k: round(v, 3) for k, v in t.items()}}
            for p, t in self.times.items()
        }

    def markdown(self) -> list[str]:
        lines = ["| primitive | call paths measured (µs per call, median of rounds) | fastest: used by the floor |"]
        lines.append("|---|---|---|")
        for p, t in self.times.items():
            paths = "; ".join(f"{k}: {v:.2f}" for k, v in sorted(t.items(), key=lambda kv: kv[1]))
            lines.append(f"| {p} | {paths} | {self.chosen[p]} |")
        return lines


def choose(rounds: int = 9, calls: int = 2000) -> Choice:
    """Measure every call path (rounds interleaved, ``calls`` calls each) and pick the fastest."""
    for p, paths in CANDIDATES.items():  # the call paths compute the same thing
        if p not in ("random", "ed25519_verify"):
            outs = {fn(*_ARGS[p]) for fn in paths.values()}
            assert len(outs) == 1, f"the call paths of {p} disagree"
    samples: dict[str, dict[str, list[float]]] = {p: {k: [] for k in paths} for p, paths in CANDIDATES.items()}
    for _ in range(rounds):
        for p, paths in CANDIDATES.items():
            n = calls // 10 if p.startswith(("x25519", "ed25519")) else calls
            for k, fn in paths.items():
                samples[p][k].append(_us(fn, _ARGS[p], n))
    times = {p: {k: statistics.median(v) for k, v in paths.items()} for p, paths in samples.items()}
    chosen = {p: min(t, key=lambda k: t[k]) for p, t in times.items()}
    return Choice(times, chosen)


def bindings(choice: Choice) -> Prims:
    """The floor's primitives: the fastest call path of each."""
    c = {p: CANDIDATES[p][k] for p, k in choice.chosen.items()}
    return Prims("fastest call paths", **c)


# ---- the old floor: the engine's own wrappers (issue 7) ------------------------------------------


def _old_verify(public: bytes, message: bytes, signature: bytes) -> object:
    if not ours.ed25519_verify(public, message, signature):
        raise ValueError("bad signature")
    return None


#: The floor of issue 7, on :mod:`e2ee.primitives` (recorded as each row's "old floor").
OLD = Prims(
    "e2ee.primitives wrappers (old floor)",
    hmac=ours.hmac_sha256,
    hkdf=ours.hkdf_sha256,
    cbc_encrypt=ours.aes_cbc_encrypt,
    cbc_decrypt=ours.aes_cbc_decrypt,
    gcm_encrypt=ours.aes_gcm_encrypt,
    x25519=ours.x25519,
    x25519_base=ours.x25519_public,
    ed25519_sign=lambda seed, public, message: ours.ed25519_sign(seed, message, public),
    ed25519_verify=_old_verify,
    ed25519_to_x25519=ours.ed25519_public_to_x25519,
    random=os.urandom,
)
