"""XEP-0420 SCE envelope of OMEMO 2 (omemo2.md §8, catalogue I6): build/parse round trip, the
B.1 vector plaintext, affix checks, the time window, server-processed elements, rpad."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from e2ee import xmpptime
from e2ee.errors import AffixMismatch, MalformedEnvelope, MalformedMessage, RestrictedXml, UsageError
from e2ee.jid import bare_jid_key
from e2ee.limits import MAX_XML_BYTES, SCE_TIME_WINDOW
from e2ee.omemo2 import envelope
from e2ee.omemo2.envelope import Envelope, build, parse
from e2ee.xmlsafe import parse_xml, serialize
from tests.support import seeded_rng

from .vectors import load

ALICE, BOB, ROOM = "alice@example.org", "bob@example.net", "room@muc.example.org"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def body(text: str) -> ET.Element:
    elem = ET.Element("{jabber:client}body")
    elem.text = text
    return elem


def env(content: str, affixes: str = f"<from jid='{ALICE}'/>") -> bytes:
    return f"<envelope xmlns='urn:xmpp:sce:1'><content>{content}</content><rpad>x</rpad>{affixes}</envelope>".encode()


def test_b1_vector_plaintext_parses() -> None:
    (vector,) = [v for v in load("omemo/e2e_omemo2.json")["vectors"] if v["id"] == "B.1"]
    plaintext = vector["payload_plaintext_utf8"].encode()
    result = parse(plaintext, ALICE, BOB, now=T0)
    assert result.from_jid == ALICE and result.to_jid is None and result.time is None
    assert not result.time_suspicious
    assert [(e.tag, e.text) for e in result.content] == [("{jabber:client}body", "Hello Bob")]


def test_round_trip() -> None:
    reaction = ET.Element("{urn:xmpp:reactions:0}reactions", id="m1")
    ET.SubElement(reaction, "{urn:xmpp:reactions:0}reaction").text = "👍"
    data = build([body("Hi <there> & 'you'"), reaction], ALICE, ROOM, T0 + timedelta(microseconds=250), seeded_rng("e"))
    result = parse(data, ALICE, ROOM, now=T0, require_to=True)
    assert result == Envelope(result.content, ALICE, ROOM, T0 + timedelta(microseconds=250), False)
    assert [serialize(e) for e in result.content] == [serialize(body("Hi <there> & 'you'")), serialize(reaction)]
    text = data.decode()
    assert text.startswith("<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>")
    assert "<reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions>" in text
    assert "<time xmlns='urn:xmpp:sce:1' stamp='2026-01-01T12:00:00.000250Z'/>" in text
    assert text.endswith(
        f"<from xmlns='urn:xmpp:sce:1' jid='{ALICE}'/><to xmlns='urn:xmpp:sce:1' jid='{ROOM}'/></envelope>"
    )
    assert "ns0:" not in text
    # ElementTree reads it the same way (explicit namespaces survive a foreign parser)
    assert ET.fromstring(data)[0][0].tag == "{jabber:client}body"


def test_affixes_carry_their_namespace_byte_exact() -> None:
    # what Converse.js needs (it selects `to[xmlns="urn:xmpp:sce:1"]`) and writes itself
    rng = seeded_rng("exact")
    data = build([body("hi")], ALICE, ROOM, T0, rng)
    rpad = parse_xml(data).find("{urn:xmpp:sce:1}rpad")
    assert rpad is not None
    assert (
        data
        == (
            "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>hi</body></content>"
            f"<rpad xmlns='urn:xmpp:sce:1'>{rpad.text or ''}</rpad>"
            "<time xmlns='urn:xmpp:sce:1' stamp='2026-01-01T12:00:00Z'/>"
            f"<from xmlns='urn:xmpp:sce:1' jid='{ALICE}'/><to xmlns='urn:xmpp:sce:1' jid='{ROOM}'/></envelope>"
        ).encode()
    )
    data = build([body("x")], ALICE, None, None, seeded_rng("exact"))
    assert data.endswith(f"</rpad><from xmlns='urn:xmpp:sce:1' jid='{ALICE}'/></envelope>".encode())
    assert b"<to" not in data and b"<time" not in data


def test_affixes_are_read_in_both_spellings() -> None:
    for ns in ("", " xmlns='urn:xmpp:sce:1'"):
        affixes = f"<time{ns} stamp='2026-01-01T12:00:00Z'/><from{ns} jid='{ALICE}'/><to{ns} jid='{ROOM}'/>"
        data = env("<body xmlns='jabber:client'>x</body>", affixes).replace(b"<rpad>", f"<rpad{ns}>".encode())
        result = parse(data, ALICE, ROOM, now=T0, require_to=True)
        assert (result.from_jid, result.to_jid, result.time) == (ALICE, ROOM, T0)
    # as Converse.js writes it: prefixless, namespace on each affix, affixes in its own order
    converse = (
        "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>from converse</body></content>"
        f"<rpad xmlns='urn:xmpp:sce:1'>abc</rpad><to xmlns='urn:xmpp:sce:1' jid='{ROOM}'/>"
        f"<from xmlns='urn:xmpp:sce:1' jid='{ALICE}'/><time xmlns='urn:xmpp:sce:1' stamp='2026-01-01T12:00:00.123Z'/>"
        "</envelope>"
    ).encode()
    result = parse(converse, ALICE, ROOM, now=T0, require_to=True)
    assert result.to_jid == ROOM and [e.text for e in result.content] == ["from converse"]
    # an affix in another namespace is not ours: <to> is then missing
    foreign = env("", f"<from jid='{ALICE}'/><to xmlns='urn:example' jid='{ROOM}'/>")
    with pytest.raises(AffixMismatch):
        parse(foreign, ALICE, ROOM, require_to=True)


def test_without_optional_affixes() -> None:
    data = build([body("x")], ALICE, None, None, seeded_rng("f"))
    root = parse_xml(data)
    assert [c.tag.split("}")[1] for c in root] == ["content", "rpad", "from"]
    result = parse(data, ALICE, BOB)
    assert result == Envelope(result.content, ALICE, None, None, False)


def test_rpad_random_length_and_printable() -> None:
    rng = seeded_rng("rpad")
    lengths = set()
    for _ in range(200):
        rpad = parse_xml(build([body("x")], ALICE, None, None, rng)).find("{urn:xmpp:sce:1}rpad")
        assert rpad is not None
        text = rpad.text or ""
        assert len(text) <= 268 and text.isprintable() and len(base64.b64decode(text, validate=True)) <= 200
        lengths.add(len(text))
    assert len(lengths) > 30
    a = build([body("x")], ALICE, None, None, seeded_rng("same"))
    assert a == build([body("x")], ALICE, None, None, seeded_rng("same"))
    assert a != build([body("x")], ALICE, None, None, seeded_rng("other"))
    stuck = build([body("x")], ALICE, None, None, lambda n: b"\xff" * n)  # degenerate source: still terminates
    assert b"<rpad xmlns='urn:xmpp:sce:1'>" in stuck


def test_long_rpad_accepted() -> None:
    rpad = "r" * (MAX_XML_BYTES - 1000)
    data = env("<body xmlns='jabber:client'>x</body>").replace(b"<rpad>x</rpad>", f"<rpad>{rpad}</rpad>".encode())
    assert parse(data, ALICE, None).content[0].text == "x"
    assert parse(env("").replace(b"<rpad>x</rpad>", b""), ALICE, None).content == ()  # and no rpad at all


# ---- affixes -------------------------------------------------------------------------------


@pytest.mark.parametrize("sender", [ALICE, "Alice@Example.ORG", "alice@example.org/phone", "ALICE@EXAMPLE.ORG."])
def test_from_normalisation_accepts(sender: str) -> None:
    assert parse(env(""), sender, None).from_jid == ALICE


@pytest.mark.parametrize(
    ("affixes", "expected_to", "require_to"),
    [
        ("<from jid='mallory@example.org'/>", BOB, False),
        ("<from jid='alice@example.org.evil'/>", BOB, False),
        ("<from jid='example.org'/>", BOB, False),
        (f"<from jid='{ALICE}'/><to jid='carol@example.net'/>", BOB, False),
        (f"<from jid='{ALICE}'/><to jid='other-room@muc.example.org'/>", ROOM, True),
        (f"<from jid='{ALICE}'/>", ROOM, True),
    ],
)
def test_affix_mismatch(affixes: str, expected_to: str, require_to: bool) -> None:
    with pytest.raises(AffixMismatch):
        parse(env("", affixes), ALICE, expected_to, require_to=require_to)


def test_absent_affixes_and_unchecked_to() -> None:
    result = parse(env("", ""), ALICE, BOB)
    assert (result.from_jid, result.to_jid) == (None, None)
    assert parse(env("", f"<to jid='{ROOM}'/>"), ALICE, None).to_jid == ROOM
    assert (
        parse(env("", f"<from jid='{ALICE}'/><to jid='Bob@Example.NET/x'/>"), ALICE, BOB).to_jid == "Bob@Example.NET/x"
    )


def test_bare_jid_key() -> None:
    assert bare_jid_key("Alice@Example.ORG/Res/x@y") == "alice@example.org"
    assert bare_jid_key("Example.org.") == "example.org"
    assert bare_jid_key("alice@") == "" and bare_jid_key("") == "" and bare_jid_key("/res") == ""
    with pytest.raises(UsageError):
        parse(env(""), "", None)


# ---- time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-01-01T12:00:00Z", T0),
        ("2026-01-01T13:00:00+01:00", T0),
        ("2026-01-01T06:30:00.5-05:30", T0 + timedelta(milliseconds=500)),
        ("2026-01-01T12:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
        # deployed variants that carry the same information (issue 13 part 3)
        ("2026-01-01T13:00:00+0100", T0),  # libstrophe/gpgme clients: offset without a colon
        ("2026-01-01T06:30:00-0530", T0),
        ("2026-01-01T12:00:00-00:00", T0),  # RFC 3339 "offset unknown": the UTC time is still exact
        ("2026-01-01T12:00:00+0000", T0),
        ("2026-01-01t12:00:00z", T0),  # lowercase separator and zone letter (RFC 3339 §5.6 NOTE)
        ("2026-01-01T12:00:00.1Z", T0 + timedelta(milliseconds=100)),
        ("2026-01-01T12:00:00." + "9" * 40 + "Z", T0 + timedelta(microseconds=999999)),  # truncated, never rounded up
    ],
)
def test_time_forms(stamp: str, expected: datetime) -> None:
    result = parse(env("", f"<time stamp='{stamp}'/><from jid='{ALICE}'/>"), ALICE, None, now=T0)
    assert result.time == expected and not result.time_suspicious


def test_time_window_flags_not_rejects() -> None:
    late = T0 + SCE_TIME_WINDOW + timedelta(seconds=1)
    data = build([body("x")], ALICE, None, late, seeded_rng("t"))
    assert parse(data, ALICE, None, now=T0).time_suspicious
    assert parse(data, ALICE, None, now=T0 - timedelta(days=1), window=timedelta(days=2)).time_suspicious is False
    early = build([body("x")], ALICE, None, T0 - SCE_TIME_WINDOW, seeded_rng("t"))
    assert not parse(early, ALICE, None, now=T0).time_suspicious
    assert not parse(data, ALICE, None).time_suspicious  # no reference time: nothing to compare
    with pytest.raises(UsageError):
        parse(data, ALICE, None, now=datetime(2026, 1, 1))


REFUSED_STAMPS = [
    "",
    "2026-01-01",
    "2026-01-01T12:00:00",
    "2026-13-01T12:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T12:00:00+01:60",
    "٢٠٢٦-01-01T12:00:00Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    # refused on purpose: no offset, or not the same information
    "2026-01-01T12:00:00.5",
    "2026-01-01 12:00:00Z",
    "2026-01-01T12:00Z",
    "2026-01-01T12:00:00+01",
    "2026-01-01T12:00:00+1:00",
    "2026-01-01T12:00:00+01:0",
    "2026-01-01T12:00:00+010",
    "2026-01-01T12:00:00+01:00Z",
    "2026-01-01T12:00:00+0160",
    "2026-01-01T12:00:00+2400",
    "2026-01-01T12:00:60Z",
    "2026-02-30T12:00:00Z",
    "2026-01-01T12:00:00.Z",
    "20260101T120000Z",
    "2026-01-01T12:00:00+01:00 ",
    " 2026-01-01T12:00:00Z",
    "2026-01-01T12:00:00UTC",
    "2026-01-01T12:00:00GMT",
    "2026-01-01T12:00:00Z\n",
    "1767268800",
    "+2026-01-01T12:00:00Z",
    "2026-01-01T12:00:00." + "1" * 300 + "Z",
    "2026-01-01T12:00:00,5Z",
]  # ISO 8601 decimal comma: not RFC 3339, no sender writes it


@pytest.mark.parametrize("stamp", REFUSED_STAMPS)
def test_malformed_time(stamp: str) -> None:
    with pytest.raises(MalformedEnvelope):
        parse(env("", f"<time stamp='{stamp}'/>"), ALICE, None, now=T0)


@pytest.mark.parametrize("stamp", REFUSED_STAMPS)
def test_the_shared_parser_refuses_with_a_typed_error(stamp: str) -> None:
    # the same parser reads OpenPGP <time/>, SCE <time/> and key-metadata dates
    with pytest.raises(MalformedEnvelope):
        xmpptime.parse_timestamp(stamp)


def test_we_always_write_xep_0082_with_z() -> None:
    east = timezone(timedelta(hours=5, minutes=45))
    assert xmpptime.format_timestamp(datetime(2026, 1, 1, 17, 45, tzinfo=east)) == "2026-01-01T12:00:00Z"
    text = xmpptime.format_timestamp(T0 + timedelta(microseconds=7))
    assert text == "2026-01-01T12:00:00.000007Z" and xmpptime.parse_timestamp(text) == T0 + timedelta(microseconds=7)


# ---- content -------------------------------------------------------------------------------


def test_server_processed_elements_dropped() -> None:
    content = (
        "<body xmlns='jabber:client'>hi</body>"
        "<store xmlns='urn:xmpp:hints'/><no-copy xmlns='urn:xmpp:hints'/>"
        "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='victim@example.org'/>"
        "<origin-id xmlns='urn:xmpp:sid:0' id='o'/>"
        "<addresses xmlns='http://jabber.org/protocol/address'><address type='to' jid='x@y'/></addresses>"
        "<encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:omemo:2'/>"
        "<reply xmlns='urn:xmpp:reply:0' id='r'/>"
    )
    result = parse(env(content), ALICE, None)
    assert [e.tag for e in result.content] == [
        "{jabber:client}body",
        "{urn:xmpp:sid:0}origin-id",
        "{urn:xmpp:reply:0}reply",
    ]
    assert set(envelope.SERVER_PROCESSED_NAMESPACES) == {
        "urn:xmpp:hints",
        "http://jabber.org/protocol/address",
        "urn:xmpp:eme:0",
    }


@pytest.mark.parametrize(
    "tag",
    [
        "{urn:xmpp:hints}store",
        "{urn:xmpp:sid:0}stanza-id",
        "{urn:xmpp:eme:0}encryption",
        "{http://jabber.org/protocol/address}addresses",
    ],
)
def test_server_processed_elements_are_refused_when_sending(tag: str) -> None:
    with pytest.raises(UsageError):
        envelope.build([ET.Element(tag)], ALICE, BOB, None, seeded_rng("s"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml",
        b"<envelope xmlns='urn:xmpp:sce:1'><content>",
        b"\xff\xfe",
        b"<envelope xmlns='urn:xmpp:sce:2'><content/></envelope>",
        b"<envelope><content/></envelope>",
        b"<envelope xmlns='urn:xmpp:sce:1'><rpad/></envelope>",
        b"<envelope xmlns='urn:xmpp:sce:1'><content/><content/></envelope>",
        b"<envelope xmlns='urn:xmpp:sce:1'><content/><from/></envelope>",
        b"<envelope xmlns='urn:xmpp:sce:1'><content/><from jid='alice@example.org'/><from jid='alice@example.org'/></envelope>",
        b"<envelope xmlns='urn:xmpp:sce:1'><content/><time/></envelope>",
        b"<envelope xmlns='urn:xmpp:sce:1'><content/><time stamp='x'/><time stamp='y'/></envelope>",
    ],
)
def test_malformed_envelope(data: bytes) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse(data, ALICE, None)
    assert isinstance(info.value, (MalformedEnvelope, RestrictedXml))


def test_unknown_envelope_children_ignored() -> None:
    data = env("<body xmlns='jabber:client'>x</body>", f"<future xmlns='urn:example'/><from jid='{ALICE}'/>")
    assert parse(data, ALICE, None).content[0].text == "x"


# ---- build rules ---------------------------------------------------------------------------


def test_build_refuses_what_receivers_refuse() -> None:
    rng = seeded_rng("b")
    deep = top = ET.Element("{urn:example}x")
    for _ in range(100):
        deep = ET.SubElement(deep, "{urn:example}y")
    big = body("z" * MAX_XML_BYTES)
    cases: list[Callable[[], object]] = [
        lambda: build([ET.Element("body")], ALICE, None, None, rng),  # no namespace
        lambda: build([top], ALICE, None, None, rng),  # too deep
        lambda: build([big], ALICE, None, None, rng),  # too large
        lambda: build([body("\x00")], ALICE, None, None, rng),  # not representable in XML 1.0
        lambda: build([body("x")], ALICE, None, datetime(2026, 1, 1), rng),  # naive time
        lambda: build([body("x")], "alice@example.org/phone", None, None, rng),  # not bare
        lambda: build([body("x")], ALICE, "", None, rng),
    ]
    for case in cases:
        with pytest.raises(UsageError):
            case()
