"""The digest's vectors (test-vectors.md A.6, A.7, B.1, B.2) reproduced by our engine."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from e2ee import x3dh
from e2ee.identity import IdentityKeyPair
from e2ee.legacy.wire import LEGACY
from e2ee.omemo2.wire import OMEMO2
from e2ee.primitives import hkdf_sha256, hmac_sha256, x25519, x25519_public
from e2ee.session import PeerBundle, accept, initiate

from .vectors import hexfield, load


def queue(*values: bytes) -> Any:
    it: Iterator[bytes] = iter(values)

    def rng(n: int) -> bytes:
        v = next(it)
        assert len(v) == n
        return v

    rng.rest = it  # type: ignore[attr-defined]
    return rng


def test_chain_key_derivation() -> None:
    for v in load("omemo/chain_keys.json")["vectors"]:
        ck = hexfield(v, "chain_key")
        assert hmac_sha256(ck, b"\x02") == hexfield(v, "next_chain_key")
        okm = hkdf_sha256(hmac_sha256(ck, b"\x01"), b"", v["info_text"].encode(), 80)
        assert okm[:32] == hexfield(v, "cipher_key")
        assert okm[32:64] == hexfield(v, "mac_key")
        assert okm[64:] == hexfield(v, "iv")


def test_libsignal_session_as_bob_without_one_time_prekey() -> None:
    """The KDF layout (root key = first 32 bytes, libsignal's sender chain = next 32)."""
    v = load("omemo/legacy_x3dh_no_opk.json")["vectors"][0]
    ik_b, spk_b = hexfield(v, "bob_identity_private"), hexfield(v, "bob_signed_prekey_private")
    assert LEGACY.encode_public(x25519_public(spk_b)) == hexfield(v, "bob_signed_prekey_public")
    ik_a = LEGACY.decode_public(hexfield(v, "alice_identity_public"))
    ek_a = LEGACY.decode_public(hexfield(v, "alice_base_public"))
    ikm = b"\xff" * 32 + x25519(spk_b, ik_a) + x25519(ik_b, ek_a) + x25519(spk_b, ek_a)
    out = hkdf_sha256(ikm, bytes(32), b"WhisperText", 64)
    assert out[:32] == hexfield(v, "root_key")
    assert out[32:] == hexfield(v, "chain_key")


@pytest.mark.parametrize("name", ["omemo/e2e_omemo2.json", "omemo/e2e_legacy.json"])
def test_end_to_end_transcript(name: str) -> None:
    v = load(name)["vectors"][0]
    f = OMEMO2 if "omemo2" in name else LEGACY
    h = lambda k: hexfield(v, k)  # noqa: E731
    alice, bob = IdentityKeyPair.from_seed(h("alice_ik_seed")), IdentityKeyPair.from_seed(h("bob_ik_seed"))
    assert alice.ed25519_public == h("alice_ik_ed25519_pub") and alice.x25519_public == h("alice_ik_x25519_pub")
    spk_pub = x25519_public(h("bob_spk_priv"))
    sig = f.sign_prekey(bob, spk_pub)
    assert sig == (h("spk_signature_on_wire") if f is LEGACY else h("spk_signature_ed25519"))
    bundle = PeerBundle(
        f.own_identity(bob),
        v["spk_id"],
        f.encode_public(spk_pub),
        sig,
        v["pk_id"],
        f.encode_public(h("bob_opk_pub")),
    )
    a_rng = queue(h("alice_ek_priv"), h("alice_ratchet1_priv"), h("alice_ratchet2_priv"))
    a = initiate(f, alice, bundle, a_rng)
    assert a.ratchet.root_key == h("alice_after_init_RK") and a.ratchet.cks == h("alice_after_init_CKs")
    assert a.ratchet.ad_send == h("associated_data_alice_to_bob")
    km0 = h("key_material_into_ratchet")
    kex, is_kex = a.encrypt(km0)
    assert is_kex and kex == h("msg0_key_exchange")
    assert base64.b64encode(kex).decode() == v["msg0_key_element_text"]
    parsed = f.parse_key_exchange(kex)
    assert parsed.message == h("msg0_authenticated_message")
    b, got = accept(
        f,
        bob,
        parsed,
        {v["spk_id"]: h("bob_spk_priv")}.get,
        {v["pk_id"]: h("bob_opk_priv")}.get,
        queue(h("bob_ratchet1_priv")),
    )
    assert got == km0
    assert b.ratchet.root_key == h("bob_after_msg0_RK") and b.ratchet.cks == h("bob_after_msg0_CKs")
    assert b.ratchet.ad_send == h("associated_data_bob_to_alice")
    m1, is_kex = b.encrypt(h("msg1_plaintext"))
    assert not is_kex and m1 == h("msg1_authenticated_message")
    assert a.decrypt(m1, a_rng) == h("msg1_plaintext")
    assert a.ratchet.root_key == h("alice_after_msg1_RK") and a.ratchet.cks == h("alice_after_msg1_CKs")
    assert a.ratchet.pn == v["alice_after_msg1_PN"]
    m2, is_kex = a.encrypt(h("msg2_plaintext"))
    assert not is_kex and m2 == h("msg2_authenticated_message")
    assert b.decrypt(m2) == h("msg2_plaintext")
    x3 = x3dh.respond(f, bob, h("bob_spk_priv"), h("bob_opk_priv"), parsed.ik, parsed.ek)
    assert x3.shared_secret == h("x3dh_shared_secret")
