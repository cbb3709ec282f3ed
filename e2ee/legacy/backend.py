"""Legacy OMEMO (``eu.siacs.conversations.axolotl``) behind :class:`~e2ee.backend.OmemoBackend`:
the body alone as payload (AES-GCM with an ``<iv>``), keys by device id only, no labels, one
bundle node per device."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from ..backend import OPEN_ACCESS, Affixes, Opened, Sealed
from ..errors import MalformedMessage
from ..identity import IdentityKeyPair
from ..model import Bundle, DeviceEntry, DeviceList, EncryptedElement, KeyElement
from ..rng import Random
from . import payload, wire, xml

__all__ = ["LegacyBackend", "LEGACY_BACKEND"]

_LIST_ITEM = "current"


class LegacyBackend:
    namespace: Final = wire.NAMESPACE
    flavour: Final = wire.LEGACY
    device_list_node: Final = "eu.siacs.conversations.axolotl.devicelist"
    bundle_publish_options: Final = (OPEN_ACCESS,)
    authenticates_sender: Final = False
    title: Final = "legacy OMEMO"

    def bundle_node(self, device_id: int) -> str:
        return f"eu.siacs.conversations.axolotl.bundles:{device_id}"

    def bundle_publish_item(self, device_id: int) -> str:
        return _LIST_ITEM  # as Conversations writes it

    def bundle_fetch_item(self, device_id: int) -> str | None:
        return None  # the newest item: deployed clients do not all publish it as "current"

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
        return "legacy OMEMO carries only a body" if body is None else None

    def seal(
        self, body: str | None, content: Sequence[ET.Element], sender: str, to: str, now: datetime, rng: Random
    ) -> Sealed:
        assert body is not None
        ct, iv, km = payload.encrypt(body.encode(), rng)
        return Sealed(ct, iv, km)

    def open(self, encrypted: EncryptedElement, key_material: bytes, affixes: Affixes) -> Opened:
        assert encrypted.payload is not None and encrypted.iv is not None
        if len(key_material) == payload.KEY_LENGTH and affixes.tag_in_payload:  # opt-in: tag in the payload
            raw = payload.decrypt_tag_in_payload(encrypted.payload, encrypted.iv, key_material)
        else:
            raw = payload.decrypt(encrypted.payload, encrypted.iv, key_material)
        try:
            return Opened(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise MalformedMessage("legacy body is not UTF-8") from None

    def empty_key_material(self, rng: Random) -> tuple[bytes, bytes | None]:
        iv, km = payload.key_transport(rng)
        return km, iv

    def check_empty_key_material(self, key_material: bytes) -> None:
        return None  # 16 bytes of key and 16 of tag, or the historical 16: both accepted

    def key_element(self, device_id: int, data: bytes, kex: bool, jid: str) -> KeyElement:
        return KeyElement(device_id, data, kex, None)

    def own_entry(self, identity: IdentityKeyPair, device_id: int, label: str | None) -> DeviceEntry:
        return DeviceEntry(device_id, None, None)

    def identity_ed25519(self, bundle: Bundle) -> bytes | None:
        return None


#: The one instance (see :mod:`e2ee.registry`).
LEGACY_BACKEND: Final = LegacyBackend()
