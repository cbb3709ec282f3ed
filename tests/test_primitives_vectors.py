"""Our primitives against every Wycheproof case and the RFC vectors.

Policy for results other than plain "valid"/"invalid" (also in vectors/README.md):

* x25519: "acceptable" cases flagged LowOrderPublic or ZeroSharedSecret (any all-zero shared
  secret) raise InvalidKey from the DH itself; all other acceptable cases (twist points,
  non-canonical encodings) compute the RFC 7748 result.  Independently,
  ``x25519_check_public`` -- applied to every key a peer sends -- rejects the high bit set,
  u >= p and every small-order point.
* aes_gcm: we support 12- and 16-byte IVs and 16-byte tags only.  Valid cases with other IV
  sizes must be refused with a typed error (never a wrong answer).
* ed25519, hkdf, hmac, aes_cbc_pkcs5: no acceptable cases exist; valid must pass, invalid
  must fail.
"""

from __future__ import annotations

import pytest

from e2ee.errors import AuthenticationFailed, InvalidKey, MalformedMessage, PeerError, UsageError
from e2ee.primitives import (
    P,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_gcm_decrypt,
    aes_gcm_encrypt,
    constant_time_eq,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    hkdf_sha256,
    hmac_sha256,
    x25519,
    x25519_check_public,
    x25519_public,
)

from .vectors import WycheproofCase, hexfield, load, wycheproof


def cases(name: str) -> list[WycheproofCase]:
    return list(wycheproof(name))


def ids(c: WycheproofCase) -> str:
    return c.id


@pytest.mark.parametrize("c", cases("x25519"), ids=ids)
def test_wycheproof_x25519(c: WycheproofCase) -> None:
    priv, pub, shared = hexfield(c, "private"), hexfield(c, "public"), hexfield(c, "shared")
    low_order = {"LowOrderPublic", "ZeroSharedSecret"} & set(c.flags) or shared == bytes(32)
    if low_order:
        assert c.result == "acceptable"
        with pytest.raises(InvalidKey):
            x25519(priv, pub)
    else:
        assert c.result in ("valid", "acceptable")
        assert x25519(priv, pub) == shared
    u = int.from_bytes(pub, "little")
    protocol_ok = not low_order and not pub[31] & 0x80 and u < P
    if protocol_ok:
        x25519_check_public(pub)
    else:
        with pytest.raises(InvalidKey):
            x25519_check_public(pub)
    if "NonCanonicalPublic" in c.flags or "LowOrderPublic" in c.flags:
        assert not protocol_ok


@pytest.mark.parametrize("c", cases("ed25519"), ids=ids)
def test_wycheproof_ed25519(c: WycheproofCase) -> None:
    ok = ed25519_verify(hexfield(c, "publicKey.pk"), hexfield(c, "msg"), hexfield(c, "sig"))
    assert ok is (c.result == "valid")


@pytest.mark.parametrize("c", cases("hkdf_sha256"), ids=ids)
def test_wycheproof_hkdf(c: WycheproofCase) -> None:
    args = hexfield(c, "ikm"), hexfield(c, "salt"), hexfield(c, "info"), c.test["size"]
    if c.result == "valid":
        assert hkdf_sha256(*args) == hexfield(c, "okm")
    else:
        assert "SizeTooLarge" in c.flags
        with pytest.raises(UsageError):
            hkdf_sha256(*args)


@pytest.mark.parametrize("c", cases("hmac_sha256"), ids=ids)
def test_wycheproof_hmac(c: WycheproofCase) -> None:
    tag = hmac_sha256(hexfield(c, "key"), hexfield(c, "msg"))[: c.group["tagSize"] // 8]
    assert constant_time_eq(tag, hexfield(c, "tag")) is (c.result == "valid")


@pytest.mark.parametrize("c", cases("aes_cbc_pkcs5"), ids=ids)
def test_wycheproof_aes_cbc(c: WycheproofCase) -> None:
    key, iv, msg, ct = hexfield(c, "key"), hexfield(c, "iv"), hexfield(c, "msg"), hexfield(c, "ct")
    if c.result == "valid":
        assert aes_cbc_encrypt(key, iv, msg) == ct
        assert aes_cbc_decrypt(key, iv, ct) == msg
    else:
        with pytest.raises(AuthenticationFailed):  # the same error as a MAC failure
            aes_cbc_decrypt(key, iv, ct)


@pytest.mark.parametrize("c", cases("aes_gcm"), ids=ids)
def test_wycheproof_aes_gcm(c: WycheproofCase) -> None:
    key, iv, aad = hexfield(c, "key"), hexfield(c, "iv"), hexfield(c, "aad")
    msg, data = hexfield(c, "msg"), hexfield(c, "ct") + hexfield(c, "tag")
    supported = len(iv) in (12, 16) and c.group["tagSize"] == 128
    if not supported:
        with pytest.raises(MalformedMessage):
            aes_gcm_decrypt(key, iv, data, aad)
        with pytest.raises(UsageError):
            aes_gcm_encrypt(key, iv, msg, aad)
    elif c.result == "valid":
        assert aes_gcm_encrypt(key, iv, msg, aad) == data
        assert aes_gcm_decrypt(key, iv, data, aad) == msg
    else:
        with pytest.raises(PeerError):
            aes_gcm_decrypt(key, iv, data, aad)


# --------------------------------------------------------------------------- RFC vectors


RFC7748 = load("rfc/rfc7748_x25519.json")["vectors"]


@pytest.mark.parametrize(
    "v",
    [pytest.param(v, marks=[pytest.mark.slow] if v.get("slow") else []) for v in RFC7748],
    ids=lambda v: v["id"],
)
def test_rfc7748_x25519(v: dict[str, object]) -> None:
    if v["kind"] == "scalarmult":
        assert x25519(hexfield(v, "scalar"), hexfield(v, "u")) == hexfield(v, "output")
    elif v["kind"] == "iterated":
        k, u = hexfield(v, "k"), hexfield(v, "u")
        for _ in range(int(v["iterations"])):  # type: ignore[call-overload]
            k, u = x25519(k, u), k
        assert k == hexfield(v, "output")
    else:
        assert v["kind"] == "dh"
        a, b = hexfield(v, "alice_private"), hexfield(v, "bob_private")
        assert x25519_public(a) == hexfield(v, "alice_public")
        assert x25519_public(b) == hexfield(v, "bob_public")
        assert x25519(a, hexfield(v, "bob_public")) == hexfield(v, "shared")
        assert x25519(b, hexfield(v, "alice_public")) == hexfield(v, "shared")


def test_rfc8032_ed25519() -> None:
    for v in load("rfc/rfc8032_ed25519.json")["vectors"]:
        seed, pub, msg, sig = (hexfield(v, k) for k in ("secret_key", "public_key", "message", "signature"))
        assert ed25519_public(seed) == pub
        assert ed25519_sign(seed, msg) == sig
        assert ed25519_verify(pub, msg, sig)


def test_rfc5869_hkdf() -> None:
    for v in load("rfc/rfc5869_hkdf.json")["vectors"]:
        assert hkdf_sha256(hexfield(v, "ikm"), hexfield(v, "salt"), hexfield(v, "info"), v["l"]) == hexfield(v, "okm")


def test_rfc4231_hmac() -> None:
    for v in load("rfc/rfc4231_hmac.json")["vectors"]:
        n = v["truncate_bits"] // 8
        assert hmac_sha256(hexfield(v, "key"), hexfield(v, "data"))[:n] == hexfield(v, "hmac_sha256")
