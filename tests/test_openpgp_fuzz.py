"""Arbitrary input to the pure OpenPGP parsers (key packets, secret-key protection, XML codecs,
status verdicts) raises only the error class each one is given or peer-blame errors, never another
exception; and a protected key's bit flips never unlock it silently."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2ee.errors import (
    CorruptState,
    DecryptionFailed,
    InvalidPublicKey,
    InvalidSignature,
    PeerError,
    SignatureNotFromSender,
)
from e2ee.openpgp import xml as ox
from e2ee.openpgp.packets import encode_packet, parse_key_block, parse_key_blocks
from e2ee.openpgp.secretkey import protect, secret_values, unprotect
from e2ee.openpgp.status import check_decryption, parse_status

# a tiny unprotected EdDSA secret key packet (made up numbers, structure only) with a user id
_PUBLIC = bytes([4, 0, 0, 0, 1, 22, 9]) + bytes.fromhex("2b06010401da470f01") + bytes([1, 7]) + b"\x40" + bytes(32)
_MPI = bytes([0, 255]) + bytes(range(1, 33))
_SECRET = encode_packet(5, _PUBLIC + b"\x00" + _MPI + (sum(_MPI) & 0xFFFF).to_bytes(2, "big")) + encode_packet(
    13, b"xmpp:a@b"
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_key_parsing_raises_only_the_given_error(data: bytes) -> None:
    for candidate in (data, b"\x99\x00\x20" + data, encode_packet(6, b"\x04" + data) + data):
        try:
            parse_key_blocks(candidate, InvalidPublicKey)
        except InvalidPublicKey:
            pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=7))
def test_bit_flips_in_a_protected_key_are_caught(pos: int, bit: int) -> None:
    block = parse_key_block(_SECRET, CorruptState, secret=True)
    protected = protect(block, "pw", os.urandom, CorruptState)
    pos %= len(protected)
    flipped = protected[:pos] + bytes((protected[pos] ^ (1 << bit),)) + protected[pos + 1 :]
    try:
        flipped_block = parse_key_block(flipped, CorruptState, secret=True)
        result = unprotect(flipped_block, "pw", CorruptState)
    except CorruptState:
        return
    # a flip in the public part or the user id changes those, never the secret
    assert result != unprotect(block, "pw", CorruptState) or flipped == protected
    assert secret_values(flipped_block, "pw", CorruptState) == secret_values(block, "pw", CorruptState)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_signcrypt_parser_raises_only_peer_errors(data: bytes) -> None:
    for candidate in (data, b"<signcrypt xmlns='urn:xmpp:openpgp:0'>" + data + b"</signcrypt>"):
        try:
            ox.parse_signcrypt(candidate)
        except PeerError:
            pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60), st.text(max_size=60))
def test_pep_payload_parsers_raise_only_peer_errors(a: str, b: str) -> None:
    ns = "urn:xmpp:openpgp:0"
    meta = ET.Element(f"{{{ns}}}public-keys-list")
    ET.SubElement(meta, f"{{{ns}}}pubkey-metadata", {"v4-fingerprint": a, "date": b})
    pub = ET.Element(f"{{{ns}}}pubkey")
    ET.SubElement(pub, f"{{{ns}}}data").text = a
    secret = ET.Element(f"{{{ns}}}secretkey")
    secret.text = b
    msg = ET.Element(f"{{{ns}}}openpgp")
    msg.text = a
    for fn, elem in (
        (ox.parse_metadata, meta),
        (ox.parse_pubkey, pub),
        (ox.parse_secretkey, secret),
        (ox.parse_openpgp, msg),
    ):
        try:
            fn(elem)  # type: ignore[operator]
        except PeerError:
            pass


_KEYWORDS = [
    "NEWSIG",
    "GOODSIG",
    "VALIDSIG",
    "BADSIG",
    "ERRSIG",
    "DECRYPTION_OKAY",
    "GOODMDC",
    "BADMDC",
    "PLAINTEXT",
    "BEGIN_DECRYPTION",
    "END_DECRYPTION",
    "DECRYPTION_INFO",
    "NO_PUBKEY",
    "ENC_TO",
    "EXPKEYSIG",
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_KEYWORDS),
            st.lists(st.sampled_from(["AB" * 20, "AB" * 8, "4", "00", "9", "2", "0", "x"]), max_size=11),
        ),
        max_size=16,
    ),
    st.integers(min_value=0, max_value=2),
)
def test_status_verdicts_raise_only_their_errors(lines: list[tuple[str, list[str]]], rc: int) -> None:
    text = "\n".join(f"[GNUPG:] {k} {' '.join(a)}" for k, a in lines)
    try:
        primary, signing = check_decryption(parse_status(text), rc)
    except (DecryptionFailed, InvalidSignature, SignatureNotFromSender):
        return
    # accepted: then every rule held
    keywords = [k for k, _ in lines]
    assert rc == 0 and keywords.count("VALIDSIG") == 1 and keywords.count("DECRYPTION_OKAY") == 1
    assert "GOODMDC" in keywords and "BADMDC" not in keywords and len(primary) == len(signing) == 40
