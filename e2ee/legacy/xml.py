"""XML codec of legacy OMEMO (``eu.siacs.conversations.axolotl``): device list, bundle and
``<encrypted>``.

Same contract as :mod:`e2ee.omemo2.xml`: ``parse_*`` take an Element and return
:mod:`e2ee.model` values, raising peer-blame errors only and never descending into unknown
elements (ignored); ``build_*`` write exactly what python-oldmemo writes.

Differences from OMEMO 2:

* Device list ``<list><device id/></list>``: no labels (``label``/``labelsig`` are ignored on
  parsing and never written).  Same id policy: entries outside ``[1, 2^31 - 1]`` are dropped,
  duplicates collapse.
* Bundle: camelCase names; every public key is 33 bytes ``0x05 || u``; the signature is 64
  bytes (bit 7 of its last byte may carry the Ed25519 sign bit of the identity key, as
  python-oldmemo writes it: kept as given); at least 20 prekeys (XEP-0384 v0.3).  The other
  bundle rules (ids, duplicates, size) are those of OMEMO 2.
* ``<encrypted>``: ``<key rid prekey>`` elements sit directly in ``<header>`` next to ``<iv>``,
  in any order; ``KeyElement.jid`` is None.  ``<iv>`` must be 12 or 16 bytes and is required
  when there is a ``<payload>`` (a key transport element may come without either).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .. import omemo_xml
from ..errors import MalformedMessage, UsageError
from ..limits import (
    DEVICE_ID_MAX,
    DEVICE_ID_MIN,
    MAX_KEY_ELEMENTS,
    MAX_PAYLOAD_BYTES,
    MIN_PREKEYS_LEGACY,
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
    "IV_LENGTHS",
    "parse_device_list",
    "build_device_list",
    "parse_bundle",
    "build_bundle",
    "parse_encrypted",
    "build_encrypted",
]

NS = "eu.siacs.conversations.axolotl"
FLAVOUR = "legacy"
#: ``<iv>`` lengths accepted: 12 (everybody now) and 16 (old Conversations).
IV_LENGTHS = frozenset({12, 16})

_LIST, _DEVICE = f"{{{NS}}}list", f"{{{NS}}}device"
_BUNDLE, _SPK, _SPKS, _IK, _PREKEYS, _PK = (
    f"{{{NS}}}{n}"
    for n in ("bundle", "signedPreKeyPublic", "signedPreKeySignature", "identityKey", "prekeys", "preKeyPublic")
)
_ENCRYPTED, _HEADER, _KEY, _IV, _PAYLOAD = (f"{{{NS}}}{n}" for n in ("encrypted", "header", "key", "iv", "payload"))


# ---- device list ---------------------------------------------------------------------------


def parse_device_list(elem: ET.Element) -> DeviceList:
    """``<list xmlns='eu.siacs.conversations.axolotl'>`` to a DeviceList (labels None)."""
    if elem.tag != _LIST:
        raise MalformedMessage(f"expected {_LIST}, got {elem.tag!r}")
    return DeviceList(FLAVOUR, tuple(DeviceEntry(i) for i, _ in device_elements(elem, _DEVICE)))


def build_device_list(device_list: DeviceList) -> ET.Element:
    """A DeviceList to ``<list>`` (labels are not part of legacy OMEMO and are left out)."""
    if device_list.flavour != FLAVOUR:
        raise UsageError(f"not a {FLAVOUR} device list: {device_list.flavour!r}")
    root = ET.Element(_LIST)
    for entry in device_list.devices:
        if not DEVICE_ID_MIN <= entry.device_id <= DEVICE_ID_MAX:
            raise UsageError(f"device id {entry.device_id} out of range")
        ET.SubElement(root, _DEVICE, {"id": str(entry.device_id)})
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
    spk_id_attr="signedPreKeyId",
    pk_id_attr="preKeyId",
    key_prefix=b"\x05",
    min_prekeys=MIN_PREKEYS_LEGACY,
)


def parse_bundle(elem: ET.Element) -> Bundle:
    """``<bundle xmlns='eu.siacs.conversations.axolotl'>`` to a Bundle (keys as on the wire:
    33 bytes ``0x05 || u``, the signature as given)."""
    return omemo_xml.parse_bundle(_SCHEMA, elem)


def build_bundle(bundle: Bundle) -> ET.Element:
    """A Bundle to ``<bundle>`` in python-oldmemo's order and spelling."""
    return omemo_xml.build_bundle(_SCHEMA, bundle)


# ---- encrypted -----------------------------------------------------------------------------


def parse_encrypted(elem: ET.Element) -> EncryptedElement:
    """``<encrypted xmlns='eu.siacs.conversations.axolotl'>`` to an EncryptedElement."""
    if elem.tag != _ENCRYPTED:
        raise MalformedMessage(f"expected {_ENCRYPTED}, got {elem.tag!r}")
    header = required_child(elem, _HEADER, MalformedMessage)
    sid = sender_id(header)
    key_elems = list(children(header, _KEY, MalformedMessage, MAX_KEY_ELEMENTS))
    iv_elem = optional_child(header, _IV, MalformedMessage)
    iv = None
    if iv_elem is not None:
        iv = decode_base64(iv_elem.text, "iv", max(IV_LENGTHS))
        if len(iv) not in IV_LENGTHS:
            raise MalformedMessage(f"iv of {len(iv)} bytes")
    keys: list[KeyElement] = []
    for key in key_elems:
        rid = parse_uint(key.get("rid"), "rid")
        prekey = parse_bool(key.get("prekey"), "prekey")
        keys.append(KeyElement(rid=rid, data=key_data(key), kex=prekey))
    payload_elem = optional_child(elem, _PAYLOAD, MalformedMessage)
    payload = None
    if payload_elem is not None:
        payload = decode_base64(payload_elem.text, "payload", MAX_PAYLOAD_BYTES)
        if iv is None:
            raise MalformedMessage("payload without iv")
    return EncryptedElement(FLAVOUR, sid, tuple(keys), payload, iv)


def build_encrypted(encrypted: EncryptedElement) -> ET.Element:
    """An EncryptedElement to ``<encrypted>``: the keys, then ``<iv>``, in ``<header sid>``;
    ``prekey='true'`` only on key exchanges; ``<payload>`` unless it is None."""
    if encrypted.flavour != FLAVOUR:
        raise UsageError(f"not a {FLAVOUR} encrypted element: {encrypted.flavour!r}")
    if encrypted.iv is None or len(encrypted.iv) not in IV_LENGTHS:
        raise UsageError("a legacy encrypted element needs a 12- or 16-byte iv")
    root = ET.Element(_ENCRYPTED)
    header = ET.SubElement(root, _HEADER, {"sid": str(encrypted.sid)})
    for key in encrypted.keys:
        key_elem = ET.SubElement(header, _KEY, {"rid": str(key.rid)})
        if key.kex:
            key_elem.set("prekey", "true")
        key_elem.text = encode_base64(key.data)
    ET.SubElement(header, _IV).text = encode_base64(encrypted.iv)
    if encrypted.payload is not None:
        ET.SubElement(root, _PAYLOAD).text = encode_base64(encrypted.payload)
    return root
