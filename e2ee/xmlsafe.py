"""Hardened XML for untrusted input: parsing, tree checks, value decoding, serialization.

:func:`parse_xml` drives the standard library's expat (:mod:`pyexpat`) directly and builds an
:class:`xml.etree.ElementTree.Element` with ``{namespace}local`` names, like ElementTree.  It
accepts RFC 6120 "restricted XML" only and refuses, with :class:`~e2ee.errors.RestrictedXml`:

* a document type declaration (so no entity declarations, internal subset, external DTD or
  external entities: nothing is ever fetched), and any entity reference other than the five
  predefined ones and character references;
* processing instructions, and **comments** (RFC 6120 §11.1 forbids them in XMPP and catalogue
  I1 lists them; no sender has a reason to put one in encrypted content);
* an XML declaration other than version 1.0 with UTF-8 (or no) encoding, UTF-16 byte order
  marks and NUL bytes (expat autodetects UTF-16 despite the UTF-8 setting; NUL is never part of
  UTF-8 encoded XML);
* documents larger than ``max_bytes`` (checked before parsing), and more than ``max_depth``
  levels, ``max_elements`` elements or ``max_attributes`` attributes on an element (checked
  while parsing: the first element over a limit stops the parse, no large tree is built).

Syntax errors raise :class:`~e2ee.errors.MalformedMessage`.  Nothing else escapes for any
``bytes``/``str`` input: no expat error, no ``RecursionError`` (nothing here recurses).

:func:`check_element` applies the same limits iteratively to a tree parsed elsewhere (slixmpp).
:func:`serialize` writes a tree with explicit ``xmlns`` declarations (no ``ns0:`` prefixes),
iteratively.  The ``parse_uint``/``parse_bool``/``decode_base64`` helpers read XML Schema values
the way the OMEMO codecs need them.

:func:`check_expat_version` runs at import: an expat older than
:data:`~e2ee.limits.MIN_EXPAT_VERSION` makes importing this module fail.
"""

from __future__ import annotations

import base64
import binascii
import pyexpat
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from itertools import islice
from typing import NoReturn

from .errors import MalformedMessage, PeerError, RestrictedXml, UsageError
from .limits import (
    MAX_XML_ATTRIBUTES,
    MAX_XML_BYTES,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    MIN_EXPAT_VERSION,
)

__all__ = [
    "escape_attribute",
    "XML_NS",
    "check_expat_version",
    "parse_xml",
    "check_element",
    "children",
    "optional_child",
    "required_child",
    "serialize",
    "parse_uint",
    "parse_bool",
    "decode_base64",
    "encode_base64",
]

#: The namespace bound to the ``xml`` prefix (``xml:lang``).
XML_NS = "http://www.w3.org/XML/1998/namespace"

_SEP = "\x01"  # expat namespace separator; not an XML 1.0 character, so never in a name or URI
_CHUNK = 16 * 1024  # fed to expat piecewise so that work after a refused construct stays small
_XML_WS = " \t\r\n"
_DELETE_WS = str.maketrans("", "", _XML_WS)
_UINT = re.compile(r"\+?0*([0-9]{1,10})")
_UINT_MAX = 2**32 - 1
_UNDEFINED_ENTITY = pyexpat.errors.codes[pyexpat.errors.XML_ERROR_UNDEFINED_ENTITY]
# XML 1.0 Char production, negated; plus the characters escaped in text and attributes.
_BAD_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_START = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_NAME = re.compile(f"[{_START}][{_START}\\-.0-9\u00b7\u0300-\u036f\u203f\u2040]*")  # XML NCName
_TEXT_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESC = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)


def check_expat_version(version: tuple[int, int, int] = pyexpat.version_info) -> None:
    """Raise :class:`~e2ee.errors.UsageError` if ``version`` (by default the linked expat) is
    older than :data:`~e2ee.limits.MIN_EXPAT_VERSION`."""
    if tuple(version) < MIN_EXPAT_VERSION:
        raise UsageError(
            f"expat {'.'.join(map(str, version))} is too old; "
            f"{'.'.join(map(str, MIN_EXPAT_VERSION))} or newer is required"
        )


check_expat_version()


# ---- parsing -------------------------------------------------------------------------------


def _refuse(what: str) -> NoReturn:
    raise RestrictedXml(f"restricted XML: {what} not allowed")


def _clark(name: str) -> str:
    ns, sep, local = name.rpartition(_SEP)
    if not sep:
        return name
    if "{" in ns or "}" in ns:
        _refuse("a namespace name containing braces")
    return f"{{{ns}}}{local}"


class _Builder:
    """expat callbacks that build the tree and enforce the limits as elements open."""

    def __init__(self, max_depth: int, max_elements: int, max_attributes: int) -> None:
        self.tree = ET.TreeBuilder()
        self.depth = 0
        self.count = 0
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.max_attributes = max_attributes

    def start(self, name: str, attrs: list[str]) -> None:
        self.depth += 1
        self.count += 1
        if self.depth > self.max_depth:
            raise RestrictedXml(f"XML nested deeper than {self.max_depth} levels")
        if self.count > self.max_elements:
            raise RestrictedXml(f"XML with more than {self.max_elements} elements")
        if len(attrs) > 2 * self.max_attributes:
            raise RestrictedXml(f"element with more than {self.max_attributes} attributes")
        attrib = {_clark(attrs[i]): attrs[i + 1] for i in range(0, len(attrs), 2)}
        self.tree.start(_clark(name), attrib)

    def end(self, name: str) -> None:
        self.depth -= 1
        self.tree.end(_clark(name))

    def xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if version != "1.0":
            _refuse(f"XML version {version!r}")
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            _refuse(f"encoding {encoding!r}")


def _refuse_handler(what: str) -> Callable[..., NoReturn]:
    def handler(*_args: object) -> NoReturn:
        _refuse(what)

    return handler


def _new_parser(builder: _Builder) -> pyexpat.XMLParserType:
    p = pyexpat.ParserCreate(encoding="utf-8", namespace_separator=_SEP)
    p.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.ordered_attributes = True
    p.buffer_text = True
    p.StartElementHandler = builder.start
    p.EndElementHandler = builder.end
    p.CharacterDataHandler = builder.tree.data
    p.XmlDeclHandler = builder.xml_decl
    p.StartDoctypeDeclHandler = _refuse_handler("a document type declaration")
    p.EntityDeclHandler = _refuse_handler("an entity declaration")
    p.UnparsedEntityDeclHandler = _refuse_handler("an entity declaration")
    p.NotationDeclHandler = _refuse_handler("a notation declaration")
    p.ElementDeclHandler = _refuse_handler("an element declaration")
    p.AttlistDeclHandler = _refuse_handler("an attribute list declaration")
    p.ExternalEntityRefHandler = _refuse_handler("an external entity")
    p.SkippedEntityHandler = _refuse_handler("an entity reference")
    p.ProcessingInstructionHandler = _refuse_handler("a processing instruction")
    p.CommentHandler = _refuse_handler("a comment")
    return p


def parse_xml(
    data: bytes | str,
    *,
    max_bytes: int = MAX_XML_BYTES,
    max_depth: int = MAX_XML_DEPTH,
    max_elements: int = MAX_XML_ELEMENTS,
    max_attributes: int = MAX_XML_ATTRIBUTES,
) -> ET.Element:
    """Parse one untrusted XML document (UTF-8 ``bytes``, or ``str``) into its root element.

    Raises :class:`~e2ee.errors.RestrictedXml` for refused constructs and exceeded limits,
    :class:`~e2ee.errors.MalformedMessage` for anything not well-formed.
    """
    if isinstance(data, str):
        if len(data) > max_bytes:
            raise RestrictedXml(f"XML larger than {max_bytes} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedMessage("XML text is not encodable as UTF-8") from None
    elif isinstance(data, (bytes, bytearray, memoryview)):
        if memoryview(data).nbytes > max_bytes:
            raise RestrictedXml(f"XML larger than {max_bytes} bytes")
        raw = bytes(data)
    else:
        raise UsageError(f"parse_xml needs bytes or str, not {type(data).__name__}")
    if len(raw) > max_bytes:
        raise RestrictedXml(f"XML larger than {max_bytes} bytes")
    if raw.startswith((b"\xfe\xff", b"\xff\xfe")) or b"\x00" in raw:
        _refuse("an encoding other than UTF-8")

    if b"<!" not in raw and b"<?" not in raw:
        # Fast path: no DTD, comment, CDATA, XML declaration or processing instruction can be
        # present, so expat's C tree builder sees only elements, attributes, text and the
        # predefined/character references.  Limits are checked on the tree; anything the
        # fast parser rejects or that looks odd goes through the strict parser below, which
        # raises the precise error.
        root = _parse_fast(raw)
        if root is not None:
            check_element(root, max_depth, max_elements, max_attributes=max_attributes)
            return root

    builder = _Builder(max_depth, max_elements, max_attributes)
    parser = _new_parser(builder)
    try:
        for offset in range(0, len(raw), _CHUNK):
            parser.Parse(raw[offset : offset + _CHUNK], False)
        parser.Parse(b"", True)
        root = builder.tree.close()
    except PeerError:
        raise
    except pyexpat.ExpatError as e:
        if e.code == _UNDEFINED_ENTITY:
            raise RestrictedXml("restricted XML: entity reference not allowed") from None
        raise MalformedMessage(f"XML not well-formed: {pyexpat.errors.messages[e.code]}") from None
    except (RecursionError, ValueError, TypeError, AssertionError):
        raise MalformedMessage("XML not well-formed") from None
    return root


def _parse_fast(raw: bytes) -> ET.Element | None:
    """Parse with the C tree builder; None when it fails or a name holds a brace it should not
    (a namespace name containing braces), so that the strict parser decides."""
    if raw.count(b"<") > 4 * MAX_XML_ELEMENTS:  # more tags than any tree we accept
        return None
    parser = ET.XMLParser()
    try:
        parser.feed(raw)
        root = parser.close()
    except (ET.ParseError, RecursionError, ValueError):
        return None
    if b"{" not in raw and b"}" not in raw:
        return root
    for elem in root.iter():
        tag = elem.tag
        if not isinstance(tag, str) or tag.count("}") > 1 or tag.count("{") > 1:
            return None
        for name in elem.attrib:
            if name.count("}") > 1 or name.count("{") > 1:
                return None
    return root


# ---- checking trees parsed elsewhere -------------------------------------------------------


def check_element(
    elem: ET.Element,
    max_depth: int = MAX_XML_DEPTH,
    max_elements: int = MAX_XML_ELEMENTS,
    *,
    max_attributes: int = MAX_XML_ATTRIBUTES,
    max_text: int | None = None,
) -> None:
    """Check an already parsed tree against the limits, iteratively (no recursion).

    Raises :class:`~e2ee.errors.RestrictedXml` when ``elem`` and its descendants are more than
    ``max_depth`` levels deep (``elem`` itself is level 1), more than ``max_elements`` elements,
    an element has more than ``max_attributes`` attributes, or (if ``max_text`` is given) the
    text, tails and attribute values of the descendants add up to more than ``max_text``
    characters (the tail of ``elem`` itself is not counted).  Stops at the first excess, so the
    work is bounded by the limits, not by the size of the tree.
    """
    if not isinstance(elem, ET.Element):
        raise UsageError(f"check_element needs an Element, not {type(elem).__name__}")
    if max_text is None:
        # small trees (the common case) in one C-level walk: n elements are at most n deep
        small = min(max_depth, max_elements)
        nodes = list(islice(elem.iter(), small + 1))
        if len(nodes) <= small:
            for node in nodes:
                if len(node.attrib) > max_attributes:
                    raise RestrictedXml(f"element with more than {max_attributes} attributes")
            return
    # Level by level: the depth is the number of levels, and a level is expanded only after its
    # total number of children has been checked, so memory and work stay bounded by the limits.
    count = text = 0
    depth = 0
    level = [elem]
    while level:
        depth += 1
        if depth > max_depth:
            raise RestrictedXml(f"XML nested deeper than {max_depth} levels")
        count += len(level)
        if count > max_elements:
            raise RestrictedXml(f"XML with more than {max_elements} elements")
        width = 0
        for node in level:
            if len(node.attrib) > max_attributes:
                raise RestrictedXml(f"element with more than {max_attributes} attributes")
            width += len(node)
            if max_text is not None:
                text += len(node.text or "")
                for v in node.attrib.values():
                    if isinstance(v, str):
                        text += len(v)
                if node is not elem:
                    text += len(node.tail or "")
        if max_text is not None and text > max_text:
            raise RestrictedXml(f"XML with more than {max_text} characters of text")
        if count + width > max_elements:
            raise RestrictedXml(f"XML with more than {max_elements} elements")
        level = [child for node in level for child in node] if width else []


def children(elem: ET.Element, tag: str, error: type[PeerError], limit: int) -> Iterator[ET.Element]:
    """The children of ``elem`` named ``tag``, in order, without descending.  ``error`` is raised
    for a ``tag`` child beyond ``limit``, and up front when ``elem`` has more than
    :data:`~e2ee.limits.MAX_XML_ELEMENTS` children of any name (bounding the scan)."""
    if len(elem) > MAX_XML_ELEMENTS:
        raise error(f"<{elem.tag}> has more than {MAX_XML_ELEMENTS} children")
    count = 0
    for child in elem:
        if child.tag == tag:
            count += 1
            if count > limit:
                raise error(f"more than {limit} {tag} elements")
            yield child


def optional_child(elem: ET.Element, tag: str, error: type[PeerError]) -> ET.Element | None:
    """The one child named ``tag``, or None; a second one raises ``error``."""
    found = list(children(elem, tag, error, 1))
    return found[0] if found else None


def required_child(elem: ET.Element, tag: str, error: type[PeerError]) -> ET.Element:
    """The one child named ``tag``; none or several raise ``error``."""
    found = optional_child(elem, tag, error)
    if found is None:
        raise error(f"{tag} missing")
    return found


# ---- serialization -------------------------------------------------------------------------


def _split(name: object, what: str) -> tuple[str, str]:
    if not isinstance(name, str):
        raise UsageError(f"{what} {name!r} is not a string (comments and PIs are not serialized)")
    ns, local = "", name
    if name.startswith("{"):
        ns, sep, local = name[1:].partition("}")
        if not sep:
            raise UsageError(f"{what} {name!r} is not a valid {{namespace}}name")
    if not _NAME.fullmatch(local) or _BAD_CHARS.search(ns) or "{" in ns:
        raise UsageError(f"{what} {name!r} is not a valid XML name")
    return ns, local


def _chars(text: str, table: dict[int, str]) -> str:
    if _BAD_CHARS.search(text):
        raise UsageError("text contains characters XML 1.0 cannot carry")
    return text.translate(table)


def escape_attribute(value: str) -> str:
    """``value`` escaped for an attribute in single or double quotes; raises
    :class:`~e2ee.errors.UsageError` for characters XML 1.0 cannot carry."""
    return _chars(value, _ATTR_ESC)


def _start_tag(elem: ET.Element, inherited: str) -> tuple[str, str, str]:
    ns, local = _split(elem.tag, "tag")
    parts = [local]
    if ns != inherited:
        parts.append(f"xmlns='{_chars(ns, _ATTR_ESC)}'")
    prefixes: dict[str, str] = {}
    for key, value in elem.attrib.items():
        ans, alocal = _split(key, "attribute")
        if not isinstance(value, str):
            raise UsageError(f"attribute {key!r} has a non-string value")
        if not ans and (alocal == "xmlns" or alocal.startswith("xmlns:")):
            raise UsageError("namespace declarations are written by the serializer")
        if not ans:
            qname = alocal
        elif ans == XML_NS:
            qname = f"xml:{alocal}"
        else:
            if ans not in prefixes:
                prefixes[ans] = f"ns{len(prefixes) + 1}"
                parts.append(f"xmlns:{prefixes[ans]}='{_chars(ans, _ATTR_ESC)}'")
            qname = f"{prefixes[ans]}:{alocal}"
        parts.append(f"{qname}='{_chars(value, _ATTR_ESC)}'")
    return " ".join(parts), local, ns


def serialize(elem: ET.Element, *, inherited_ns: str = "") -> bytes:
    """UTF-8 bytes of ``elem`` (no XML declaration; the tail of ``elem`` is left out).

    Every element whose namespace differs from its parent's gets an explicit ``xmlns='...'``
    (``inherited_ns`` is the default namespace in force around ``elem``); namespaced attributes
    get ``xmlns:nsN`` prefixes, ``xml:`` attributes keep their prefix.  Iterative, so depth is
    no problem; raises :class:`~e2ee.errors.UsageError` for what XML cannot represent.
    """
    out: list[str] = []
    stack: list[str | tuple[ET.Element, str]] = [(elem, inherited_ns)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node, inherited = item
        start, local, ns = _start_tag(node, inherited)
        if len(node) == 0 and not node.text:
            out.append(f"<{start}/>")
            continue
        out.append(f"<{start}>")
        if node.text:
            out.append(_chars(node.text, _TEXT_ESC))
        stack.append(f"</{local}>")
        for child in reversed(node):
            if child.tail:
                stack.append(_chars(child.tail, _TEXT_ESC))
            stack.append((child, ns))
    return "".join(out).encode("utf-8")


# ---- XML Schema values ---------------------------------------------------------------------


def parse_uint(text: str | None, what: str, error: type[PeerError] = MalformedMessage) -> int:
    """An ``xs:unsignedInt`` (``0 .. 2^32 - 1``, surrounding whitespace allowed)."""
    if text is None:
        raise error(f"{what}: missing")
    if 0 < len(text) <= 10 and text.isascii() and text.isdigit():  # fast path: plain digits
        value = int(text)
        if value <= _UINT_MAX:
            return value
    match = _UINT.fullmatch(text.strip(_XML_WS)) if len(text) <= 64 else None
    if match is None or int(match.group(1)) > _UINT_MAX:
        raise error(f"{what}: not an unsigned 32-bit integer")
    return int(match.group(1))


def parse_bool(text: str | None, what: str, default: bool = False) -> bool:
    """An ``xs:boolean``: ``true``/``1``, ``false``/``0``; absent gives ``default``; anything
    else raises :class:`~e2ee.errors.MalformedMessage`."""
    if text is None:
        return default
    value = text.strip(_XML_WS) if len(text) <= 64 else ""
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise MalformedMessage(f"{what}: not a boolean")


def decode_base64(text: str | None, what: str, max_len: int, error: type[PeerError] = MalformedMessage) -> bytes:
    """An ``xs:base64Binary`` of at most ``max_len`` decoded bytes.  Whitespace anywhere is
    ignored; other characters outside the alphabet and wrong padding are errors.  The length
    bound is checked before decoding."""
    if text is None:
        return b""
    if len(text) <= 4 * ((max_len + 2) // 3):  # fast path: canonical base64 without whitespace
        try:
            data = binascii.a2b_base64(text, strict_mode=True)
            if len(data) <= max_len:
                return data
        except (binascii.Error, ValueError):
            pass  # whitespace, bad characters or padding: the careful path decides
    compact = text.translate(_DELETE_WS)
    if len(compact) > 4 * ((max_len + 2) // 3):
        raise error(f"{what}: longer than {max_len} bytes")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{what}: not valid base64") from None
    if len(data) > max_len:
        raise error(f"{what}: longer than {max_len} bytes")
    return data


def encode_base64(data: bytes) -> str:
    """Standard padded base64, as every peer writes it."""
    return base64.b64encode(data).decode("ascii")
