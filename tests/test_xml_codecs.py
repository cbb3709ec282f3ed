"""XML codecs of OMEMO 2 and legacy OMEMO: round trips, interop with python-twomemo's and
python-oldmemo's ``etree`` modules in both directions, catalogue X6 (bundle abuse), I2 (key
element count), boolean forms, base64 whitespace, unknown elements, legacy header order."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import oldmemo.etree
import oldmemo.oldmemo as old
import pytest
import twomemo.etree
import twomemo.twomemo as two
from omemo.message import Message
from omemo.types import SignedLabel

from e2ee.errors import InvalidBundle, MalformedMessage, PeerError, UsageError
from e2ee.legacy import xml as lx
from e2ee.limits import (
    MAX_DEVICES_PER_LIST,
    MAX_KEY_ELEMENTS,
    MAX_PREKEYS_PER_BUNDLE,
    MIN_PREKEYS_LEGACY,
    MIN_PREKEYS_OMEMO2,
)
from e2ee.model import Bundle, DeviceEntry, DeviceList, EncryptedElement, KeyElement
from e2ee.omemo2 import xml as x2
from e2ee.xmlsafe import parse_xml, serialize
from tests.peers.omemo_peer import PeerDevice, WireBundle

N2, NL = f"{{{x2.NS}}}", f"{{{lx.NS}}}"
A_JID, A_DEV = "alice@example.org", 1001
B_JID, B_DEV = "bob@example.net", 2002
C_JID, C_DEV = "carol@example.com", 3003
CODECS: dict[str, ModuleType] = {"omemo2": x2, "legacy": lx}
MIN_PREKEYS = {"omemo2": MIN_PREKEYS_OMEMO2, "legacy": MIN_PREKEYS_LEGACY}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def reparse(elem: ET.Element) -> ET.Element:
    """Through bytes: ElementTree's serializer (ns0: prefixes) into our hardened parser."""
    return parse_xml(ET.tostring(elem))


def ours_to_bytes(elem: ET.Element) -> ET.Element:
    """Through bytes: our serializer into ElementTree's parser, as a peer would receive it."""
    return ET.fromstring(serialize(elem))


# ---- device lists --------------------------------------------------------------------------


def test_omemo2_device_list_from_twomemo() -> None:
    sig = bytes(range(64))
    elem = twomemo.etree.serialize_device_list({7: None, 2**31 - 1: SignedLabel("Laptop", sig)})
    parsed = x2.parse_device_list(reparse(elem))
    assert parsed.flavour == "omemo2"
    assert set(parsed.devices) == {DeviceEntry(7), DeviceEntry(2**31 - 1, "Laptop", sig)}


def test_omemo2_device_list_to_twomemo() -> None:
    sig = bytes(64)
    dl = DeviceList("omemo2", (DeviceEntry(1), DeviceEntry(5, "Phone ☎", sig), DeviceEntry(9, "unsigned")))
    elem = x2.build_device_list(dl)
    assert (
        serialize(elem)
        == (
            "<devices xmlns='urn:xmpp:omemo:2'><device id='1'/>"
            f"<device id='5' label='Phone ☎' labelsig='{b64(sig)}'/><device id='9' label='unsigned'/></devices>"
        ).encode()
    )
    peer = twomemo.etree.parse_device_list(ours_to_bytes(elem))
    assert peer == {1: None, 5: SignedLabel("Phone ☎", sig), 9: None}
    assert x2.parse_device_list(reparse(elem)) == dl


def test_legacy_device_list_both_ways() -> None:
    elem = oldmemo.etree.serialize_device_list({12: None, 34: None})
    assert lx.parse_device_list(reparse(elem)).ids == {12, 34}
    dl = DeviceList("legacy", (DeviceEntry(1, "label dropped", bytes(64)), DeviceEntry(2)))
    ours = lx.build_device_list(dl)
    assert serialize(ours) == b"<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/><device id='2'/></list>"
    assert oldmemo.etree.parse_device_list(ours_to_bytes(ours)) == {1: None, 2: None}


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_device_list_policy(flavour: str) -> None:
    ns, root = (N2, "devices") if flavour == "omemo2" else (NL, "list")
    xml = (
        f"<{root} xmlns='{ns[1:-1]}' xmlns:x='urn:example'>"
        "<device id='3' label='a' labelsig='%%%' extra='ignored'/>"  # bad labelsig: label kept, sig None
        "<device id='3' label='dup'/>"  # duplicate collapses to the first
        "<device id='0'/><device id='2147483648'/><device id='4294967296'/><device id='-1'/>"
        "<device id='abc'/><device/>"  # dropped
        "<device id=' +0042 '/>"  # xs:unsignedInt lexical forms
        f"<x:device id='77'/><unknown><device id='78'/></unknown>"  # other namespace / nested: ignored
        f"<device id='5' label='{'L' * 200}'/>"  # long label kept as given
        f"</{root}>"
    )
    dl = CODECS[flavour].parse_device_list(parse_xml(xml))
    assert [d.device_id for d in dl.devices] == [3, 42, 5]
    if flavour == "omemo2":
        assert dl.devices[0] == DeviceEntry(3, "a", None)
        assert dl.devices[2].label == "L" * 200
    else:
        assert all(d.label is None and d.label_signature is None for d in dl.devices)


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_device_list_limits_and_root(flavour: str) -> None:
    codec = CODECS[flavour]
    ns, root = (N2, "devices") if flavour == "omemo2" else (NL, "list")
    empty = ET.Element(ns + root)
    assert codec.parse_device_list(empty).devices == ()
    big = ET.Element(ns + root)
    for i in range(MAX_DEVICES_PER_LIST + 1):
        ET.SubElement(big, ns + "device", id=str(i + 1))
    with pytest.raises(MalformedMessage):
        codec.parse_device_list(big)
    with pytest.raises(MalformedMessage):
        codec.parse_device_list(ET.Element(ns + "bundle"))
    with pytest.raises(UsageError):
        codec.build_device_list(DeviceList("omemo2" if flavour == "legacy" else "legacy"))
    with pytest.raises(UsageError):
        codec.build_device_list(DeviceList(flavour, (DeviceEntry(0),)))


# ---- bundles -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["omemo2", "legacy"])
def peer_bob(request: pytest.FixtureRequest) -> PeerDevice:
    return PeerDevice(request.param, B_JID, B_DEV, seed("bob"), num_prekeys=30, first_prekey_id=100, spk_id=7)


def model_bundle(flavour: str, wb: WireBundle) -> Bundle:
    return Bundle(flavour, wb.ik, wb.spk_id, wb.spk, wb.spk_sig, dict(wb.prekeys))


def test_bundle_from_peer(peer_bob: PeerDevice) -> None:
    wb = peer_bob.bundle()
    impl = peer_bob._bundle_impl(B_JID, B_DEV, wb)
    etree = twomemo.etree if peer_bob.flavour == "omemo2" else oldmemo.etree
    elem = etree.serialize_bundle(impl)
    parsed = CODECS[peer_bob.flavour].parse_bundle(reparse(elem))
    assert parsed == model_bundle(peer_bob.flavour, wb)


def test_bundle_to_peer(peer_bob: PeerDevice) -> None:
    wb = peer_bob.bundle()
    codec = CODECS[peer_bob.flavour]
    elem = codec.build_bundle(model_bundle(peer_bob.flavour, wb))
    assert codec.parse_bundle(reparse(elem)) == model_bundle(peer_bob.flavour, wb)
    etree = twomemo.etree if peer_bob.flavour == "omemo2" else oldmemo.etree
    impl = etree.parse_bundle(ours_to_bytes(elem), B_JID, B_DEV)
    assert impl.bundle.identity_key == peer_bob.identity_key_ed25519()
    assert impl.signed_pre_key_id == 7
    raw: Callable[[bytes], bytes] = (lambda k: k) if peer_bob.flavour == "omemo2" else (lambda k: k[1:])
    assert impl.bundle.signed_pre_key == raw(wb.spk)
    assert {v: k for k, v in impl.pre_key_ids.items()} == {i: raw(k) for i, k in wb.prekeys.items()}


def bundle_xml(
    flavour: str,
    n: int = 30,
    *,
    spk_id: str = "1",
    pk_ids: list[str] | None = None,
    drop: str = "",
    extra: str = "",
    pk_text: str | None = None,
    ik_text: str | None = None,
) -> str:
    """A synthetic bundle with structurally valid keys (the codec does not check curve points)."""
    if flavour == "omemo2":
        key, names = b64(bytes(range(32))), ("spk", "spks", "ik", "prekeys", "pk", "id", "id")
    else:
        key = b64(b"\x05" + bytes(range(32)))
        names = (
            "signedPreKeyPublic",
            "signedPreKeySignature",
            "identityKey",
            "prekeys",
            "preKeyPublic",
            "signedPreKeyId",
            "preKeyId",
        )
    spk, spks, ik, prekeys, pk, spk_attr, pk_attr = names
    ids = pk_ids if pk_ids is not None else [str(i + 1) for i in range(n)]
    parts = {
        spk: f"<{spk} {spk_attr}='{spk_id}'>{key}</{spk}>",
        spks: f"<{spks}>{b64(bytes(64))}</{spks}>",
        ik: f"<{ik}>{ik_text if ik_text is not None else key}</{ik}>",
        prekeys: f"<{prekeys}>"
        + "".join(f"<{pk} {pk_attr}='{i}'>{pk_text if pk_text is not None else key}</{pk}>" for i in ids)
        + f"</{prekeys}>",
    }
    body = "".join(v for k, v in parts.items() if k != drop)
    ns = x2.NS if flavour == "omemo2" else lx.NS
    return f"<bundle xmlns='{ns}'>{body}{extra}</bundle>"


def parse_bundle_text(flavour: str, text: str) -> Bundle:
    return CODECS[flavour].parse_bundle(parse_xml(text))  # type: ignore[no-any-return]


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_bundle_minimum_and_unknown_elements(flavour: str) -> None:
    extra = "<x xmlns='urn:example:unknown'><spk id='9'/></x><future/>"
    b = parse_bundle_text(flavour, bundle_xml(flavour, MIN_PREKEYS[flavour], extra=extra))
    assert len(b.prekeys) == MIN_PREKEYS[flavour] and b.spk_id == 1
    with pytest.raises(InvalidBundle):
        parse_bundle_text(flavour, bundle_xml(flavour, MIN_PREKEYS[flavour] - 1))


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_bundle_ids_0_as_converse_publishes_them(flavour: str) -> None:
    # Converse.js: signed prekey 0, prekeys 0..99, in both namespaces (issue 20)
    b = parse_bundle_text(flavour, bundle_xml(flavour, spk_id="0", pk_ids=[str(i) for i in range(100)]))
    assert b.spk_id == 0 and sorted(b.prekeys) == list(range(100))


X6_CASES: dict[str, dict[str, Any]] = {
    "no prekeys": {"n": 0},
    "duplicate pk id": {"pk_ids": ["5"] * 30},
    "pk id 2^31": {"pk_ids": [str(2**31)] + [str(i) for i in range(1, 30)]},
    "pk id 2^32": {"pk_ids": [str(2**32)] + [str(i) for i in range(1, 30)]},
    "pk id negative": {"pk_ids": ["-3"] + [str(i) for i in range(1, 30)]},
    "pk id not a number": {"pk_ids": ["x"] + [str(i) for i in range(1, 30)]},
    "pk id unicode digits": {"pk_ids": ["٣"] + [str(i) for i in range(1, 30)]},
    "spk id 2^31": {"spk_id": str(2**31)},
    "spk id empty": {"spk_id": ""},
    "non-base64 pk": {"pk_text": "not*base64"},
    "bad padding pk": {"pk_text": "AAAA="},
    "non-ASCII pk of canonical length": {"pk_text": "\u00e9" * 44},
    "non-alphabet pk of canonical length": {"pk_text": "*" * 44},
    "non-base64 ik": {"ik_text": "####"},
    "short ik": {"ik_text": b64(bytes(31))},
    "long ik": {"ik_text": b64(bytes(34))},
    "empty ik": {"ik_text": ""},
    "1 MiB ik": {"ik_text": "A" * (1 << 20)},
    "too many prekeys": {"n": MAX_PREKEYS_PER_BUNDLE + 1},
    "missing spk": {"drop": "spk"},
    "missing spks": {"drop": "spks"},
    "missing ik": {"drop": "ik"},
    "missing prekeys": {"drop": "prekeys"},
}


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
@pytest.mark.parametrize("case", sorted(X6_CASES))
def test_bundle_x6(flavour: str, case: str) -> None:
    kwargs = dict(X6_CASES[case])
    if flavour == "legacy" and "drop" in kwargs:
        kwargs["drop"] = {
            "spk": "signedPreKeyPublic",
            "spks": "signedPreKeySignature",
            "ik": "identityKey",
            "prekeys": "prekeys",
        }[kwargs["drop"]]
    text = bundle_xml(flavour, **kwargs)
    # Through ElementTree (no size limit, as if it came from slixmpp): InvalidBundle, quickly.
    start = time.perf_counter()
    with pytest.raises(InvalidBundle):
        CODECS[flavour].parse_bundle(ET.fromstring(text))
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_bundle_structure_errors(flavour: str) -> None:
    codec = CODECS[flavour]
    good = ET.fromstring(bundle_xml(flavour))
    twice = ET.fromstring(bundle_xml(flavour))
    twice.append(twice[0])  # the signed prekey twice
    with pytest.raises(InvalidBundle):
        codec.parse_bundle(twice)
    with pytest.raises(InvalidBundle):
        codec.parse_bundle(ET.Element(good.tag.replace("bundle", "bundles")))
    ten_thousand = ET.fromstring(bundle_xml(flavour, 10_000))
    start = time.perf_counter()
    with pytest.raises(InvalidBundle):
        codec.parse_bundle(ten_thousand)
    assert time.perf_counter() - start < 0.5
    hidden = ET.fromstring(bundle_xml(flavour, extra="<x xmlns='urn:example'>" + "A" * (1 << 20) + "</x>"))
    with pytest.raises(InvalidBundle):  # a 1 MiB bundle, even when the bulk would be ignored
        codec.parse_bundle(hidden)
    b = codec.parse_bundle(good)
    with pytest.raises(UsageError):
        codec.build_bundle(Bundle(b.flavour, b.ik[:-1], b.spk_id, b.spk, b.spk_signature, b.prekeys))
    with pytest.raises(UsageError):
        codec.build_bundle(Bundle(b.flavour, b.ik, 2**31, b.spk, b.spk_signature, b.prekeys))


def test_legacy_bundle_key_type() -> None:
    with pytest.raises(InvalidBundle):
        parse_bundle_text("legacy", bundle_xml("legacy", pk_text=b64(b"\x06" + bytes(32))))
    with pytest.raises(InvalidBundle):  # OMEMO 2 sized keys in a legacy bundle
        parse_bundle_text("legacy", bundle_xml("legacy", pk_text=b64(bytes(32))))


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_bundle_base64_whitespace(flavour: str) -> None:
    key = bytes(range(32)) if flavour == "omemo2" else b"\x05" + bytes(range(32))
    text = b64(key)
    wrapped = f"\n   {text[:10]}\n\t{text[10:20]} {text[20:]}\r\n  "
    b = parse_bundle_text(flavour, bundle_xml(flavour, pk_text=wrapped, ik_text=wrapped))
    assert b.ik == key and set(b.prekeys.values()) == {key}


# ---- encrypted elements --------------------------------------------------------------------


@dataclass
class Scenario:
    flavour: str
    alice: PeerDevice
    keys: list[tuple[str, int, bytes, bool]]  # (jid, rid, wire bytes, is key exchange)


def km(flavour: str, label: str) -> bytes:
    return hashlib.sha512(label.encode()).digest()[: 48 if flavour == "omemo2" else 32]


@pytest.fixture(scope="module", params=["omemo2", "legacy"])
def scenario(request: pytest.FixtureRequest) -> Scenario:
    f = request.param
    alice = PeerDevice(f, A_JID, A_DEV, seed("alice"), num_prekeys=5)
    bob = PeerDevice(f, B_JID, B_DEV, seed("bob"), num_prekeys=5)
    carol = PeerDevice(f, C_JID, C_DEV, seed("carol"), num_prekeys=5)
    first = alice.initiate(B_JID, B_DEV, bob.bundle(), km(f, "1"))
    bob.decrypt(A_JID, A_DEV, first, True)
    alice.decrypt(B_JID, B_DEV, bob.encrypt(A_JID, A_DEV, km(f, "2"))[0], False)
    to_bob, is_kex = alice.encrypt(B_JID, B_DEV, km(f, "3"))
    assert not is_kex
    to_carol = alice.initiate(C_JID, C_DEV, carol.bundle(), km(f, "4"))
    return Scenario(f, alice, [(B_JID, B_DEV, to_bob, False), (C_JID, C_DEV, to_carol, True)])


def peer_keys(s: Scenario) -> frozenset[tuple[Any, Any]]:
    sign = bool(s.alice.identity_key_ed25519()[31] >> 7)
    out = set()
    for jid, rid, wire, kex in s.keys:
        mod: Any = two if s.flavour == "omemo2" else old
        ke, auth = (None, wire)
        if kex:
            ke, auth = (
                mod.KeyExchangeImpl.parse(wire) if s.flavour == "omemo2" else mod.KeyExchangeImpl.parse(wire, sign)
            )
        out.add((mod.EncryptedKeyMaterialImpl.parse(auth, jid, rid), ke))
    return frozenset(out)


def peer_wire(flavour: str, ekm: Any, ke: Any) -> bytes:
    if ke is None:
        return ekm.serialize()  # type: ignore[no-any-return]
    data = ke.serialize(ekm.serialize())
    return data if flavour == "omemo2" else data[0]  # type: ignore[no-any-return]


CIPHERTEXT, IV = bytes(range(48)), bytes(range(12))


def test_encrypted_from_peer(scenario: Scenario) -> None:
    s = scenario
    if s.flavour == "omemo2":
        message = Message(x2.NS, A_JID, A_DEV, two.ContentImpl(CIPHERTEXT), peer_keys(s))
        elem = twomemo.etree.serialize_message(message)
    else:
        message = Message(lx.NS, A_JID, A_DEV, old.ContentImpl(CIPHERTEXT, IV), peer_keys(s))
        elem = oldmemo.etree.serialize_message(message)
    parsed = CODECS[s.flavour].parse_encrypted(reparse(elem))
    assert parsed.flavour == s.flavour and parsed.sid == A_DEV and parsed.payload == CIPHERTEXT
    expected_jid: Callable[[str], str | None] = (lambda j: j) if s.flavour == "omemo2" else (lambda j: None)
    assert sorted(parsed.keys, key=lambda k: k.rid) == [
        KeyElement(rid, wire, kex, expected_jid(jid)) for jid, rid, wire, kex in s.keys
    ]
    assert parsed.iv == (None if s.flavour == "omemo2" else IV)


def test_encrypted_to_peer(scenario: Scenario) -> None:
    s = scenario
    keys = tuple(KeyElement(rid, wire, kex, jid if s.flavour == "omemo2" else None) for jid, rid, wire, kex in s.keys)
    enc = EncryptedElement(s.flavour, A_DEV, keys, CIPHERTEXT, None if s.flavour == "omemo2" else IV)
    elem = CODECS[s.flavour].build_encrypted(enc)
    expected = {(jid if s.flavour == "omemo2" else "me@example.org", rid, kex, wire) for jid, rid, wire, kex in s.keys}
    if s.flavour == "omemo2":
        message = twomemo.etree.parse_message(ours_to_bytes(elem), A_JID)
        assert message.content.ciphertext == CIPHERTEXT  # type: ignore[attr-defined]
    else:
        ik = s.alice.identity_key_ed25519()

        class Devices:
            async def get_device_information(self, bare_jid: str) -> list[Any]:
                return [SimpleNamespace(device_id=A_DEV, identity_key=ik)]

        message = asyncio.run(oldmemo.etree.parse_message(ours_to_bytes(elem), A_JID, "me@example.org", Devices()))  # type: ignore[arg-type]
        assert (message.content.ciphertext, message.content.initialization_vector) == (CIPHERTEXT, IV)  # type: ignore[attr-defined]
    assert message.device_id == A_DEV and message.bare_jid == A_JID
    got = {(ekm.bare_jid, ekm.device_id, ke is not None, peer_wire(s.flavour, ekm, ke)) for ekm, ke in message.keys}
    assert got == expected
    assert CODECS[s.flavour].parse_encrypted(reparse(elem)) == enc


def test_build_encrypted_exact_xml() -> None:
    keys = (
        KeyElement(5, b"\x01", True, "b@x"),
        KeyElement(6, b"\x02", False, "c@y"),
        KeyElement(7, b"\x03", False, "b@x"),
    )
    assert serialize(x2.build_encrypted(EncryptedElement("omemo2", 9, keys, b"\xff"))) == (
        b"<encrypted xmlns='urn:xmpp:omemo:2'><header sid='9'>"
        b"<keys jid='b@x'><key rid='5' kex='true'>AQ==</key><key rid='7'>Aw==</key></keys>"
        b"<keys jid='c@y'><key rid='6'>Ag==</key></keys></header><payload>/w==</payload></encrypted>"
    )
    assert serialize(lx.build_encrypted(EncryptedElement("legacy", 9, keys[:2], None, bytes(12)))) == (
        b"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='9'>"
        b"<key rid='5' prekey='true'>AQ==</key><key rid='6'>Ag==</key><iv>AAAAAAAAAAAAAAAA</iv></header></encrypted>"
    )
    with pytest.raises(UsageError):
        x2.build_encrypted(EncryptedElement("omemo2", 9, (KeyElement(5, b"\x01", True),), None))
    with pytest.raises(UsageError):
        lx.build_encrypted(EncryptedElement("legacy", 9, keys, None, None))


def omemo2_xml(keys: str, sid: str = "1001", payload: str = "<payload>AAAA</payload>", extra: str = "") -> str:
    return f"<encrypted xmlns='urn:xmpp:omemo:2'><header sid='{sid}'>{keys}</header>{payload}{extra}</encrypted>"


def legacy_xml(header: str, sid: str = "1001", payload: str = "<payload>AAAA</payload>") -> str:
    return (
        f"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='{sid}'>{header}</header>{payload}</encrypted>"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("true", True),
        ("1", True),
        (" true\n", True),
        ("false", False),
        ("0", False),
        ("TRUE", None),
        ("yes", None),
        ("", None),
        ("2", None),
        ("True", None),
    ],
)
def test_kex_and_prekey_boolean_forms(value: str | None, expected: bool | None) -> None:
    attr2 = "" if value is None else f" kex='{value}'"
    attrl = "" if value is None else f" prekey='{value}'"
    e2 = parse_xml(omemo2_xml(f"<keys jid='b@x'><key rid='5'{attr2}>AQ==</key></keys>"))
    el = parse_xml(legacy_xml(f"<key rid='5'{attrl}>AQ==</key><iv>{b64(IV)}</iv>"))
    if expected is None:
        for codec, e in ((x2, e2), (lx, el)):
            with pytest.raises(MalformedMessage):
                codec.parse_encrypted(e)
    else:
        assert x2.parse_encrypted(e2).keys[0].kex is expected
        assert lx.parse_encrypted(el).keys[0].kex is expected


@pytest.mark.parametrize(
    "header",
    [
        "<key rid='1'>AQ==</key><key rid='2' prekey='true'>Ag==</key><iv>{iv}</iv>",  # Conversations
        "<iv>{iv}</iv><key rid='1'>AQ==</key><key rid='2' prekey='true'>Ag==</key>",  # Dino
        "<key rid='1'>AQ==</key><iv>{iv}</iv><unknown/><key rid='2' prekey='1'>Ag==</key>",
    ],
)
def test_legacy_header_order(header: str) -> None:
    e = lx.parse_encrypted(parse_xml(legacy_xml(header.format(iv=b64(IV)))))
    assert [(k.rid, k.data, k.kex, k.jid) for k in e.keys] == [(1, b"\x01", False, None), (2, b"\x02", True, None)]
    assert e.iv == IV and e.payload == bytes(3)


def test_legacy_iv_and_payload_rules() -> None:
    key = "<key rid='1'>AQ==</key>"
    assert lx.parse_encrypted(parse_xml(legacy_xml(key + f"<iv>{b64(bytes(16))}</iv>"))).iv == bytes(16)
    transport = lx.parse_encrypted(parse_xml(legacy_xml(key + f"<iv>{b64(IV)}</iv>", payload="")))
    assert transport.payload is None and transport.iv == IV
    for bad in (
        legacy_xml(key + f"<iv>{b64(bytes(8))}</iv>"),
        legacy_xml(key),
        legacy_xml(key + f"<iv>{b64(IV)}</iv><iv>{b64(IV)}</iv>"),
    ):
        with pytest.raises(MalformedMessage):
            lx.parse_encrypted(parse_xml(bad))


@pytest.mark.parametrize(
    "bad",
    [
        omemo2_xml("<keys jid='b@x'><key rid='5'>AQ==</key></keys>", sid="0"),
        omemo2_xml("<keys jid='b@x'><key rid='5'>AQ==</key></keys>", sid="2147483648"),
        omemo2_xml("<keys jid='b@x'><key rid='5'>AQ==</key></keys>", sid="x"),
        omemo2_xml("<keys><key rid='5'>AQ==</key></keys>"),
        omemo2_xml("<keys jid=''><key rid='5'>AQ==</key></keys>"),
        omemo2_xml("<keys jid='b@x'><key>AQ==</key></keys>"),
        omemo2_xml("<keys jid='b@x'><key rid='5'></key></keys>"),
        omemo2_xml("<keys jid='b@x'><key rid='5'>A*==</key></keys>"),
        omemo2_xml("<keys jid='b@x'><key rid='5'>AQ==</key></keys>", payload="<payload/>"),
        omemo2_xml("<keys jid='b@x'><key rid='5'>AQ==</key></keys>", extra="<payload>AAAA</payload>"),
        "<encrypted xmlns='urn:xmpp:omemo:2'><payload>AAAA</payload></encrypted>",
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><header sid='1'/></encrypted>",
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>",
    ],
)
def test_omemo2_encrypted_errors(bad: str) -> None:
    with pytest.raises(MalformedMessage):
        x2.parse_encrypted(parse_xml(bad))


def test_omemo2_encrypted_lenient_parts() -> None:
    text = omemo2_xml(
        "<keys jid='b@x'><key rid='4294967295'>\n A Q = = \n</key><other/></keys><unknown xmlns='u'/>",
        payload="",
        extra="<x xmlns='urn:example'/>",
    )
    e = x2.parse_encrypted(parse_xml(text))
    assert e.payload is None and e.keys == (KeyElement(2**32 - 1, b"\x01", False, "b@x"),)


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
@pytest.mark.parametrize("grouped", [False, True])
def test_ten_thousand_key_elements(flavour: str, grouped: bool) -> None:
    """Catalogue I2: refused by count before any key is decoded (the texts are not base64)."""
    ns = N2 if flavour == "omemo2" else NL
    root = ET.Element(ns + "encrypted")
    header = ET.SubElement(root, ns + "header", sid="1")
    group = header
    for i in range(10_000):
        if flavour == "omemo2" and (grouped or i == 0):
            group = ET.SubElement(header, ns + "keys", jid=f"u{i}@x")
        ET.SubElement(group, ns + "key", rid=str(i)).text = "*not base64*"
    start = time.perf_counter()
    with pytest.raises(MalformedMessage, match="more than"):
        CODECS[flavour].parse_encrypted(root)
    assert time.perf_counter() - start < 0.5
    # exactly at the limit is fine
    ok = ET.Element(ns + "encrypted")
    header = ET.SubElement(ok, ns + "header", sid="1")
    group = ET.SubElement(header, ns + "keys", jid="u@x") if flavour == "omemo2" else header
    for i in range(MAX_KEY_ELEMENTS):
        ET.SubElement(group, ns + "key", rid=str(i)).text = "AQ=="
    if flavour == "legacy":
        ET.SubElement(header, ns + "iv").text = b64(IV)
    assert len(CODECS[flavour].parse_encrypted(ok).keys) == MAX_KEY_ELEMENTS


def test_wrong_flavour_and_root() -> None:
    with pytest.raises(MalformedMessage):
        lx.parse_encrypted(parse_xml(omemo2_xml("")))
    with pytest.raises(UsageError):
        x2.build_encrypted(EncryptedElement("legacy", 1, (), None, IV))
    with pytest.raises(PeerError):
        x2.parse_bundle(ET.fromstring(bundle_xml("legacy")))
