"""The vector files themselves: they load, carry provenance, are unmodified (Wycheproof),
and the transcribed values check against `cryptography` / hashlib / hmac directly.

Nothing here imports the engine: a failure means a transcription error in vectors/,
not a bug in e2ee/.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import vectors as loader
from .vectors import (
    VECTORS_DIR,
    WYCHEPROOF_DIR,
    VectorFileError,
    hexfield,
    load,
    vector_files,
    wycheproof,
)

P = 2**255 - 19
ALL_FILES = vector_files()
HAND_WRITTEN = [f for f in ALL_FILES if f.startswith(("rfc/", "omemo/"))]
WYCHEPROOF_FILES = sorted(p.name for p in WYCHEPROOF_DIR.glob("*.json"))

# String fields of hand-written cases that are text, not hex.
TEXT_FIELDS = frozenset(
    {
        "id", "section", "kind", "hash", "scheme", "flavour", "origin", "namespace",
        "flavour_label_prefix", "info_text", "message_note", "data_text",
        "payload_plaintext_utf8", "body_plaintext_utf8", "msg0_key_element_text",
    }
)  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519(scalar: bytes, u: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(scalar).exchange(X25519PublicKey.from_public_bytes(u))


def x25519_public(private: bytes) -> bytes:
    return _raw_public(X25519PrivateKey.from_private_bytes(private))


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "sha256").digest()


def clamp(scalar: bytes) -> bytes:
    b = bytearray(scalar)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def ed_to_mont(ed: bytes) -> bytes:
    """RFC 7748 section 4.1: u = (1 + y) / (1 - y)."""
    y = int.from_bytes(ed, "little") & (2**255 - 1)
    return ((1 + y) * pow(1 - y, P - 2, P) % P).to_bytes(32, "little")


def mont_to_ed(u: bytes, sign: int) -> bytes:
    """y = (u - 1) / (u + 1), with the sign of x supplied."""
    n = int.from_bytes(u, "little")
    assert n < P
    y = (n - 1) * pow(n + 1, P - 2, P) % P
    return (y | (sign << 255)).to_bytes(32, "little")


def ed25519_verifies(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def sign_bit_aware_verifies(u: bytes, message: bytes, signature: bytes) -> bool:
    """The libsignal curve25519_verify procedure (spec digest x3dh-doubleratchet-xeddsa.md 3.3)."""
    sign = signature[63] >> 7
    stripped = signature[:63] + bytes([signature[63] & 0x7F])
    return ed25519_verifies(mont_to_ed(u, sign), message, stripped)


def cases(relpath: str) -> list[dict[str, Any]]:
    vectors = load(relpath)["vectors"]
    assert isinstance(vectors, list)
    return vectors


def ids(relpath: str) -> list[str]:
    return [str(c["id"]) for c in cases(relpath)]


# --------------------------------------------------------------------------- all files


@pytest.mark.parametrize("relpath", ALL_FILES)
def test_every_vector_file_loads(relpath: str) -> None:
    data = load(relpath)
    if not relpath.startswith("wycheproof/"):
        assert data["source"].strip()


def test_vector_files_found() -> None:
    assert len(WYCHEPROOF_FILES) == 7
    assert len(HAND_WRITTEN) >= 10


@pytest.mark.parametrize("relpath", HAND_WRITTEN)
def test_hand_written_file_shape(relpath: str) -> None:
    data = load(relpath)
    assert isinstance(data["description"], str) and data["description"].strip()
    assert isinstance(data["vectors"], list) and data["vectors"]
    for case in data["vectors"]:
        assert isinstance(case, dict) and "id" in case
        for name, value in case.items():
            if isinstance(value, str) and name not in TEXT_FIELDS:
                hexfield(case, name)  # raises unless lowercase, even-length hex


def test_loader_requires_source(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "VECTORS_DIR", tmp_path)
    monkeypatch.setattr(loader, "WYCHEPROOF_DIR", tmp_path / "wycheproof")
    (tmp_path / "wycheproof").mkdir()
    (tmp_path / "no_source.json").write_text('{"vectors": []}')
    (tmp_path / "wycheproof" / "upstream.json").write_text('{"testGroups": []}')
    with pytest.raises(VectorFileError):
        load("no_source.json")
    assert load("wycheproof/upstream.json") == {"testGroups": []}
    with pytest.raises(VectorFileError):
        load("../outside.json")
    with pytest.raises(VectorFileError):
        load("missing.json")


def test_hexfield_is_strict() -> None:
    assert hexfield({"a": "00ff"}, "a") == b"\x00\xff"
    for bad in ("00FF", "0", "zz", " 00"):
        with pytest.raises(VectorFileError):
            hexfield({"a": bad}, "a")
    with pytest.raises(KeyError):
        hexfield({"a": "00"}, "b")


# --------------------------------------------------------------------------- Wycheproof


def _recorded_checksums() -> dict[str, tuple[int, str]]:
    text = (WYCHEPROOF_DIR / "SOURCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", text, re.M)
    return {name: (int(size), digest) for name, size, digest in rows}


def test_wycheproof_files_are_unmodified() -> None:
    recorded = _recorded_checksums()
    present = sorted(p.name for p in WYCHEPROOF_DIR.iterdir() if p.name != "SOURCE.md")
    assert sorted(recorded) == present
    for name, (size, digest) in recorded.items():
        data = (WYCHEPROOF_DIR / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), name


def _readme_counts() -> dict[str, dict[str, int]]:
    text = (VECTORS_DIR / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+_test\.json)` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text, re.M)
    return {
        name: {"total": int(t), "valid": int(v), "invalid": int(i), "acceptable": int(a)} for name, t, v, i, a in rows
    }


def test_wycheproof_counts_match_readme() -> None:
    documented = _readme_counts()
    assert sorted(documented) == WYCHEPROOF_FILES
    for name in WYCHEPROOF_FILES:
        counted = collections.Counter(case.result for case in wycheproof(name))
        actual = {"total": sum(counted.values()), **{r: counted[r] for r in ("valid", "invalid", "acceptable")}}
        assert actual == documented[name], name


def test_wycheproof_x25519_policy_partition() -> None:
    """The numbers vectors/README.md gives for the x25519 protocol-layer policy."""
    rejected = collections.Counter()
    for case in wycheproof("x25519"):
        public = hexfield(case, "public")
        non_canonical = bool(public[31] & 0x80) or int.from_bytes(public, "little") >= P
        low_order = bool({"LowOrderPublic", "ZeroSharedSecret"} & set(case.flags))
        zero = hexfield(case, "shared") == bytes(32)
        assert low_order == zero  # the flagged cases are exactly the all-zero results
        if case.result == "valid":
            assert not (non_canonical or low_order)
        rejected[(case.result, non_canonical or low_order)] += 1
        rejected["non-canonical"] += non_canonical
        rejected["zero"] += zero
    assert rejected["non-canonical"] == 29
    assert rejected["zero"] == 31
    assert rejected[("acceptable", True)] == 44
    assert rejected[("acceptable", False)] == 210
    assert rejected[("valid", False)] == 264


def test_wycheproof_has_no_acceptable_outside_x25519() -> None:
    for name in WYCHEPROOF_FILES:
        if name != "x25519_test.json":
            assert all(case.result != "acceptable" for case in wycheproof(name)), name


# --------------------------------------------------------------------------- RFC 7748


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c["id"], marks=[pytest.mark.slow] if c.get("slow") else [])
        for c in cases("rfc/rfc7748_x25519.json")
    ],
)
def test_rfc7748_x25519(case: Mapping[str, Any]) -> None:
    if case["kind"] == "scalarmult":
        assert x25519(hexfield(case, "scalar"), hexfield(case, "u")) == hexfield(case, "output")
    elif case["kind"] == "iterated":
        k, u = hexfield(case, "k"), hexfield(case, "u")
        for _ in range(case["iterations"]):
            k, u = x25519(k, u), k
        assert k == hexfield(case, "output")
    else:
        assert case["kind"] == "dh"
        a, b = hexfield(case, "alice_private"), hexfield(case, "bob_private")
        assert x25519_public(a) == hexfield(case, "alice_public")
        assert x25519_public(b) == hexfield(case, "bob_public")
        assert x25519(a, hexfield(case, "bob_public")) == hexfield(case, "shared")
        assert x25519(b, hexfield(case, "alice_public")) == hexfield(case, "shared")


# --------------------------------------------------------------------------- RFC 8032


@pytest.mark.parametrize("case", cases("rfc/rfc8032_ed25519.json"), ids=ids("rfc/rfc8032_ed25519.json"))
def test_rfc8032_ed25519(case: Mapping[str, Any]) -> None:
    key = Ed25519PrivateKey.from_private_bytes(hexfield(case, "secret_key"))
    message = hexfield(case, "message")
    assert len(message) == case.get("message_length", len(message))
    assert _raw_public(key) == hexfield(case, "public_key")
    assert key.sign(message) == hexfield(case, "signature")
    assert ed25519_verifies(hexfield(case, "public_key"), message, hexfield(case, "signature"))


def test_rfc8032_sha_abc_message() -> None:
    (case,) = [c for c in cases("rfc/rfc8032_ed25519.json") if c["id"] == "TEST SHA(abc)"]
    assert hexfield(case, "message") == hashlib.sha512(b"abc").digest()


# --------------------------------------------------------------------------- RFC 5869


@pytest.mark.parametrize("case", cases("rfc/rfc5869_hkdf.json"), ids=ids("rfc/rfc5869_hkdf.json"))
def test_rfc5869_hkdf(case: Mapping[str, Any]) -> None:
    ikm, salt, info = hexfield(case, "ikm"), hexfield(case, "salt"), hexfield(case, "info")
    prk = hmac_sha256(salt or bytes(32), ikm)  # Extract; an absent salt is HashLen zeros
    assert prk == hexfield(case, "prk")
    assert HKDFExpand(hashes.SHA256(), case["l"], info).derive(prk) == hexfield(case, "okm")
    assert hkdf(ikm, salt, info, case["l"]) == hexfield(case, "okm")


# --------------------------------------------------------------------------- RFC 4231


@pytest.mark.parametrize("case", cases("rfc/rfc4231_hmac.json"), ids=ids("rfc/rfc4231_hmac.json"))
def test_rfc4231_hmac_sha256(case: Mapping[str, Any]) -> None:
    expected = hexfield(case, "hmac_sha256")
    assert len(expected) * 8 == case["truncate_bits"]
    data = hexfield(case, "data")
    if "data_text" in case:
        assert data == case["data_text"].encode("ascii")
    mac = hmac_sha256(hexfield(case, "key"), data)
    assert mac[: case["truncate_bits"] // 8] == expected


# --------------------------------------------------------------------------- spec digest Part A


def test_xeddsa_kat() -> None:
    vectors = cases("omemo/xeddsa_kat.json")
    assert [c["id"] for c in vectors] == ["xeddsa_fast_test", "curvesigs_fast_test"]
    for case in vectors:
        private, public = hexfield(case, "private_key"), hexfield(case, "curve25519_public")
        message, signature = hexfield(case, "message"), hexfield(case, "signature")
        assert clamp(hexfield(case, "private_key_unclamped")) == private
        assert (len(message), len(hexfield(case, "random"))) == (200, 64)
        assert x25519_public(private) == public
        # libsignal's curve25519_verify (sign bit from sig[63]) accepts both kinds.
        assert sign_bit_aware_verifies(public, message, signature)
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        assert not sign_bit_aware_verifies(public, message, flipped)
    xeddsa = vectors[0]
    assert mont_to_ed(hexfield(xeddsa, "curve25519_public"), 0) == hexfield(xeddsa, "ed25519_public_sign0")
    assert ed25519_verifies(
        hexfield(xeddsa, "ed25519_public_sign0"), hexfield(xeddsa, "message"), hexfield(xeddsa, "signature")
    )


def test_libsignal_signature() -> None:
    (case,) = cases("omemo/libsignal_signature.json")
    u, message, signature = hexfield(case, "identity_public"), hexfield(case, "message"), hexfield(case, "signature")
    assert x25519_public(hexfield(case, "identity_private")) == u
    assert (len(message), message[0]) == (33, 0x05)
    assert signature[63] >> 7 == case["signature_sign_bit"] == 1
    assert sign_bit_aware_verifies(u, message, signature) is case["valid_sign_bit_aware"] is True
    assert ed25519_verifies(mont_to_ed(u, 0), message, signature) is case["valid_strict_xeddsa"] is False
    for i in range(64):
        for bit in range(8):
            forged = bytearray(signature)
            forged[i] ^= 1 << bit
            assert not sign_bit_aware_verifies(u, message, bytes(forged)), (i, bit)


@pytest.mark.parametrize("case", cases("omemo/chain_keys.json"), ids=ids("omemo/chain_keys.json"))
def test_chain_keys(case: Mapping[str, Any]) -> None:
    chain_key = hexfield(case, "chain_key")
    assert hmac_sha256(chain_key, b"\x02") == hexfield(case, "next_chain_key")
    message_key = hmac_sha256(chain_key, b"\x01")
    expanded = hkdf(message_key, bytes(32), case["info_text"].encode(), 80)
    assert expanded == hexfield(case, "cipher_key") + hexfield(case, "mac_key") + hexfield(case, "iv")


def test_legacy_x3dh_no_opk() -> None:
    (case,) = cases("omemo/legacy_x3dh_no_opk.json")

    def pub33(name: str) -> bytes:
        key = hexfield(case, name)
        assert (len(key), key[0]) == (33, 0x05)
        return key[1:]

    ik_b, spk_b = hexfield(case, "bob_identity_private"), hexfield(case, "bob_signed_prekey_private")
    assert x25519_public(ik_b) == pub33("bob_identity_public")
    assert x25519_public(spk_b) == pub33("bob_signed_prekey_public")
    ik_a, ek_a = pub33("alice_identity_public"), pub33("alice_base_public")
    ikm = hexfield(case, "kdf_prefix") + x25519(spk_b, ik_a) + x25519(ik_b, ek_a) + x25519(spk_b, ek_a)
    out = hkdf(ikm, hexfield(case, "salt"), case["info_text"].encode(), case["l"])
    assert out == hexfield(case, "root_key") + hexfield(case, "chain_key")


# --------------------------------------------------------------------------- spec digest Part B


E2E = ["omemo/e2e_omemo2.json", "omemo/e2e_legacy.json"]


@pytest.mark.parametrize("relpath", E2E)
def test_e2e_stated_lengths(relpath: str) -> None:
    data = load(relpath)
    (case,) = data["vectors"]
    assert data["byte_lengths_stated"]
    for name, length in data["byte_lengths_stated"].items():
        assert len(hexfield(case, name)) == length, name
    assert base64.b64decode(case["msg0_key_element_text"], validate=True) == hexfield(case, "msg0_key_exchange")
    assert hexfield(case, "msg0_authenticated_message") in hexfield(case, "msg0_key_exchange")


@pytest.mark.parametrize("relpath", E2E)
def test_e2e_keys_signature_x3dh(relpath: str) -> None:
    """Key pairs, SPK signature, AD and the X3DH secret, recomputed from the private inputs."""
    (case,) = cases(relpath)
    v2 = case["namespace"] == "urn:xmpp:omemo:2"
    prefix = case["flavour_label_prefix"]
    labels = {
        "alice_ik_seed": "alice identity seed", "bob_ik_seed": "bob identity seed",
        "bob_spk_priv": "bob spk priv", "bob_opk_priv": "bob opk priv",
        "alice_ek_priv": "alice ephemeral priv", "alice_ratchet1_priv": "alice ratchet priv 1",
        "bob_ratchet1_priv": "bob ratchet priv 1", "alice_ratchet2_priv": "alice ratchet priv 2",
    }  # fmt: skip
    for field, label in labels.items():
        assert hexfield(case, field) == hashlib.sha256(f"{prefix}.{label}".encode()).digest(), field
    x_priv = {}
    for who in ("alice", "bob"):
        seed = hexfield(case, f"{who}_ik_seed")
        ed = _raw_public(Ed25519PrivateKey.from_private_bytes(seed))
        assert ed == hexfield(case, f"{who}_ik_ed25519_pub")
        x_priv[who] = clamp(hashlib.sha512(seed).digest()[:32])
        assert ed_to_mont(ed) == x25519_public(x_priv[who]) == hexfield(case, f"{who}_ik_x25519_pub")
    for key in ("bob_spk", "bob_opk", "alice_ek", "alice_ratchet1", "bob_ratchet1", "alice_ratchet2"):
        assert x25519_public(hexfield(case, f"{key}_priv")) == hexfield(case, f"{key}_pub"), key

    bob_ed, spk = hexfield(case, "bob_ik_ed25519_pub"), hexfield(case, "bob_spk_pub")
    signed = spk if v2 else b"\x05" + spk
    bob_seed = hexfield(case, "bob_ik_seed")
    assert Ed25519PrivateKey.from_private_bytes(bob_seed).sign(signed) == hexfield(case, "spk_signature_ed25519")
    if not v2:
        assert bob_ed[31] >> 7 == case["bob_ik_ed25519_sign_bit"]
        on_wire = bytearray(hexfield(case, "spk_signature_ed25519"))
        on_wire[63] |= bob_ed[31] & 0x80
        assert bytes(on_wire) == hexfield(case, "spk_signature_on_wire")
        u = hexfield(case, "bob_ik_x25519_pub")
        assert sign_bit_aware_verifies(u, signed, hexfield(case, "spk_signature_on_wire"))

    if v2:
        ad = hexfield(case, "alice_ik_ed25519_pub") + bob_ed
        assert hexfield(case, "associated_data_alice_to_bob") == hexfield(case, "associated_data_bob_to_alice") == ad
    else:
        a, b = b"\x05" + hexfield(case, "alice_ik_x25519_pub"), b"\x05" + hexfield(case, "bob_ik_x25519_pub")
        assert hexfield(case, "associated_data_alice_to_bob") == a + b
        assert hexfield(case, "associated_data_bob_to_alice") == b + a

    ek = hexfield(case, "alice_ek_priv")
    ikm = b"\xff" * 32 + b"".join(
        [
            x25519(x_priv["alice"], spk),
            x25519(ek, hexfield(case, "bob_ik_x25519_pub")),
            x25519(ek, spk),
            x25519(ek, hexfield(case, "bob_opk_pub")),
        ]
    )
    info = b"OMEMO X3DH" if v2 else b"WhisperText"
    assert hkdf(ikm, bytes(32), info, 32) == hexfield(case, "x3dh_shared_secret")


def test_e2e_payload_key_material() -> None:
    (v2,) = cases("omemo/e2e_omemo2.json")
    assert hexfield(v2, "key_material_into_ratchet") == hexfield(v2, "payload_key") + hexfield(v2, "payload_hmac16")
    assert hkdf(hexfield(v2, "payload_key"), bytes(32), b"OMEMO Payload", 80) == hexfield(v2, "payload_hkdf80")
    (legacy,) = cases("omemo/e2e_legacy.json")
    assert hexfield(legacy, "key_material_into_ratchet") == hexfield(legacy, "aes128_key") + hexfield(
        legacy, "gcm_tag16"
    )
    assert len(hexfield(legacy, "payload")) == len(legacy["body_plaintext_utf8"].encode())
