"""Plain values exchanged between the XML codecs and the engine.  Keys are kept in the wire
form of their flavour (see :class:`~e2ee.flavour.Flavour`); nothing here is verified yet."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DeviceEntry", "DeviceList", "Bundle", "KeyElement", "EncryptedElement"]


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One ``<device/>`` of a device list."""

    device_id: int
    label: str | None = None  #: OMEMO 2 only; shown only once ``label_signature`` verifies
    label_signature: bytes | None = None  #: OMEMO 2 ``labelsig``


@dataclass(frozen=True, slots=True)
class DeviceList:
    """A device list as published in one namespace (``flavour`` is ``"omemo2"`` or ``"legacy"``)."""

    flavour: str
    devices: tuple[DeviceEntry, ...] = ()

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(d.device_id for d in self.devices)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A device's published bundle; every key in the wire form of its flavour."""

    flavour: str
    ik: bytes
    spk_id: int
    spk: bytes
    spk_signature: bytes
    prekeys: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: built per message, and frozen construction costs ~6x
class KeyElement:
    """One ``<key/>`` of an encrypted message header."""

    rid: int
    data: bytes  #: the ratchet message or key exchange, base64-decoded
    kex: bool  #: OMEMO 2 ``kex``, legacy ``prekey``
    jid: str | None = None  #: OMEMO 2: the ``<keys jid>`` it is grouped under; legacy: None


@dataclass(slots=True)  # not frozen: built per message, and frozen construction costs ~6x
class EncryptedElement:
    """An ``<encrypted/>`` element of either namespace."""

    flavour: str
    sid: int
    keys: tuple[KeyElement, ...]
    payload: bytes | None  #: None for empty messages / key transport elements
    iv: bytes | None = None  #: legacy only
