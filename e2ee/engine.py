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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from . import registry
from .core import _bare, _CatchUp, parse_device_list
from .devices import DeviceRegistry
from .errors import E2EEError, PeerError
from .fallback import Fallback
from .limits import MAX_XML_DEPTH, MAX_XML_ELEMENTS
from .model import DeviceList
from .openpgp.crypto import OpenPgpCrypto
from .own import OwnDevice
from .primitives import ed25519_verify, x25519_public_to_ed25519
from .registry import BACKENDS, NAMESPACES, by_flavour
from .results import (
    Effect,
)
from .rng import Clock, Random, system_clock, system_random
from .sessions import session_key
from .storage import Storage
from .trust import TrustLevel, TrustPolicy
from .verification import identity_candidates, make_uri, parse_uri
from .xmlsafe import check_element

__all__ = ["Engine", "NAMESPACES", "DeviceInfo", "KeyDecision", "parse_device_list"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What we know about one device of an account."""

    device_id: int
    namespaces: tuple[str, ...]  #: lists it is on (empty: inactive)
    identity_key: bytes | None
    trust: TrustLevel | None
    label: str | None  #: OMEMO 2 label, only when its signature verified
    #: the identity key's exact Ed25519 form (from its OMEMO 2 bundle), what OMEMO 2 clients show
    ed25519_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyDecision:
    """What one fingerprint a person gave (a verification URI entry, ``e2ee trust``) applied to.
    The value may be either form of a key (X25519 or Ed25519); it is compared canonically."""

    device_id: int | None  #: the device id given with it (URI), or None
    given: bytes  #: the 32 bytes as given
    level: TrustLevel
    identity_key: bytes | None  #: the known key (X25519 form) it matched; None: no known key
    devices: tuple[int, ...] = ()  #: known devices of the account with that key
    #: when it matched no known key: what was recorded (X25519 form, each reading of the value);
    #: it applies when a device with one of these keys appears
    remembered: tuple[bytes, ...] = ()

    @property
    def matched(self) -> bool:
        return self.identity_key is not None


class Engine(Fallback):
    """One device of one account.  Build it with :meth:`create` (new identity) or by passing a
    storage that already holds one.  ``openpgp``: an OpenPGP implementation
    (:class:`~e2ee.openpgp.crypto.OpenPgpCrypto`, e.g. ``e2ee.client.gpg.GnuPG``) enables the
    OpenPGP fallback (:attr:`openpgp`, :meth:`encrypt_with_fallback`, :meth:`decrypt_any`).
    ``legacy_tag_in_payload`` accepts the historical legacy OMEMO variant (16-byte key material,
    the GCM tag at the end of ``<payload/>``), which no current sender produces; off by default."""

    def __init__(
        self,
        storage: Storage,
        *,
        rng: Random = system_random,
        clock: Clock = system_clock,
        policy: TrustPolicy = TrustPolicy.BTBV,
        openpgp: OpenPgpCrypto | None = None,
        legacy_tag_in_payload: bool = False,
    ) -> None:
        super().__init__(storage, rng=rng, clock=clock, policy=policy, legacy_tag_in_payload=legacy_tag_in_payload)
        self._init_openpgp(openpgp)

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
        openpgp: OpenPgpCrypto | None = None,
        legacy_tag_in_payload: bool = False,
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
        return cls(
            storage, rng=rng, clock=clock, policy=policy, openpgp=openpgp, legacy_tag_in_payload=legacy_tag_in_payload
        )

    def publish(self) -> list[Effect]:
        """Everything to announce this device: both device lists (ours added to what the
        account lists) and both bundles.  Rotates the signed prekey first when it is due."""

        def op() -> list[Effect]:
            self._own.rotate_signed_prekey(self._now())
            self._own.refill_prekeys()
            return [*(self._device_list_effect(b) for b in BACKENDS), *self._bundle_effects()]

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
        be = registry.backend(namespace)
        jid = _bare(jid)
        if element is None:
            dl = DeviceList(be.flavour.name, ())
        else:
            check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
            dl = be.parse_device_list(element)

        def op() -> list[Effect]:
            self._devices.set_list(jid, dl)
            if jid == self._own.jid and self._own.device_id not in dl.ids:
                return [self._device_list_effect(be)]
            return []

        return self._run(op)

    def on_bundle(self, jid: str, device_id: int, namespace: str, element: ET.Element) -> list[Effect]:
        """A bundle arrived.  It is checked (structure, keys, signed-prekey signature) and kept
        for the next :meth:`encrypt`.  Raises :class:`~e2ee.errors.InvalidBundle`,
        :class:`~e2ee.errors.InvalidKey` or :class:`~e2ee.errors.InvalidSignature`; nothing is
        stored then."""
        be = registry.backend(namespace)
        jid = _bare(jid)
        flavour = be.flavour
        where = (jid, device_id, namespace)
        try:
            bundle = be.parse_bundle(element)
            ik = flavour.identity_to_x25519(bundle.ik)  # a bad key is InvalidKey, whatever the signature
            spk = flavour.decode_public(bundle.spk)
            for pk in bundle.prekeys.values():
                flavour.decode_public(pk)
            flavour.verify_prekey(bundle.ik, spk, bundle.spk_signature)
        except PeerError as e:
            if len(self._refused) >= 4096:  # bounded whatever a server sends
                self._refused.clear()
            self._refused[where] = str(e) or type(e).__name__
            raise
        self._refused.pop(where, None)

        def op() -> list[Effect]:
            known = self._devices.identity(jid, device_id)
            self.trust.first_sight(jid, ik, replaces_known_key=known is not None and known != ik)
            self._devices.set_bundle(jid, device_id, bundle, self._now().timestamp())
            return []

        return self._run(op)

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
                be = by_flavour(fname)
                sset = self._sessions.load(session_key(fname, jid, dev))
                if sset.entries and sset.entries[0].session.ratchet.can_send:
                    effects.append(self._empty(be, jid, dev, sset, "catch-up-end"))
            self._put_state(_CatchUp(False, []))
            return effects

        return self._run(op)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many operations into one storage commit, e.g. the decryption of an archive
        catch-up (``with engine.batch(): ...``)::

            with engine.batch():
                results = [engine.decrypt(e, jid) for e, jid in archived]
            # only now are the results acknowledged: show them, run their effects

        Each operation inside still runs in its own nested transaction (a savepoint): one that
        raises undoes its own writes and the batch goes on.  The batch commits once when the
        block ends; if the block raises or the process dies first, every operation of the batch
        is undone together.  Hence the rule: nothing an operation inside a batch returns
        (a ciphertext, an effect, a decrypted message to acknowledge) may leave the process
        before the block has ended."""
        with self.storage.transaction():  # cached sessions are checked against the stored bytes
            yield

    @property
    def catching_up(self) -> bool:
        return self._state().catching_up

    # ------------------------------------------------------------------ trust and devices

    def after_rollback(self) -> int:
        """The storage was restored from an older copy (the keystore raised
        :class:`~e2ee.errors.RollbackDetected` and was opened with ``accept_rollback``).  Every
        stored session may have sent message keys that the restored state would send again, so
        each is quarantined: nothing more is sent on it until :meth:`replace_session`.  Trust
        decisions may be stale too (a key distrusted since the copy was made): every blind or
        verified key goes back to undecided for the user to confirm.  Returns how many sessions
        were quarantined."""

        def op() -> int:
            count = 0
            for key in self.storage.keys("session"):
                sset = self._sessions.load(key)
                for entry in sset.entries:
                    entry.quarantined = True
                    count += 1
                self._sessions.save(sset)
            for jid in self.storage.keys("trust"):
                for ik, level in self.trust.levels(jid).items():
                    if level.trusted:
                        self.trust.set(jid, ik, TrustLevel.UNDECIDED)
            if self._openpgp is not None:
                self._openpgp.after_rollback()
            return count

        return self._run(op)

    def verify_uri(self, uri: str) -> tuple[str, list[tuple[int | None, bytes]]]:
        """Apply a scanned or pasted verification URI (see :meth:`apply_uri`).  Returns the JID
        and (device id or None, identity key) pairs: the matched known key in X25519 form, else
        the value as given.  Raises :class:`~e2ee.errors.InvalidVerificationUri`."""
        jid, decisions = self.apply_uri(uri)
        return jid, [(d.device_id, d.identity_key or d.given) for d in decisions]

    def apply_uri(self, uri: str, level: TrustLevel = TrustLevel.VERIFIED) -> tuple[str, list[KeyDecision]]:
        """Apply a verification URI: each key it lists, in either form (the X25519 form legacy
        clients put there, or the Ed25519 form of OMEMO 2 clients), gets ``level`` through
        :meth:`decide_fingerprint`.  One transaction.  Raises
        :class:`~e2ee.errors.InvalidVerificationUri`."""
        parsed = parse_uri(uri)
        jid = _bare(parsed.jid)
        entries: list[tuple[int | None, bytes]] = [(d, ik) for d, ik in parsed.fingerprints.items()]
        entries += [(None, ik) for ik in parsed.plain]
        return jid, self._run(lambda: [self._decide(jid, key, level, dev) for dev, key in entries])

    def decide_fingerprint(self, jid: str, key: bytes, level: TrustLevel, device_id: int | None = None) -> KeyDecision:
        """Record the person's decision for a fingerprint they compared: ``key`` is 32 bytes in
        either form.  When it is (either form of) a known key of ``jid`` -- of ``device_id``
        when given -- that key gets ``level``; otherwise every reading of the value is recorded
        with ``level`` (it applies when such a key appears) and the result says it matched
        nothing: never present that as "verified"."""
        jid = _bare(jid)
        return self._run(lambda: self._decide(jid, key, level, device_id))

    def _decide(self, jid: str, key: bytes, level: TrustLevel, device_id: int | None) -> KeyDecision:
        candidates = identity_candidates(key)
        known = {d.device_id: d.identity_key for d in self.devices(jid) if d.identity_key is not None}
        # keys devices have shown (a key only remembered from an earlier decision is not one)
        pool = {known[device_id]} if device_id is not None and device_id in known else set(known.values())
        match = next((c for c in candidates if c in pool), None)
        if match is None:
            for c in candidates:
                self.trust.set(jid, c, level)
            return KeyDecision(device_id, key, level, None, remembered=candidates)
        self.trust.set(jid, match, level)
        devices = tuple(sorted(d for d, ik in known.items() if ik == match))
        return KeyDecision(device_id, key, level, match, devices)

    def own_uri(self) -> str:
        """Our verification URI: this device first, then our other devices we verified."""
        devices = [(self.device_id, self.identity_key)]
        levels = self.trust.levels(self.jid)
        for dev, ik in sorted(self._devices.identities(self.jid).items()):
            if dev != self.device_id and levels.get(ik) is TrustLevel.VERIFIED:
                devices.append((dev, ik))
        return make_uri(self.jid, devices)

    def set_trust(self, jid: str, identity_key: bytes, level: TrustLevel) -> None:
        """Record the user's decision for an identity key (X25519 form) or an OpenPGP key (its
        20-byte fingerprint) of ``jid``."""
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
        for b in BACKENDS:
            dl = lists.get(b.flavour.name)
            for d in dl.devices if dl else ():
                ids.setdefault(d.device_id, []).append(b.namespace)
                if d.label is not None and d.label_signature is not None:
                    labels[d.device_id] = (d.label, d.label_signature)
        out = []
        for dev, nss in sorted(ids.items()):
            ik = iks.get(dev)
            if ik is None:
                for b in BACKENDS:
                    stored = self._devices.bundle(b.flavour.name, jid, dev)
                    if stored is not None:
                        ik = b.flavour.identity_to_x25519(stored.bundle.ik)
                        break
            label = None
            if dev in labels and ik is not None:  # the key this row shows and rates
                label = _verified_label(labels[dev], ik)
            ed = None if ik is None else self._ed25519_form(jid, dev, ik)
            out.append(DeviceInfo(dev, tuple(nss), ik, levels.get(ik) if ik else None, label, ed))
        return out

    def _ed25519_form(self, jid: str, dev: int, ik: bytes) -> bytes | None:
        """The exact Ed25519 form of ``ik`` as a stored bundle of the device shows it."""
        for b in BACKENDS:
            stored = self._devices.bundle(b.flavour.name, jid, dev)
            if stored is None:
                continue
            ed = b.identity_ed25519(stored.bundle)
            if ed is not None and b.flavour.identity_to_x25519(stored.bundle.ik) == ik:
                return ed
        return None


def _verified_label(label: tuple[str, bytes], bound_ik: bytes) -> str | None:
    """The label when its signature verifies with the identity key the device is bound to (its
    sessions and trust are on that key; the stored bundle's only for a device never talked to),
    not with whatever bundle is stored now: the server can replace a bundle.  ``bound_ik`` is
    the X25519 form; both Ed25519 signs are tried."""
    for sign in (0, 1):
        try:
            ed = x25519_public_to_ed25519(bound_ik, sign)
        except E2EEError:
            return None
        if ed25519_verify(ed, label[0].encode(), label[1]):
            return label[0]
    return None
