"""Receiving: decryption of ``<encrypted/>`` elements of both namespaces, key exchanges,
duplicates, untrusted identities, empty messages and heartbeats."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from functools import partial

from . import catchup
from .backend import Affixes, OmemoBackend
from .context import Context
from .context import bare as _bare
from .errors import (
    DecryptionFailed,
    DuplicateMessage,
    E2EEError,
    MalformedMessage,
    NoSession,
    SenderDistrusted,
    SharedIdentityKey,
)
from .flavour import Flavour
from .jid import bare_jid_key
from .limits import HEARTBEAT_THRESHOLD, MAX_XML_DEPTH, MAX_XML_ELEMENTS
from .model import EncryptedElement, KeyElement
from .pep import bundle_effects
from .registry import NAMESPACES, find
from .results import (
    Decrypted,
    DecryptResult,
    Duplicate,
    Effect,
    EmptyMessage,
    FetchDeviceList,
    NotForThisDevice,
    UntrustedIdentity,
)
from .sending import empty_message
from .session import accept as accept_session
from .sessions import Entry, SessionSet, session_key
from .trust import TrustLevel
from .xmlsafe import check_element

__all__ = ["OmemoReceiver"]


class _Refused(Exception):
    """Raised inside an operation to roll it back and return ``result`` instead."""

    def __init__(self, result: DecryptResult) -> None:
        super().__init__()
        self.result = result


class OmemoReceiver:
    """OMEMO decryption for one device (see :class:`~e2ee.engine.Engine` for the documentation
    of :meth:`decrypt`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

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
        given, except on our own copy: ``sender`` and ``to`` both our account; ``require_to``
        for group chats); ``timestamp`` the delay stamp or receive time
        (the ``<time>`` affix is compared with it).  Returns a result value; raises a
        :class:`~e2ee.errors.PeerError` for forged, garbled or refused input, with the stored
        state unchanged."""
        backend = find(element.tag[1:].partition("}")[0] if isinstance(element.tag, str) else "")
        if backend is None:
            raise MalformedMessage(f"not an OMEMO element: {element.tag!r}")
        check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
        enc = backend.parse_encrypted(element)
        sender = _bare(sender)
        own = self._ctx.own
        ns = backend.namespace
        if sender == own.jid and to is not None and _bare(to) == own.jid and not require_to:
            # our own copy (EncryptResult.own_copy): sent by a device of our account to our bare
            # JID, its <to> names the conversation (a contact or a room), not us.  Only our
            # account's devices can send from it, so nobody forwarded it surreptitiously.
            to = None
        if sender == own.jid and enc.sid == own.device_id:
            return NotForThisDevice(sender, enc.sid, ns, reflection=True)
        mine = [k for k in enc.keys if k.rid == own.device_id and (k.jid is None or bare_jid_key(k.jid) == own.jid)]
        if not mine:
            return NotForThisDevice(sender, enc.sid, ns, reflection=False)
        error: E2EEError | None = None
        for key in mine:  # legacy: the same rid may appear for several accounts
            try:
                return self._ctx.run(partial(self._decrypt_key, backend, enc, key, sender, to, timestamp, require_to))
            except _Refused as r:  # rolled back: nothing of the attempt is stored
                return r.result
            except E2EEError as e:
                error = e
        assert error is not None
        raise error

    def _decrypt_key(
        self,
        backend: OmemoBackend,
        enc: EncryptedElement,
        key: KeyElement,
        sender: str,
        to: str | None,
        timestamp: datetime | None,
        require_to: bool,
    ) -> DecryptResult:
        flavour = backend.flavour
        ns = backend.namespace
        own = self._ctx.own
        now = self._ctx.now()
        dev = enc.sid
        sset = self._ctx.sessions.load(session_key(flavour.name, sender, dev))
        view = self._ctx.devices.view(sender)  # read once; the lists do not change below
        known_ik = view.iks.get(dev)
        effects: list[Effect] = []
        new_kex = None
        level: TrustLevel | None = None
        if key.kex:
            kex = flavour.parse_key_exchange(key.data)
            ik = flavour.identity_to_x25519(kex.ik)
            level = self._sender_level(sender, ik)
            entry = next((e for e in sset.entries if e.session.same_key_exchange(kex)), None)
            if entry is not None:  # a repetition: the session's key is the key exchange's
                if known_ik is not None and known_ik != ik and (level is None or not level.trusted):
                    return UntrustedIdentity(sender, dev, ns, ik, known_ik)
                try:
                    km = entry.session.decrypt(kex.message, self._ctx.rng)
                except DuplicateMessage:
                    return Duplicate(sender, dev, ns)
                if known_ik is None or known_ik == ik:  # never current for another key
                    self._promote(sset, entry)
            else:
                if known_ik is not None and known_ik != ik and (level is None or not level.trusted):
                    return UntrustedIdentity(sender, dev, ns, ik, known_ik)
                ek = kex.ek
                session, km = accept_session(
                    flavour,
                    own.identity,
                    kex,
                    lambda spk_id: own.signed_prekey_private(spk_id, now),
                    lambda pk_id: own.prekey_for_exchange(pk_id, ek),
                    self._ctx.rng,
                )
                if not backend.authenticates_sender and level is not TrustLevel.VERIFIED:  # (after the prekey checks)
                    self._refuse_shared_key(sender, ik)
                entry = self._ctx.sessions.new_entry(session, now.timestamp())
                sset.entries.insert(0, entry)
                new_kex = kex
        else:
            if not sset.entries:
                raise NoSession(f"no session with device {dev}", sender, dev, ns)
            # trust is decided on the key each session was built with, not the device's key
            session_iks = [flavour.identity_to_x25519(e.session.peer_ik) for e in sset.entries]
            if all(self._ctx.trust.level(sender, k) is TrustLevel.DISTRUSTED for k in set(session_iks)):
                raise SenderDistrusted("the sender's identity key is distrusted")  # before any work
            entry, km = self._decrypt_message(sset, flavour, key.data)
            if entry is None:
                return Duplicate(sender, dev, ns)
            ik = session_iks[sset.entries.index(entry)]
            level = self._sender_level(sender, ik)  # raises: rolled back, never promoted
            if known_ik is None or known_ik == ik:
                self._promote(sset, entry)
            elif level is None or not level.trusted:
                # an archived session of a key the device no longer shows: refused, rolled back
                raise _Refused(UntrustedIdentity(sender, dev, ns, ik, known_ik))
            # else: a trusted key's archived session decrypts but does not become current
        if level is None:  # a key seen for the first time gets the policy's level
            level = self._ctx.trust.first_sight(sender, ik, replaces_known_key=known_ik is not None and known_ik != ik)

        # the payload: nothing is stored unless it decrypts too
        result: DecryptResult
        if enc.payload is None:
            backend.check_empty_key_material(km)
            result = EmptyMessage(sender, dev, ns)
        else:
            result = self._open_payload(backend, enc, km, sender, dev, level, ik, to, timestamp or now, require_to)

        # commit
        if new_kex is not None:
            state = catchup.load(self._ctx.storage)
            own.consume_prekey(new_kex.pk_id, new_kex.ek, keep=state.catching_up)
            self._ctx.devices.set_identity(sender, dev, ik)
            effects += bundle_effects(self._ctx)
            if state.catching_up:
                state.pending.append((flavour.name, sender, dev))
                catchup.save(self._ctx.storage, state)
                self._ctx.sessions.save(sset)
            else:
                effects.append(empty_message(self._ctx, backend, sender, dev, sset, "key-exchange-answer"))
        else:
            ratchet = entry.session.ratchet
            if (
                ratchet.nr > HEARTBEAT_THRESHOLD
                and ratchet.ns == 0
                and entry is sset.entries[0]
                and not entry.quarantined
            ):
                effects.append(empty_message(self._ctx, backend, sender, dev, sset, "heartbeat"))
            else:
                self._ctx.sessions.save(sset)
        if view.active is None or dev not in view.active:
            effects += [FetchDeviceList(sender, n) for n in NAMESPACES]
        if effects:
            result = _with_effects(result, effects)
        return result

    def _sender_level(self, jid: str, ik: bytes) -> TrustLevel | None:
        """The trust level of the sender's key (None: never seen); a distrusted key is refused
        with :class:`~e2ee.errors.SenderDistrusted` before anything is decrypted or stored."""
        level = self._ctx.trust.level(jid, ik)
        if level is TrustLevel.DISTRUSTED:
            raise SenderDistrusted("the sender's identity key is distrusted")
        return level

    def _refuse_shared_key(self, sender: str, ik: bytes) -> None:
        """Catalogue D7 (legacy OMEMO, unknown key-share): a legacy key exchange names no sender,
        so a co-recipient or the server can forward another JID's one as its own.  A key already
        known for another JID builds no session for this one (its one-time prekey stays for the
        real sender) unless the user verified it for this JID."""
        others = tuple(j for j in self._ctx.trust.holders(ik) if j != sender)
        if others:
            raise SharedIdentityKey(
                f"the identity key of this key exchange is known for {', '.join(others)}: refused for {sender}",
                others,
            )

    def _promote(self, sset: SessionSet, entry: Entry) -> None:
        if sset.entries[0] is not entry:
            sset.entries.remove(entry)
            sset.entries.insert(0, entry)

    def _decrypt_message(self, sset: SessionSet, flavour: Flavour, data: bytes) -> tuple[Entry | None, bytes]:
        """Decrypt with the current session, else an archived one (the caller decides whether it
        becomes current).  Returns (None, b"") for a duplicate."""
        msg = flavour.parse_message(data)
        first_error: DecryptionFailed | None = None
        for entry in sset.entries:
            session = entry.session
            try:
                km = session.ratchet.decrypt_parsed(msg, self._ctx.rng)
            except DuplicateMessage:
                return None, b""
            except DecryptionFailed as e:
                first_error = first_error or e
                continue
            session.confirmed = True
            return entry, km
        assert first_error is not None
        raise first_error

    def _open_payload(
        self,
        backend: OmemoBackend,
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
        affixes = Affixes(sender, to, reference, require_to, self._ctx.legacy_tag_in_payload)
        opened = backend.open(enc, km, affixes)
        return Decrypted(
            sender,
            dev,
            backend.namespace,
            level,
            ik,
            opened.body,
            opened.content,
            opened.time,
            opened.time_suspicious,
            to=opened.to,
        )


def _with_effects(result: DecryptResult, effects: list[Effect]) -> DecryptResult:
    from dataclasses import replace

    return replace(result, effects=tuple(result.effects) + tuple(effects))
