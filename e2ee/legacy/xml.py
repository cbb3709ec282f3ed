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

from ..errors import InvalidBundle, MalformedMessage, RestrictedXml, UsageError
from ..limits import (
    DEVICE_ID_MAX,
    DEVICE_ID_MIN,
    MAX_BUNDLE_TEXT,
    MAX_DEVICES_PER_LIST,
    MAX_KEY_BYTES,
    MAX_KEY_ELEMENTS,
    MAX_PAYLOAD_BYTES,
    MAX_PREKEYS_PER_BUNDLE,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    MIN_PREKEYS_LEGACY,
    PREKEY_ID_MAX,
    PREKEY_ID_MIN,
)
from ..model import Bundle, DeviceEntry, DeviceList, EncryptedElement, KeyElement
from ..xmlsafe import (
    check_element,
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
    for n in ("bundle", "signedPreKeyPublic", "signedPreKeySignature", "identityKey", "prekeys",
              "preKeyPublic")
)
_ENCRYPTED, _HEADER, _KEY, _IV, _PAYLOAD = (
    f"{{{NS}}}{n}" for n in ("encrypted", "header", "key", "iv", "payload")
)
_KEY_LEN, _SIG_LEN, _DJB = 33, 64, 0x05


# ---- device list ---------------------------------------------------------------------------


def parse_device_list(elem: ET.Element) -> DeviceList:
    """``<list xmlns='eu.siacs.conversations.axolotl'>`` to a DeviceList (labels None)."""
    if elem.tag != _LIST:
        raise MalformedMessage(f"expected {_LIST}, got {elem.tag!r}")
    ids: dict[int, None] = {}
    for device in children(elem, _DEVICE, MalformedMessage, MAX_DEVICES_PER_LIST):
        try:
            device_id = parse_uint(device.get("id"), "device id")
        except MalformedMessage:
            continue
        if DEVICE_ID_MIN <= device_id <= DEVICE_ID_MAX:
            ids.setdefault(device_id)
    return DeviceList(FLAVOUR, tuple(DeviceEntry(i) for i in ids))


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


def _bundle_id(elem: ET.Element, attr: str) -> int:
    value = parse_uint(elem.get(attr), attr, InvalidBundle)
    if not PREKEY_ID_MIN <= value <= PREKEY_ID_MAX:
        raise InvalidBundle(f"{attr} {value} out of range")
    return value


def _bundle_bytes(elem: ET.Element, what: str, length: int) -> bytes:
    data = decode_base64(elem.text, what, length, InvalidBundle)
    if len(data) != length:
        raise InvalidBundle(f"{what}: {len(data)} bytes, expected {length}")
    return data


def _public_key(elem: ET.Element, what: str) -> bytes:
    data = _bundle_bytes(elem, what, _KEY_LEN)
    if data[0] != _DJB:
        raise InvalidBundle(f"{what}: key type {data[0]:#04x}, expected 0x05")
    return data


def parse_bundle(elem: ET.Element) -> Bundle:
    """``<bundle xmlns='eu.siacs.conversations.axolotl'>`` to a Bundle (keys as on the wire:
    33 bytes ``0x05 || u``, the signature as given)."""
    if elem.tag != _BUNDLE:
        raise InvalidBundle(f"expected {_BUNDLE}, got {elem.tag!r}")
    try:
        check_element(elem, MAX_XML_DEPTH, MAX_XML_ELEMENTS, max_text=MAX_BUNDLE_TEXT)
    except RestrictedXml as e:
        raise InvalidBundle(str(e)) from None
    spk = required_child(elem, _SPK, InvalidBundle)
    spks = required_child(elem, _SPKS, InvalidBundle)
    ik = required_child(elem, _IK, InvalidBundle)
    prekeys_elem = required_child(elem, _PREKEYS, InvalidBundle)
    prekeys: dict[int, bytes] = {}
    for pk in children(prekeys_elem, _PK, InvalidBundle, MAX_PREKEYS_PER_BUNDLE):
        pk_id = _bundle_id(pk, "preKeyId")
        if pk_id in prekeys:
            raise InvalidBundle(f"duplicate preKeyId {pk_id}")
        prekeys[pk_id] = _public_key(pk, "preKeyPublic")
    if len(prekeys) < MIN_PREKEYS_LEGACY:
        raise InvalidBundle(f"{len(prekeys)} prekeys, at least {MIN_PREKEYS_LEGACY} required")
    return Bundle(
        flavour=FLAVOUR,
        ik=_public_key(ik, "identityKey"),
        spk_id=_bundle_id(spk, "signedPreKeyId"),
        spk=_public_key(spk, "signedPreKeyPublic"),
        spk_signature=_bundle_bytes(spks, "signedPreKeySignature", _SIG_LEN),
        prekeys=prekeys,
    )


def build_bundle(bundle: Bundle) -> ET.Element:
    """A Bundle to ``<bundle>`` in python-oldmemo's order and spelling."""
    if bundle.flavour != FLAVOUR:
        raise UsageError(f"not a {FLAVOUR} bundle: {bundle.flavour!r}")
    keys = [bundle.ik, bundle.spk, *bundle.prekeys.values()]
    ids = [bundle.spk_id, *bundle.prekeys]
    if (
        any(len(k) != _KEY_LEN or k[0] != _DJB for k in keys)
        or len(bundle.spk_signature) != _SIG_LEN
        or not all(PREKEY_ID_MIN <= i <= PREKEY_ID_MAX for i in ids)
    ):
        raise UsageError("bundle with a malformed key or an id out of range")
    root = ET.Element(_BUNDLE)
    ET.SubElement(root, _SPK, {"signedPreKeyId": str(bundle.spk_id)}).text = encode_base64(
        bundle.spk
    )
    ET.SubElement(root, _SPKS).text = encode_base64(bundle.spk_signature)
    ET.SubElement(root, _IK).text = encode_base64(bundle.ik)
    prekeys = ET.SubElement(root, _PREKEYS)
    for pk_id, pk in bundle.prekeys.items():
        ET.SubElement(prekeys, _PK, {"preKeyId": str(pk_id)}).text = encode_base64(pk)
    return root


# ---- encrypted -----------------------------------------------------------------------------


def parse_encrypted(elem: ET.Element) -> EncryptedElement:
    """``<encrypted xmlns='eu.siacs.conversations.axolotl'>`` to an EncryptedElement."""
    if elem.tag != _ENCRYPTED:
        raise MalformedMessage(f"expected {_ENCRYPTED}, got {elem.tag!r}")
    header = required_child(elem, _HEADER, MalformedMessage)
    sid = parse_uint(header.get("sid"), "sid")
    if not DEVICE_ID_MIN <= sid <= DEVICE_ID_MAX:
        raise MalformedMessage(f"sid {sid} out of range")
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
        data = decode_base64(key.text, "key", MAX_KEY_BYTES)
        if not data:
            raise MalformedMessage("empty key element")
        keys.append(KeyElement(rid=rid, data=data, kex=prekey))
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
