"""XML codec of OMEMO 2 (``urn:xmpp:omemo:2``): device list, bundle and ``<encrypted>``.

``parse_*`` take an :class:`~xml.etree.ElementTree.Element` (from :mod:`e2ee.xmlsafe` or from
slixmpp) and return :mod:`e2ee.model` values; ``build_*`` do the reverse and write exactly what
python-twomemo writes.  Parsing only looks at the children it knows (never descends into unknown
elements, which are ignored), bounds every loop by a named limit before decoding, and raises
peer-blame errors only.  Building raises :class:`~e2ee.errors.UsageError` for values that cannot
be published.

Policy (see :mod:`e2ee.limits`):

* Device list: a ``<device>`` whose ``id`` is not an integer in ``[1, 2^31 - 1]`` is dropped (one
  bad entry must not cut a contact off); duplicates collapse to their first occurrence; labels
  are kept as given, with or without ``labelsig`` and whatever their length (the engine verifies
  ``labelsig`` and ignores unsigned labels); an undecodable ``labelsig`` becomes ``None``.  More
  than :data:`~e2ee.limits.MAX_DEVICES_PER_LIST` devices reject the list.
* Bundle (catalogue X6): a missing or repeated part, non-base64 text, a wrong key length, an id
  outside ``[1, 2^31 - 1]``, a repeated prekey id, fewer than 25 or more than
  :data:`~e2ee.limits.MAX_PREKEYS_PER_BUNDLE` prekeys raise :class:`~e2ee.errors.InvalidBundle`;
  so does a tree over the XML depth/element limits or with more than
  :data:`~e2ee.limits.MAX_BUNDLE_TEXT` characters, even inside ignored elements (a 1 MiB bundle).
* ``<encrypted>``: ``sid`` must be in ``[1, 2^31 - 1]``; ``rid`` may be any ``xs:unsignedInt``
  (a key for an id we never use simply never matches); ``kex`` is ``xs:boolean``; more than
  :data:`~e2ee.limits.MAX_KEY_ELEMENTS` ``<key>`` or ``<keys>`` elements are refused before any is
  decoded.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .. import omemo_xml
from ..errors import MalformedMessage, UsageError
from ..limits import (
    DEVICE_ID_MAX,
    DEVICE_ID_MIN,
    MAX_JID_LENGTH,
    MAX_KEY_ELEMENTS,
    MAX_PAYLOAD_BYTES,
    MAX_XML_ELEMENTS,
    MIN_PREKEYS_OMEMO2,
)
from ..model import Bundle, DeviceEntry, DeviceList, EncryptedElement, KeyElement
from ..omemo_xml import BundleSchema, device_elements, key_data, sender_id
from ..xmlsafe import (
    children,
    decode_base64,
    encode_base64,
    optional_child,
    parse_bool,
    parse_uint,
    required_child,
)

__all__ = [
    "NS",
    "FLAVOUR",
    "parse_device_list",
    "build_device_list",
    "parse_bundle",
    "build_bundle",
    "parse_encrypted",
    "build_encrypted",
]

NS = "urn:xmpp:omemo:2"
FLAVOUR = "omemo2"

_DEVICES, _DEVICE = f"{{{NS}}}devices", f"{{{NS}}}device"
_BUNDLE, _SPK, _SPKS, _IK, _PREKEYS, _PK = (f"{{{NS}}}{n}" for n in ("bundle", "spk", "spks", "ik", "prekeys", "pk"))
_ENCRYPTED, _HEADER, _KEYS, _KEY, _PAYLOAD = (f"{{{NS}}}{n}" for n in ("encrypted", "header", "keys", "key", "payload"))
_KEY_LEN, _SIG_LEN = 32, 64


# ---- device list ---------------------------------------------------------------------------


def parse_device_list(elem: ET.Element) -> DeviceList:
    """``<devices xmlns='urn:xmpp:omemo:2'>`` (the payload of the PEP item) to a DeviceList."""
    if elem.tag != _DEVICES:
        raise MalformedMessage(f"expected {_DEVICES}, got {elem.tag!r}")
    entries = []
    for device_id, device in device_elements(elem, _DEVICE):
        sig_text = device.get("labelsig")
        try:
            signature = None if sig_text is None else decode_base64(sig_text, "labelsig", 1024)
        except MalformedMessage:
            signature = None
        entries.append(DeviceEntry(device_id, device.get("label"), signature))
    return DeviceList(FLAVOUR, tuple(entries))


def build_device_list(device_list: DeviceList) -> ET.Element:
    """A DeviceList to ``<devices>`` (``label``/``labelsig`` written when set)."""
    if device_list.flavour != FLAVOUR:
        raise UsageError(f"not an {FLAVOUR} device list: {device_list.flavour!r}")
    root = ET.Element(_DEVICES)
    for entry in device_list.devices:
        if not DEVICE_ID_MIN <= entry.device_id <= DEVICE_ID_MAX:
            raise UsageError(f"device id {entry.device_id} out of range")
        device = ET.SubElement(root, _DEVICE, {"id": str(entry.device_id)})
        if entry.label is not None:
            device.set("label", entry.label)
        if entry.label_signature is not None:
            device.set("labelsig", encode_base64(entry.label_signature))
    return root


# ---- bundle --------------------------------------------------------------------------------


_SCHEMA = BundleSchema(
    flavour=FLAVOUR,
    bundle=_BUNDLE,
    spk=_SPK,
    spks=_SPKS,
    ik=_IK,
    prekeys=_PREKEYS,
    pk=_PK,
    spk_id_attr="id",
    pk_id_attr="id",
    key_prefix=b"",
    min_prekeys=MIN_PREKEYS_OMEMO2,
)


def parse_bundle(elem: ET.Element) -> Bundle:
    """``<bundle xmlns='urn:xmpp:omemo:2'>`` to a Bundle (keys as on the wire: raw 32 bytes)."""
    return omemo_xml.parse_bundle(_SCHEMA, elem)


def build_bundle(bundle: Bundle) -> ET.Element:
    """A Bundle to ``<bundle>``: ``spk``, ``spks``, ``ik``, ``prekeys`` in python-twomemo's order."""
    return omemo_xml.build_bundle(_SCHEMA, bundle)


# ---- encrypted -----------------------------------------------------------------------------


def parse_encrypted(elem: ET.Element) -> EncryptedElement:
    """``<encrypted xmlns='urn:xmpp:omemo:2'>`` to an EncryptedElement (``iv`` is None)."""
    if elem.tag != _ENCRYPTED:
        raise MalformedMessage(f"expected {_ENCRYPTED}, got {elem.tag!r}")
    header = required_child(elem, _HEADER, MalformedMessage)
    sid = sender_id(header)
    groups = list(children(header, _KEYS, MalformedMessage, MAX_KEY_ELEMENTS))
    if sum(len(group) for group in groups) > MAX_XML_ELEMENTS:
        raise MalformedMessage(f"<keys> groups with more than {MAX_XML_ELEMENTS} children")
    total = 0
    for group in groups:  # count every <key> before decoding any
        total += sum(1 for _ in children(group, _KEY, MalformedMessage, MAX_KEY_ELEMENTS))
        if total > MAX_KEY_ELEMENTS:
            raise MalformedMessage(f"more than {MAX_KEY_ELEMENTS} key elements")
    keys: list[KeyElement] = []
    for group in groups:
        jid = group.get("jid")
        if not jid or len(jid) > MAX_JID_LENGTH:
            raise MalformedMessage("<keys> without a valid jid")
        for key in children(group, _KEY, MalformedMessage, MAX_KEY_ELEMENTS):
            rid = parse_uint(key.get("rid"), "rid")
            kex = parse_bool(key.get("kex"), "kex")
            keys.append(KeyElement(rid=rid, data=key_data(key), kex=kex, jid=jid))
    payload_elem = optional_child(elem, _PAYLOAD, MalformedMessage)
    payload = None
    if payload_elem is not None:
        payload = decode_base64(payload_elem.text, "payload", MAX_PAYLOAD_BYTES)
        if not payload:
            raise MalformedMessage("empty payload")
    return EncryptedElement(flavour=FLAVOUR, sid=sid, keys=tuple(keys), payload=payload)


def build_encrypted(encrypted: EncryptedElement) -> ET.Element:
    """An EncryptedElement to ``<encrypted>``: one ``<keys jid>`` per JID (in order of first
    appearance), ``kex='true'`` only on key exchanges, ``<payload>`` unless it is None."""
    if encrypted.flavour != FLAVOUR:
        raise UsageError(f"not an {FLAVOUR} encrypted element: {encrypted.flavour!r}")
    root = ET.Element(_ENCRYPTED)
    header = ET.SubElement(root, _HEADER, {"sid": str(encrypted.sid)})
    groups: dict[str, ET.Element] = {}
    for key in encrypted.keys:
        if not key.jid:
            raise UsageError("every OMEMO 2 key needs the bare JID it is for")
        group = groups.get(key.jid)
        if group is None:
            group = groups[key.jid] = ET.SubElement(header, _KEYS, {"jid": key.jid})
        key_elem = ET.SubElement(group, _KEY, {"rid": str(key.rid)})
        if key.kex:
            key_elem.set("kex", "true")
        key_elem.text = encode_base64(key.data)
    if encrypted.payload is not None:
        ET.SubElement(root, _PAYLOAD).text = encode_base64(encrypted.payload)
    return root
