"""The engine's shared core: storage, keys and caches, the two namespaces' backends, the
one-transaction-per-operation rule and the helpers sending and receiving both use."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from . import jsonrec
from .backend import OPEN_ACCESS, OmemoBackend
from .devices import DeviceRegistry
from .errors import (
    CorruptState,
    UsageError,
)
from .jid import bare_jid_key
from .limits import MAX_XML_DEPTH, MAX_XML_ELEMENTS, STALE_SESSION_AGE
from .model import DeviceList, EncryptedElement
from .nodes import LIST_ITEM_ID
from .own import OwnDevice
from .registry import BACKENDS, NAMESPACES, backend
from .results import (
    Effect,
    Publish,
    SendMessage,
)
from .rng import Clock, Random, system_clock, system_random
from .session import PeerBundle
from .sessions import Entry, SessionSet, SessionStore
from .storage import Storage
from .trust import TrustPolicy, TrustStore
from .xmlsafe import check_element

__all__ = ["EngineCore", "NAMESPACES", "parse_device_list"]

_T = TypeVar("_T")


_OPEN = OPEN_ACCESS


def _bare(jid: str) -> str:
    key = bare_jid_key(jid)
    if not key:
        raise UsageError(f"not a JID: {jid!r}")
    return key


def parse_device_list(namespace: str, element: ET.Element) -> DeviceList:
    """A device-list item payload of either namespace (for :meth:`Engine.create`); raises
    :class:`~e2ee.errors.MalformedMessage`."""
    check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
    return backend(namespace).parse_device_list(element)


@dataclass(slots=True)
class _CatchUp:
    """Whether an archive catch-up is running, and the sessions built during it (answered
    with an empty message when it ends)."""

    catching_up: bool
    pending: list[tuple[str, str, int]]


_Plan = tuple[str, int, OmemoBackend, SessionSet, PeerBundle | None, bytes]


class EngineCore:
    """State and helpers of one device's engine (see :class:`~e2ee.engine.Engine`)."""

    def __init__(
        self,
        storage: Storage,
        *,
        rng: Random = system_random,
        clock: Clock = system_clock,
        policy: TrustPolicy = TrustPolicy.BTBV,
        legacy_tag_in_payload: bool = False,
    ) -> None:
        self.storage = storage
        #: accept the historical legacy variant (16-byte key material, the GCM tag at the end
        #: of ``<payload/>``); off by default: no current sender produces it
        self.legacy_tag_in_payload = legacy_tag_in_payload
        self._rng = rng
        self._clock = clock
        self._own = OwnDevice(storage, rng)
        self.trust = TrustStore(storage, policy)
        self._devices = DeviceRegistry(storage)
        self._sessions = SessionStore(storage, self._own.identity)
        #: why the last bundle of (jid, device, namespace) was refused; in memory only (a
        #: refused bundle changes no stored byte), for the "not sent" sentence
        self._refused: dict[tuple[str, int, str], str] = {}

    # ------------------------------------------------------------------ identity

    @property
    def jid(self) -> str:
        return self._own.jid

    @property
    def device_id(self) -> int:
        return self._own.device_id

    @property
    def identity_key(self) -> bytes:
        """Our identity key in its X25519 form (what fingerprints show)."""
        return self._own.identity.x25519_public

    @property
    def identity_key_ed25519(self) -> bytes:
        """Our identity key in its Ed25519 form (what OMEMO 2 clients such as Converse.js and
        Kaidan show)."""
        return self._own.identity.ed25519_public

    @property
    def identity_sign_bit_set(self) -> bool:
        """Whether our identity's Ed25519 form has its sign bit set (identities made before
        issue 20): XEdDSA-only verifiers such as Converse.js then reject our bundles, and only a
        new identity -- a new device -- fixes it.  New identities never have it set."""
        return self._own.identity.sign_bit_set

    # ------------------------------------------------------------------ plumbing

    def _run(self, op: Callable[[], _T]) -> _T:
        """Run ``op`` in one transaction; on failure forget decoded sessions (they may hold
        changes that were rolled back)."""
        try:
            with self.storage.transaction():
                return op()
        except BaseException:
            self._sessions.forget_cache()
            raise

    def _now(self) -> datetime:
        return self._clock()

    def _device_list_effect(self, backend: OmemoBackend) -> Publish:
        own = self._own
        current = self._devices.lists(own.jid).get(backend.flavour.name)
        others = [d for d in current.devices if d.device_id != own.device_id] if current else []
        entries = (*others, backend.own_entry(own.identity, own.device_id, own.label))
        dl = DeviceList(backend.flavour.name, entries)
        self._devices.set_list(own.jid, dl)
        return Publish(backend.device_list_node, LIST_ITEM_ID, backend.build_device_list(dl), (_OPEN,))

    def _bundle_effects(self) -> list[Effect]:
        own = self._own
        dev = own.device_id
        bundles = own.bundles(tuple(b.flavour for b in BACKENDS))
        return [
            Publish(b.bundle_node(dev), b.bundle_publish_item(dev), b.build_bundle(bundle), b.bundle_publish_options)
            for b, bundle in zip(BACKENDS, bundles, strict=True)
        ]

    def _stale(self, entry: Entry, now: float) -> bool:
        s = entry.session
        return s.initiator and not s.confirmed and now - entry.created > STALE_SESSION_AGE.total_seconds()

    def _empty(self, backend: OmemoBackend, jid: str, dev: int, sset: SessionSet, reason: str) -> SendMessage:
        """Encrypt an empty message on the current session (which is saved)."""
        entry = sset.entries[0]
        km, iv = backend.empty_key_material(self._rng)
        data, kex = entry.session.encrypt(km)
        self._sessions.save(sset)
        key = backend.key_element(dev, data, kex, jid)
        enc = EncryptedElement(backend.flavour.name, self._own.device_id, (key,), None, iv)
        return SendMessage(jid, dev, backend.namespace, backend.build_encrypted(enc), reason)

    def _state(self) -> _CatchUp:
        raw = self.storage.get("own", "state")
        if raw is None:
            return _CatchUp(False, [])
        rec = jsonrec.load(raw, 1, "engine state")
        try:
            return _CatchUp(bool(rec["catching_up"]), [(str(f), str(j), int(d)) for f, j, d in rec["pending"]])
        except (KeyError, TypeError, ValueError):
            raise CorruptState("engine state is damaged") from None

    def _put_state(self, state: _CatchUp) -> None:
        rec = {"catching_up": state.catching_up, "pending": [list(p) for p in state.pending]}
        self.storage.put("own", "state", jsonrec.dump(1, rec))
