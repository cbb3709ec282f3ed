"""Payload layers: OMEMO 2 (AES-256-CBC + truncated HMAC, e2ee.omemo2.payload) and legacy
OMEMO (AES-128-GCM, e2ee.legacy.payload).

Known answers from the e2e vector files, round trips, tampering (security catalogue R6, R7,
R8), and interop with the payload functions of python-twomemo / python-oldmemo 2.1.0.

What the peers send (documented here, checked below):

* python-twomemo: ``encrypt_plaintext`` -> ``ContentImpl(ciphertext)``,
  ``PlainKeyMaterialImpl(key32, tag16)``; the ratchet carries ``key + tag`` (48 bytes).
  ``encrypt_empty`` -> empty content and ``key = 32 zero bytes, tag = b""``: the ratchet carries
  exactly our ``EMPTY_KEY_MATERIAL``.  Its tag check uses ``!=`` (not constant time).
* python-oldmemo: ``encrypt_plaintext`` -> ``ContentImpl(ciphertext without tag, iv12)``,
  ``PlainKeyMaterialImpl(key16, tag16)``; the ratchet carries 32 bytes.  ``encrypt_empty`` (its
  KeyTransportElement) -> ``ContentImpl(b"", 12 random bytes)`` and
  ``PlainKeyMaterialImpl(16 random bytes, b"")``: the ratchet carries 16 bytes, which our
  strict ``decrypt`` rejects (MalformedMessage), so the engine must recognise "no <payload/>"
  as key transport before it reaches the payload layer.  Quirk: python-oldmemo's content is
  "empty" iff its ciphertext is ``b""``, so an empty body (GCM ciphertext of length 0) sent by
  it would be mistaken for a key transport and its ``decrypt_plaintext`` asserts on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import oldmemo.oldmemo as old
import pytest
import twomemo.twomemo as two
from hypothesis import given, settings
from hypothesis import strategies as st
from omemo.backend import DecryptionFailed as PeerDecryptionFailed

from e2ee.errors import AuthenticationFailed, MalformedMessage, UsageError
from e2ee.legacy import payload as legacy
from e2ee.omemo2 import payload as omemo2
from e2ee.primitives import aes_cbc_decrypt, aes_cbc_encrypt, aes_gcm_encrypt, hkdf_sha256, hmac_sha256
from e2ee.rng import Random
from tests.peers.omemo_peer import InMemoryStorage, _run

from .vectors import WycheproofCase, hexfield, load, wycheproof

V2 = load("omemo/e2e_omemo2.json")["vectors"][0]
VL = load("omemo/e2e_legacy.json")["vectors"][0]

MSG = b"<envelope xmlns='urn:xmpp:sce:1'><content>hi</content><rpad>abc</rpad></envelope>"


def fixed_rng(*chunks: bytes) -> Random:
    """An rng that returns ``chunks`` in order, checking each requested length."""
    queue: Iterator[bytes] = iter(chunks)

    def rng(n: int) -> bytes:
        chunk = next(queue)
        assert len(chunk) == n, f"asked for {n} bytes, vector has {len(chunk)}"
        return chunk

    return rng


def flips(data: bytes) -> Iterator[bytes]:
    """Every single-bit modification of ``data``."""
    for i in range(len(data) * 8):
        b = bytearray(data)
        b[i // 8] ^= 1 << (i % 8)
        yield bytes(b)


# =========================================================================== OMEMO 2


def test_omemo2_known_answer() -> None:
    key = hexfield(V2, "payload_key")
    plaintext = V2["payload_plaintext_utf8"].encode("utf-8")
    okm = hexfield(V2, "payload_hkdf80")
    assert hkdf_sha256(key, bytes(32), b"OMEMO Payload", 80) == okm
    ct, km = omemo2.encrypt(plaintext, fixed_rng(key))
    assert ct == hexfield(V2, "payload_ciphertext")
    assert km == hexfield(V2, "key_material_into_ratchet")
    assert km[32:] == hexfield(V2, "payload_hmac16")
    assert omemo2.decrypt(ct, km) == plaintext


def test_omemo2_vector_message1_is_empty() -> None:
    assert omemo2.is_empty(hexfield(V2, "msg1_plaintext"))
    assert omemo2.EMPTY_KEY_MATERIAL == bytes(32)


def test_omemo2_is_empty() -> None:
    assert omemo2.is_empty(bytes(32))
    for km in (bytes(31), bytes(33), bytes(48), b"\x00" * 31 + b"\x01", omemo2.encrypt(b"")[1]):
        assert not omemo2.is_empty(km)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_omemo2_round_trip(plaintext: bytes) -> None:
    ct, km = omemo2.encrypt(plaintext)
    assert len(km) == 48 and len(ct) % 16 == 0 and len(ct) > len(plaintext)
    assert omemo2.decrypt(ct, km) == plaintext


def test_omemo2_every_bit_flip_rejected() -> None:
    ct, km = omemo2.encrypt(MSG)
    for bad in flips(ct):
        with pytest.raises(AuthenticationFailed):
            omemo2.decrypt(bad, km)
    for bad in flips(km):  # key bits and HMAC bits
        with pytest.raises(AuthenticationFailed):
            omemo2.decrypt(ct, bad)


@pytest.mark.parametrize("length", [0, 16, 31, 32, 33, 47, 49, 64])
def test_omemo2_key_material_length(length: int) -> None:
    """R6: a truncated (or overlong) HMAC, i.e. key material that is not 48 bytes."""
    ct, km = omemo2.encrypt(MSG)
    bad = (km + bytes(16))[:length]
    with pytest.raises(MalformedMessage):
        omemo2.decrypt(ct, bad)


def test_omemo2_empty_key_material_is_not_decryptable() -> None:
    ct, _ = omemo2.encrypt(MSG)
    with pytest.raises(MalformedMessage):
        omemo2.decrypt(ct, omemo2.EMPTY_KEY_MATERIAL)


def _with_valid_hmac(key: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """An attacker who chooses the key: a ciphertext with a valid HMAC for it."""
    auth_key = hkdf_sha256(key, bytes(32), b"OMEMO Payload", 80)[32:64]
    return ciphertext, key + hmac_sha256(auth_key, ciphertext)[:16]


def _bad_padding_ciphertexts(key: bytes) -> Iterator[bytes]:
    okm = hkdf_sha256(key, bytes(32), b"OMEMO Payload", 80)
    enc_key, iv = okm[:32], okm[64:]
    # Drop the final (all-padding) block: what remains decrypts to the chosen 32 bytes, whose
    # last bytes are then read as padding.
    for tail in (b"\x00", b"\x11", b"\xff", b"\x01\x02", b"\x03\x03\x04\x03"):
        chosen = b"A" * (32 - len(tail)) + tail
        yield aes_cbc_encrypt(enc_key, iv, chosen)[:32]
    yield b""  # no block at all
    yield aes_cbc_encrypt(enc_key, iv, b"x" * 20)[:-1]  # not a multiple of the block size


def test_omemo2_bad_padding_behind_valid_hmac() -> None:
    """R6: the HMAC verifies, the padding does not -> the same AuthenticationFailed."""
    key = bytes(range(32))
    _, good_km = omemo2.encrypt(MSG, fixed_rng(key))
    with pytest.raises(AuthenticationFailed) as mac_failure:
        omemo2.decrypt(b"\x00" * 32, good_km)
    for ct in _bad_padding_ciphertexts(key):
        ct, km = _with_valid_hmac(key, ct)
        with pytest.raises(AuthenticationFailed) as padding_failure:
            omemo2.decrypt(ct, km)
        assert padding_failure.value.args == mac_failure.value.args  # nothing tells them apart


def test_omemo2_hmac_checked_before_decryption(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = aes_cbc_decrypt

    def spy(key: bytes, iv: bytes, ct: bytes) -> bytes:
        calls.append(ct)
        return real(key, iv, ct)

    monkeypatch.setattr(omemo2, "aes_cbc_decrypt", spy)
    ct, km = omemo2.encrypt(MSG)
    for bad in (ct[:-16], ct + bytes(16), bytes(len(ct)), ct[:-1] + bytes([ct[-1] ^ 1])):
        with pytest.raises(AuthenticationFailed):
            omemo2.decrypt(bad, km)
    assert calls == []
    assert omemo2.decrypt(ct, km) == MSG and calls == [ct]


def _cbc256_cases() -> list[WycheproofCase]:
    return [c for c in wycheproof("aes_cbc_pkcs5") if c.group["keySize"] == 256]


@pytest.mark.parametrize("c", _cbc256_cases(), ids=lambda c: c.id)
def test_omemo2_wycheproof_padding_behind_valid_hmac(c: WycheproofCase, monkeypatch: pytest.MonkeyPatch) -> None:
    """R6: Wycheproof AES-256-CBC cases through the payload layer, with a test hook that makes
    the HKDF yield the case's key and IV, and a valid HMAC: BadPadding/NoPadding rejected."""
    key, iv, ct = hexfield(c, "key"), hexfield(c, "iv"), hexfield(c, "ct")
    auth_key = bytes(range(32))
    monkeypatch.setattr(omemo2, "hkdf_sha256", lambda *_: key + auth_key + iv)
    km = bytes(32) + hmac_sha256(auth_key, ct)[:16]
    if c.result == "valid":
        assert omemo2.decrypt(ct, km) == hexfield(c, "msg")
    else:
        with pytest.raises(AuthenticationFailed):
            omemo2.decrypt(ct, km)


def test_omemo2_co_recipient_substitution() -> None:
    """R7: D2 knows the key, builds another payload under it; D3 holds the original tag."""
    key = bytes(range(100, 132))
    ct, km_for_d3 = omemo2.encrypt(MSG, fixed_rng(key))
    forged_ct, forged_km = omemo2.encrypt(b"<envelope>pay me</envelope>", fixed_rng(key))
    assert forged_km[:32] == km_for_d3[:32] and forged_ct != ct
    with pytest.raises(AuthenticationFailed):
        omemo2.decrypt(forged_ct, km_for_d3)
    # Same key, ciphertext truncated or extended by whole blocks: still rejected.
    for variant in (ct[:16], ct + forged_ct[-16:]):
        with pytest.raises(AuthenticationFailed):
            omemo2.decrypt(variant, km_for_d3)


def test_omemo2_no_key_repeats() -> None:
    # 10^4 (not 10^5): OMEMO 2 encryption includes an HKDF, 10^5 calls take ~1.3 s here.
    keys = {omemo2.encrypt(b"")[1][:32] for _ in range(10_000)}
    assert len(keys) == 10_000


def test_omemo2_rng_of_wrong_length_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        omemo2.encrypt(MSG, lambda n: bytes(n - 1))


# --------------------------------------------------------------------------- interop


def _twomemo() -> two.Twomemo:
    return two.Twomemo(InMemoryStorage())


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_omemo2_interop_ours_to_twomemo(plaintext: bytes) -> None:
    ct, km = omemo2.encrypt(plaintext)
    content = two.ContentImpl(ct)
    key_material = two.PlainKeyMaterialImpl(km[:32], km[32:])
    assert _run(_twomemo().decrypt_plaintext(content, key_material)) == plaintext


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_omemo2_interop_twomemo_to_ours(plaintext: bytes) -> None:
    content, key_material = _run(_twomemo().encrypt_plaintext(plaintext))
    km = key_material.key + key_material.auth_tag  # what its ratchet carries
    assert len(km) == 48
    assert omemo2.decrypt(content.ciphertext, km) == plaintext


def test_omemo2_interop_tampering_rejected_by_both() -> None:
    ct, km = omemo2.encrypt(MSG)
    bad = ct[:-1] + bytes([ct[-1] ^ 0x80])
    with pytest.raises(PeerDecryptionFailed):
        _run(_twomemo().decrypt_plaintext(two.ContentImpl(bad), two.PlainKeyMaterialImpl(km[:32], km[32:])))
    with pytest.raises(AuthenticationFailed):
        omemo2.decrypt(bad, km)


def test_omemo2_twomemo_empty_message_key_material() -> None:
    content, key_material = _run(_twomemo().encrypt_empty())
    assert content.empty and content.ciphertext == b""
    km = key_material.key + key_material.auth_tag
    assert km == omemo2.EMPTY_KEY_MATERIAL and omemo2.is_empty(km)


# =========================================================================== legacy


def test_legacy_known_answer() -> None:
    key, iv = hexfield(VL, "aes128_key"), hexfield(VL, "gcm_iv")
    body = VL["body_plaintext_utf8"].encode("utf-8")
    payload, got_iv, km = legacy.encrypt(body, fixed_rng(key, iv))
    assert payload == hexfield(VL, "payload")
    assert got_iv == iv
    assert km == hexfield(VL, "key_material_into_ratchet")
    assert km[16:] == hexfield(VL, "gcm_tag16")
    assert legacy.decrypt(payload, iv, km) == body


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_legacy_round_trip(plaintext: bytes) -> None:
    payload, iv, km = legacy.encrypt(plaintext)
    assert len(payload) == len(plaintext) and len(iv) == 12 and len(km) == 32
    assert legacy.decrypt(payload, iv, km) == plaintext


def test_legacy_every_bit_flip_rejected() -> None:
    payload, iv, km = legacy.encrypt(b"Hello Bob, this is a legacy body")
    for bad in flips(payload):
        with pytest.raises(AuthenticationFailed):
            legacy.decrypt(bad, iv, km)
    for bad in flips(km):  # key bits and tag bits
        with pytest.raises(AuthenticationFailed):
            legacy.decrypt(payload, iv, bad)
    for bad in flips(iv):
        with pytest.raises(AuthenticationFailed):
            legacy.decrypt(payload, bad, km)


def test_legacy_tampered_tag() -> None:
    """R8 (Wycheproof ModifiedTag): a modified or truncated tag."""
    payload, iv, km = legacy.encrypt(b"body")
    with pytest.raises(AuthenticationFailed):
        legacy.decrypt(payload, iv, km[:16] + bytes(16))
    with pytest.raises(MalformedMessage):
        legacy.decrypt(payload, iv, km[:-1])


def test_legacy_16_byte_iv() -> None:
    """R8: old Conversations sent 16-byte IVs."""
    key, iv = bytes(range(16)), bytes(range(50, 66))
    sealed = aes_gcm_encrypt(key, iv, b"old sender")
    assert legacy.decrypt(sealed[:-16], iv, key + sealed[-16:]) == b"old sender"
    with pytest.raises(AuthenticationFailed):
        legacy.decrypt(sealed[:-16], iv[:12], key + sealed[-16:])


@pytest.mark.parametrize("length", [0, 1, 8, 11, 13, 15, 17, 32])
def test_legacy_bad_iv_length(length: int) -> None:
    """R8 (Wycheproof ZeroLengthIv and other sizes): MalformedMessage."""
    payload, iv, km = legacy.encrypt(b"body")
    with pytest.raises(MalformedMessage):
        legacy.decrypt(payload, (iv * 3)[:length], km)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 48, 64])
def test_legacy_key_material_not_32_bytes(length: int) -> None:
    """R7: legacy key material whose length is not 32 is MalformedMessage (including the
    16-byte historical variant and §6's ">= 32" senders, which the strict path refuses)."""
    payload, iv, km = legacy.encrypt(b"body")
    with pytest.raises(MalformedMessage):
        legacy.decrypt(payload, iv, (km + bytes(32))[:length])


def test_legacy_tag_in_payload_variant() -> None:
    key, iv = bytes(range(16)), bytes(range(12))
    sealed = aes_gcm_encrypt(key, iv, b"very old sender")
    assert legacy.decrypt_tag_in_payload(sealed, iv, key) == b"very old sender"
    with pytest.raises(MalformedMessage):  # not accepted by the default path
        legacy.decrypt(sealed, iv, key)
    sealed16 = aes_gcm_encrypt(key, bytes(16), b"x")
    assert legacy.decrypt_tag_in_payload(sealed16, bytes(16), key) == b"x"
    for bad in flips(sealed):
        with pytest.raises(AuthenticationFailed):
            legacy.decrypt_tag_in_payload(bad, iv, key)
    with pytest.raises(MalformedMessage):
        legacy.decrypt_tag_in_payload(sealed[:15], iv, key)  # shorter than a tag
    with pytest.raises(MalformedMessage):
        legacy.decrypt_tag_in_payload(sealed, b"", key)
    with pytest.raises(MalformedMessage):
        legacy.decrypt_tag_in_payload(sealed, iv, key + sealed[-16:])


def test_legacy_co_recipient_substitution() -> None:
    """R7: D2 knows key (and IV), encrypts another body; D3's key material holds the real tag."""
    key, iv = bytes(range(16)), bytes(range(12))
    payload, _, km_for_d3 = legacy.encrypt(b"meet at noon", fixed_rng(key, iv))
    forged, _, forged_km = legacy.encrypt(b"meet at nine", fixed_rng(key, iv))
    assert forged_km[:16] == km_for_d3[:16] and forged != payload
    with pytest.raises(AuthenticationFailed):
        legacy.decrypt(forged, iv, km_for_d3)
    forged2, iv2, _ = legacy.encrypt(b"other", fixed_rng(key, bytes(12)))
    with pytest.raises(AuthenticationFailed):
        legacy.decrypt(forged2, iv2, km_for_d3)


def test_legacy_no_key_or_iv_repeats() -> None:
    """R8: fresh random key and 12-byte IV on every send, no repeats over 10^5 sends (the full
    encrypt path; about 0.3 s here)."""
    start = time.perf_counter()
    keys: set[bytes] = set()
    ivs: set[bytes] = set()
    for _ in range(100_000):
        _, iv, km = legacy.encrypt(b"")
        keys.add(km[:16])
        ivs.add(iv)
    assert len(keys) == len(ivs) == 100_000
    assert time.perf_counter() - start < 10  # generous: a guard, not a benchmark


def test_legacy_key_transport() -> None:
    iv, km = legacy.key_transport()
    assert len(iv) == 12 and len(km) == 16
    iv, km = legacy.key_transport(fixed_rng(b"k" * 16, b"i" * 12))
    assert (iv, km) == (b"i" * 12, b"k" * 16)
    # Not a message: the strict decrypt path refuses 16-byte key material.
    with pytest.raises(MalformedMessage):
        legacy.decrypt(b"", iv, km)


def test_legacy_rng_of_wrong_length_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        legacy.encrypt(b"x", lambda n: bytes(n + 1))
    with pytest.raises(UsageError):
        legacy.key_transport(lambda n: b"")


# --------------------------------------------------------------------------- interop


def _oldmemo() -> old.Oldmemo:
    return old.Oldmemo(InMemoryStorage())


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=5000))  # size 0: see the oldmemo quirk in the docstring
def test_legacy_interop_ours_to_oldmemo(plaintext: bytes) -> None:
    payload, iv, km = legacy.encrypt(plaintext)
    content = old.ContentImpl(payload, iv)
    key_material = old.PlainKeyMaterialImpl(km[:16], km[16:])
    assert _run(_oldmemo().decrypt_plaintext(content, key_material)) == plaintext


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_legacy_interop_oldmemo_to_ours(plaintext: bytes) -> None:
    content, key_material = _run(_oldmemo().encrypt_plaintext(plaintext))
    km = key_material.key + key_material.auth_tag  # what its ratchet carries
    assert len(km) == 32 and len(content.initialization_vector) == 12
    assert legacy.decrypt(content.ciphertext, content.initialization_vector, km) == plaintext


def test_legacy_interop_tampering_rejected_by_both() -> None:
    payload, iv, km = legacy.encrypt(b"body text")
    bad = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(PeerDecryptionFailed):
        _run(_oldmemo().decrypt_plaintext(old.ContentImpl(bad, iv), old.PlainKeyMaterialImpl(km[:16], km[16:])))
    with pytest.raises(AuthenticationFailed):
        legacy.decrypt(bad, iv, km)


def test_legacy_oldmemo_key_transport_shape() -> None:
    """python-oldmemo's empty message / KeyTransportElement: no payload, a 12-byte IV and 16
    random bytes of key material (no tag) -- the same shape as our key_transport()."""
    content, key_material = _run(_oldmemo().encrypt_empty())
    assert content.empty and content.ciphertext == b""
    assert len(content.initialization_vector) == 12
    km = key_material.key + key_material.auth_tag
    assert len(km) == 16 and key_material.auth_tag == b""
    ours_iv, ours_km = legacy.key_transport()
    assert (len(ours_iv), len(ours_km)) == (len(content.initialization_vector), len(km))
    # The engine must route "no <payload/>" to key transport; the payload layer refuses it.
    with pytest.raises(MalformedMessage):
        legacy.decrypt(content.ciphertext, content.initialization_vector, km)


def test_legacy_oldmemo_empty_body_quirk() -> None:
    """python-oldmemo treats a zero-length ciphertext as an empty (key transport) content, so
    an empty body cannot go through its decrypt_plaintext; ours decrypts it fine."""
    payload, iv, km = legacy.encrypt(b"")
    assert payload == b"" and legacy.decrypt(payload, iv, km) == b""
    content = old.ContentImpl(payload, iv)
    assert content.empty
    with pytest.raises(AssertionError):
        _run(_oldmemo().decrypt_plaintext(content, old.PlainKeyMaterialImpl(km[:16], km[16:])))


@pytest.mark.parametrize("module", [omemo2, legacy], ids=["omemo2", "legacy"])
def test_module_exports(module: object) -> None:
    names = module.__all__
    assert names and all(hasattr(module, name) for name in names)
