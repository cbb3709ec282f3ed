"""XEP-0454 media sharing, engine half (``e2ee.media``): the ``aesgcm://`` link format against the
spec digest's computed example, strict recognition of a file message, and streaming AES-256-GCM
(both IV lengths, chunked at every boundary, tampering and truncation refused)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee.errors import AuthenticationFailed, InvalidMediaLink, MediaIntegrityError, PeerError, UsageError
from e2ee.media import (
    MediaDecryptor,
    MediaEncryptor,
    MediaLink,
    build_link,
    encrypted_size,
    media_link_in,
    parse_link,
)

# ---- a computed example (XEP-0454 has no official vectors) -------------------------------------
KAT_IV = bytes.fromhex("8c3d050e9386ec173861778f")
KAT_KEY = bytes.fromhex("68e9af38a97aaf82faa4063b4d0878a61261534410c8a84331eaac851759f587")
KAT_FILE = bytes.fromhex("4f4d454d4f206d656469612073686172696e6720746573742066696c650a")
KAT_UPLOAD = bytes.fromhex(
    "13b5faa5a57291af7cbecce6a2d5c6123ba12881196a6f2439cd01e80e3a8abb3fc812c5198c5f38aecc348c9019"
)
KAT_FRAGMENT = "8c3d050e9386ec173861778f68e9af38a97aaf82faa4063b4d0878a61261534410c8a84331eaac851759f587"
# the digest's illustrative link (§1): IV 00112233..aabb, key 00 01 .. 1f
ILLUSTRATIVE = (
    "aesgcm://upload.example.org/0d1e/holiday%20photo.jpg#00112233445566778899aabb"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)


def _rng(values: list[bytes]) -> Callable[[int], bytes]:
    def rng(n: int) -> bytes:
        v = values.pop(0)
        assert len(v) == n
        return v

    return rng


def _encrypt_chunked(enc: MediaEncryptor, data: bytes, size: int) -> bytes:
    return b"".join(enc.update(data[i : i + size]) for i in range(0, len(data), size)) + enc.finalize()


def _decrypt_chunked(dec: MediaDecryptor, data: bytes, size: int) -> bytes:
    out = b"".join(dec.update(data[i : i + size]) for i in range(0, len(data), size))
    dec.finalize()
    return out


# ---- known answers ----------------------------------------------------------------------------


def test_kat_upload_bytes_and_fragment() -> None:
    assert len(KAT_FILE) == 30 and KAT_FILE == b"OMEMO media sharing test file\n"
    enc = MediaEncryptor.fresh(_rng([KAT_KEY, KAT_IV]))
    upload = enc.update(KAT_FILE) + enc.finalize()
    assert upload == KAT_UPLOAD and len(upload) == encrypted_size(30) == 46
    link = enc.link("https://upload.example.org/0d1e/holiday%20photo.jpg")
    assert link.uri == f"aesgcm://upload.example.org/0d1e/holiday%20photo.jpg#{KAT_FRAGMENT}"
    assert len(link.uri.partition("#")[2]) == 88


def test_kat_link_parses_back_and_decrypts() -> None:
    link = parse_link(f"aesgcm://upload.example.org/0d1e/holiday%20photo.jpg#{KAT_FRAGMENT}")
    assert link == MediaLink("https://upload.example.org/0d1e/holiday%20photo.jpg", KAT_KEY, KAT_IV)
    assert _decrypt_chunked(link.decryptor(), KAT_UPLOAD, 7) == KAT_FILE
    assert link.filename == "holiday photo.jpg"


def test_illustrative_link_of_the_digest() -> None:
    link = parse_link(ILLUSTRATIVE)
    assert link.iv == bytes.fromhex("00112233445566778899aabb")
    assert link.key == bytes(range(32))
    assert link.url == "https://upload.example.org/0d1e/holiday%20photo.jpg"  # percent-encoding kept
    assert link.uri == ILLUSTRATIVE


def test_legacy_16_byte_iv_link() -> None:
    iv16, key = os.urandom(16), os.urandom(32)
    data = os.urandom(1000)
    upload = AESGCM(key).encrypt(iv16, data, None)  # what an old Conversations uploads
    link = parse_link(f"aesgcm://host.example/a/b.bin#{iv16.hex()}{key.hex()}")
    assert (link.iv, link.key) == (iv16, key)
    assert _decrypt_chunked(link.decryptor(), upload, 333) == data


def test_uppercase_hex_and_scheme_accepted_output_is_lowercase() -> None:
    link = parse_link("AESGCM://upload.example.org/x#" + KAT_FRAGMENT.upper())
    assert (link.key, link.iv) == (KAT_KEY, KAT_IV)
    assert link.uri == "aesgcm://upload.example.org/x#" + KAT_FRAGMENT


def test_key_and_iv_never_in_repr() -> None:
    link = parse_link(ILLUSTRATIVE)
    assert "000102" not in repr(link) and "00112233" not in repr(link)
    enc = MediaEncryptor.fresh(_rng([KAT_KEY, KAT_IV]))
    assert KAT_KEY.hex() not in repr(enc) and KAT_KEY.hex() not in repr(enc.link("https://h/x"))


# ---- building and parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://upload.example.org/f.jpg",  # never upgrade plain http
        "ftp://upload.example.org/f.jpg",
        "upload.example.org/f.jpg",
        "https://upload.example.org/f.jpg#frag",
        "https://user@upload.example.org/f.jpg",
        "https:///f.jpg",
        "https://upload.example.org/f .jpg",
        "https://upload.example.org/f%zz.jpg",
        "https://upload.example.org/f\n.jpg",
        "https://upload.example.org/" + "a" * 5000,
    ],
)
def test_build_refuses_unusable_upload_urls(url: str) -> None:
    with pytest.raises(InvalidMediaLink):
        build_link(url, KAT_KEY, KAT_IV)


def test_build_needs_a_fresh_format_key_and_iv() -> None:
    with pytest.raises(UsageError):
        build_link("https://h/x", KAT_KEY, os.urandom(16))  # we only send 12-byte IVs
    with pytest.raises(UsageError):
        build_link("https://h/x", KAT_KEY[:16], KAT_IV)
    with pytest.raises(UsageError):
        MediaEncryptor.fresh(lambda n: b"\0" * (n - 1))


def test_build_keeps_port_path_and_query_verbatim() -> None:
    url = "https://[::1]:5281/file_share/Zx9/%E2%82%AC%20report.pdf?sig=a%2Fb&x=1"
    link = build_link(url, KAT_KEY, KAT_IV)
    assert link.uri == "aesgcm" + url[5:] + "#" + KAT_FRAGMENT
    assert parse_link(link.uri) == link
    assert link.filename == "€ report.pdf"


@pytest.mark.parametrize(
    "text",
    [
        "https://upload.example.org/x#" + KAT_FRAGMENT,
        "aesgcm://upload.example.org/x",  # no key
        "aesgcm://upload.example.org/x#" + KAT_FRAGMENT[:-2],  # 43 bytes
        "aesgcm://upload.example.org/x#" + KAT_FRAGMENT + "00",  # 45 bytes
        "aesgcm://upload.example.org/x#" + "00" * 32,  # a bare key (very old senders): refused
        "aesgcm://upload.example.org/x#" + KAT_FRAGMENT[:-1] + "g",
        "aesgcm://upload.example.org/x#" + KAT_FRAGMENT + "#" + KAT_FRAGMENT,
        "aesgcm://#" + KAT_FRAGMENT,
        "aesgcm://evil@upload.example.org/x#" + KAT_FRAGMENT,
        "aesgcm://upload.example.org/a b#" + KAT_FRAGMENT,
        "aesgcm://upload.example.org/x%4#" + KAT_FRAGMENT,
        "aesgcm://upload.example.org/" + "x" * 5000 + "#" + KAT_FRAGMENT,
    ],
)
def test_parse_refuses_malformed_links(text: str) -> None:
    with pytest.raises(InvalidMediaLink) as info:
        parse_link(text)
    assert isinstance(info.value, PeerError)  # the sender's fault, never the caller's


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parse_of_arbitrary_text_raises_only_invalid_media_link(text: str) -> None:
    for candidate in (text, "aesgcm://" + text, f"aesgcm://{text}#{KAT_FRAGMENT}"):
        try:
            parse_link(candidate)
        except InvalidMediaLink:
            pass
        media_link_in(candidate)  # never raises


def test_media_body_recognition_is_strict() -> None:
    link = f"aesgcm://upload.example.org/0d1e/holiday%20photo.jpg#{KAT_FRAGMENT}"
    assert media_link_in(link) == parse_link(link)
    assert media_link_in(link + "\ndata:image/jpeg;base64,/9j/4AAQ") == parse_link(link)  # thumbnail
    for body in (
        None,
        "",
        "look: " + link,
        link + " ",
        " " + link,
        link + "\n",
        link + "\nhello",
        link + "\ndata:image/jpeg,x\nmore",
        link + "\n" + link,
        "aesgcm://upload.example.org/x#nothex",
        "hello",
    ):
        assert media_link_in(body) is None, body


@pytest.mark.parametrize(
    "segment, expected",
    [
        ("report.pdf", "report.pdf"),
        ("..%2F..%2Fetc%2Fpasswd", "etcpasswd"),
        ("%2e%2e", "file"),
        (".bashrc", "bashrc"),
        ("a%5Cb", "ab"),
        ("x%00y%0A%E2%80%AEz.txt", "xyz.txt"),
        ("", "file"),
        ("%FF%FE.bin", "\ufffd\ufffd.bin"),
        ("a" * 300 + ".tar", "a" * 116 + ".tar"),
    ],
)
def test_suggested_filename_is_safe(segment: str, expected: str) -> None:
    link = build_link(f"https://h.example/slot/{segment}", KAT_KEY, KAT_IV)
    name = link.filename
    assert name == expected
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name.isprintable()


# ---- streaming AES-256-GCM --------------------------------------------------------------------


@given(data=st.binary(max_size=2000), enc_chunk=st.integers(1, 300), dec_chunk=st.integers(1, 300))
@settings(max_examples=150, deadline=None)
def test_streaming_round_trip_any_chunking(data: bytes, enc_chunk: int, dec_chunk: int) -> None:
    enc = MediaEncryptor.fresh()
    upload = _encrypt_chunked(enc, data, enc_chunk)
    assert upload == AESGCM(enc.key).encrypt(enc.iv, data, None)  # tag appended, no AAD
    assert _decrypt_chunked(MediaDecryptor(enc.key, enc.iv), upload, dec_chunk) == data


def test_decryptor_holds_back_the_tag() -> None:
    enc = MediaEncryptor.fresh()
    upload = _encrypt_chunked(enc, b"x" * 100, 100)
    dec = MediaDecryptor(enc.key, enc.iv)
    released = dec.update(upload)
    assert len(released) == 100 and dec.received == 116
    assert dec.update(b"") == b""
    dec.finalize()


def test_fresh_keys_differ() -> None:
    a, b = MediaEncryptor.fresh(), MediaEncryptor.fresh()
    assert a.key != b.key and a.iv != b.iv
    assert (len(a.key), len(a.iv)) == (32, 12)


def _upload(data: bytes) -> tuple[MediaEncryptor, bytes]:
    enc = MediaEncryptor.fresh()
    return enc, _encrypt_chunked(enc, data, 64)


@pytest.mark.parametrize("where", [0, 500, 999, 1000, 1015])  # ciphertext start/middle/end, tag
def test_flipped_byte_is_refused(where: int) -> None:
    enc, upload = _upload(os.urandom(1000))
    bad = bytearray(upload)
    bad[where] ^= 0x01
    with pytest.raises(MediaIntegrityError) as info:
        _decrypt_chunked(MediaDecryptor(enc.key, enc.iv), bytes(bad), 100)
    assert isinstance(info.value, AuthenticationFailed)
    assert "integrity" in str(info.value)


@pytest.mark.parametrize("cut", [1, 15, 16, 17, 500, 1016])
def test_truncated_download_is_refused(cut: int) -> None:
    enc, upload = _upload(os.urandom(1000))
    with pytest.raises(MediaIntegrityError):
        _decrypt_chunked(MediaDecryptor(enc.key, enc.iv), upload[:-cut], 100)


def test_appended_bytes_and_wrong_key_or_iv_are_refused() -> None:
    enc, upload = _upload(os.urandom(1000))
    with pytest.raises(MediaIntegrityError):
        _decrypt_chunked(MediaDecryptor(enc.key, enc.iv), upload + b"\0", 100)
    with pytest.raises(MediaIntegrityError):
        _decrypt_chunked(MediaDecryptor(os.urandom(32), enc.iv), upload, 100)
    with pytest.raises(MediaIntegrityError):
        _decrypt_chunked(MediaDecryptor(enc.key, os.urandom(12)), upload, 100)


def test_finished_ciphers_refuse_more_work() -> None:
    enc = MediaEncryptor.fresh()
    enc.finalize()
    with pytest.raises(UsageError):
        enc.update(b"x")
    with pytest.raises(UsageError):
        enc.finalize()
    dec = MediaDecryptor(enc.key, enc.iv)
    with pytest.raises(MediaIntegrityError):
        dec.finalize()
    with pytest.raises(UsageError):
        dec.update(b"x")
    with pytest.raises(UsageError):
        MediaDecryptor(enc.key, os.urandom(13))
