"""The XEP-0420 Stanza Content Encryption envelope, as profiled by OMEMO 2 (XEP-0384 §SCE).

:func:`build` writes ``<envelope xmlns='urn:xmpp:sce:1'>`` with ``<content>``, ``<rpad>``,
optional ``<time>``, ``<from>`` and optional ``<to>``, as UTF-8 bytes ready for payload
encryption.  :func:`parse` reads decrypted bytes with :mod:`e2ee.xmlsafe` and checks the affixes.

Decisions:

* ``<rpad>``: base64 of 0..200 random bytes, as QXmpp does (0..268 printable characters).
  Receivers accept any length (up to the XML size limit) or none.
* Children of ``<content>`` are written with explicit ``xmlns`` (never ``ns0:`` prefixes), and
  so is each affix (``<rpad xmlns='urn:xmpp:sce:1'>``...): the same XML infoset as inheriting
  it, but Converse.js finds affixes only with a literal ``xmlns`` attribute.  Both spellings
  are read.
* JIDs are compared as bare JIDs: the resource is ignored, localpart and domainpart are
  compared after ``str.lower()`` and a trailing dot of the domain is dropped (see
  :func:`bare_jid_key`).  This is not full RFC 7622 (no PRECIS, no IDNA); it only accepts the
  case variants every server would route identically.
* ``<from>`` (SHOULD) and ``<to>`` (MUST in group chats only) may be absent; when present they
  must match (:class:`~e2ee.errors.AffixMismatch`).  ``require_to`` makes ``<to>`` mandatory
  (group chats); ``expected_to=None`` skips the ``<to>`` check.
* ``<time>`` further than ``window`` from ``now`` (the delay stamp or receive time) sets
  ``time_suspicious``; it is not an error.  Without ``now`` nothing is checked.  A ``stamp`` that
  is not an XEP-0082 DateTime makes the envelope malformed; deployed variants with the same
  information (``±hhmm``, lowercase ``t``/``z``, long fractions) are accepted
  (:func:`parse_timestamp`).  We write UTC with ``Z``.
* Elements the server acts on are dropped from received content and refused in content to
  send: anything in the namespaces of XEP-0334 hints, XEP-0033 addresses and XEP-0380 EME, and
  the XEP-0359 stanza-id (its origin-id may travel encrypted, XEP-0420 since v0.3.0).
* XML refused by :mod:`e2ee.xmlsafe` (DTD, entities, PIs, comments, limits) raises
  :class:`~e2ee.errors.RestrictedXml`; any other defect :class:`~e2ee.errors.MalformedEnvelope`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..errors import AffixMismatch, MalformedEnvelope, MalformedMessage, RestrictedXml, UsageError
from ..jid import bare_jid_key
from ..limits import MAX_JID_LENGTH, MAX_XML_BYTES, MAX_XML_DEPTH, MAX_XML_ELEMENTS, SCE_TIME_WINDOW
from ..rng import Random
from ..xmlsafe import _TEXT_ESC, _chars, check_element, encode_base64, escape_attribute, parse_xml, serialize
from ..xmpptime import format_timestamp, parse_timestamp, require_aware

__all__ = [
    "NS",
    "SERVER_PROCESSED_ELEMENTS",
    "SERVER_PROCESSED_NAMESPACES",
    "Envelope",
    "build",
    "parse",
]

NS = "urn:xmpp:sce:1"

#: Namespaces of elements a server processes; dropped from decrypted content.
SERVER_PROCESSED_NAMESPACES = frozenset(
    {
        "urn:xmpp:hints",  # XEP-0334
        "http://jabber.org/protocol/address",  # XEP-0033
        "urn:xmpp:eme:0",  # XEP-0380
    }
)

#: Single elements a server processes (XEP-0359 stanza-id; its origin-id may be encrypted).
SERVER_PROCESSED_ELEMENTS = frozenset({"{urn:xmpp:sid:0}stanza-id"})

_ENVELOPE, _CONTENT, _RPAD, _TIME, _FROM, _TO = (
    f"{{{NS}}}{n}" for n in ("envelope", "content", "rpad", "time", "from", "to")
)
_MAX_RPAD = 200


@dataclass(slots=True)  # not frozen: built per message, and frozen construction costs ~6x
class Envelope:
    """A parsed envelope whose affixes matched."""

    content: tuple[ET.Element, ...]  #: children of ``<content>`` minus server-processed ones
    from_jid: str | None  #: ``<from jid>`` as given, None when absent
    to_jid: str | None  #: ``<to jid>`` as given, None when absent
    time: datetime | None  #: ``<time stamp>`` in UTC, None when absent
    time_suspicious: bool = False  #: ``time`` is outside the window around ``now``


# ---- build ---------------------------------------------------------------------------------


def _rpad_length(rng: Random) -> int:
    for _ in range(64):  # uniform in [0, 200] by rejection; bounded for degenerate sources
        value = rng(1)[0]
        if value <= _MAX_RPAD:
            return value
    return rng(1)[0] % (_MAX_RPAD + 1)


#: bounded memo tables (emptied when full): a device sends to and receives from few JIDs, and
#: many messages in the same second
_MEMO_SIZE = 1024
_JID_ATTRS: dict[str, str] = {}  #: checked bare JID -> its escaped attribute value
_JID_KEYS: dict[str, str] = {}  #: JID -> bare_jid_key(JID)
_STAMP_PREFIX: dict[datetime, str] = {}  #: a UTC second -> its XEP-0082 text without the ``Z``
_STAMP_SECOND: dict[str, datetime] = {}  #: ``YYYY-MM-DDTHH:MM:SS`` -> that second, UTC

#: the <body> of a message, the content of nearly every envelope, written by template
_BODY = "{jabber:client}body"
_EMPTY_BODY = "<body xmlns='jabber:client'/>"


def _memo(table: dict[str, str] | dict[str, datetime] | dict[datetime, str]) -> None:
    if len(table) >= _MEMO_SIZE:
        table.clear()


def _jid_key(jid: str) -> str:
    key = _JID_KEYS.get(jid)
    if key is None:
        key = bare_jid_key(jid)
        _memo(_JID_KEYS)
        _JID_KEYS[jid] = key
    return key


def _check_jid(jid: str, what: str) -> str:
    if not isinstance(jid, str) or not bare_jid_key(jid) or "/" in jid or len(jid) > MAX_JID_LENGTH:
        raise UsageError(f"{what} must be a bare JID, got {jid!r}")
    return jid


def _jid_attribute(jid: str, what: str) -> str:
    """``jid`` checked (:func:`_check_jid`) and escaped for an attribute, memoised."""
    attr = _JID_ATTRS.get(jid) if type(jid) is str else None
    if attr is None:
        attr = escape_attribute(_check_jid(jid, what))
        _memo(_JID_ATTRS)
        _JID_ATTRS[jid] = attr
    return attr


def _stamp(time: datetime) -> str:
    """:func:`~e2ee.xmpptime.format_timestamp`, with the text of the second memoised."""
    if time.tzinfo is not UTC:
        return format_timestamp(time)
    micro = time.microsecond
    second = time.replace(microsecond=0) if micro else time
    prefix = _STAMP_PREFIX.get(second)
    if prefix is None:
        prefix = format_timestamp(second)[:-1]
        _memo(_STAMP_PREFIX)
        _STAMP_PREFIX[second] = prefix
    return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"


def _parse_stamp(text: str) -> datetime:
    """:func:`~e2ee.xmpptime.parse_timestamp`; the form we write (UTC, ``Z``, no fraction or
    six digits of it) by the memoised second: the second is parsed (and checked) by
    ``parse_timestamp`` itself, the fraction is six ASCII digits, so the result is the same."""
    n = len(text)
    if (n == 20 or (n == 27 and text[19] == "." and text[20:26].isascii() and text[20:26].isdigit())) and text[
        -1
    ] == "Z":
        head = text[:19]
        second = _STAMP_SECOND.get(head)
        if second is None:
            second = parse_timestamp(head + "Z")
            _memo(_STAMP_SECOND)
            _STAMP_SECOND[head] = second
        return second.replace(microsecond=int(text[20:26])) if n == 27 else second
    return parse_timestamp(text)


def build(
    content: Sequence[ET.Element],
    from_jid: str,
    to_jid: str | None,
    time: datetime | None,
    rng: Random,
) -> bytes:
    """Serialize an envelope around ``content`` (each element must be namespaced).  ``from_jid``
    and ``to_jid`` are bare JIDs; ``time`` must be timezone-aware.  Raises
    :class:`~e2ee.errors.UsageError` for content a receiver would refuse (too deep, too many
    elements, too large)."""
    parts = [f"<envelope xmlns='{NS}'><content>"]
    count = serialize_content(content, NS, "<content>", "the envelope", parts)
    if count + 5 > MAX_XML_ELEMENTS:
        raise UsageError("content with too many elements")
    # the affixes are written directly: base64, a time stamp and checked JIDs (escaped)
    # each affix carries its namespace explicitly (the same infoset): Converse.js looks them up
    # by a literal attribute, ``to[xmlns="urn:xmpp:sce:1"]``, and writes them so itself
    parts.append(f"</content><rpad xmlns='{NS}'>{encode_base64(rng(_rpad_length(rng)))}</rpad>")
    if time is not None:
        parts.append(f"<time xmlns='{NS}' stamp='{_stamp(time)}'/>")
    parts.append(f"<from xmlns='{NS}' jid='{_jid_attribute(from_jid, 'from_jid')}'/>")
    if to_jid is not None:
        parts.append(f"<to xmlns='{NS}' jid='{_jid_attribute(to_jid, 'to_jid')}'/>")
    parts.append("</envelope>")
    data = "".join(parts).encode("utf-8")
    if len(data) > MAX_XML_BYTES:
        raise UsageError(f"envelope larger than {MAX_XML_BYTES} bytes")
    return data


# ---- parse ---------------------------------------------------------------------------------


_KNOWN = frozenset({_CONTENT, _FROM, _TO, _TIME})


def _affix(elem: ET.Element | None, expected: str | None, what: str) -> str | None:
    if elem is None:
        return None
    jid = elem.get("jid")
    if not jid:
        raise MalformedEnvelope(f"<{what}> without jid")
    if expected is not None and _jid_key(jid) != _jid_key(expected):
        raise AffixMismatch(f"<{what}> affix {jid!r} does not match {expected!r}")
    return jid


def server_processed(elem: ET.Element) -> bool:
    """Whether ``elem`` is one servers act on (hints, stanza-ids, ...): it must stay outside the
    encrypted content, and is ignored when found inside it."""
    tag = elem.tag
    return isinstance(tag, str) and (
        tag in SERVER_PROCESSED_ELEMENTS or tag[1:].partition("}")[0] in SERVER_PROCESSED_NAMESPACES
    )


def serialize_content(content: Iterable[ET.Element], ns: str, where: str, outside: str, parts: list[str]) -> int:
    """Append the serialisation of the encrypted content's children (inside an element of
    namespace ``ns``: ``<content>`` of an SCE envelope or ``<payload>`` of a ``<signcrypt>``)
    to ``parts``; returns how many elements they hold.  Raises
    :class:`~e2ee.errors.UsageError` for content a receiver would refuse."""
    count = 0
    for child in content:
        if (
            type(child) is ET.Element
            and child.tag == _BODY
            and ns != "jabber:client"
            and not child.attrib
            and not len(child)
        ):
            # what serialize() writes for it, without the general walk
            text = child.text
            parts.append(f"<body xmlns='jabber:client'>{_chars(text, _TEXT_ESC)}</body>" if text else _EMPTY_BODY)
            count += 1
            continue
        if not isinstance(child, ET.Element) or not str(child.tag).startswith("{"):
            raise UsageError(f"children of {where} must be namespaced Elements")
        if server_processed(child):
            raise UsageError(f"{child.tag} is processed by servers and must stay outside {outside}")
        try:
            check_element(child, MAX_XML_DEPTH - 2, MAX_XML_ELEMENTS)
        except RestrictedXml as e:
            raise UsageError(f"content a receiver would refuse: {e}") from None
        count += sum(1 for _ in child.iter())
        parts.append(serialize(child, inherited_ns=ns).decode())
    return count


def parse(
    data: bytes,
    expected_from: str,
    expected_to: str | None,
    now: datetime | None = None,
    window: timedelta = SCE_TIME_WINDOW,
    *,
    require_to: bool = False,
) -> Envelope:
    """Parse decrypted envelope bytes and check the affixes against the stanza: ``expected_from``
    is the (bare) sender, ``expected_to`` the stanza's (bare) ``to`` or None to skip that check.
    Raises :class:`~e2ee.errors.AffixMismatch`, :class:`~e2ee.errors.RestrictedXml` or
    :class:`~e2ee.errors.MalformedEnvelope`."""
    if not _jid_key(expected_from) or (expected_to is not None and not _jid_key(expected_to)):
        raise UsageError("expected_from/expected_to must be JIDs")
    reference = None if now is None else require_aware(now, "now")
    try:
        root = parse_xml(data)
    except RestrictedXml:
        raise
    except MalformedMessage as e:
        raise MalformedEnvelope(str(e)) from None
    if root.tag != _ENVELOPE:
        raise MalformedEnvelope(f"expected {_ENVELOPE}, got {root.tag!r}")
    found: dict[str, ET.Element] = {}
    for child in root:  # one pass: each known child at most once
        tag = child.tag
        if tag in _KNOWN:
            if tag in found:
                raise MalformedEnvelope(f"more than one {tag}")
            found[tag] = child
    content = found.get(_CONTENT)
    if content is None:
        raise MalformedEnvelope("<content> missing")
    from_jid = _affix(found.get(_FROM), expected_from, "from")
    to_jid = _affix(found.get(_TO), expected_to, "to")
    if require_to and to_jid is None:
        raise AffixMismatch("<to> affix missing")
    time_elem = found.get(_TIME)
    stamp = None
    suspicious = False
    if time_elem is not None:
        stamp = _parse_stamp(time_elem.get("stamp") or "")
        suspicious = reference is not None and abs(stamp - reference) > window
    kept = tuple(child for child in content if not server_processed(child))
    return Envelope(kept, from_jid, to_jid, stamp, suspicious)
