"""XML of OpenPGP for XMPP (XEP-0373 v0.7, IM profile XEP-0374 v0.2): the ``<openpgp/>`` message
element, the ``<signcrypt/>`` content element, and the PEP payloads ``<public-keys-list/>``,
``<pubkey/>`` and ``<secretkey/>``.  Pure codecs, no I/O.

Decisions:

* ``<openpgp/>`` holds base64 of the raw binary OpenPGP message (no ASCII armour); whitespace
  is ignored; at most :data:`~e2ee.limits.MAX_OPENPGP_MESSAGE_BYTES` decoded.
* ``<signcrypt/>`` is written as ``<to/>`` (one per recipient, bare JIDs), ``<time/>``,
  ``<rpad/>`` (random letters, random length) and ``<payload/>``.  Only ``<signcrypt/>`` is
  accepted on receipt: ``<sign/>`` and ``<crypt/>`` are refused (XEP-0374; catalogue P2).
  ``<to/>`` at least once, ``<time/>`` and ``<payload/>`` exactly once, ``<rpad/>`` at most once.
  Elements a server acts on (hints, addresses, EME, stanza-id) are dropped from the payload, as
  for SCE.  A body is read from ``jabber:client`` or ``jabber:server``.
* Fingerprints are 40 hex digits; received ones are normalised to upper case.  Metadata lists
  each fingerprint at most once; a list with more than
  :data:`~e2ee.limits.MAX_OPENPGP_ANNOUNCED_KEYS` entries is refused as a whole.
* Dates are XEP-0082 DateTimes (deployed variants accepted: see ``parse_timestamp``); a
  ``<pubkey/>`` ``date`` attribute (pre-0.5 form) is accepted and ignored.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..errors import MalformedMessage, UsageError
from ..jid import bare_jid_key
from ..limits import (
    MAX_JID_LENGTH,
    MAX_OPENPGP_ANNOUNCED_KEYS,
    MAX_OPENPGP_KEY_BYTES,
    MAX_OPENPGP_MESSAGE_BYTES,
    MAX_XML_BYTES,
    MAX_XML_ELEMENTS,
)
from ..omemo2.envelope import serialize_content, server_processed
from ..xmlsafe import (
    children,
    decode_base64,
    encode_base64,
    escape_attribute,
    optional_child,
    parse_xml,
    required_child,
)
from ..xmpptime import format_timestamp, parse_timestamp

__all__ = [
    "NS",
    "IM_FEATURE",
    "PUBLIC_KEYS_NODE",
    "SECRET_KEY_NODE",
    "public_key_node",
    "Signcrypt",
    "build_openpgp",
    "parse_openpgp",
    "build_signcrypt",
    "parse_signcrypt",
    "build_metadata",
    "parse_metadata",
    "build_pubkey",
    "parse_pubkey",
    "build_secretkey",
    "parse_secretkey",
    "normalise_fingerprint",
]

NS = "urn:xmpp:openpgp:0"
#: disco#info feature of the XEP-0374 IM profile.
IM_FEATURE = "urn:xmpp:openpgp:im:0"
#: PEP node of the key metadata (``+notify`` for pushes).
PUBLIC_KEYS_NODE = "urn:xmpp:openpgp:0:public-keys"
#: PEP node of the secret-key backup (whitelist access: the owner only).
SECRET_KEY_NODE = "urn:xmpp:openpgp:0:secret-key"

_OPENPGP, _SIGNCRYPT, _SIGN, _CRYPT = (f"{{{NS}}}{n}" for n in ("openpgp", "signcrypt", "sign", "crypt"))
_TO, _TIME, _RPAD, _PAYLOAD = (f"{{{NS}}}{n}" for n in ("to", "time", "rpad", "payload"))
_LIST, _META, _PUBKEY, _DATA, _SECRETKEY = (
    f"{{{NS}}}{n}" for n in ("public-keys-list", "pubkey-metadata", "pubkey", "data", "secretkey")
)
_BODIES = ("{jabber:client}body", "{jabber:server}body")
_FPR = re.compile(r"[0-9A-Fa-f]{40}", re.ASCII)
_RPAD_TEXT = re.compile(r"[A-Za-z0-9+/=]*", re.ASCII)
#: Most ``<to/>`` elements in one ``<signcrypt/>``.
_MAX_TO = 256


def public_key_node(fingerprint: str) -> str:
    """The PEP node of one public key: ``urn:xmpp:openpgp:0:public-keys:<FPR>``."""
    return f"{PUBLIC_KEYS_NODE}:{normalise_fingerprint(fingerprint, UsageError)}"


def normalise_fingerprint(text: str | None, error: type[Exception] = MalformedMessage) -> str:
    """40 hex digits in upper case; anything else raises ``error``."""
    if text is None or not _FPR.fullmatch(text):
        raise error("an OpenPGP v4 fingerprint is 40 hex digits")
    return text.upper()


# ---- <openpgp/> -----------------------------------------------------------------------------


def build_openpgp(message: bytes) -> ET.Element:
    """``<openpgp xmlns='urn:xmpp:openpgp:0'>`` around base64 of a binary OpenPGP message."""
    elem = ET.Element(_OPENPGP)
    elem.text = encode_base64(message)
    return elem


def parse_openpgp(elem: ET.Element) -> bytes:
    """The binary OpenPGP message of an ``<openpgp/>`` element."""
    if elem.tag != _OPENPGP:
        raise MalformedMessage(f"expected {_OPENPGP}, got {elem.tag!r}")
    if len(elem):
        raise MalformedMessage("<openpgp/> must hold only base64 text")
    data = decode_base64(elem.text, "<openpgp/>", MAX_OPENPGP_MESSAGE_BYTES)
    if not data:
        raise MalformedMessage("empty <openpgp/>")
    return data


# ---- <signcrypt/> ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signcrypt:
    """A parsed ``<signcrypt/>``."""

    to: tuple[str, ...]  #: the ``<to jid/>`` values as written
    time: datetime  #: UTC
    payload: tuple[ET.Element, ...]  #: payload children minus server-processed ones
    body: str | None  #: text of the first ``<body/>`` in the payload


def build_signcrypt(recipients: Sequence[str], time: datetime, rpad: str, payload: Sequence[ET.Element]) -> bytes:
    """UTF-8 bytes of a ``<signcrypt/>`` for ``recipients`` (bare JIDs).  Raises
    :class:`~e2ee.errors.UsageError` for content a receiver would refuse."""
    if not recipients:
        raise UsageError("a <signcrypt/> needs at least one recipient")
    if not _RPAD_TEXT.fullmatch(rpad):
        raise UsageError("rpad must be base64 letters")
    parts = [f"<signcrypt xmlns='{NS}'>"]
    for jid in recipients:
        if not isinstance(jid, str) or not bare_jid_key(jid) or "/" in jid or len(jid) > MAX_JID_LENGTH:
            raise UsageError(f"recipient must be a bare JID, got {jid!r}")
        parts.append(f"<to jid='{escape_attribute(jid)}'/>")
    parts.append(f"<time stamp='{format_timestamp(time)}'/><rpad>{rpad}</rpad><payload>")
    count = serialize_content(payload, NS, "<payload>", "the encryption", parts)
    if count + len(recipients) + 4 > MAX_XML_ELEMENTS:
        raise UsageError("payload with too many elements")
    parts.append("</payload></signcrypt>")
    data = "".join(parts).encode("utf-8")
    if len(data) > MAX_XML_BYTES:
        raise UsageError(f"<signcrypt/> larger than {MAX_XML_BYTES} bytes")
    return data


def parse_signcrypt(data: bytes) -> Signcrypt:
    """Parse decrypted content.  Raises :class:`~e2ee.errors.RestrictedXml` for refused XML and
    :class:`~e2ee.errors.MalformedMessage` for anything that is not a well-formed
    ``<signcrypt/>`` (including ``<sign/>`` and ``<crypt/>``)."""
    root = parse_xml(data)
    if root.tag in (_SIGN, _CRYPT):
        raise MalformedMessage(f"{root.tag} refused: the IM profile (XEP-0374) accepts only <signcrypt/>")
    if root.tag != _SIGNCRYPT:
        raise MalformedMessage(f"expected {_SIGNCRYPT}, got {root.tag!r}")
    to = []
    for elem in children(root, _TO, MalformedMessage, _MAX_TO):
        jid = elem.get("jid")
        if not jid or not bare_jid_key(jid):
            raise MalformedMessage("<to/> without a JID")
        to.append(jid)
    if not to:
        raise MalformedMessage("<signcrypt/> without <to/>")
    stamp = required_child(root, _TIME, MalformedMessage).get("stamp") or ""
    try:
        time = parse_timestamp(stamp)
    except MalformedMessage:
        raise MalformedMessage("<time/> stamp is not an XEP-0082 DateTime") from None
    optional_child(root, _RPAD, MalformedMessage)
    payload_elem = required_child(root, _PAYLOAD, MalformedMessage)
    payload = tuple(child for child in payload_elem if not server_processed(child))
    body = None
    for child in payload:
        if child.tag in _BODIES:
            body = child.text or ""
            break
    return Signcrypt(tuple(to), time, payload, body)


# ---- PEP payloads ---------------------------------------------------------------------------


def build_metadata(keys: Mapping[str, datetime | None]) -> ET.Element:
    """``<public-keys-list/>`` announcing each fingerprint (with its date when known)."""
    root = ET.Element(_LIST)
    for fpr, date in keys.items():
        meta = ET.SubElement(root, _META)
        meta.set("v4-fingerprint", normalise_fingerprint(fpr, UsageError))
        if date is not None:
            meta.set("date", format_timestamp(date))
    return root


def parse_metadata(elem: ET.Element) -> dict[str, datetime | None]:
    """Announced fingerprints (upper case) with their dates (None when absent or unreadable: a
    date is informative only)."""
    if elem.tag != _LIST:
        raise MalformedMessage(f"expected {_LIST}, got {elem.tag!r}")
    out: dict[str, datetime | None] = {}
    for meta in children(elem, _META, MalformedMessage, MAX_OPENPGP_ANNOUNCED_KEYS):
        fpr = normalise_fingerprint(meta.get("v4-fingerprint"))
        date = None
        try:
            date = parse_timestamp(meta.get("date") or "")
        except MalformedMessage:
            pass
        out.setdefault(fpr, date)
    return out


def build_pubkey(data: bytes, date: datetime | None) -> ET.Element:
    """``<pubkey><data>BASE64</data></pubkey>`` (with the pre-0.5 ``date`` attribute too)."""
    root = ET.Element(_PUBKEY)
    if date is not None:
        root.set("date", format_timestamp(date))
    ET.SubElement(root, _DATA).text = encode_base64(data)
    return root


def parse_pubkey(elem: ET.Element) -> bytes:
    """The binary transferable public key of a ``<pubkey/>``."""
    if elem.tag != _PUBKEY:
        raise MalformedMessage(f"expected {_PUBKEY}, got {elem.tag!r}")
    data = decode_base64(required_child(elem, _DATA, MalformedMessage).text, "<data/>", MAX_OPENPGP_KEY_BYTES)
    if not data:
        raise MalformedMessage("empty <data/>")
    return data


def build_secretkey(data: bytes) -> ET.Element:
    """``<secretkey/>`` around base64 of the encrypted backup."""
    root = ET.Element(_SECRETKEY)
    root.text = encode_base64(data)
    return root


def parse_secretkey(elem: ET.Element) -> bytes:
    """The encrypted backup of a ``<secretkey/>``."""
    if elem.tag != _SECRETKEY:
        raise MalformedMessage(f"expected {_SECRETKEY}, got {elem.tag!r}")
    data = decode_base64(elem.text, "<secretkey/>", MAX_OPENPGP_KEY_BYTES)
    if not data:
        raise MalformedMessage("empty <secretkey/>")
    return data
