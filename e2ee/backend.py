"""One interface for both OMEMO namespaces (python-omemo's ``Backend``, keyed by namespace).

Everything the engine does differently for OMEMO 2 (``urn:xmpp:omemo:2``) and legacy OMEMO
(``eu.siacs.conversations.axolotl``) is a value or a method of an :class:`OmemoBackend`: its PEP
nodes, its XML codec, how a message payload is sealed and opened, how a key element names its
recipient, what key material an empty message carries and what our own device-list entry holds.
The engine's sending and receiving code is written once against this protocol; the two
implementations are :mod:`e2ee.omemo2.backend` and :mod:`e2ee.legacy.backend`, and
:mod:`e2ee.registry` lists them (the only place both are named).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from .flavour import Flavour
from .identity import IdentityKeyPair
from .model import Bundle, DeviceEntry, DeviceList, EncryptedElement, KeyElement
from .rng import Random

__all__ = ["OmemoBackend", "Sealed", "Opened", "Affixes"]

#: ``<body xmlns='jabber:client'>``: the message text inside an OMEMO 2 envelope.
BODY_TAG = "{jabber:client}body"
#: The publish-option every OMEMO node gets.
OPEN_ACCESS = ("pubsub#access_model", "open")


@dataclass(frozen=True, slots=True)
class Sealed:
    """A message payload, encrypted once for every device of one namespace."""

    ciphertext: bytes
    iv: bytes | None  #: legacy OMEMO's ``<iv>``; None for OMEMO 2
    key_material: bytes = field(repr=False)  #: what each device's ratchet encrypts


@dataclass(frozen=True, slots=True)
class Opened:
    """A decrypted payload: the text and, for OMEMO 2, the envelope's content and affixes."""

    body: str | None = field(repr=False)
    content: tuple[ET.Element, ...] = field(default=(), repr=False)
    time: datetime | None = None
    time_suspicious: bool = False
    to: str | None = None


@dataclass(frozen=True, slots=True)
class Affixes:
    """What the stanza says, for the checks of an opened payload (OMEMO 2's SCE affixes)."""

    sender: str  #: the bare JID the message is from
    to: str | None  #: the stanza's bare ``to``, None to skip the ``<to>`` check
    reference: datetime  #: the delay stamp or receive time the ``<time>`` affix is compared with
    require_to: bool = False  #: group chats: the ``<to>`` affix must be present
    #: legacy OMEMO: accept the historical variant (16-byte key material, the tag at the end of
    #: ``<payload/>``); OMEMO 2 ignores it
    tag_in_payload: bool = False


class OmemoBackend(Protocol):
    """One OMEMO namespace."""

    @property
    def namespace(self) -> str:
        """The XML namespace, also the key of :mod:`e2ee.registry`."""
        ...

    @property
    def flavour(self) -> Flavour:
        """The X3DH / Double Ratchet parameters and wire codec."""
        ...

    @property
    def device_list_node(self) -> str:
        """The PEP node of the device list."""
        ...

    @property
    def bundle_publish_options(self) -> tuple[tuple[str, str], ...]:
        """Publish-options of the bundle node."""
        ...

    @property
    def authenticates_sender(self) -> bool:
        """Whether a message authenticates its sender's JID (OMEMO 2's SCE ``<from>``); legacy
        key exchanges name no sender, so a key already known for another JID is refused there."""
        ...

    @property
    def title(self) -> str:
        """How the namespace is called in sentences for people ("OMEMO 2", "legacy OMEMO")."""
        ...

    def bundle_node(self, device_id: int) -> str:
        """The PEP node holding ``device_id``'s bundle."""
        ...

    def bundle_publish_item(self, device_id: int) -> str:
        """The item id we publish our bundle under."""
        ...

    def bundle_fetch_item(self, device_id: int) -> str | None:
        """The item id to fetch a bundle by; None: the node's newest item."""
        ...

    def parse_device_list(self, element: ET.Element) -> DeviceList: ...

    def build_device_list(self, device_list: DeviceList) -> ET.Element: ...

    def parse_bundle(self, element: ET.Element) -> Bundle: ...

    def build_bundle(self, bundle: Bundle) -> ET.Element: ...

    def parse_encrypted(self, element: ET.Element) -> EncryptedElement: ...

    def build_encrypted(self, encrypted: EncryptedElement) -> ET.Element: ...

    def cannot_carry(self, body: str | None, content: Sequence[ET.Element]) -> str | None:
        """Why this namespace cannot carry a message of ``body`` and ``content`` (None: it can)."""
        ...

    def seal(
        self,
        body: str | None,
        content: Sequence[ET.Element],
        sender: str,
        to: str,
        now: datetime,
        rng: Random,
    ) -> Sealed:
        """Encrypt the message payload (call only when :meth:`cannot_carry` is None)."""
        ...

    def open(self, encrypted: EncryptedElement, key_material: bytes, affixes: Affixes) -> Opened:
        """Decrypt and check a received payload; raises :class:`~e2ee.errors.PeerError` only."""
        ...

    def empty_key_material(self, rng: Random) -> tuple[bytes, bytes | None]:
        """Key material and ``<iv>`` of an empty message (key transport)."""
        ...

    def check_empty_key_material(self, key_material: bytes) -> None:
        """Refuse the key material of a received empty message this namespace never sends
        (:class:`~e2ee.errors.MalformedMessage`)."""
        ...

    def key_element(self, device_id: int, data: bytes, kex: bool, jid: str) -> KeyElement:
        """The ``<key>`` for ``jid``'s device ``device_id`` (OMEMO 2 groups keys by JID)."""
        ...

    def own_entry(self, identity: IdentityKeyPair, device_id: int, label: str | None) -> DeviceEntry:
        """Our entry in our own device list (OMEMO 2: with the signed label)."""
        ...

    def identity_ed25519(self, bundle: Bundle) -> bytes | None:
        """The exact Ed25519 form of the identity key a bundle shows (what OMEMO 2 clients
        display), or None when the namespace publishes only the X25519 form."""
        ...
