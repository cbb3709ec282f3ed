"""Sending: which devices a message goes to, fetches it needs, encryption for each device
(OMEMO 2 or legacy), empty messages and manual session replacement."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from . import registry
from .backend import OmemoBackend, Sealed
from .core import EngineCore, _bare, _Plan
from .errors import (
    InvalidKey,
    InvalidSignature,
    UsageError,
)
from .model import Bundle, EncryptedElement, KeyElement
from .registry import BACKENDS, NAMESPACES, by_flavour
from .results import (
    DeviceOutcome,
    Effect,
    EncryptResult,
    FetchBundle,
    FetchDeviceList,
    Outcome,
)
from .session import PeerBundle
from .session import initiate as initiate_session
from .sessions import SessionSet, session_key
from .trust import TrustLevel

__all__ = ["Sending"]

_QUARANTINED = "the keystore was restored from an older copy: replace this session (replace_session)"


class Sending(EngineCore):
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

    def _plan(self, jids: list[str], ts: float) -> tuple[list[_Plan], list[DeviceOutcome], list[Effect], list[str]]:
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
                backend = by_flavour(fname)
                ns = backend.namespace
                sset = self._sessions.load(session_key(fname, jid, dev))
                cur = sset.current
                peer_bundle = None
                if cur is not None and cur.quarantined:
                    outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.FAILED, iks.get(dev), _QUARANTINED))
                    continue
                # trust is decided on the key the session was built with; a session of another
                # key than the one the device is bound to is not used (a fresh one is built)
                cur_ik = None if cur is None else backend.flavour.identity_to_x25519(cur.session.peer_ik)
                known = iks.get(dev)
                if (
                    cur is not None
                    and cur_ik is not None
                    and (known is None or known == cur_ik)
                    and cur.session.ratchet.can_send
                    and not self._stale(cur, ts)
                ):
                    ik = cur_ik
                else:
                    stored = self._devices.bundle(fname, jid, dev)
                    if stored is None or (cur is not None and stored.fetched <= cur.created):
                        effects.append(FetchBundle(jid, dev, ns))
                        refused = self._refused.get((jid, dev, ns))
                        outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.NO_BUNDLE, error=refused))
                        continue
                    ik = backend.flavour.identity_to_x25519(stored.bundle.ik)  # checked on arrival
                    peer_bundle = self._pick_prekey(stored.bundle)
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

        # payloads, one per namespace in use (in the registry's order)
        sealed: dict[str, Sealed] = {}
        in_use = {p[2].namespace for p in plans}
        for b in BACKENDS:
            if b.namespace not in in_use:
                continue
            why = b.cannot_carry(body, content)
            if why is None:
                sealed[b.namespace] = b.seal(body, content, own.jid, to, now, self._rng)
                continue
            for p in [p for p in plans if p[2] is b]:
                outcomes.append(DeviceOutcome(p[0], p[1], b.namespace, Outcome.FAILED, p[5], why))
            plans = [p for p in plans if p[2] is not b]

        keys: dict[str, list[KeyElement]] = {b.namespace: [] for b in BACKENDS}
        for_others: set[str] = set()  # namespaces in which a recipient other than us has a key
        for jid, dev, backend, sset, peer_bundle, ik in plans:
            ns = backend.namespace
            if peer_bundle is not None:
                try:
                    self._start_session(backend, jid, dev, sset, peer_bundle, ik)
                except (InvalidKey, InvalidSignature) as e:
                    outcomes.append(DeviceOutcome(jid, dev, backend.namespace, Outcome.FAILED, ik, str(e)))
                    continue
            entry = sset.entries[0]
            data, kex = entry.session.encrypt(sealed[ns].key_material)
            self._sessions.save(sset)
            keys[ns].append(backend.key_element(dev, data, kex, jid))
            if jid != own.jid:
                for_others.add(ns)
            outcomes.append(DeviceOutcome(jid, dev, backend.namespace, Outcome.ENCRYPTED, ik))

        # one stanza to the addressee with every namespace a recipient reads; what only our own
        # devices read goes to our own bare JID (never to the addressee, whose client would show
        # an element it cannot read as the fallback text); a note to ourselves carries it all
        elements: dict[str, ET.Element] = {}
        own_copy: dict[str, ET.Element] = {}
        for b in BACKENDS:
            ks = keys[b.namespace]
            if ks:
                s = sealed[b.namespace]
                enc = EncryptedElement(b.flavour.name, own.device_id, tuple(ks), s.ciphertext, s.iv)
                target = elements if b.namespace in for_others or to == own.jid else own_copy
                target[b.namespace] = b.build_encrypted(enc)
        return EncryptResult(elements, tuple(outcomes), tuple(effects), (), own_copy)

    def _pick_prekey(self, bundle: Bundle) -> PeerBundle:
        """The bundle with one of its one-time prekeys, chosen at random (a stored bundle was
        checked on arrival: it holds at least the minimum number of valid prekeys).

        Prekey id 0 is taken only when it is the only one: Converse.js publishes ids 0-99, but
        its libomemo loads a key exchange's one-time prekey only when the id is truthy, so a
        first message built on prekey 0 fails there with "Bad MAC" (issue 20)."""
        ids = sorted(bundle.prekeys)
        if len(ids) > 1 and ids[0] == 0:
            ids = ids[1:]
        pk_id = ids[int.from_bytes(self._rng(4), "big") % len(ids)]
        b = bundle
        return PeerBundle(b.ik, b.spk_id, b.spk, b.spk_signature, pk_id, b.prekeys[pk_id])

    def _start_session(
        self, backend: OmemoBackend, jid: str, device_id: int, sset: SessionSet, peer_bundle: PeerBundle, ik: bytes
    ) -> None:
        """Active X3DH with a bundle whose signature was verified on arrival; the new session
        becomes current and the device is bound to the identity key it showed."""
        session = initiate_session(backend.flavour, self._own.identity, peer_bundle, self._rng, signature_verified=True)
        sset.entries.insert(0, self._sessions.new_entry(session, self._now().timestamp()))
        self._devices.set_identity(jid, device_id, ik)

    def empty_message(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """An empty message to one device (no trust needed), building a session from its stored
        bundle when there is none: completes a manual session replacement."""
        be = registry.backend(namespace)
        jid = _bare(jid)

        def op() -> list[Effect]:
            sset = self._sessions.load(session_key(be.flavour.name, jid, device_id))
            cur = sset.current
            if cur is not None and cur.quarantined:
                raise UsageError(_QUARANTINED)
            if cur is None or not cur.session.ratchet.can_send:
                stored = self._devices.bundle(be.flavour.name, jid, device_id)
                if stored is None:
                    return [FetchBundle(jid, device_id, namespace)]
                ik = be.flavour.identity_to_x25519(stored.bundle.ik)
                self._start_session(be, jid, device_id, sset, self._pick_prekey(stored.bundle), ik)
            return [self._empty(be, jid, device_id, sset, "session-replacement")]

        return self._run(op)

    def replace_session(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """Manual session replacement (XEP-0384 business rule): forget the current session with
        that device and its stored bundle; returns the bundle fetch.  Once the bundle is in,
        :meth:`empty_message` (or the next :meth:`encrypt`) starts a fresh session."""
        be = registry.backend(namespace)
        jid = _bare(jid)

        def op() -> list[Effect]:
            key = session_key(be.flavour.name, jid, device_id)
            sset = self._sessions.load(key)
            if sset.entries:
                for entry in sset.entries:
                    entry.skipped.clear()
                self.storage.delete("session", key)
            self.storage.delete("bundle", key)
            return [FetchBundle(jid, device_id, namespace)]

        return self._run(op)
