"""XML mechanics shared by the two OMEMO namespaces.

The OMEMO 2 and legacy bundle formats differ only in element and attribute names, the key
encoding (raw 32 bytes vs ``0x05 || u``) and the minimum number of prekeys; a
:class:`BundleSchema` names those differences and one parser/builder serves both.  The
device-list and ``<encrypted>`` codecs share their id and key helpers from here.
"""

from __future__ import annotations

import binascii
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InvalidBundle, MalformedMessage, RestrictedXml, UsageError
from .limits import (
    DEVICE_ID_MAX,
    DEVICE_ID_MIN,
    MAX_BUNDLE_TEXT,
    MAX_DEVICES_PER_LIST,
    MAX_KEY_BYTES,
    MAX_PREKEYS_PER_BUNDLE,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    PREKEY_ID_MAX,
    PREKEY_ID_MIN,
)
from .model import Bundle
from .xmlsafe import check_element, children, decode_base64, encode_base64, parse_uint, required_child

__all__ = ["BundleSchema", "parse_bundle", "build_bundle", "device_elements", "sender_id", "key_data"]

_SIG_LEN = 64
_MALFORMED_OWN = "bundle with a malformed key or an id out of range"


@dataclass(frozen=True, slots=True)
class BundleSchema:
    """How one namespace spells a bundle.  Tags are in ``{namespace}name`` form."""

    flavour: str
    bundle: str
    spk: str
    spks: str
    ik: str
    prekeys: str
    pk: str
    spk_id_attr: str
    pk_id_attr: str
    key_prefix: bytes  #: ``b""`` (OMEMO 2) or ``b"\\x05"`` (legacy) in front of every key
    min_prekeys: int

    @property
    def key_len(self) -> int:
        return 32 + len(self.key_prefix)


def _bundle_id(elem: ET.Element, attr: str) -> int:
    value = parse_uint(elem.get(attr), attr, InvalidBundle)
    if not PREKEY_ID_MIN <= value <= PREKEY_ID_MAX:
        raise InvalidBundle(f"<{_local(elem.tag)}> {attr} {value} outside [{PREKEY_ID_MIN}, {PREKEY_ID_MAX}]")
    return value


def _bundle_bytes(elem: ET.Element, what: str, length: int) -> bytes:
    data = decode_base64(elem.text, what, length, InvalidBundle)
    if len(data) != length:
        raise InvalidBundle(f"{what}: {len(data)} bytes, expected {length}")
    return data


def _public_key(schema: BundleSchema, elem: ET.Element, what: str) -> bytes:
    data = _bundle_bytes(elem, what, schema.key_len)
    if not data.startswith(schema.key_prefix):
        raise InvalidBundle(f"{what}: key type {data[0]:#04x}, expected {schema.key_prefix.hex()}")
    return data


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _prekeys_batch(schema: BundleSchema, pk_elems: list[ET.Element]) -> dict[int, bytes] | None:
    """The prekeys when every one is in the canonical form peers write (plain decimal ids in
    range, each once; keys in padded base64 of the right length and type), checked a whole
    list at a time; None otherwise (:func:`_prekeys_careful` then finds the first fault and
    its precise error).  Accepts exactly what the careful path accepts in that form."""
    if not pk_elems:
        return {}
    key_len, prefix = schema.key_len, schema.key_prefix
    attr = schema.pk_id_attr
    try:
        ids = [pk.get(attr) for pk in pk_elems]
        joined = "".join(ids)  # type: ignore[arg-type]  # a missing id is a TypeError
        lengths = set(map(len, ids))  # type: ignore[arg-type]
        if min(lengths) < 1 or max(lengths) > 10 or not joined.isascii() or not joined.isdigit():
            return None
        values = list(map(int, ids))  # type: ignore[arg-type]
        if min(values) < PREKEY_ID_MIN or max(values) > PREKEY_ID_MAX or len(set(values)) != len(values):
            return None
        texts = [pk.text for pk in pk_elems]
        if set(map(len, texts)) != {4 * ((key_len + 2) // 3)}:  # type: ignore[arg-type]
            return None
        b2a = binascii.a2b_base64
        keys = [b2a(t, strict_mode=True) for t in texts]  # type: ignore[arg-type]
    except (TypeError, binascii.Error, ValueError):  # a missing id or text; bad or non-ASCII base64
        return None
    if set(map(len, keys)) != {key_len}:
        return None
    if prefix and b"".join(keys)[::key_len] != prefix * len(keys):  # every key's first byte
        return None
    return dict(zip(values, keys, strict=True))


def _prekeys_careful(schema: BundleSchema, pk_elems: list[ET.Element]) -> dict[int, bytes]:
    """The prekeys one by one, raising :class:`InvalidBundle` at the first fault."""
    prekeys: dict[int, bytes] = {}
    pk_name = _local(schema.pk)
    id_attr, key_len, prefix = schema.pk_id_attr, schema.key_len, schema.key_prefix
    b64_len = 4 * ((key_len + 2) // 3)
    for pk in pk_elems:
        # the common, canonical form first; anything else takes the careful path, which also
        # produces the precise error
        text = pk.get(id_attr)
        if text is not None and 0 < len(text) <= 10 and text.isascii() and text.isdigit():
            pk_id = int(text)
            if not PREKEY_ID_MIN <= pk_id <= PREKEY_ID_MAX:
                raise InvalidBundle(f"<{pk_name}> {id_attr} {pk_id} outside [{PREKEY_ID_MIN}, {PREKEY_ID_MAX}]")
        else:
            pk_id = _bundle_id(pk, id_attr)
        if pk_id in prekeys:
            raise InvalidBundle(f"duplicate {pk_name} id {pk_id}")
        key_text = pk.text
        data = None
        if key_text is not None and len(key_text) == b64_len:
            try:
                data = binascii.a2b_base64(key_text, strict_mode=True)
            except (binascii.Error, ValueError):  # ValueError: non-ASCII text
                data = None
        if data is None or len(data) != key_len or not data.startswith(prefix):
            data = _public_key(schema, pk, pk_name)
        prekeys[pk_id] = data
    return prekeys


def parse_bundle(schema: BundleSchema, elem: ET.Element) -> Bundle:
    """A ``<bundle>`` to a :class:`~e2ee.model.Bundle` (keys as on the wire), enforcing the
    structural rules of the security catalogue X6 with :class:`InvalidBundle`."""
    if elem.tag != schema.bundle:
        raise InvalidBundle(f"expected {schema.bundle}, got {elem.tag!r}")
    try:
        check_element(elem, MAX_XML_DEPTH, MAX_XML_ELEMENTS, max_text=MAX_BUNDLE_TEXT)
    except RestrictedXml as e:
        raise InvalidBundle(str(e)) from None
    spk = required_child(elem, schema.spk, InvalidBundle)
    spks = required_child(elem, schema.spks, InvalidBundle)
    ik = required_child(elem, schema.ik, InvalidBundle)
    prekeys_elem = required_child(elem, schema.prekeys, InvalidBundle)
    pk_elems = list(children(prekeys_elem, schema.pk, InvalidBundle, MAX_PREKEYS_PER_BUNDLE))
    prekeys = _prekeys_batch(schema, pk_elems)
    if prekeys is None:
        prekeys = _prekeys_careful(schema, pk_elems)
    if len(prekeys) < schema.min_prekeys:
        raise InvalidBundle(f"{len(prekeys)} prekeys, at least {schema.min_prekeys} required")
    return Bundle(
        flavour=schema.flavour,
        ik=_public_key(schema, ik, _local(schema.ik)),
        spk_id=_bundle_id(spk, schema.spk_id_attr),
        spk=_public_key(schema, spk, _local(schema.spk)),
        spk_signature=_bundle_bytes(spks, _local(schema.spks), _SIG_LEN),
        prekeys=prekeys,
    )


def build_bundle(schema: BundleSchema, bundle: Bundle) -> ET.Element:
    """A :class:`~e2ee.model.Bundle` to ``<bundle>``: signed prekey, signature, identity key,
    prekeys, in the order and spelling the Syndace peers write."""
    if bundle.flavour != schema.flavour:
        raise UsageError(f"not a {schema.flavour} bundle: {bundle.flavour!r}")
    key_len, prefix = schema.key_len, schema.key_prefix
    if (
        len(bundle.ik) != key_len
        or not bundle.ik.startswith(prefix)
        or len(bundle.spk) != key_len
        or not bundle.spk.startswith(prefix)
        or len(bundle.spk_signature) != _SIG_LEN
        or not PREKEY_ID_MIN <= bundle.spk_id <= PREKEY_ID_MAX
    ):
        raise UsageError(_MALFORMED_OWN)
    root = ET.Element(schema.bundle)
    ET.SubElement(root, schema.spk, {schema.spk_id_attr: str(bundle.spk_id)}).text = encode_base64(bundle.spk)
    ET.SubElement(root, schema.spks).text = encode_base64(bundle.spk_signature)
    ET.SubElement(root, schema.ik).text = encode_base64(bundle.ik)
    prekeys = ET.SubElement(root, schema.prekeys)
    # one pass: check each prekey and add its element (the tree is dropped on an error)
    sub, b2a, tag, attr = ET.SubElement, binascii.b2a_base64, schema.pk, schema.pk_id_attr
    for pk_id, pk in bundle.prekeys.items():
        if len(pk) != key_len or not pk.startswith(prefix) or not PREKEY_ID_MIN <= pk_id <= PREKEY_ID_MAX:
            raise UsageError(_MALFORMED_OWN)
        sub(prekeys, tag, {attr: str(pk_id)}).text = b2a(pk, newline=False).decode("ascii")
    return root


def device_elements(elem: ET.Element, device_tag: str) -> Iterator[tuple[int, ET.Element]]:
    """The ``<device>`` children of a device list with a usable id, first occurrence of each
    id only, in document order.  Entries without a number in [1, 2^31 - 1] are skipped, so
    one bad entry cannot cut a contact off."""
    seen: set[int] = set()
    for device in children(elem, device_tag, MalformedMessage, MAX_DEVICES_PER_LIST):
        try:
            device_id = parse_uint(device.get("id"), "device id")
        except MalformedMessage:
            continue
        if DEVICE_ID_MIN <= device_id <= DEVICE_ID_MAX and device_id not in seen:
            seen.add(device_id)
            yield device_id, device


def sender_id(header: ET.Element) -> int:
    """The ``sid`` of an ``<encrypted>`` header: a device id in [1, 2^31 - 1]."""
    sid = parse_uint(header.get("sid"), "sid")
    if not DEVICE_ID_MIN <= sid <= DEVICE_ID_MAX:
        raise MalformedMessage(f"sid {sid} out of range")
    return sid


def key_data(elem: ET.Element) -> bytes:
    """The base64-decoded, non-empty content of a ``<key>``."""
    data = decode_base64(elem.text, "key", MAX_KEY_BYTES)
    if not data:
        raise MalformedMessage("empty key element")
    return data
