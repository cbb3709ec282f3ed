"""XEdDSA and libsignal-style signatures: known answers, bit flips, and both directions
against python-xeddsa (the independent implementation), in both sign-bit conventions."""

from __future__ import annotations

import pytest
import xeddsa as peer  # python-xeddsa 1.2.0, test-only
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee.primitives import (
    ed25519_public,
    ed25519_public_to_x25519,
    ed25519_seed_to_x25519,
    ed25519_sign,
    ed25519_verify,
    x25519_clamp,
    x25519_public,
    x25519_public_to_ed25519,
)
from e2ee.xeddsa import curve25519_verify, sign_with_sign_bit, xeddsa_sign, xeddsa_verify

from .vectors import hexfield, load


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_libomemo_c_xeddsa_known_answer() -> None:
    for v in load("omemo/xeddsa_kat.json")["vectors"]:
        if v["scheme"] != "xeddsa":
            continue
        priv, msg = hexfield(v, "private_key"), hexfield(v, "message")
        assert x25519_clamp(hexfield(v, "private_key_unclamped")) == priv
        pub = x25519_public(priv)
        assert pub == hexfield(v, "curve25519_public")
        assert x25519_public_to_ed25519(pub, 0) == hexfield(v, "ed25519_public_sign0")
        sig = xeddsa_sign(priv, msg, hexfield(v, "random"))
        assert sig == hexfield(v, "signature")
        assert xeddsa_verify(pub, msg, sig) and curve25519_verify(pub, msg, sig)


def test_libsignal_signature_known_answer_and_every_bit_flip() -> None:
    v = load("omemo/libsignal_signature.json")["vectors"][0]
    pub, msg, sig = hexfield(v, "identity_public"), hexfield(v, "message"), hexfield(v, "signature")
    assert x25519_public(hexfield(v, "identity_private")) == pub
    assert sig[63] >> 7 == v["signature_sign_bit"] == 1
    assert curve25519_verify(pub, msg, sig) is v["valid_sign_bit_aware"] is True
    assert xeddsa_verify(pub, msg, sig) is v["valid_strict_xeddsa"] is False
    for bit in range(512):
        assert not curve25519_verify(pub, msg, _flip(sig, bit)), bit
    for bit in range(len(msg) * 8):
        assert not curve25519_verify(pub, _flip(msg, bit), sig), bit


def test_generated_xeddsa_vectors() -> None:
    for v in load("generated/xeddsa.json")["vectors"]:
        priv, msg = hexfield(v, "priv"), hexfield(v, "message")
        x_pub, ed_pub = hexfield(v, "x25519_pub"), hexfield(v, "ed25519_pub")
        assert x25519_public(priv) == x_pub
        assert ed25519_public_to_x25519(ed_pub) == x_pub
        assert x25519_public_to_ed25519(x_pub, 0) == hexfield(v, "curve25519_pub_to_ed25519_pub_sign0")
        assert x25519_public_to_ed25519(x_pub, 1) == hexfield(v, "curve25519_pub_to_ed25519_pub_sign1")
        assert xeddsa_sign(priv, msg, hexfield(v, "nonce")) == hexfield(v, "xeddsa_sign")
        assert ed25519_verify(ed_pub, msg, hexfield(v, "priv_sign"))
        assert curve25519_verify(x_pub, msg, hexfield(v, "priv_sign_libsignal"))
        assert curve25519_verify(x_pub, msg, hexfield(v, "xeddsa_sign"))
        if v["kind"] == "seed":
            seed = hexfield(v, "seed")
            assert ed25519_seed_to_x25519(seed) == priv
            assert ed25519_public(seed) == ed_pub
            assert ed25519_sign(seed, msg) == hexfield(v, "seed_sign")
            with_bit = sign_with_sign_bit(seed, msg)
            assert with_bit[:63] == hexfield(v, "seed_sign")[:63]
            assert with_bit[63] >> 7 == v["ed25519_pub_sign_bit"]


seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=200)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, msg=messages)
def test_our_signatures_verify_in_python_xeddsa(seed: bytes, msg: bytes) -> None:
    ed_pub = ed25519_public(seed)
    x_pub = x25519_public(ed25519_seed_to_x25519(seed))
    # libsignal convention: the sign bit travels in sig[63]
    sig = sign_with_sign_bit(seed, msg)
    rebuilt = peer.curve25519_pub_to_ed25519_pub(x_pub, bool(sig[63] >> 7))
    assert rebuilt == ed_pub
    assert peer.ed25519_verify(sig[:63] + bytes((sig[63] & 0x7F,)), rebuilt, msg)
    # XEdDSA convention: sign bit 0, verified against the sign-0 Edwards form of u
    nonce = (seed * 2)[:64]
    xsig = xeddsa_sign(ed25519_seed_to_x25519(seed), msg, nonce)
    assert peer.ed25519_verify(xsig, peer.curve25519_pub_to_ed25519_pub(x_pub, False), msg)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, msg=messages, nonce=st.binary(min_size=64, max_size=64))
def test_python_xeddsa_signatures_verify_with_us(seed: bytes, msg: bytes, nonce: bytes) -> None:
    priv = peer.seed_to_priv(seed)
    x_pub = peer.priv_to_curve25519_pub(priv)
    ed_pub = peer.priv_to_ed25519_pub(priv)
    # libsignal convention, as python-oldmemo puts it on the wire
    sig = bytearray(peer.ed25519_priv_sign(priv, msg, nonce))
    sig[63] |= ed_pub[31] & 0x80
    assert curve25519_verify(x_pub, msg, bytes(sig))
    # XEdDSA proper (sign 0)
    xsig = peer.ed25519_priv_sign(peer.priv_force_sign(priv, False), msg, nonce)
    assert xeddsa_verify(x_pub, msg, xsig) and curve25519_verify(x_pub, msg, xsig)
    # plain Ed25519 from the seed (OMEMO 2)
    assert ed25519_verify(ed_pub, msg, peer.ed25519_seed_sign(seed, msg))
    assert not ed25519_verify(ed_pub, msg + b"!", peer.ed25519_seed_sign(seed, msg))


@pytest.mark.parametrize(
    "u", [(2**255 - 19).to_bytes(32, "little"), b"\xff" * 32, (2**255 - 20).to_bytes(32, "little")]
)
def test_verify_rejects_keys_without_edwards_image(u: bytes) -> None:
    assert not curve25519_verify(u, b"m", bytes(64))
    assert not xeddsa_verify(u, b"m", bytes(64))
