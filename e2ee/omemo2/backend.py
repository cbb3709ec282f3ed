"""OMEMO 2 (``urn:xmpp:omemo:2``) behind :class:`~e2ee.backend.OmemoBackend`: an XEP-0420
envelope as payload, keys grouped by JID, signed device labels, all bundles in one node."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from ..backend import BODY_TAG, OPEN_ACCESS, Affixes, Opened, Sealed
from ..errors import MalformedMessage
from ..identity import IdentityKeyPair
from ..model import Bundle, DeviceEntry, DeviceList, EncryptedElement, KeyElement
from ..primitives import ed25519_sign
from ..rng import Random
from . import envelope, payload, wire, xml

__all__ = ["Omemo2Backend", "OMEMO2_BACKEND"]


class Omemo2Backend:
    namespace: Final = wire.NAMESPACE
    flavour: Final = wire.OMEMO2
    device_list_node: Final = "urn:xmpp:omemo:2:devices"
    bundle_publish_options: Final = (("pubsub#max_items", "max"), OPEN_ACCESS)
    authenticates_sender: Final = True
    title: Final = "OMEMO 2"

    def bundle_node(self, device_id: int) -> str:
        return "urn:xmpp:omemo:2:bundles"  # every device's bundle, one item each

    def bundle_publish_item(self, device_id: int) -> str:
        return str(device_id)

    def bundle_fetch_item(self, device_id: int) -> str | None:
        return str(device_id)

    def parse_device_list(self, element: ET.Element) -> DeviceList:
        return xml.parse_device_list(element)

    def build_device_list(self, device_list: DeviceList) -> ET.Element:
        return xml.build_device_list(device_list)

    def parse_bundle(self, element: ET.Element) -> Bundle:
        return xml.parse_bundle(element)

    def build_bundle(self, bundle: Bundle) -> ET.Element:
        return xml.build_bundle(bundle)

    def parse_encrypted(self, element: ET.Element) -> EncryptedElement:
        return xml.parse_encrypted(element)

    def build_encrypted(self, encrypted: EncryptedElement) -> ET.Element:
        return xml.build_encrypted(encrypted)

    def cannot_carry(self, body: str | None, content: Sequence[ET.Element]) -> str | None:
        return None

    def seal(
        self, body: str | None, content: Sequence[ET.Element], sender: str, to: str, now: datetime, rng: Random
    ) -> Sealed:
        elems = list(content)
        if body is not None:
            b_elem = ET.Element(BODY_TAG)
            b_elem.text = body
            elems.insert(0, b_elem)
        env = envelope.build(elems, sender, to, now, rng)
        ct, km = payload.encrypt(env, rng)
        return Sealed(ct, None, km)

    def open(self, encrypted: EncryptedElement, key_material: bytes, affixes: Affixes) -> Opened:
        assert encrypted.payload is not None
        plaintext = payload.decrypt(encrypted.payload, key_material)
        a = affixes
        env = envelope.parse(plaintext, a.sender, a.to, a.reference, require_to=a.require_to)
        body = next((c.text or "" for c in env.content if c.tag == BODY_TAG), None)
        return Opened(body, env.content, env.time, env.time_suspicious, env.to_jid)

    def empty_key_material(self, rng: Random) -> tuple[bytes, bytes | None]:
        return payload.EMPTY_KEY_MATERIAL, None

    def check_empty_key_material(self, key_material: bytes) -> None:
        if len(key_material) != payload.KEY_LENGTH:
            raise MalformedMessage("an empty OMEMO 2 message carries 32 bytes of key material")

    def key_element(self, device_id: int, data: bytes, kex: bool, jid: str) -> KeyElement:
        return KeyElement(device_id, data, kex, jid)

    def own_entry(self, identity: IdentityKeyPair, device_id: int, label: str | None) -> DeviceEntry:
        sig = None if label is None else ed25519_sign(identity.seed, label.encode(), identity.ed25519_public)
        return DeviceEntry(device_id, label, sig)

    def identity_ed25519(self, bundle: Bundle) -> bytes | None:
        return bundle.ik


#: The one instance (see :mod:`e2ee.registry`).
OMEMO2_BACKEND: Final = Omemo2Backend()
