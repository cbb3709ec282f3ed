"""The XML of OpenPGP for XMPP matches XEP-0373 v0.7 / XEP-0374 v0.2 (must-show 2): the exact
``<signcrypt/>`` we write, what the engine publishes (nodes, item ids, access models, order),
the ``<openpgp/>`` element (binary OpenPGP in base64, no armour), and what the parsers accept and
refuse."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from e2ee.errors import MalformedMessage, RestrictedXml, UsageError
from e2ee.openpgp import xml as ox
from e2ee.results import FetchPublicKey, Publish
from e2ee.xmlsafe import serialize

from .openpgp_support import OxNet, signcrypt_xml

NS = "urn:xmpp:openpgp:0"
T = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FPR = "1A2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D"


@pytest.fixture
def net() -> Iterator[OxNet]:
    n = OxNet()
    yield n
    n.close()


def test_signcrypt_exact_layout() -> None:
    body = ET.Element("{jabber:client}body")
    body.text = "Meet at noon <3"
    state = ET.Element("{http://jabber.org/protocol/chatstates}active")
    data = ox.build_signcrypt(["juliet@example.org", "romeo@example.net"], T, "kQ4mZx", [body, state])
    assert data == (
        b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='juliet@example.org'/><to jid='romeo@example.net'/>"
        b"<time stamp='2026-01-01T12:00:00Z'/><rpad>kQ4mZx</rpad><payload>"
        b"<body xmlns='jabber:client'>Meet at noon &lt;3</body>"
        b"<active xmlns='http://jabber.org/protocol/chatstates'/></payload></signcrypt>"
    )
    parsed = ox.parse_signcrypt(data)
    assert parsed.to == ("juliet@example.org", "romeo@example.net")
    assert parsed.time == T and parsed.body == "Meet at noon <3"
    assert [c.tag for c in parsed.payload] == ["{jabber:client}body", "{http://jabber.org/protocol/chatstates}active"]


def test_signcrypt_of_the_xep_example_parses_and_accepts_jabber_server_body() -> None:
    xep = (
        b"<signcrypt xmlns='urn:xmpp:openpgp:0'>\n  <to jid='juliet@example.org'/>\n"
        b"  <time stamp='2014-07-10T17:06:00+02:00'/>\n  <rpad>f0rm1l4n4-mT8y33j!Y%fRSrcd^ZE4Q7VDt1L%WEgR!kv</rpad>\n"
        b"  <payload>\n    <body xmlns='jabber:server'>This is a secret message.</body>\n  </payload>\n</signcrypt>"
    )
    parsed = ox.parse_signcrypt(xep)
    assert parsed.body == "This is a secret message."
    assert parsed.time == datetime(2014, 7, 10, 15, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("xml", "error"),
    [
        (signcrypt_xml(["b@x"], "2026-01-01T12:00:00Z", "hi", root="crypt"), MalformedMessage),
        (signcrypt_xml(["b@x"], "2026-01-01T12:00:00Z", "hi", root="sign"), MalformedMessage),
        (signcrypt_xml([], "2026-01-01T12:00:00Z", "hi"), MalformedMessage),
        (signcrypt_xml(["b@x"], "yesterday", "hi"), MalformedMessage),
        (b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='b@x'/><payload/></signcrypt>", MalformedMessage),
        (
            b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='b@x'/><time stamp='2026-01-01T12:00:00Z'/></signcrypt>",
            MalformedMessage,
        ),
        (
            b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='b@x'/><time stamp='2026-01-01T12:00:00Z'/>"
            b"<time stamp='2026-01-01T12:00:00Z'/><payload/></signcrypt>",
            MalformedMessage,
        ),
        (
            b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to/><time stamp='2026-01-01T12:00:00Z'/><payload/></signcrypt>",
            MalformedMessage,
        ),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><signcrypt xmlns='urn:xmpp:openpgp:0'/>", RestrictedXml),
        (b"<signcrypt xmlns='urn:xmpp:openpgp:0'><!-- c --></signcrypt>", RestrictedXml),
        (b"<x xmlns='urn:xmpp:openpgp:0'>" * 100, RestrictedXml),
        (b"not xml", MalformedMessage),
    ],
)
def test_signcrypt_refusals(xml: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        ox.parse_signcrypt(xml)


def test_server_processed_payload_is_dropped_and_refused_when_sending() -> None:
    data = (
        b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='b@x'/><time stamp='2026-01-01T12:00:00Z'/><payload>"
        b"<store xmlns='urn:xmpp:hints'/><body xmlns='jabber:client'>x</body></payload></signcrypt>"
    )
    assert [c.tag for c in ox.parse_signcrypt(data).payload] == ["{jabber:client}body"]
    with pytest.raises(UsageError):
        ox.build_signcrypt(["b@x"], T, "a", [ET.Element("{urn:xmpp:hints}store")])
    with pytest.raises(UsageError):
        ox.build_signcrypt(["b@x/res"], T, "a", [])


def test_metadata_pubkey_secretkey_codecs() -> None:
    meta = ox.build_metadata({FPR: T, "AB" * 20: None})
    assert (
        serialize(meta)
        == (
            f"<public-keys-list xmlns='{NS}'><pubkey-metadata v4-fingerprint='{FPR}' date='2026-01-01T12:00:00Z'/>"
            f"<pubkey-metadata v4-fingerprint='{'AB' * 20}'/></public-keys-list>"
        ).encode()
    )
    # received fingerprints are normalised to upper case; repeats collapse; a bad date is ignored
    got = ET.fromstring(
        f"<public-keys-list xmlns='{NS}'><pubkey-metadata v4-fingerprint='{FPR.lower()}' date='nope'/>"
        f"<pubkey-metadata v4-fingerprint='{FPR}'/></public-keys-list>"
    )
    assert ox.parse_metadata(got) == {FPR: None}
    with pytest.raises(MalformedMessage):
        ox.parse_metadata(
            ET.fromstring(f"<public-keys-list xmlns='{NS}'><pubkey-metadata v4-fingerprint='12'/></public-keys-list>")
        )
    many = "".join(f"<pubkey-metadata v4-fingerprint='{i:040X}'/>" for i in range(40))
    with pytest.raises(MalformedMessage):
        ox.parse_metadata(ET.fromstring(f"<public-keys-list xmlns='{NS}'>{many}</public-keys-list>"))
    pub = ox.build_pubkey(b"\x99key", T)
    assert serialize(pub) == f"<pubkey xmlns='{NS}' date='2026-01-01T12:00:00Z'><data>mWtleQ==</data></pubkey>".encode()
    assert ox.parse_pubkey(ET.fromstring(f"<pubkey xmlns='{NS}'><data>\n mWtl\n eQ==\n</data></pubkey>")) == b"\x99key"
    assert serialize(ox.build_secretkey(b"\x8c\x0d")) == f"<secretkey xmlns='{NS}'>jA0=</secretkey>".encode()
    assert ox.public_key_node(FPR.lower()) == f"urn:xmpp:openpgp:0:public-keys:{FPR}"


def test_what_the_engine_publishes_and_sends(net: OxNet) -> None:
    alice = net.ox_device("alice@example.org", "a")
    bob = net.ox_device("bob@example.org", "b", omemo=False)
    effects = alice.openpgp.publish()
    assert all(isinstance(e, Publish) for e in effects)
    data, meta = effects  # the data node first, then the metadata node
    fpr = alice.openpgp.fingerprint
    assert fpr is not None and re.fullmatch(r"[0-9A-F]{40}", fpr)
    assert data.node == f"urn:xmpp:openpgp:0:public-keys:{fpr}" and data.options == (("pubsub#access_model", "open"),)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data.item_id)  # publication time as DateTime
    assert data.payload.tag == f"{{{NS}}}pubkey" and [c.tag for c in data.payload] == [f"{{{NS}}}data"]
    raw = base64.b64decode(data.payload[0].text or "")
    assert raw[0] & 0x80 and not raw.startswith(b"-----")  # binary OpenPGP packets, not armour
    assert meta.node == "urn:xmpp:openpgp:0:public-keys" and meta.item_id == "current"
    assert meta.options == (("pubsub#access_model", "open"),)
    assert [m.get("v4-fingerprint") for m in meta.payload] == [fpr]
    backup = alice.openpgp.backup()
    (secret,) = backup.effects
    assert isinstance(secret, Publish) and secret.node == "urn:xmpp:openpgp:0:secret-key"
    assert secret.options == (("pubsub#access_model", "whitelist"),)
    assert secret.payload.tag == f"{{{NS}}}secretkey" and len(secret.payload) == 0
    assert re.fullmatch(r"([1-9A-NP-Z]{4}-){5}[1-9A-NP-Z]{4}", backup.code)

    # our own key missing from our metadata (another device published without it): re-announced
    other = "AB" * 20
    again, fetch = alice.openpgp.on_public_keys(alice.jid, ox.build_metadata({other: None}))
    assert isinstance(again, Publish) and again.node == "urn:xmpp:openpgp:0:public-keys"
    assert {m.get("v4-fingerprint") for m in again.payload} == {other, fpr}
    assert fetch == FetchPublicKey(alice.jid, other)  # the other device's key
    assert alice.openpgp.on_public_keys(alice.jid, again.payload) == [fetch]  # listed: no republication

    net.ox_prepare(alice, [bob.jid])
    msg = alice.openpgp.encrypt([bob.jid], "hello")
    assert msg.element.tag == f"{{{NS}}}openpgp" and len(msg.element) == 0
    raw = base64.b64decode(msg.element.text or "", validate=True)
    assert raw[0] & 0x80 and b"hello" not in raw  # binary OpenPGP message
    assert set(msg.fingerprints) == {bob.jid, alice.jid}
    assert msg.fingerprints[alice.jid] == (fpr,)  # encrypted to ourselves too
