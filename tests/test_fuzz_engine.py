"""Arbitrary XML and arbitrary bytes fed to every XML decoder and to the engine's inputs
(``decrypt``, ``on_bundle``, ``on_device_list``): only peer-blame errors come out, never another
exception, and a rejected input leaves the engine's stored bytes unchanged."""

from __future__ import annotations

import base64
import copy
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2ee.errors import PeerError
from e2ee.legacy import xml as legacy_xml
from e2ee.omemo2 import envelope, payload
from e2ee.omemo2 import xml as omemo2_xml
from e2ee.xmlsafe import parse_xml, serialize

from .engine_support import LEGACY, O2, Net, snapshot

ALICE, BOB = "alice@example.org", "bob@example.net"


def _world() -> tuple[Net, object, object, list[ET.Element]]:
    net = Net()
    a = net.device(ALICE, "fz-a")
    b = net.device(BOB, "fz-b")
    b_legacy = net.device(BOB, "fz-b2", namespaces=(LEGACY,))
    first = net.encrypt(a, [BOB], "first")
    samples = list(first.elements.values())
    for el in first.elements.values():
        for d in (b, b_legacy):
            out = d.decrypt(el, ALICE, to=BOB)
            for e in out.effects:
                if e.__class__.__name__ == "SendMessage":
                    a.decrypt(e.encrypted, BOB, to=ALICE)  # type: ignore[attr-defined]
    samples += list(net.encrypt(a, [BOB], "second").elements.values())
    for ns in (O2, LEGACY):
        samples.append(net.pep.device_list(BOB, ns))  # type: ignore[arg-type]
        samples.append(net.pep.bundle(BOB, ns, b.device_id))  # type: ignore[arg-type]
    return net, a, b, samples


NET, ALICE_DEV, BOB_DEV, SAMPLES = _world()
SAMPLE_TEXT = [serialize(s) for s in SAMPLES]

TAGS = [
    f"{{{ns}}}{local}"
    for ns in (O2, LEGACY)
    for local in (
        "encrypted",
        "header",
        "keys",
        "key",
        "payload",
        "iv",
        "devices",
        "list",
        "device",
        "bundle",
        "spk",
        "spks",
        "ik",
        "prekeys",
        "pk",
        "signedPreKeyPublic",
        "signedPreKeySignature",
        "identityKey",
        "preKeyPublic",
    )
] + ["{urn:xmpp:sce:1}envelope", "{urn:xmpp:sce:1}content", "{jabber:client}body", "{x}y"]
ATTRS = ["sid", "rid", "jid", "kex", "prekey", "id", "label", "labelsig", "preKeyId", "signedPreKeyId"]
TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "0", "1", "true", "2147483648", "-1", "AAAA", "=" * 8, "QUJD" * 11]),
    st.binary(min_size=0, max_size=120).map(lambda b: base64.b64encode(b).decode()),
)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    elem = ET.Element(draw(st.sampled_from(TAGS)))
    for name in draw(st.lists(st.sampled_from(ATTRS), max_size=3, unique=True)):
        elem.set(name, draw(TEXT))
    if draw(st.booleans()):
        elem.text = draw(TEXT)
    if depth < 4:
        for _ in range(draw(st.integers(0, 3))):
            elem.append(draw(trees(depth + 1)))
    return elem


@st.composite
def mutated(draw: st.DrawFn) -> ET.Element | None:
    """A genuine element with random edits to its XML text (None when it no longer parses)."""
    data = bytearray(draw(st.sampled_from(SAMPLE_TEXT)))
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(32, 126))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        else:
            del data[pos : pos + draw(st.integers(1, 6))]
    try:
        return parse_xml(bytes(data))
    except PeerError:
        return None


@st.composite
def structural(draw: st.DrawFn) -> ET.Element:
    """A genuine element with a child removed, duplicated or an attribute changed."""
    elem = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    nodes = list(elem.iter())
    node = draw(st.sampled_from(nodes))
    op = draw(st.integers(0, 3))
    if op == 0 and len(node):
        node.remove(node[draw(st.integers(0, len(node) - 1))])
    elif op == 1 and len(node):
        node.append(copy.deepcopy(node[draw(st.integers(0, len(node) - 1))]))
    elif op == 2 and node.attrib:
        node.set(draw(st.sampled_from(sorted(node.attrib))), draw(TEXT))
    else:
        node.text = draw(TEXT)
    return elem


ELEMENTS = st.one_of(trees(), mutated(), structural())


def _peer_only(fn, *args) -> bool:  # type: ignore[no-untyped-def]
    """Call; True when it succeeded, False on a peer error; anything else propagates."""
    try:
        fn(*args)
    except PeerError:
        return False
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elem=ELEMENTS)
def test_xml_codecs_raise_only_peer_errors(elem: ET.Element | None) -> None:
    if elem is None:
        return
    for codec in (omemo2_xml, legacy_xml):
        for fn in (codec.parse_device_list, codec.parse_bundle, codec.parse_encrypted):
            _peer_only(fn, elem)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elem=ELEMENTS)
def test_engine_inputs_raise_only_peer_errors_and_rejections_change_nothing(elem: ET.Element | None) -> None:
    if elem is None:
        return
    for engine in (BOB_DEV, ALICE_DEV):
        before = snapshot(engine)  # type: ignore[arg-type]
        ok = _peer_only(engine.decrypt, elem, ALICE if engine is BOB_DEV else BOB)  # type: ignore[attr-defined]
        if not ok:
            assert snapshot(engine) == before  # type: ignore[arg-type]
        before = snapshot(engine)  # type: ignore[arg-type]
        for ns in (O2, LEGACY):
            if not _peer_only(engine.on_bundle, "carol@example.com", 7, ns, elem):  # type: ignore[attr-defined]
                assert snapshot(engine) == before  # type: ignore[arg-type]
            before = snapshot(engine)  # type: ignore[arg-type]
            if not _peer_only(engine.on_device_list, "carol@example.com", ns, elem):  # type: ignore[attr-defined]
                assert snapshot(engine) == before  # type: ignore[arg-type]
            before = snapshot(engine)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), km=st.binary(min_size=0, max_size=64))
def test_payload_and_envelope_decoders_raise_only_peer_errors(data: bytes, km: bytes) -> None:
    _peer_only(payload.decrypt, data, km)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    _peer_only(envelope.parse, data, ALICE, BOB, now)
    for text in SAMPLE_TEXT[:1]:
        _peer_only(envelope.parse, text[: len(data) % (len(text) + 1)] + data, ALICE, BOB, now)
