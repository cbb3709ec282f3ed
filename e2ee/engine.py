"""The OMEMO engine: what a client embeds.  Synchronous and free of I/O.

Inputs go in (device lists, bundles, received ``<encrypted/>`` elements, the user's trust
decisions); values come out (``<encrypted/>`` elements to send, decrypted results) together with
*effects* the embedder carries out (:mod:`e2ee.results`).  Every operation runs in one storage
transaction and persists the advanced ratchets before it returns a ciphertext; an operation
that fails leaves the stored bytes unchanged.

One identity key and one device id serve both namespaces.  Each recipient device gets OMEMO 2
when it is on the account's OMEMO 2 device list, else legacy OMEMO.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Callable, TypeVar

from . import jsonrec
from .devices import DeviceRegistry
from .errors import (
    CorruptState,
    DecryptionFailed,
    DuplicateMessage,
    E2EEError,
    InvalidKey,
    InvalidSignature,
    MalformedMessage,
    NoSession,
    SenderDistrusted,
    UsageError,
)
from .flavour import Flavour
from .legacy import payload as legacy_payload
from .legacy import wire as legacy_wire
from .legacy import xml as legacy_xml
from .limits import HEARTBEAT_THRESHOLD, MAX_XML_DEPTH, MAX_XML_ELEMENTS, STALE_SESSION_AGE
from .model import DeviceEntry, DeviceList, EncryptedElement, KeyElement
from .omemo2 import envelope as sce
from .omemo2 import payload as omemo2_payload
from .omemo2 import wire as omemo2_wire
from .omemo2 import xml as omemo2_xml
from .own import OwnDevice
from .primitives import ed25519_sign, ed25519_verify
from .results import (
    DecryptResult,
    Decrypted,
    DeviceOutcome,
    Duplicate,
    Effect,
    EmptyMessage,
    EncryptResult,
    FetchBundle,
    FetchDeviceList,
    NotForThisDevice,
    Outcome,
    Publish,
    SendMessage,
    UntrustedIdentity,
)
from .rng import Clock, Random, system_clock, system_random
from .session import PeerBundle, Session
from .session import accept as accept_session
from .session import initiate as initiate_session
from .sessions import Entry, SessionSet, SessionStore, session_key
from .storage import Storage
from .trust import TrustLevel, TrustPolicy, TrustStore
from .xmlsafe import check_element

__all__ = ["Engine", "NAMESPACES", "DeviceInfo"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Backend:
    flavour: Flavour
    xml: ModuleType
    namespace: str
    device_list_node: str


_OMEMO2 = _Backend(omemo2_wire.OMEMO2, omemo2_xml, omemo2_wire.NAMESPACE, "urn:xmpp:omemo:2:devices")
_LEGACY = _Backend(legacy_wire.LEGACY, legacy_xml, legacy_wire.NAMESPACE, "eu.siacs.conversations.axolotl.devicelist")
_BY_NAME = {"omemo2": _OMEMO2, "legacy": _LEGACY}
_BY_NS = {_OMEMO2.namespace: _OMEMO2, _LEGACY.namespace: _LEGACY}

#: The namespaces the engine speaks, preferred first.
NAMESPACES: tuple[str, ...] = (_OMEMO2.namespace, _LEGACY.namespace)

_OPEN = ("pubsub#access_model", "open")
_BODY = "{jabber:client}body"


def _bare(jid: str) -> str:
    key = sce.bare_jid_key(jid)
    if not key:
        raise UsageError(f"not a JID: {jid!r}")
    return key


def _backend(namespace: str) -> _Backend:
    b = _BY_NS.get(namespace)
    if b is None:
        raise UsageError(f"unknown namespace {namespace!r}")
    return b


@dataclass(slots=True)
class _CatchUp:
    """Whether an archive catch-up is running, and the sessions built during it (answered
    with an empty message when it ends)."""

    catching_up: bool
    pending: list[tuple[str, str, int]]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What we know about one device of an account."""

    device_id: int
    namespaces: tuple[str, ...]  #: lists it is on (empty: inactive)
    identity_key: bytes | None
    trust: TrustLevel | None
    label: str | None  #: OMEMO 2 label, only when its signature verified


_Plan = tuple[str, int, _Backend, SessionSet, PeerBundle | None, bytes]


class Engine:
    """One device of one account.  Build it with :meth:`create` (new identity) or by passing a
    storage that already holds one."""

    def __init__(
        self,
        storage: Storage,
        *,
        rng: Random = system_random,
        clock: Clock = system_clock,
        policy: TrustPolicy = TrustPolicy.BTBV,
    ) -> None:
        self.storage = storage
        self._rng = rng
        self._clock = clock
        self._own = OwnDevice(storage, rng)
        self.trust = TrustStore(storage, policy)
        self._devices = DeviceRegistry(storage)
        self._sessions = SessionStore(storage, self._own.identity)

    @classmethod
    def create(
        cls,
        storage: Storage,
        jid: str,
        own_device_lists: Iterable[DeviceList] = (),
        *,
        label: str | None = None,
        rng: Random = system_random,
        clock: Clock = system_clock,
        policy: TrustPolicy = TrustPolicy.BTBV,
    ) -> Engine:
        """A new identity for ``jid``.  Pass our account's current device lists (fetch both
        namespaces first): the device id is chosen outside them, and they are kept so that
        :meth:`publish` adds us without dropping the other devices."""
        jid = _bare(jid)
        lists = list(own_device_lists)
        taken = set().union(*(dl.ids for dl in lists)) if lists else set()
        with storage.transaction():
            OwnDevice.create(storage, jid, taken, clock(), rng, label)
            registry = DeviceRegistry(storage)
            for dl in lists:
                registry.set_list(jid, dl)
        return cls(storage, rng=rng, clock=clock, policy=policy)

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

    # ------------------------------------------------------------------ publishing

    def _device_list_effect(self, backend: _Backend) -> Publish:
        own = self._own
        current = self._devices.lists(own.jid).get(backend.flavour.name)
        others = [d for d in current.devices if d.device_id != own.device_id] if current else []
        label, sig = own.label, None
        if label is not None and backend is _OMEMO2:
            sig = ed25519_sign(own.identity.seed, label.encode(), own.identity.ed25519_public)
        if backend is _LEGACY:
            label = None
        entries = tuple(others) + (DeviceEntry(own.device_id, label, sig),)
        dl = DeviceList(backend.flavour.name, entries)
        self._devices.set_list(own.jid, dl)
        return Publish(backend.device_list_node, "current", backend.xml.build_device_list(dl), (_OPEN,))

    def _bundle_effects(self) -> list[Effect]:
        own = self._own
        o2 = omemo2_xml.build_bundle(own.bundle(_OMEMO2.flavour))
        lg = legacy_xml.build_bundle(own.bundle(_LEGACY.flavour))
        return [
            Publish("urn:xmpp:omemo:2:bundles", str(own.device_id), o2, (("pubsub#max_items", "max"), _OPEN)),
            Publish(f"eu.siacs.conversations.axolotl.bundles:{own.device_id}", "current", lg, (_OPEN,)),
        ]

    def publish(self) -> list[Effect]:
        """Everything to announce this device: both device lists (ours added to what the
        account lists) and both bundles.  Rotates the signed prekey first when it is due."""

        def op() -> list[Effect]:
            self._own.rotate_signed_prekey(self._now())
            self._own.refill_prekeys()
            return [self._device_list_effect(_OMEMO2), self._device_list_effect(_LEGACY), *self._bundle_effects()]

        return self._run(op)

    def maintenance(self) -> list[Effect]:
        """Periodic upkeep (call e.g. daily and at connect): signed-prekey rotation, dropping a
        previous signed prekey whose grace period ended, prekey refill.  Returns the bundle
        publications needed, if any."""

        def op() -> list[Effect]:
            changed = self._own.rotate_signed_prekey(self._now())
            changed = self._own.refill_prekeys() or changed
            return self._bundle_effects() if changed else []

        return self._run(op)

    # ------------------------------------------------------------------ inputs from PEP

    def on_device_list(self, jid: str, namespace: str, element: ET.Element | None) -> list[Effect]:
        """A device list arrived (PEP push or fetch result) for the bare JID the event came
        from (the embedder must take it from the stanza's ``from``; no ``from`` means our own
        account).  ``element`` is the item's payload, or None when the node or item does not
        exist.  Returns a republication when our own list lacks this device."""
        backend = _backend(namespace)
        jid = _bare(jid)
        if element is None:
            dl = DeviceList(backend.flavour.name, ())
        else:
            check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
            dl = backend.xml.parse_device_list(element)

        def op() -> list[Effect]:
            self._devices.set_list(jid, dl)
            if jid == self._own.jid and self._own.device_id not in dl.ids:
                return [self._device_list_effect(backend)]
            return []

        return self._run(op)

    def on_bundle(self, jid: str, device_id: int, namespace: str, element: ET.Element) -> list[Effect]:
        """A bundle arrived.  It is checked (structure, keys, signed-prekey signature) and kept
        for the next :meth:`encrypt`.  Raises :class:`~e2ee.errors.InvalidBundle`,
        :class:`~e2ee.errors.InvalidKey` or :class:`~e2ee.errors.InvalidSignature`; nothing is
        stored then."""
        backend = _backend(namespace)
        jid = _bare(jid)
        flavour = backend.flavour
        bundle = backend.xml.parse_bundle(element)
        ik = flavour.identity_to_x25519(bundle.ik)  # a bad key is InvalidKey, whatever the signature
        spk = flavour.decode_public(bundle.spk)
        for pk in bundle.prekeys.values():
            flavour.decode_public(pk)
        flavour.verify_prekey(bundle.ik, spk, bundle.spk_signature)

        def op() -> list[Effect]:
            known = self._devices.identity(jid, device_id)
            self.trust.first_sight(jid, ik, replaces_known_key=known is not None and known != ik)
            self._devices.set_bundle(jid, device_id, bundle, self._now().timestamp())
            return []

        return self._run(op)

    # ------------------------------------------------------------------ encryption

    def _stale(self, entry: Entry, now: float) -> bool:
        s = entry.session
        return s.initiator and not s.confirmed and now - entry.created > STALE_SESSION_AGE.total_seconds()

    def encrypt(
        self,
        recipients: Sequence[str],
        body: str | None = None,
        *,
        content: Sequence[ET.Element] = (),
        to: str | None = None,
    ) -> EncryptResult:
        """Encrypt a message for every active, trusted device of each recipient and of our own
        account (except this device).

        OMEMO 2 devices get an XEP-0420 envelope holding ``<body xmlns='jabber:client'>`` (when
        ``body`` is given) and ``content``; legacy devices get ``body`` only.  ``to`` is the
        envelope's ``<to>`` (the room for group chats); by default the single recipient.
        When some recipient has no eligible device, nothing is encrypted (``result.ready`` is
        False) and the result says why, with the fetches that may help."""
        if not recipients:
            raise UsageError("no recipients")
        if body is None and not content:
            raise UsageError("nothing to encrypt")
        own = self._own
        jids = list(dict.fromkeys(_bare(j) for j in recipients))
        if to is None:
            others = [j for j in jids if j != own.jid]
            if len(others) > 1:
                raise UsageError("several recipients: pass to= (the room)")
            to = others[0] if others else own.jid
        if own.jid not in jids:
            jids.append(own.jid)
        return self._run(lambda: self._encrypt(jids, body, content, _bare(to)))

    def prepare(self, recipients: Sequence[str]) -> list[Effect]:
        """The fetches (device lists, bundles) that :meth:`encrypt` would ask for now, without
        encrypting anything.  Run them and feed the answers in before encrypting, so that the
        message reaches every device that can be reached."""
        own = self._own
        jids = list(dict.fromkeys(_bare(j) for j in recipients))
        if own.jid not in jids:
            jids.append(own.jid)
        return self._run(lambda: list(dict.fromkeys(self._plan(jids, self._now().timestamp())[2])))

    def _plan(
        self, jids: list[str], ts: float
    ) -> tuple[list[_Plan], list[DeviceOutcome], list[Effect], list[str]]:
        own = self._own
        outcomes: list[DeviceOutcome] = []
        effects: list[Effect] = []
        unreachable: list[str] = []
        plans: list[_Plan] = []
        for jid in jids:
            view = self._devices.view(jid)
            active = view.active
            if active is None:
                effects += [FetchDeviceList(jid, ns) for ns in NAMESPACES]
                outcomes.append(DeviceOutcome(jid, 0, "", Outcome.NO_DEVICE_LIST))
                if jid != own.jid:
                    unreachable.append(jid)
                continue
            levels = self.trust.levels_view(jid)
            iks = view.iks
            eligible = 0
            for dev, fname in sorted(active.items()):
                if jid == own.jid and dev == own.device_id:
                    continue
                backend = _BY_NAME[fname]
                ns = backend.namespace
                sset = self._sessions.load(session_key(fname, jid, dev))
                cur = sset.current
                peer_bundle = None
                if cur is not None and cur.session.ratchet.can_send and not self._stale(cur, ts):
                    known = iks.get(dev)
                    ik = known if known is not None else backend.flavour.identity_to_x25519(cur.session.peer_ik)
                else:
                    stored = self._devices.bundle(fname, jid, dev)
                    if stored is None or (cur is not None and stored.fetched <= cur.created):
                        effects.append(FetchBundle(jid, dev, ns))
                        outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.NO_BUNDLE))
                        continue
                    b = stored.bundle
                    try:
                        ik = backend.flavour.identity_to_x25519(b.ik)
                        ids = sorted(b.prekeys)
                        pk_id = ids[int.from_bytes(self._rng(4), "big") % len(ids)]
                    except (E2EEError, ZeroDivisionError) as e:
                        outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.FAILED, error=str(e)))
                        continue
                    peer_bundle = PeerBundle(b.ik, b.spk_id, b.spk, b.spk_signature, pk_id, b.prekeys[pk_id])
                level = levels.get(ik, TrustLevel.UNDECIDED)
                if level is TrustLevel.DISTRUSTED:
                    outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.DISTRUSTED, ik))
                    continue
                if not level.trusted:
                    outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.UNDECIDED, ik))
                    continue
                plans.append((jid, dev, backend, sset, peer_bundle, ik))
                eligible += 1
            if not eligible and jid != own.jid:
                unreachable.append(jid)
        return plans, outcomes, effects, unreachable

    def _encrypt(self, jids: list[str], body: str | None, content: Sequence[ET.Element], to: str) -> EncryptResult:
        own = self._own
        now = self._now()
        plans, outcomes, effects, unreachable = self._plan(jids, now.timestamp())
        if unreachable or not plans:
            outcomes += [DeviceOutcome(p[0], p[1], p[2].namespace, Outcome.NOT_SENT, p[5]) for p in plans]
            return EncryptResult({}, tuple(outcomes), tuple(effects), tuple(unreachable))

        # payloads, one per namespace in use
        key_material: dict[str, bytes] = {}
        payloads: dict[str, tuple[bytes, bytes | None]] = {}
        names = {p[2].flavour.name for p in plans}
        if "omemo2" in names:
            elems = list(content)
            if body is not None:
                b_elem = ET.Element(_BODY)
                b_elem.text = body
                elems.insert(0, b_elem)
            env = sce.build(elems, own.jid, to, now, self._rng)
            ct, km = omemo2_payload.encrypt(env, self._rng)
            key_material["omemo2"], payloads["omemo2"] = km, (ct, None)
        if "legacy" in names:
            if body is None:
                for p in [p for p in plans if p[2] is _LEGACY]:
                    outcomes.append(DeviceOutcome(p[0], p[1], p[2].namespace, Outcome.FAILED, p[5], "legacy OMEMO carries only a body"))
                plans = [p for p in plans if p[2] is not _LEGACY]
            else:
                ct, iv, km = legacy_payload.encrypt(body.encode(), self._rng)
                key_material["legacy"], payloads["legacy"] = km, (ct, iv)

        keys: dict[str, list[KeyElement]] = {"omemo2": [], "legacy": []}
        for jid, dev, backend, sset, peer_bundle, ik in plans:
            fname = backend.flavour.name
            if peer_bundle is not None:
                try:
                    session = initiate_session(
                        backend.flavour, own.identity, peer_bundle, self._rng, signature_verified=True
                    )
                except (InvalidKey, InvalidSignature) as e:
                    outcomes.append(DeviceOutcome(jid, dev, backend.namespace, Outcome.FAILED, ik, str(e)))
                    continue
                sset.entries.insert(0, self._sessions.new_entry(session, now.timestamp()))
                self._devices.set_identity(jid, dev, ik)
            entry = sset.entries[0]
            data, kex = entry.session.encrypt(key_material[fname])
            self._sessions.save(sset)
            keys[fname].append(KeyElement(dev, data, kex, jid if backend is _OMEMO2 else None))
            outcomes.append(DeviceOutcome(jid, dev, backend.namespace, Outcome.ENCRYPTED, ik))

        elements: dict[str, ET.Element] = {}
        for fname, ks in keys.items():
            if ks:
                backend = _BY_NAME[fname]
                ct, payload_iv = payloads[fname]
                enc = EncryptedElement(fname, own.device_id, tuple(ks), ct, payload_iv)
                elements[backend.namespace] = backend.xml.build_encrypted(enc)
        return EncryptResult(elements, tuple(outcomes), tuple(effects), ())

    # ------------------------------------------------------------------ empty messages

    def _empty(self, backend: _Backend, jid: str, dev: int, sset: SessionSet, reason: str) -> SendMessage:
        """Encrypt an empty message on the current session (which is saved)."""
        entry = sset.entries[0]
        iv = None
        if backend is _OMEMO2:
            km = omemo2_payload.EMPTY_KEY_MATERIAL
        else:
            iv, km = legacy_payload.key_transport(self._rng)
        data, kex = entry.session.encrypt(km)
        self._sessions.save(sset)
        key = KeyElement(dev, data, kex, jid if backend is _OMEMO2 else None)
        enc = EncryptedElement(backend.flavour.name, self._own.device_id, (key,), None, iv)
        return SendMessage(jid, dev, backend.namespace, backend.xml.build_encrypted(enc), reason)

    def empty_message(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """An empty message to one device (no trust needed), building a session from its stored
        bundle when there is none: completes a manual session replacement."""
        backend = _backend(namespace)
        jid = _bare(jid)

        def op() -> list[Effect]:
            sset = self._sessions.load(session_key(backend.flavour.name, jid, device_id))
            cur = sset.current
            if cur is None or not cur.session.ratchet.can_send:
                stored = self._devices.bundle(backend.flavour.name, jid, device_id)
                if stored is None:
                    return [FetchBundle(jid, device_id, namespace)]
                b = stored.bundle
                ids = sorted(b.prekeys)
                pk_id = ids[int.from_bytes(self._rng(4), "big") % len(ids)]
                pb = PeerBundle(b.ik, b.spk_id, b.spk, b.spk_signature, pk_id, b.prekeys[pk_id])
                session = initiate_session(backend.flavour, self._own.identity, pb, self._rng, signature_verified=True)
                sset.entries.insert(0, self._sessions.new_entry(session, self._now().timestamp()))
                self._devices.set_identity(jid, device_id, backend.flavour.identity_to_x25519(b.ik))
            return [self._empty(backend, jid, device_id, sset, "session-replacement")]

        return self._run(op)

    def replace_session(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """Manual session replacement (XEP-0384 business rule): forget the current session with
        that device and its stored bundle; returns the bundle fetch.  Once the bundle is in,
        :meth:`empty_message` (or the next :meth:`encrypt`) starts a fresh session."""
        backend = _backend(namespace)
        jid = _bare(jid)

        def op() -> list[Effect]:
            key = session_key(backend.flavour.name, jid, device_id)
            sset = self._sessions.load(key)
            if sset.entries:
                for entry in sset.entries:
                    entry.skipped.clear()
                self.storage.delete("session", key)
            self.storage.delete("bundle", key)
            return [FetchBundle(jid, device_id, namespace)]

        return self._run(op)

    # ------------------------------------------------------------------ decryption

    def decrypt(
        self,
        element: ET.Element,
        sender: str,
        *,
        to: str | None = None,
        timestamp: datetime | None = None,
        require_to: bool = False,
    ) -> DecryptResult:
        """Decrypt a received ``<encrypted/>`` of either namespace.

        ``sender`` is the bare JID the message is from (for group chats: the occupant's real
        JID); ``to`` the stanza's bare ``to`` (checked against the OMEMO 2 ``<to>`` affix when
        given; ``require_to`` for group chats); ``timestamp`` the delay stamp or receive time
        (the ``<time>`` affix is compared with it).  Returns a result value; raises a
        :class:`~e2ee.errors.PeerError` for forged, garbled or refused input, with the stored
        state unchanged."""
        backend = _BY_NS.get(element.tag[1:].partition("}")[0] if isinstance(element.tag, str) else "")
        if backend is None:
            raise MalformedMessage(f"not an OMEMO element: {element.tag!r}")
        check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
        enc: EncryptedElement = backend.xml.parse_encrypted(element)
        sender = _bare(sender)
        own = self._own
        ns = backend.namespace
        if sender == own.jid and enc.sid == own.device_id:
            return NotForThisDevice(sender, enc.sid, ns, reflection=True)
        mine = [k for k in enc.keys if k.rid == own.device_id and (k.jid is None or sce.bare_jid_key(k.jid) == own.jid)]
        if not mine:
            return NotForThisDevice(sender, enc.sid, ns, reflection=False)
        error: E2EEError | None = None
        for key in mine:  # legacy: the same rid may appear for several accounts
            try:
                return self._run(lambda: self._decrypt_key(backend, enc, key, sender, to, timestamp, require_to))
            except E2EEError as e:
                error = e
        assert error is not None
        raise error

    def _decrypt_key(
        self,
        backend: _Backend,
        enc: EncryptedElement,
        key: KeyElement,
        sender: str,
        to: str | None,
        timestamp: datetime | None,
        require_to: bool,
    ) -> DecryptResult:
        flavour = backend.flavour
        ns = backend.namespace
        own = self._own
        now = self._now()
        dev = enc.sid
        sset = self._sessions.load(session_key(flavour.name, sender, dev))
        view = self._devices.view(sender)  # read once; the lists do not change below
        known_ik = view.iks.get(dev)
        effects: list[Effect] = []
        new_kex = None
        level: TrustLevel | None = None
        if key.kex:
            kex = flavour.parse_key_exchange(key.data)
            ik = flavour.identity_to_x25519(kex.ik)
            entry = next((e for e in sset.entries if e.session.same_key_exchange(kex)), None)
            if entry is not None:
                self._refuse_distrusted(sender, ik)
                try:
                    km = entry.session.decrypt(kex.message, self._rng)
                except DuplicateMessage:
                    return Duplicate(sender, dev, ns)
                self._promote(sset, entry)
            else:
                if known_ik is not None and known_ik != ik:
                    level = self.trust.level(sender, ik)
                    if level is None or not level.trusted:
                        if level is TrustLevel.DISTRUSTED:
                            raise SenderDistrusted("the sender's identity key is distrusted")
                        return UntrustedIdentity(sender, dev, ns, ik, known_ik)
                self._refuse_distrusted(sender, ik)
                ek = kex.ek
                session, km = accept_session(
                    flavour,
                    own.identity,
                    kex,
                    lambda spk_id: own.signed_prekey_private(spk_id, now),
                    lambda pk_id: own.prekey_for_exchange(pk_id, ek),
                    self._rng,
                )
                entry = self._sessions.new_entry(session, now.timestamp())
                sset.entries.insert(0, entry)
                new_kex = kex
        else:
            if not sset.entries:
                raise NoSession(f"no session with device {dev}")
            if known_ik is not None:
                level = self.trust.level(sender, known_ik)
                if level is TrustLevel.DISTRUSTED:
                    raise SenderDistrusted("the sender's identity key is distrusted")
            entry, km = self._decrypt_message(sset, flavour, key.data)
            if entry is None:
                return Duplicate(sender, dev, ns)
            if known_ik is not None:
                ik = known_ik
            else:
                ik = flavour.identity_to_x25519(entry.session.peer_ik)
                self._refuse_distrusted(sender, ik)

        # the payload: nothing is stored unless it decrypts too
        result: DecryptResult
        if enc.payload is None:
            if backend is _OMEMO2 and len(km) != 32:
                raise MalformedMessage("an empty OMEMO 2 message carries 32 bytes of key material")
            result = EmptyMessage(sender, dev, ns)
        else:
            if level is None:
                level = self.trust.first_sight(sender, ik, replaces_known_key=known_ik is not None and known_ik != ik)
            result = self._open_payload(backend, enc, km, sender, dev, level, ik, to, timestamp or now, require_to)

        # commit
        if new_kex is not None:
            state = self._state()
            own.consume_prekey(new_kex.pk_id, new_kex.ek, keep=state.catching_up)
            self._devices.set_identity(sender, dev, ik)
            self.trust.first_sight(sender, ik, replaces_known_key=known_ik is not None and known_ik != ik)
            effects += self._bundle_effects()
            if state.catching_up:
                state.pending.append((flavour.name, sender, dev))
                self._put_state(state)
                self._sessions.save(sset)
            else:
                effects.append(self._empty(backend, sender, dev, sset, "key-exchange-answer"))
        else:
            ratchet = entry.session.ratchet
            if ratchet.nr > HEARTBEAT_THRESHOLD and ratchet.ns == 0 and entry is sset.entries[0]:
                effects.append(self._empty(backend, sender, dev, sset, "heartbeat"))
            else:
                self._sessions.save(sset)
        if view.active is None or dev not in view.active:
            effects += [FetchDeviceList(sender, n) for n in NAMESPACES]
        if effects:
            result = _with_effects(result, effects)
        return result

    def _refuse_distrusted(self, jid: str, ik: bytes | None) -> None:
        if ik is not None and self.trust.level(jid, ik) is TrustLevel.DISTRUSTED:
            raise SenderDistrusted("the sender's identity key is distrusted")

    def _promote(self, sset: SessionSet, entry: Entry) -> None:
        if sset.entries[0] is not entry:
            sset.entries.remove(entry)
            sset.entries.insert(0, entry)

    def _decrypt_message(self, sset: SessionSet, flavour: Flavour, data: bytes) -> tuple[Entry | None, bytes]:
        """Decrypt with the current session, else an archived one (which then becomes current).
        Returns (None, b"") for a duplicate."""
        msg = flavour.parse_message(data)
        first_error: DecryptionFailed | None = None
        for entry in sset.entries:
            session = entry.session
            try:
                km = session.ratchet.decrypt_parsed(msg, self._rng)
            except DuplicateMessage:
                return None, b""
            except DecryptionFailed as e:
                first_error = first_error or e
                continue
            session.confirmed = True
            self._promote(sset, entry)
            return entry, km
        assert first_error is not None
        raise first_error

    def _open_payload(
        self,
        backend: _Backend,
        enc: EncryptedElement,
        km: bytes,
        sender: str,
        dev: int,
        level: TrustLevel,
        ik: bytes,
        to: str | None,
        reference: datetime,
        require_to: bool,
    ) -> Decrypted:
        assert enc.payload is not None
        if backend is _OMEMO2:
            plaintext = omemo2_payload.decrypt(enc.payload, km)
            env = sce.parse(plaintext, sender, to, reference, require_to=require_to)
            body = next((c.text or "" for c in env.content if c.tag == _BODY), None)
            return Decrypted(sender, dev, backend.namespace, level, ik, body, env.content, env.time, env.time_suspicious)
        assert enc.iv is not None
        if len(km) == legacy_payload.KEY_LENGTH:  # the historical variant: tag in the payload
            raw = legacy_payload.decrypt_tag_in_payload(enc.payload, enc.iv, km)
        else:
            raw = legacy_payload.decrypt(enc.payload, enc.iv, km)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage("legacy body is not UTF-8") from None
        return Decrypted(sender, dev, backend.namespace, level, ik, text)

    # ------------------------------------------------------------------ catch-up

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

    def begin_catch_up(self) -> None:
        """Archive catch-up starts (at connect, before MAM and offline messages): used prekeys
        are kept (hidden) until :meth:`end_catch_up`, so that repeated key exchanges in the
        archive still decrypt, and key-exchange answers are postponed."""

        def op() -> None:
            state = self._state()
            state.catching_up = True
            self._put_state(state)

        self._run(op)

    def end_catch_up(self) -> list[Effect]:
        """Catch-up done: delete the prekeys kept back and answer every session built during
        it with an empty message."""

        def op() -> list[Effect]:
            state = self._state()
            self._own.delete_used_prekeys()
            effects: list[Effect] = []
            for fname, jid, dev in dict.fromkeys(state.pending):
                backend = _BY_NAME[fname]
                sset = self._sessions.load(session_key(fname, jid, dev))
                if sset.entries and sset.entries[0].session.ratchet.can_send:
                    effects.append(self._empty(backend, jid, dev, sset, "catch-up-end"))
            self._put_state(_CatchUp(False, []))
            return effects

        return self._run(op)

    @property
    def catching_up(self) -> bool:
        return self._state().catching_up

    # ------------------------------------------------------------------ trust and devices

    def set_trust(self, jid: str, identity_key: bytes, level: TrustLevel) -> None:
        """Record the user's decision for an identity key (X25519 form) of ``jid``."""
        jid = _bare(jid)
        self._run(lambda: self.trust.set(jid, identity_key, level))

    def devices(self, jid: str) -> list[DeviceInfo]:
        """Every device of ``jid`` we know of, active or not, with its trust."""
        jid = _bare(jid)
        lists = self._devices.lists(jid)
        iks = self._devices.identities(jid)
        levels = self.trust.levels(jid)
        ids: dict[int, list[str]] = {d: [] for d in iks}
        labels: dict[int, tuple[str, bytes]] = {}
        for fname in ("omemo2", "legacy"):
            dl = lists.get(fname)
            for d in dl.devices if dl else ():
                ids.setdefault(d.device_id, []).append(_BY_NAME[fname].namespace)
                if d.label is not None and d.label_signature is not None:
                    labels[d.device_id] = (d.label, d.label_signature)
        out = []
        for dev, nss in sorted(ids.items()):
            ik = iks.get(dev)
            if ik is None:
                for fname in ("omemo2", "legacy"):
                    stored = self._devices.bundle(fname, jid, dev)
                    if stored is not None:
                        ik = _BY_NAME[fname].flavour.identity_to_x25519(stored.bundle.ik)
                        break
            label = None
            if dev in labels and ik is not None:
                label = _verified_label(jid, dev, labels[dev], self._devices)
            out.append(DeviceInfo(dev, tuple(nss), ik, levels.get(ik) if ik else None, label))
        return out


def _verified_label(jid: str, dev: int, label: tuple[str, bytes], registry: DeviceRegistry) -> str | None:
    """The label when its signature verifies with the device's Ed25519 identity key."""
    stored = registry.bundle("omemo2", jid, dev)
    if stored is None or not ed25519_verify(stored.bundle.ik, label[0].encode(), label[1]):
        return None
    return label[0]


def _with_effects(result: DecryptResult, effects: list[Effect]) -> DecryptResult:
    from dataclasses import replace

    return replace(result, effects=tuple(result.effects) + tuple(effects))
