"""Sending over OMEMO: which devices a message goes to and the fetches it needs (the
:class:`SendPlan`, computed once per send), encryption for each device in its namespace, empty
messages and manual session replacement."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import registry
from .backend import OmemoBackend, Sealed
from .context import Context, bare
from .errors import InvalidKey, InvalidSignature, UsageError
from .limits import STALE_SESSION_AGE
from .model import Bundle, EncryptedElement, KeyElement
from .registry import BACKENDS, NAMESPACES, by_flavour
from .results import DeviceOutcome, Effect, EncryptResult, FetchBundle, FetchDeviceList, Outcome, SendMessage
from .session import PeerBundle
from .session import initiate as initiate_session
from .sessions import Entry, SessionSet, session_key
from .trust import TrustLevel

__all__ = ["OmemoSender", "SendPlan", "PlannedDevice", "empty_message"]

_QUARANTINED = "the keystore was restored from an older copy: replace this session (replace_session)"


@dataclass(slots=True)
class PlannedDevice:
    """A device a message will be encrypted for, with the session to use or the bundle to
    start one from."""

    jid: str
    device_id: int
    backend: OmemoBackend
    sessions: SessionSet
    bundle: PeerBundle | None  #: start a session from it first (None: use the current one)
    identity_key: bytes  #: X25519 form


@dataclass(slots=True)
class SendPlan:
    """Every device of the recipients and of our account, decided once for one send."""

    devices: list[PlannedDevice]
    outcomes: list[DeviceOutcome]
    effects: list[Effect]
    #: recipients other than our account without any eligible device
    unreachable: list[str]
    #: devices whose session this send already started (a plan serves several recipients)
    started: set[tuple[str, str, int]] = field(default_factory=set)

    def only(self, jids: Sequence[str]) -> SendPlan:
        """The part of the plan for ``jids`` (sharing sessions and :attr:`started`)."""
        keep = set(jids)
        return SendPlan(
            [d for d in self.devices if d.jid in keep],
            [o for o in self.outcomes if o.jid in keep],
            [e for e in self.effects if isinstance(e, (FetchDeviceList, FetchBundle)) and e.jid in keep],
            [j for j in self.unreachable if j in keep],
            self.started,
        )


def _stale(entry: Entry, now: float) -> bool:
    s = entry.session
    return s.initiator and not s.confirmed and now - entry.created > STALE_SESSION_AGE.total_seconds()


def empty_message(
    ctx: Context, backend: OmemoBackend, jid: str, dev: int, sset: SessionSet, reason: str
) -> SendMessage:
    """Encrypt an empty message on the current session (which is saved)."""
    entry = sset.entries[0]
    km, iv = backend.empty_key_material(ctx.rng)
    data, kex = entry.session.encrypt(km)
    ctx.sessions.save(sset)
    key = backend.key_element(dev, data, kex, jid)
    enc = EncryptedElement(backend.flavour.name, ctx.own.device_id, (key,), None, iv)
    return SendMessage(jid, dev, backend.namespace, backend.build_encrypted(enc), reason)


class OmemoSender:
    """OMEMO encryption for one device (see :class:`~e2ee.engine.Engine` for the documentation
    of the public calls)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def recipients(self, recipients: Sequence[str]) -> list[str]:
        """The bare recipients, each once, and our own account last (unless named)."""
        own = self._ctx.own.jid
        jids = list(dict.fromkeys(bare(j) for j in recipients))
        return jids if own in jids else [*jids, own]

    def encrypt(
        self,
        recipients: Sequence[str],
        body: str | None = None,
        *,
        content: Sequence[ET.Element] = (),
        to: str | None = None,
    ) -> EncryptResult:
        """Encrypt one message for every active, trusted device of each recipient and of our own
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
        own = self._ctx.own.jid
        jids = self.recipients(recipients)
        if to is None:
            others = [j for j in jids if j != own]
            if len(others) > 1:
                raise UsageError("several recipients: pass to= (the room)")
            to = others[0] if others else own
        to = bare(to)
        return self._ctx.run(lambda: self.encrypt_planned(self.plan(jids), body, content, to))

    def prepare(self, recipients: Sequence[str]) -> list[Effect]:
        """The fetches (device lists, bundles) :meth:`encrypt` would ask for now."""
        jids = self.recipients(recipients)
        return self._ctx.run(lambda: list(dict.fromkeys(self.plan(jids).effects)))

    def plan(self, jids: list[str]) -> SendPlan:
        """Decide every device of ``jids`` (bare, our account included): use, fetch or skip."""
        ctx = self._ctx
        own = ctx.own
        ts = ctx.now().timestamp()
        plan = SendPlan([], [], [], [])
        outcomes, effects = plan.outcomes, plan.effects
        for jid in jids:
            view = ctx.devices.view(jid)
            active = view.active
            if active is None:
                effects += [FetchDeviceList(jid, ns) for ns in NAMESPACES]
                outcomes.append(DeviceOutcome(jid, 0, "", Outcome.NO_DEVICE_LIST))
                if jid != own.jid:
                    plan.unreachable.append(jid)
                continue
            levels = ctx.trust.levels_view(jid)
            iks = view.iks
            eligible = 0
            for dev, fname in sorted(active.items()):
                if jid == own.jid and dev == own.device_id:
                    continue
                be = by_flavour(fname)
                ns = be.namespace
                sset = ctx.sessions.load(session_key(fname, jid, dev))
                cur = sset.current
                peer_bundle = None
                if cur is not None and cur.quarantined:
                    outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.FAILED, iks.get(dev), _QUARANTINED))
                    continue
                # trust is decided on the key the session was built with; a session of another
                # key than the one the device is bound to is not used (a fresh one is built)
                cur_ik = None if cur is None else be.flavour.identity_to_x25519(cur.session.peer_ik)
                known = iks.get(dev)
                if (
                    cur is not None
                    and cur_ik is not None
                    and (known is None or known == cur_ik)
                    and cur.session.ratchet.can_send
                    and not _stale(cur, ts)
                ):
                    ik = cur_ik
                else:
                    stored = ctx.devices.bundle(fname, jid, dev)
                    if stored is None or (cur is not None and stored.fetched <= cur.created):
                        effects.append(FetchBundle(jid, dev, ns))
                        refused = ctx.refused.get((jid, dev, ns))
                        outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.NO_BUNDLE, error=refused))
                        continue
                    ik = be.flavour.identity_to_x25519(stored.bundle.ik)  # checked on arrival
                    peer_bundle = self._pick_prekey(stored.bundle)
                level = levels.get(ik, TrustLevel.UNDECIDED)
                if level is TrustLevel.DISTRUSTED:
                    outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.DISTRUSTED, ik))
                    continue
                if not level.trusted:
                    outcomes.append(DeviceOutcome(jid, dev, ns, Outcome.UNDECIDED, ik))
                    continue
                plan.devices.append(PlannedDevice(jid, dev, be, sset, peer_bundle, ik))
                eligible += 1
            if not eligible and jid != own.jid:
                plan.unreachable.append(jid)
        return plan

    def encrypt_planned(
        self, plan: SendPlan, body: str | None, content: Sequence[ET.Element], to: str
    ) -> EncryptResult:
        """Encrypt by ``plan`` (inside the caller's transaction); ``to`` is the envelope's
        ``<to>`` (bare)."""
        ctx = self._ctx
        own = ctx.own
        now = ctx.now()
        outcomes = list(plan.outcomes)
        effects = tuple(plan.effects)
        devices = plan.devices
        if plan.unreachable or not devices:
            outcomes += [
                DeviceOutcome(d.jid, d.device_id, d.backend.namespace, Outcome.NOT_SENT, d.identity_key)
                for d in devices
            ]
            return EncryptResult({}, tuple(outcomes), effects, tuple(plan.unreachable))

        # payloads, one per namespace in use (in the registry's order)
        sealed: dict[str, Sealed] = {}
        in_use = {d.backend.namespace for d in devices}
        for b in BACKENDS:
            if b.namespace not in in_use:
                continue
            why = b.cannot_carry(body, content)
            if why is None:
                sealed[b.namespace] = b.seal(body, content, own.jid, to, now, ctx.rng)
                continue
            for d in devices:
                if d.backend is b:
                    outcomes.append(DeviceOutcome(d.jid, d.device_id, b.namespace, Outcome.FAILED, d.identity_key, why))
            devices = [d for d in devices if d.backend is not b]

        keys: dict[str, list[KeyElement]] = {b.namespace: [] for b in BACKENDS}
        for_others: set[str] = set()  # namespaces in which a recipient other than us has a key
        for d in devices:
            be, ns, sset = d.backend, d.backend.namespace, d.sessions
            started = (ns, d.jid, d.device_id)
            if d.bundle is not None and started not in plan.started:
                try:
                    self._start_session(be, d.jid, d.device_id, sset, d.bundle, d.identity_key)
                except (InvalidKey, InvalidSignature) as e:
                    outcomes.append(DeviceOutcome(d.jid, d.device_id, ns, Outcome.FAILED, d.identity_key, str(e)))
                    continue
                plan.started.add(started)
            data, kex = sset.entries[0].session.encrypt(sealed[ns].key_material)
            ctx.sessions.save(sset)
            keys[ns].append(be.key_element(d.device_id, data, kex, d.jid))
            if d.jid != own.jid:
                for_others.add(ns)
            outcomes.append(DeviceOutcome(d.jid, d.device_id, ns, Outcome.ENCRYPTED, d.identity_key))

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
        return EncryptResult(elements, tuple(outcomes), effects, (), own_copy)

    def _pick_prekey(self, bundle: Bundle) -> PeerBundle:
        """The bundle with one of its one-time prekeys, chosen at random (a stored bundle was
        checked on arrival: it holds at least the minimum number of valid prekeys).

        Prekey id 0 is taken only when it is the only one: Converse.js publishes ids 0-99, but
        its libomemo loads a key exchange's one-time prekey only when the id is truthy, so a
        first message built on prekey 0 fails there with "Bad MAC" (issue 20)."""
        ids = sorted(bundle.prekeys)
        if len(ids) > 1 and ids[0] == 0:
            ids = ids[1:]
        pk_id = ids[int.from_bytes(self._ctx.rng(4), "big") % len(ids)]
        b = bundle
        return PeerBundle(b.ik, b.spk_id, b.spk, b.spk_signature, pk_id, b.prekeys[pk_id])

    def _start_session(
        self, backend: OmemoBackend, jid: str, device_id: int, sset: SessionSet, peer_bundle: PeerBundle, ik: bytes
    ) -> None:
        """Active X3DH with a bundle whose signature was verified on arrival; the new session
        becomes current and the device is bound to the identity key it showed."""
        ctx = self._ctx
        session = initiate_session(backend.flavour, ctx.own.identity, peer_bundle, ctx.rng, signature_verified=True)
        sset.entries.insert(0, ctx.sessions.new_entry(session, ctx.now().timestamp()))
        ctx.devices.set_identity(jid, device_id, ik)

    def empty_message(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """An empty message to one device (no trust needed), building a session from its stored
        bundle when there is none: completes a manual session replacement."""
        ctx = self._ctx
        be = registry.backend(namespace)
        jid = bare(jid)

        def op() -> list[Effect]:
            sset = ctx.sessions.load(session_key(be.flavour.name, jid, device_id))
            cur = sset.current
            if cur is not None and cur.quarantined:
                raise UsageError(_QUARANTINED)
            if cur is None or not cur.session.ratchet.can_send:
                stored = ctx.devices.bundle(be.flavour.name, jid, device_id)
                if stored is None:
                    return [FetchBundle(jid, device_id, namespace)]
                ik = be.flavour.identity_to_x25519(stored.bundle.ik)
                self._start_session(be, jid, device_id, sset, self._pick_prekey(stored.bundle), ik)
            return [empty_message(ctx, be, jid, device_id, sset, "session-replacement")]

        return ctx.run(op)

    def replace_session(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """Manual session replacement (XEP-0384 business rule): forget the current session with
        that device and its stored bundle; returns the bundle fetch.  Once the bundle is in,
        :meth:`empty_message` (or the next send) starts a fresh session."""
        ctx = self._ctx
        be = registry.backend(namespace)
        jid = bare(jid)

        def op() -> list[Effect]:
            key = session_key(be.flavour.name, jid, device_id)
            sset = ctx.sessions.load(key)
            if sset.entries:
                for entry in sset.entries:
                    entry.skipped.clear()
                ctx.storage.delete("session", key)
            ctx.storage.delete("bundle", key)
            return [FetchBundle(jid, device_id, namespace)]

        return ctx.run(op)
