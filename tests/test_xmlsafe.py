"""Hardened XML (catalogue I1-I3): every hostile document gives a typed error, quickly and with
bounded memory; well-formed restricted XML parses like ElementTree; trees from elsewhere are
checked iteratively; and nothing but PeerError escapes any XML parser for arbitrary input."""

from __future__ import annotations

import base64
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2ee.errors import MalformedMessage, PeerError, RestrictedXml, UsageError
from e2ee.legacy import xml as lx
from e2ee.limits import MAX_XML_ATTRIBUTES, MAX_XML_BYTES, MAX_XML_DEPTH, MAX_XML_ELEMENTS
from e2ee.model import Bundle
from e2ee.omemo2 import envelope
from e2ee.omemo2 import xml as x2
from e2ee.xmlsafe import check_element, check_expat_version, parse_xml, serialize

MiB = 1 << 20
ENV = "<envelope xmlns='urn:xmpp:sce:1'><content>{}</content><rpad/><from jid='a@x'/></envelope>"


def bounded(
    call: Callable[[], Any], error: type[Exception], *, peak: int = 4 * MiB, seconds: float = 30.0
) -> Exception:
    """Run ``call``; it must raise ``error`` within ``peak`` bytes of Python heap.  ``seconds`` is
    a hang guard only (an exponential expansion runs for minutes), far above what a loaded 2-core
    machine needs: the work bound these tests assert is the memory peak."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as info:
            call()
        elapsed = time.perf_counter() - start
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert top < peak, f"peak {top} bytes"
    return info.value


# ---- catalogue I1: DTDs, entities, PIs, comments --------------------------------------------

LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i} '{(f'&lol{i - 1};' if i > 1 else '&lol;') * 10}'>" for i in range(1, 10))
    + "]><lolz>&lol9;</lolz>"
)
QUADRATIC = "<!DOCTYPE q [<!ENTITY a '" + "a" * 50_000 + "'>]><q>" + "&a;" * 60_000 + "</q>"
HOSTILE_I1 = {
    "billion laughs": LAUGHS,
    "quadratic blowup": QUADRATIC,
    "external entity": "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>",
    "external dtd": "<!DOCTYPE x SYSTEM 'http://127.0.0.1:9/evil.dtd'><x/>",
    "parameter entity": "<!DOCTYPE x [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]><x/>",
    "undeclared entity": "<x>&e;</x>",
    "processing instruction": "<x><?php evil() ?></x>",
    "processing instruction before root": "<?xml-stylesheet href='x'?><x/>",
    "comment": "<x><!-- hi --></x>",
    "comment after root": "<x/><!-- hi -->",
    "xml 1.1": "<?xml version='1.1'?><x/>",
    "other encoding": "<?xml version='1.0' encoding='ISO-8859-1'?><x/>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_I1))
def test_i1_restricted_constructs(name: str) -> None:
    text = HOSTILE_I1[name]
    assert len(text.encode()) <= MAX_XML_BYTES
    bounded(lambda: parse_xml(text.encode()), RestrictedXml)
    bounded(lambda: parse_xml(text), RestrictedXml)
    if name == "external entity":  # the same inside a decrypted envelope
        inner = ENV.replace("<envelope", "<!DOCTYPE envelope [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><envelope")
        bounded(lambda: envelope.parse(inner.format("&e;").encode(), "a@x", None), RestrictedXml)


def test_i1_inside_envelope() -> None:
    for text in (LAUGHS, QUADRATIC):
        doc = text.replace("<lolz>", "<envelope xmlns='urn:xmpp:sce:1'><content>").replace(
            "</lolz>", "</content></envelope>"
        )
        bounded(lambda: envelope.parse(doc.encode(), "a@x", None), RestrictedXml)
    bounded(lambda: envelope.parse(ENV.format("<?pi x?>").encode(), "a@x", None), RestrictedXml)
    bounded(lambda: envelope.parse(ENV.format("<!-- c -->").encode(), "a@x", None), RestrictedXml)


def test_utf16_refused() -> None:
    with pytest.raises(RestrictedXml):
        parse_xml("<x/>".encode("utf-16"))
    for encoding in ("utf-16-le", "utf-16-be", "utf-32"):
        with pytest.raises(RestrictedXml):
            parse_xml("<x>é</x>".encode(encoding))


def test_expat_version_check() -> None:
    check_expat_version()
    with pytest.raises(UsageError):
        check_expat_version((2, 4, 1))


# ---- catalogue I2: huge documents, attributes, counts ---------------------------------------


def test_i2_ten_mib_attribute() -> None:
    data = b"<x a='" + b"A" * (10 * MiB) + b"'/>"
    text = data.decode()
    bounded(lambda: parse_xml(data), RestrictedXml, peak=64 * 1024)
    bounded(lambda: parse_xml(text), RestrictedXml, peak=64 * 1024)
    bounded(lambda: envelope.parse(data, "a@x", None), RestrictedXml, peak=64 * 1024)


def test_i2_endless_text_node() -> None:
    data = b"<x>" + b"B" * (16 * MiB)
    bounded(lambda: parse_xml(data), RestrictedXml, peak=64 * 1024)


def test_i2_hundred_thousand_attributes() -> None:
    data = ("<x " + " ".join(f"a{i}=''" for i in range(100_000)) + "/>").encode()
    bounded(lambda: parse_xml(data), RestrictedXml, peak=64 * 1024)  # over the size limit
    # Even with the size limit lifted, refused by the attribute limit with bounded memory.
    bounded(lambda: parse_xml(data, max_bytes=10 * MiB), RestrictedXml, peak=48 * MiB)
    fits = ("<x " + " ".join(f"a{i}=''" for i in range(20_000)) + "/>").encode()
    assert len(fits) <= MAX_XML_BYTES
    bounded(lambda: parse_xml(fits), RestrictedXml, peak=12 * MiB)
    assert len(parse_xml("<x " + " ".join(f"a{i}=''" for i in range(MAX_XML_ATTRIBUTES)) + "/>").attrib) == 64


def test_i2_ten_thousand_key_elements_as_bytes() -> None:
    keys = "".join(f"<key rid='{i}'>AQ==</key>" for i in range(10_000))
    doc = f"<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='b@x'>{keys}</keys></header></encrypted>"
    bounded(lambda: x2.parse_encrypted(parse_xml(doc)), RestrictedXml)  # element limit while parsing
    legacy = doc.replace("urn:xmpp:omemo:2", lx.NS).replace("<keys jid='b@x'>", "").replace("</keys>", "")
    bounded(lambda: lx.parse_encrypted(parse_xml(legacy)), RestrictedXml)
    many = "<a>" + "<b/>" * (MAX_XML_ELEMENTS + 1) + "</a>"
    bounded(lambda: parse_xml(many), RestrictedXml)
    assert len(parse_xml("<a>" + "<b/>" * (MAX_XML_ELEMENTS - 1) + "</a>")) == MAX_XML_ELEMENTS - 1


# ---- catalogue I3: deep nesting -------------------------------------------------------------


def test_i3_hundred_thousand_levels() -> None:
    deep = "<a>" * 100_000 + "</a>" * 100_000
    bounded(lambda: parse_xml(deep), RestrictedXml, peak=64 * 1024)  # over the size limit
    # With the size limit lifted the depth limit stops the parse as level 65 opens.
    bounded(lambda: parse_xml(deep, max_bytes=10 * MiB), RestrictedXml, peak=MiB)
    ok = "<a>" * MAX_XML_DEPTH + "</a>" * MAX_XML_DEPTH
    parse_xml(ok)
    with pytest.raises(RestrictedXml):
        parse_xml("<a>" + ok + "</a>")


def test_i3_two_thousand_levels_in_envelope() -> None:
    doc = ENV.format("<x xmlns='urn:example'>" + "<y>" * 2000 + "</y>" * 2000 + "</x>").encode()
    assert len(doc) <= MAX_XML_BYTES
    bounded(lambda: envelope.parse(doc, "a@x", None), RestrictedXml, peak=MiB)


def nested(depth: int) -> ET.Element:
    root = node = ET.Element("a")
    for _ in range(depth - 1):
        node = ET.SubElement(node, "a")
    return root


def test_check_element_iterative() -> None:
    deep = nested(100_000)  # ElementTree built it; a recursive walk would hit RecursionError
    bounded(lambda: check_element(deep, MAX_XML_DEPTH, MAX_XML_ELEMENTS), RestrictedXml, peak=64 * 1024)
    check_element(nested(MAX_XML_DEPTH))
    with pytest.raises(RestrictedXml):
        check_element(nested(MAX_XML_DEPTH + 1))
    wide = ET.Element("a")
    for _ in range(100_000):
        ET.SubElement(wide, "b")
    bounded(lambda: check_element(wide), RestrictedXml, peak=64 * 1024)
    attrs = ET.Element("a", {f"a{i}": "" for i in range(100_000)})
    bounded(lambda: check_element(attrs), RestrictedXml, peak=64 * 1024)
    with pytest.raises(UsageError):
        check_element("<a/>")  # type: ignore[arg-type]
    texty = ET.Element("a", {"x": "12345"})
    texty.text, texty.tail = "123", "not counted"
    ET.SubElement(texty, "b").tail = "12"
    check_element(texty, max_text=10)
    with pytest.raises(RestrictedXml):
        check_element(texty, max_text=9)
    assert serialize(deep).startswith(b"<a><a>")  # the serializer is iterative too


# ---- what must parse ------------------------------------------------------------------------


def test_restricted_xml_parses_like_elementtree() -> None:
    doc = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<a xmlns='urn:a' xmlns:b='urn:b' xml:lang='en' plain='1 &amp; &lt; &#x263A;'>"
        "text<b:c b:attr='v'>&quot;&apos;&gt;<![CDATA[<raw> & ]]></b:c>tail"
        "<d xmlns=''>x</d></a>"
    )
    ours, theirs = parse_xml(doc.encode()), ET.fromstring(doc.encode())
    assert ET.tostring(ours) == ET.tostring(theirs)
    assert ours.tag == "{urn:a}a" and ours[0].tag == "{urn:b}c" and ours[1].tag == "d"
    assert ours.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert ours[0].get("{urn:b}attr") == "v" and ours[0].text == "\"'><raw> & "
    assert parse_xml(b"\xef\xbb\xbf<x/>").tag == "x"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"<x>",
        b"<x></y>",
        b"<x/><y/>",
        b"text",
        b"<x a='1' a='2'/>",
        b"<p:x/>",
        b"<x>\xff</x>",
        b"<x>&#0;</x>",
        b"<x xmlns:p=''/>",
    ],
)
def test_malformed(bad: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_xml(bad)


def test_namespace_with_brace_refused() -> None:
    with pytest.raises(RestrictedXml):
        parse_xml(b"<x xmlns='urn:}a'/>")


def test_serialize_explicit_namespaces_and_escaping() -> None:
    root = ET.Element("{urn:a}r", {"{http://www.w3.org/XML/1998/namespace}lang": "en", "q": "'\"<&\n"})
    child = ET.SubElement(root, "{urn:b}c", {"{urn:c}x": "1"})
    child.text, child.tail = "1 < 2 & \r", "after"
    ET.SubElement(root, "plain")
    data = serialize(root)
    assert data == (
        b"<r xmlns='urn:a' xml:lang='en' q='&apos;&quot;&lt;&amp;&#10;'>"
        b"<c xmlns='urn:b' xmlns:ns1='urn:c' ns1:x='1'>1 &lt; 2 &amp; &#13;</c>after<plain xmlns=''/></r>"
    )
    assert ET.tostring(parse_xml(data)) == ET.tostring(root)
    bads: list[Any] = [ET.Element("x", {"a": "\x00"}), ET.Element("{urn:a"), ET.Element("a b"), ET.Comment("c")]
    for bad in bads:
        with pytest.raises(UsageError):
            serialize(bad)


# ---- hypothesis: only PeerError escapes -----------------------------------------------------

KNOWN_TAGS = [
    f"{{{ns}}}{name}"
    for ns, names in (
        (
            x2.NS,
            [
                "devices",
                "device",
                "bundle",
                "spk",
                "spks",
                "ik",
                "prekeys",
                "pk",
                "encrypted",
                "header",
                "keys",
                "key",
                "payload",
            ],
        ),
        (
            lx.NS,
            [
                "list",
                "device",
                "bundle",
                "signedPreKeyPublic",
                "signedPreKeySignature",
                "identityKey",
                "prekeys",
                "preKeyPublic",
                "encrypted",
                "header",
                "key",
                "iv",
                "payload",
            ],
        ),
        (envelope.NS, ["envelope", "content", "rpad", "time", "from", "to"]),
        ("urn:xmpp:hints", ["store"]),
    )
    for name in names
] + ["x", "{urn:example}y", "{jabber:client}body"]
ROOTS = (
    [f"{{{x2.NS}}}{n}" for n in ("devices", "bundle", "encrypted")]
    + [f"{{{lx.NS}}}{n}" for n in ("list", "bundle", "encrypted")]
    + [f"{{{envelope.NS}}}envelope"]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "25",
            "2147483647",
            "2147483648",
            "4294967295",
            "4294967296",
            "-1",
            "+5",
            " 7 ",
            "٣",
            "true",
            "false",
            "TRUE",
            "",
            "a@x",
            "A@X/r",
            "2026-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            base64.b64encode(bytes(32)).decode(),
            base64.b64encode(b"\x05" + bytes(32)).decode(),
            base64.b64encode(bytes(64)).decode(),
            base64.b64encode(bytes(12)).decode(),
            "!!",
            " AQ== ",
        ]
    ),
    st.text(max_size=12),
)
ATTRS = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "rid",
            "sid",
            "kex",
            "prekey",
            "jid",
            "label",
            "labelsig",
            "preKeyId",
            "signedPreKeyId",
            "stamp",
            "{urn:example}a",
        ]
    ),
    VALUES,
    max_size=4,
)


def _element(tag: str, attrib: dict[str, str], text: str | None, kids: list[ET.Element]) -> ET.Element:
    elem = ET.Element(tag, attrib)
    elem.text = text
    elem.extend(kids)
    return elem


TREES = st.recursive(
    st.builds(_element, st.sampled_from(KNOWN_TAGS), ATTRS, st.none() | VALUES, st.just([])),
    lambda kids: st.builds(
        _element, st.sampled_from(KNOWN_TAGS), ATTRS, st.none() | VALUES, st.lists(kids, max_size=30)
    ),
    max_leaves=40,
)
ROOTED = st.builds(_element, st.sampled_from(ROOTS), ATTRS, st.none() | VALUES, st.lists(TREES, max_size=6))
ELEMENT_PARSERS: list[Callable[[ET.Element], object]] = [
    x2.parse_device_list,
    x2.parse_bundle,
    x2.parse_encrypted,
    lx.parse_device_list,
    lx.parse_bundle,
    lx.parse_encrypted,
    check_element,
]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def feed_bytes(data: bytes | str) -> None:
    for call in (
        lambda: parse_xml(data),
        lambda: envelope.parse(
            data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data, "a@x", "b@y", NOW
        ),
    ):
        try:
            call()
        except PeerError:
            pass


def feed_tree(tree: ET.Element) -> None:
    for parse in ELEMENT_PARSERS:
        try:
            parse(tree)
        except PeerError:
            pass
    try:
        data = serialize(tree)
    except UsageError:
        return
    feed_bytes(data)
    try:
        root = parse_xml(data)
    except PeerError:
        return
    for parse in ELEMENT_PARSERS:
        try:
            parse(root)
        except PeerError:
            pass


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600) | st.text(max_size=300))
def test_fuzz_arbitrary_input(data: bytes | str) -> None:
    feed_bytes(data)


def _valid_documents() -> list[str]:
    docs = [
        ENV.format("<body xmlns='jabber:client'>hi</body>").replace(
            "<rpad/>", "<rpad/><time stamp='2026-01-01T00:00:00Z'/>"
        ),
        HOSTILE_I1["billion laughs"],
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='b@x'><key rid='5' kex='1'>"
        "AQ==</key></keys></header><payload>AAAA</payload></encrypted>",
        f"<encrypted xmlns='{lx.NS}'><header sid='1'><key rid='5' prekey='1'>AQ==</key><iv>AAAAAAAAAAAAAAAA</iv>"
        "</header><payload>AAAA</payload></encrypted>",
        "<devices xmlns='urn:xmpp:omemo:2'><device id='1' label='a' labelsig='AAAA'/><device id='2'/></devices>",
    ]
    for codec, key in ((x2, bytes(32)), (lx, b"\x05" + bytes(32))):
        bundle = Bundle(codec.FLAVOUR, key, 1, key, bytes(64), {i: key for i in range(1, 26)})
        docs.append(serialize(codec.build_bundle(bundle)).decode())
    return docs


@FUZZ
@given(
    st.sampled_from(_valid_documents()),
    st.lists(st.tuples(st.integers(0, 400), st.text(max_size=4)), min_size=1, max_size=6),
)
def test_fuzz_mutated_documents(base: str, edits: list[tuple[int, str]]) -> None:
    for pos, insert in edits:
        pos %= len(base) + 1
        base = base[:pos] + insert + base[pos + 1 :]
    feed_bytes(base)
    try:
        feed_tree(parse_xml(base))
    except PeerError:
        pass


@settings(FUZZ, max_examples=100)
@given(ROOTED)
def test_fuzz_generated_trees(tree: ET.Element) -> None:
    feed_tree(tree)
    for parse in ELEMENT_PARSERS[:-1]:
        for kid in tree:  # every subtree as a root as well
            try:
                parse(kid)
            except PeerError:
                pass


def test_decode_base64_length_bound_holds_on_the_fast_path() -> None:
    from e2ee.xmlsafe import decode_base64

    text = base64.b64encode(bytes(33)).decode()  # 44 characters, 33 bytes
    assert decode_base64(text, "k", 33) == bytes(33)
    with pytest.raises(MalformedMessage):
        decode_base64(text, "k", 32)  # 44 characters would also fit 32 bytes' encoding
    assert decode_base64(" " + text[:20] + "\n" + text[20:], "k", 33) == bytes(33)  # whitespace
    with pytest.raises(MalformedMessage):
        decode_base64(text[:-2] + "=A", "k", 33)  # data after padding
