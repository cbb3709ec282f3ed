"""Fingerprint display forms and verification URIs (e2ee.verification; trust-atm.md section 4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee.errors import PeerError, UsageError
from e2ee.jid import bare_jid_key
from e2ee.limits import DEVICE_ID_MAX
from e2ee.trust import fingerprint
from e2ee.verification import (
    MAX_FINGERPRINT_TEXT,
    MAX_URI_FINGERPRINTS,
    MAX_URI_LENGTH,
    InvalidFingerprint,
    InvalidVerificationUri,
    VerificationUri,
    fingerprint_omemo,
    fingerprint_openpgp,
    make_uri,
    parse_fingerprint,
    parse_openpgp_fingerprint,
    parse_uri,
)

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
K3 = bytes.fromhex("7d4179764886dae0f784fe0fa40cf3558ed5a0402dc08dfdff75a232a29d9848")
H1, H2, H3 = K1.hex(), K2.hex(), K3.hex()
K1_DISPLAY = "00010203 04050607 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f"


def test_errors_are_peer_errors() -> None:
    assert issubclass(InvalidFingerprint, PeerError)
    assert issubclass(InvalidVerificationUri, PeerError)


# ---- fingerprint display ------------------------------------------------------------------


def test_fingerprint_omemo_display() -> None:
    assert fingerprint_omemo(K1) == K1_DISPLAY
    assert fingerprint_omemo(bytearray(K1)) == K1_DISPLAY  # type: ignore[arg-type]
    # one definition with the trust store's
    assert fingerprint_omemo(K3) == fingerprint(K3)
    assert fingerprint_omemo(K3) == "7d417976 4886dae0 f784fe0f a40cf355 8ed5a040 2dc08dfd ff75a232 a29d9848"


@pytest.mark.parametrize("bad", [b"", K1[:31], b"\x05" + K1, "00" * 32, None, 5])
def test_fingerprint_omemo_rejects_wrong_keys(bad: object) -> None:
    with pytest.raises(UsageError):
        fingerprint_omemo(bad)  # type: ignore[arg-type]


def test_fingerprint_openpgp_is_the_gpg_form() -> None:
    # `gpg --fingerprint` (GnuPG 2.2.40) printed exactly this for the lower-case value below.
    gpg = "4DB7 3F4D 595C 3524 2359  E8A2 6DDA 53E8 A134 4C59"
    assert fingerprint_openpgp("4db73f4d595c35242359e8a26dda53e8a1344c59") == gpg
    assert fingerprint_openpgp("4DB73F4D595C35242359E8A26DDA53E8A1344C59") == gpg
    assert parse_openpgp_fingerprint(gpg) == "4DB73F4D595C35242359E8A26DDA53E8A1344C59"
    assert parse_openpgp_fingerprint("0x4db73f4d595c35242359e8a26dda53e8a1344c59\n") == (
        "4DB73F4D595C35242359E8A26DDA53E8A1344C59"
    )


@pytest.mark.parametrize("bad", ["", "4DB7", "4DB7 3F4D 595C 3524 2359  E8A2 6DDA 53E8 A134 4C59", "G" * 40, 40])
def test_fingerprint_openpgp_rejects(bad: object) -> None:
    with pytest.raises(UsageError):
        fingerprint_openpgp(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "4DB7 3F4D", "Z" * 40, "0x", "4DB7" * 11, "x" * (MAX_FINGERPRINT_TEXT + 1)])
def test_parse_openpgp_fingerprint_rejects(bad: str) -> None:
    with pytest.raises(InvalidFingerprint):
        parse_openpgp_fingerprint(bad)


# ---- fingerprint parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        K1_DISPLAY,
        K1_DISPLAY.upper(),
        H1,
        H1.upper(),
        "05" + H1,  # legacy 33-byte serialisation
        "05 " + K1_DISPLAY,
        ":".join(H1[i : i + 2] for i in range(0, 64, 2)),
        "00010203 04050607 08090a0b 0c0d0e0f\n10111213 14151617 18191a1b 1c1d1e1f",  # two lines
        "  " + K1_DISPLAY.replace(" ", "\u00a0") + "\t\r\n",
    ],
)
def test_parse_fingerprint_normalises(text: str) -> None:
    assert parse_fingerprint(text) == K1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        H1[:-1],  # 63 digits
        H1 + "0",  # 65
        H1 + "00",  # 66 without the 05 prefix
        "06" + H1,
        "0505" + H1,
        H1[:-1] + "g",
        "0x" + H1,
        H1.replace("0", "\uff10"),  # full-width digits are not hex
        H1.replace("1", "\u0661"),  # Arabic-Indic digit one
        H1 + "-",
        "0" * (MAX_FINGERPRINT_TEXT + 1),
    ],
)
def test_parse_fingerprint_rejects(text: str) -> None:
    with pytest.raises(InvalidFingerprint):
        parse_fingerprint(text)


def test_parse_fingerprint_rejects_non_text() -> None:
    with pytest.raises(UsageError):
        parse_fingerprint(K1)  # type: ignore[arg-type]


@given(st.binary(min_size=32, max_size=32))
def test_display_round_trip(ik: bytes) -> None:
    assert parse_fingerprint(fingerprint_omemo(ik)) == ik
    assert parse_fingerprint(fingerprint_omemo(ik).upper()) == ik


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_fingerprint_text_only_raises_the_typed_error(text: str) -> None:
    try:
        key = parse_fingerprint(text)
    except InvalidFingerprint:
        return
    assert len(key) == 32


# ---- making URIs --------------------------------------------------------------------------

CONVERSATIONS = f"xmpp:juliet@example.org?omemo-sid-1073741827={H1};omemo-sid-812={H2}"


def test_make_uri_conversations_form() -> None:
    assert make_uri("juliet@example.org", [(1073741827, K1), (812, K2)]) == CONVERSATIONS


def test_make_uri_keeps_the_given_order() -> None:
    assert make_uri("juliet@example.org", [(812, K2), (1073741827, K1)]) == (
        f"xmpp:juliet@example.org?omemo-sid-812={H2};omemo-sid-1073741827={H1}"
    )


def test_make_uri_dino_and_gajim_forms() -> None:
    assert make_uri("romeo@montague.lit", [(12345, K3)]) == f"xmpp:romeo@montague.lit?omemo-sid-12345={H3}"
    assert make_uri("romeo@montague.lit", [(1, K1), (2, K2)], action="message") == (
        f"xmpp:romeo@montague.lit?message;omemo-sid-1={H1};omemo-sid-2={H2}"
    )


@pytest.mark.parametrize(
    ("jid", "encoded"),
    [
        ("example.org", "example.org"),  # a domain JID
        ("user+tag@example.org", "user+tag@example.org"),
        ("a#b@example.org", "a%23b@example.org"),
        ("a?b;c=d@example.org", "a%3Fb%3Bc%3Dd@example.org"),
        ("100%@example.org", "100%25@example.org"),
        ("jüliet@example.org", "j%C3%BCliet@example.org"),
        ("juliet@例え.jp", "juliet@%E4%BE%8B%E3%81%88.jp"),
        ("x@[2001:db8::1]", "x@[2001:db8::1]"),
    ],
)
def test_make_uri_percent_encodes_the_jid(jid: str, encoded: str) -> None:
    uri = make_uri(jid, [(7, K1)])
    assert uri == f"xmpp:{encoded}?omemo-sid-7={H1}"
    assert uri.isascii()
    assert parse_uri(uri).jid == jid


@pytest.mark.parametrize(
    ("jid", "devices", "kwargs"),
    [
        ("juliet@example.org/balcony", [(1, K1)], {}),
        ("@example.org", [(1, K1)], {}),
        ("juliet@", [(1, K1)], {}),
        ("", [(1, K1)], {}),
        ("ju liet@example.org", [(1, K1)], {}),
        ("ju<liet@example.org", [(1, K1)], {}),
        ("juliet@exa\u200bmple.org", [(1, K1)], {}),  # zero-width space
        ("j" * 1024 + "@example.org", [(1, K1)], {}),
        ("juliet@example.org", [], {}),
        ("juliet@example.org", [(0, K1)], {}),
        ("juliet@example.org", [(DEVICE_ID_MAX + 1, K1)], {}),
        ("juliet@example.org", [(True, K1)], {}),
        ("juliet@example.org", [(1, K1), (1, K2)], {}),
        ("juliet@example.org", [(1, K1[:31])], {}),
        ("juliet@example.org", [(1, b"\x05" + K1)], {}),
        ("juliet@example.org", [(1, H1)], {}),
        ("juliet@example.org", [(i, K1) for i in range(1, MAX_URI_FINGERPRINTS + 2)], {}),
        ("juliet@example.org", [(1, K1)], {"action": "trust-message"}),
        ("juliet@example.org", [(1, K1)], {"action": "mess age"}),
        ("juliet@example.org", [(1, K1)], {"action": ""}),
        ("juliet@example.org", [(1, K1)], {"action": "omemo-sid-1"}),
    ],
)
def test_make_uri_rejects_caller_mistakes(jid: str, devices: list[tuple[int, bytes]], kwargs: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        make_uri(jid, devices, **kwargs)


# ---- parsing URIs: the digest's forms -------------------------------------------------------


def test_parse_conversations_form() -> None:
    got = parse_uri(CONVERSATIONS)
    assert got == VerificationUri("juliet@example.org", {1073741827: K1, 812: K2}, [], None)
    assert list(got.fingerprints) == [1073741827, 812]  # own device first, as written
    assert got.identity_keys() == [K1, K2]


def test_parse_conversations_invite_separator_and_plain_omemo() -> None:
    got = parse_uri(f"xmpp:juliet@example.org?omemo-sid-1073741827={H1}&omemo-sid-812={H2}")
    assert got.fingerprints == {1073741827: K1, 812: K2}
    got = parse_uri(f"xmpp:juliet@example.org?omemo={H3}")
    assert got.fingerprints == {} and got.plain == [K3]
    assert got.identity_keys() == [K3]


def test_parse_dino_form() -> None:
    got = parse_uri(f"xmpp:romeo@montague.lit?omemo-sid-12345={H3}")
    assert got == VerificationUri("romeo@montague.lit", {12345: K3}, [], None)


def test_parse_gajim_form() -> None:
    got = parse_uri(f"xmpp:romeo@montague.lit?message;omemo-sid-1={H1};omemo-sid-2={H2}")
    assert got == VerificationUri("romeo@montague.lit", {1: K1, 2: K2}, [], "message")


@pytest.mark.parametrize(
    "uri",
    [
        f"XMPP:juliet@example.org?MESSAGE;OMEMO-SID-5={H1.upper()}",
        f"xmpp:juliet@example.org?Omemo-Sid-5={H1}",
        f"xmpp:juliet@example.org?omemo-sid-5={K1_DISPLAY}",  # raw spaces
        f"xmpp:juliet@example.org?omemo-sid-5={K1_DISPLAY.replace(' ', '+')}",  # form-encoded spaces
        f"xmpp:juliet@example.org?omemo-sid-5={K1_DISPLAY.replace(' ', '%20')}",
        f"xmpp:juliet@example.org?omemo-sid-5=05{H1}",  # legacy key with its type byte
        f"xmpp:juliet@example.org?omemo-sid-5=%30%30{H1[2:]}",
        f"xmpp:juliet@example.org/balcony?omemo-sid-5={H1}",  # resource dropped
        f"xmpp://romeo@montague.lit/juliet@example.org?omemo-sid-5={H1}",  # RFC 5122 authority form
        f"xmpp:juliet@example.org?omemo-sid-5={H1}#fragment",
        f"  xmpp:juliet@example.org?omemo-sid-5={H1}\n",
        f"xmpp:juliet@example.org?omemo-sid-5={H1};;",
        f"xmpp:juliet@example.org?body=hi;name=Juliet;omemo-sid-5={H1};otr-fingerprint=abc;preauth=x",
        f"xmpp:juliet@example.org?omemo-sid-5={H1};omemo-sid-5={H1.upper()}",  # same key twice
        f"xmpp:juliet@example.org?omemo-sid-0005={H1}",
        f"xmpp:%6Auliet@example.org?omemo-sid-5={H1}",
    ],
)
def test_parse_lenient_spellings(uri: str) -> None:
    got = parse_uri(uri)
    assert got.jid == "juliet@example.org"
    assert got.fingerprints == {5: K1}
    assert got.plain == []


def test_action_is_lower_cased() -> None:
    uri = make_uri("juliet@example.org", [(5, K1)], action="Message")
    assert uri == f"xmpp:juliet@example.org?message;omemo-sid-5={H1}"
    assert parse_uri(uri).action == "message"


def test_parse_keeps_jid_case_for_display() -> None:
    got = parse_uri(f"xmpp:Juliet@Example.ORG?omemo-sid-5={H1}")
    assert got.jid == "Juliet@Example.ORG"
    assert bare_jid_key(got.jid) == "juliet@example.org"


def test_parse_mixed_and_repeated_plain() -> None:
    got = parse_uri(f"xmpp:example.org?omemo={H1};omemo-sid-9={H2};omemo={H1};omemo={H3}")
    assert got.jid == "example.org"
    assert got.fingerprints == {9: K2}
    assert got.plain == [K1, K3]
    assert got.identity_keys() == [K2, K1, K3]


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "xmpp:",
        "juliet@example.org",
        f"https://conversations.im/i/juliet@example.org?omemo-sid-5={H1}",
        f"mailto:juliet@example.org?omemo-sid-5={H1}",
        "xmpp:juliet@example.org",  # a contact link: nothing to verify
        "xmpp:juliet@example.org?message;body=hello",
        f"xmpp:?omemo-sid-5={H1}",
        f"xmpp:@example.org?omemo-sid-5={H1}",
        f"xmpp:juliet@?omemo-sid-5={H1}",
        f"xmpp:ju liet@example.org?omemo-sid-5={H1}",
        f"xmpp:ju%20liet@example.org?omemo-sid-5={H1}",
        f"xmpp:ju%00liet@example.org?omemo-sid-5={H1}",
        f"xmpp:ju%zzliet@example.org?omemo-sid-5={H1}",
        f"xmpp:ju%ffliet@example.org?omemo-sid-5={H1}",  # not UTF-8
        f"xmpp:ju%C3liet@example.org?omemo-sid-5={H1}",  # truncated UTF-8
        f"xmpp:a@b@example.org?omemo-sid-5={H1}",
        f"xmpp://authority-only?omemo-sid-5={H1}",
        f"xmpp:juliet@example.org?omemo-sid-5={H1[:-2]}",
        f"xmpp:juliet@example.org?omemo-sid-5={H1}00",
        f"xmpp:juliet@example.org?omemo-sid-5=06{H1}",
        f"xmpp:juliet@example.org?omemo-sid-5={H1[:-1]}x",
        f"xmpp:juliet@example.org?omemo-sid-5=%zz{H1}",
        "xmpp:juliet@example.org?omemo-sid-5=",
        "xmpp:juliet@example.org?message;omemo-sid-5",
        f"xmpp:juliet@example.org?omemo-sid-={H1}",
        f"xmpp:juliet@example.org?omemo-sid-abc={H1}",
        f"xmpp:juliet@example.org?omemo-sid--5={H1}",
        f"xmpp:juliet@example.org?omemo-sid-+5={H1}",
        f"xmpp:juliet@example.org?omemo-sid-0={H1}",
        f"xmpp:juliet@example.org?omemo-sid-{DEVICE_ID_MAX + 1}={H1}",
        f"xmpp:juliet@example.org?omemo-sid-99999999999={H1}",
        f"xmpp:juliet@example.org?omemo-sid-\u0665={H1}",  # Arabic-Indic five
        f"xmpp:juliet@example.org?omemo-sid-5={H1};omemo-sid-5={H2}",  # conflicting keys
        "xmpp:juliet@example.org?omemo",
        f"xmpp:juliet@example.org?omemo-sid-5;omemo-sid-6={H2}",  # a key without value, not an action
        f"xmpp:juliet@example.org?OMEMO;omemo-sid-6={H2}",
        f"xmpp:a%2Fb@example.org?omemo-sid-5={H1}",  # encoded "/" is not a resource separator
        f"xmpp:a%40b@example.org/res?omemo-sid-5={H1}",  # a@b@example.org
        f"xmpp:juliet@example.org?message;omemo={H1}x",
        f"xmpp:juliet@example.org?me ssage;omemo-sid-5={H1}",
        f"xmpp:bob@example.net?trust-message;encryption=urn:xmpp:omemo:2;trust={H1}",
        f"xmpp:juliet@example.org?omemo-sid-5={H1}\x00",
        f"xmpp:juliet@example.org?omemo-sid-5={H1[:32]}\n{H1[32:]}",
        f"xmpp:jul\ud800iet@example.org?omemo-sid-5={H1}",  # lone surrogate
        f"xmpp:juliet@example.org?omemo-sid-5={H1};" + "x" * MAX_URI_LENGTH,
        "xmpp:juliet@example.org?" + ";".join(f"omemo-sid-{i}={H1}" for i in range(1, MAX_URI_FINGERPRINTS + 2)),
        "xmpp:juliet@example.org?" + ";".join(f"omemo={H1}" for _ in range(MAX_URI_FINGERPRINTS + 1)),
    ],
)
def test_parse_rejects(uri: str) -> None:
    with pytest.raises(InvalidVerificationUri):
        parse_uri(uri)


def test_parse_accepts_the_limits() -> None:
    many = [(i, bytes([i]) * 32) for i in range(1, MAX_URI_FINGERPRINTS + 1)]
    assert parse_uri(make_uri("juliet@example.org", many)).fingerprints == dict(many)
    padded = f"xmpp:juliet@example.org?omemo-sid-5={H1};body=" + "x" * (MAX_URI_LENGTH - 200)
    assert len(padded) <= MAX_URI_LENGTH
    assert parse_uri(padded).fingerprints == {5: K1}


def test_parse_rejects_non_text() -> None:
    with pytest.raises(UsageError):
        parse_uri(CONVERSATIONS.encode())  # type: ignore[arg-type]


# ---- properties ---------------------------------------------------------------------------

_JID_CHARS = dict(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"))
_local = st.text(st.characters(**_JID_CHARS, exclude_characters="\"&'/:<>@"), min_size=1, max_size=12)  # type: ignore[arg-type]
_domain = st.text(
    st.characters(**_JID_CHARS, exclude_characters="\"&'/:<>@\\?#%;=[]"),
    min_size=1,
    max_size=12,  # type: ignore[arg-type]
)
_jids = st.one_of(_domain, st.builds(lambda lo, do: f"{lo}@{do}", _local, _domain))
_devices = st.lists(
    st.tuples(st.integers(1, DEVICE_ID_MAX), st.binary(min_size=32, max_size=32)),
    min_size=1,
    max_size=6,
    unique_by=lambda d: d[0],
)


@settings(max_examples=200)
@given(_jids, _devices, st.sampled_from([None, "message"]))
def test_round_trip(jid: str, devices: list[tuple[int, bytes]], action: str | None) -> None:
    uri = make_uri(jid, devices, action=action)
    assert uri.isascii()
    got = parse_uri(uri)
    assert got.jid == jid
    assert list(got.fingerprints.items()) == devices
    assert got.plain == []
    assert got.action == action


def _check_only_typed(text: str) -> None:
    try:
        got = parse_uri(text)
    except InvalidVerificationUri:
        return
    assert got.fingerprints or got.plain
    assert all(len(k) == 32 for k in got.identity_keys())


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_the_typed_error(text: str) -> None:
    _check_only_typed(text)


_pieces = st.sampled_from(
    [
        "xmpp:",
        "XMPP:",
        "//",
        "/",
        "@",
        "?",
        "#",
        ";",
        "&",
        "=",
        "%",
        "%2",
        "%41",
        "%C3%A9",
        "%ff",
        "+",
        " ",
        "juliet",
        "example.org",
        "message",
        "trust-message",
        "omemo",
        "omemo-sid-",
        "OMEMO-SID-",
        "5",
        "0",
        "4294967296",
        "05",
        H1,
        H1.upper(),
        K1_DISPLAY,
        H1[:10],
        "body",
        "\u00e9",
        "\u200b",
        "\n",
        "\x00",
    ]
)


@settings(max_examples=400)
@given(st.lists(_pieces, max_size=16).map("".join))
def test_near_miss_uris_only_raise_the_typed_error(text: str) -> None:
    _check_only_typed(text)


@settings(max_examples=200)
@given(_jids, _devices, st.data())
def test_mutated_uris_only_raise_the_typed_error(
    jid: str, devices: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    uri = make_uri(jid, devices)
    pos = data.draw(st.integers(0, len(uri)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(st.text(max_size=3))
    _check_only_typed(uri[:pos] + insert + uri[pos + cut :])
