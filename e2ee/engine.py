"""The OMEMO engine: what a client embeds.  Synchronous and free of I/O.

Inputs go in (device lists, bundles, received ``<encrypted/>`` elements, the user's trust
decisions); values come out (``<encrypted/>`` elements to send, decrypted results) together with
*effects* the embedder carries out (:mod:`e2ee.results`).  Every operation runs in one storage
transaction and persists the advanced ratchets before it returns a ciphertext; an operation
that fails leaves the stored bytes unchanged.

One identity key and one device id serve both namespaces.  Each recipient device gets OMEMO 2
when it is on the account's OMEMO 2 device list, else legacy OMEMO.  :class:`Engine` is a
facade: its parts (:mod:`e2ee.pep`, :mod:`e2ee.sending`, :mod:`e2ee.receiving`,
:mod:`e2ee.fallback`, :mod:`e2ee.keys`, :mod:`e2ee.catchup`, the OpenPGP backend) share one
:class:`~e2ee.context.Context`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from . import catchup
from .context import Context, bare
from .devices import DeviceRegistry
from .errors import UsageError
from .fallback import SendPolicy, SendResult
from .keys import DeviceInfo, KeyDecision, Keys
from .model import DeviceList
from .openpgp.backend import OpenPgp
from .openpgp.crypto import OpenPgpCrypto
from .openpgp.xml import NS as OX_NS
from .own import OwnDevice
from .pep import Pep, parse_device_list
from .receiving import OmemoReceiver
from .registry import NAMESPACES
from .results import DecryptResult, Effect, EncryptResult
from .rng import Clock, Random, system_clock, system_random
from .sending import OmemoSender
from .storage import Storage
from .trust import TrustLevel, TrustPolicy, TrustStore

__all__ = ["Engine", "NAMESPACES", "DeviceInfo", "KeyDecision", "parse_device_list"]

_OX_TAG = f"{{{OX_NS}}}openpgp"


class Engine:
    """One device of one account.  Build it with :meth:`create` (new identity) or by passing a
    storage that already holds one.  ``openpgp``: an OpenPGP implementation
    (:class:`~e2ee.openpgp.crypto.OpenPgpCrypto`, e.g. ``e2ee.client.gpg.GnuPG``) enables the
    OpenPGP fallback (:attr:`openpgp`; :meth:`encrypt` and :meth:`decrypt` then use it).
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
        ctx = self._ctx = Context(storage, rng, clock, policy, legacy_tag_in_payload)
        self._openpgp = None if openpgp is None else OpenPgp(ctx, openpgp)
        self._pep, self._keys, self._receiver = Pep(ctx), Keys(ctx), OmemoReceiver(ctx)
        self._sender = OmemoSender(ctx)
        self._policy = SendPolicy(ctx, self._sender, self._openpgp)

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
        jid = bare(jid)
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

    # ---- identity and parts --------------------------------------------------------------

    @property
    def context(self) -> Context:
        """The state the engine's parts share (storage, sessions, devices, own keys): for tools
        and tests that inspect it.  Changing it directly bypasses every check."""
        return self._ctx

    @property
    def storage(self) -> Storage:
        return self._ctx.storage

    @property
    def trust(self) -> TrustStore:
        return self._ctx.trust

    @property
    def jid(self) -> str:
        return self._ctx.own.jid

    @property
    def device_id(self) -> int:
        return self._ctx.own.device_id

    @property
    def identity_key(self) -> bytes:
        """Our identity key in its X25519 form (what fingerprints show)."""
        return self._ctx.own.identity.x25519_public

    @property
    def identity_key_ed25519(self) -> bytes:
        """Our identity key in its Ed25519 form (what Converse.js and Kaidan show)."""
        return self._ctx.own.identity.ed25519_public

    @property
    def identity_sign_bit_set(self) -> bool:
        """Whether our identity's Ed25519 form has its sign bit set (identities made before
        issue 20): XEdDSA-only verifiers such as Converse.js then reject our bundles, and only a
        new identity -- a new device -- fixes it.  New identities never have it set."""
        return self._ctx.own.identity.sign_bit_set

    @property
    def has_openpgp(self) -> bool:
        """Whether an OpenPGP implementation was given (``Engine(..., openpgp=...)``)."""
        return self._openpgp is not None

    @property
    def openpgp(self) -> OpenPgp:
        """The OpenPGP for XMPP backend; :class:`~e2ee.errors.UsageError` without one."""
        if self._openpgp is None:
            raise UsageError("OpenPGP is not set up: create the engine with openpgp=<an OpenPgpCrypto>")
        return self._openpgp

    # ---- publishing and PEP input (e2ee.pep) ---------------------------------------------

    def publish(self) -> list[Effect]:
        """Everything to announce this device: both device lists (ours added to what the
        account lists) and both bundles.  Rotates the signed prekey first when it is due."""
        return self._pep.publish()

    def maintenance(self) -> list[Effect]:
        """Periodic upkeep (call e.g. daily and at connect): signed-prekey rotation, dropping a
        previous signed prekey whose grace period ended, prekey refill.  Returns the bundle
        publications needed, if any."""
        return self._pep.maintenance()

    def on_device_list(self, jid: str, namespace: str, element: ET.Element | None) -> list[Effect]:
        """A device list arrived (PEP push or fetch result) for the bare JID the event came
        from (the embedder must take it from the stanza's ``from``; no ``from`` means our own
        account).  ``element`` is the item's payload, or None when the node or item does not
        exist.  Returns a republication when our own list lacks this device."""
        return self._pep.on_device_list(jid, namespace, element)

    def on_bundle(self, jid: str, device_id: int, namespace: str, element: ET.Element) -> list[Effect]:
        """A bundle arrived.  It is checked (structure, keys, signed-prekey signature) and kept
        for the next send.  Raises :class:`~e2ee.errors.InvalidBundle`,
        :class:`~e2ee.errors.InvalidKey` or :class:`~e2ee.errors.InvalidSignature`; nothing is
        stored then."""
        return self._pep.on_bundle(jid, device_id, namespace, element)

    # ---- archive catch-up (e2ee.catchup) -------------------------------------------------

    def begin_catch_up(self) -> None:
        """Archive catch-up starts (at connect, before MAM and offline messages): used prekeys
        are kept (hidden) until :meth:`end_catch_up`, so that repeated key exchanges in the
        archive still decrypt, and key-exchange answers are postponed."""
        catchup.begin(self._ctx)

    def end_catch_up(self) -> list[Effect]:
        """Catch-up done: delete the prekeys kept back and answer every session built during
        it with an empty message."""
        return catchup.end(self._ctx)

    @property
    def catching_up(self) -> bool:
        return catchup.load(self._ctx.storage).catching_up

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
        with self._ctx.storage.transaction():  # cached sessions are checked against the stored bytes
            yield

    # ---- devices, trust and verification (e2ee.keys) -------------------------------------

    def devices(self, jid: str) -> list[DeviceInfo]:
        """Every device of ``jid`` we know of, active or not, with its trust."""
        return self._keys.devices(jid)

    def set_trust(self, jid: str, identity_key: bytes, level: TrustLevel) -> None:
        """Record the user's decision for an identity key (X25519 form) or an OpenPGP key (its
        20-byte fingerprint) of ``jid``."""
        self._keys.set_trust(jid, identity_key, level)

    def decide_fingerprint(self, jid: str, key: bytes, level: TrustLevel, device_id: int | None = None) -> KeyDecision:
        """Record the person's decision for a fingerprint they compared: ``key`` is 32 bytes in
        either form.  When it is (either form of) a known key of ``jid`` -- of ``device_id``
        when given -- that key gets ``level``; otherwise every reading of the value is recorded
        with ``level`` (it applies when such a key appears) and the result says it matched
        nothing: never present that as "verified"."""
        return self._keys.decide(jid, key, level, device_id)

    def apply_uri(self, uri: str, level: TrustLevel = TrustLevel.VERIFIED) -> tuple[str, list[KeyDecision]]:
        """Apply a verification URI: each key it lists, in either form (the X25519 form legacy
        clients put there, or the Ed25519 form of OMEMO 2 clients), gets ``level`` through
        :meth:`decide_fingerprint`.  One transaction.  Raises
        :class:`~e2ee.errors.InvalidVerificationUri`."""
        return self._keys.apply_uri(uri, level)

    def verify_uri(self, uri: str) -> tuple[str, list[tuple[int | None, bytes]]]:
        """:meth:`apply_uri` with ``VERIFIED``, as (device id or None, key) pairs: the matched
        known key in X25519 form, else the value as given."""
        jid, decisions = self._keys.apply_uri(uri, TrustLevel.VERIFIED)
        return jid, [(d.device_id, d.identity_key or d.given) for d in decisions]

    def own_uri(self) -> str:
        """Our verification URI: this device first, then our other devices we verified."""
        return self._keys.own_uri()

    def after_rollback(self) -> int:
        """The storage was restored from an older copy (the keystore raised
        :class:`~e2ee.errors.RollbackDetected` and was opened with ``accept_rollback``).  Every
        stored session may have sent message keys that the restored state would send again, so
        each is quarantined: nothing more is sent on it until :meth:`replace_session`.  Trust
        decisions may be stale too (a key distrusted since the copy was made): every blind or
        verified key goes back to undecided for the user to confirm.  Returns how many sessions
        were quarantined."""

        def op() -> int:
            count = self._keys.quarantine_all()
            if self._openpgp is not None:
                self._openpgp.after_rollback()
            return count

        return self._ctx.run(op)

    # ---- sending and receiving -----------------------------------------------------------

    def prepare(self, recipients: Sequence[str], *, use_omemo: bool = True, use_openpgp: bool = True) -> list[Effect]:
        """The fetches a send to ``recipients`` needs now (nothing is encrypted): OMEMO device
        lists and bundles, and for recipients OMEMO cannot reach (once their OMEMO fetches are
        done) their OpenPGP metadata and keys.  Run them, feed the answers in and call again
        until it returns nothing.  ``use_omemo=False``: OpenPGP only (an OpenPGP-only client);
        ``use_openpgp=False``: OMEMO only (before :meth:`encrypt_omemo`, e.g. in rooms)."""
        return self._policy.prepare(recipients, use_omemo=use_omemo, use_openpgp=use_openpgp)

    def encrypt(
        self,
        recipients: Sequence[str],
        body: str | None = None,
        *,
        content: Sequence[ET.Element] = (),
        allow_plaintext: bool = False,
        use_omemo: bool = True,
    ) -> SendResult:
        """Encrypt for each recipient separately by the send policy (:mod:`e2ee.fallback`): OMEMO
        when it has an eligible device, else OpenPGP when it has a trusted key, else clear text
        with ``allow_plaintext``.  Raises :class:`~e2ee.errors.NoEligibleDevices` naming what is
        missing when some recipient can be reached no way; nothing is encrypted then.
        ``use_omemo=False`` skips OMEMO (an OpenPGP-only client).  The OMEMO send plan is
        computed once for all recipients; the whole send is one transaction."""
        return self._policy.encrypt(recipients, body, content, allow_plaintext=allow_plaintext, use_omemo=use_omemo)

    def encrypt_omemo(
        self,
        recipients: Sequence[str],
        body: str | None = None,
        *,
        content: Sequence[ET.Element] = (),
        to: str | None = None,
    ) -> EncryptResult:
        """OMEMO only, one message for all ``recipients`` (a room's members): every active,
        trusted device of each recipient and of our own account (except this device).

        OMEMO 2 devices get an XEP-0420 envelope holding ``<body xmlns='jabber:client'>`` (when
        ``body`` is given) and ``content``; legacy devices get ``body`` only.  ``to`` is the
        envelope's ``<to>`` (the room for group chats); by default the single recipient.
        When some recipient has no eligible device, nothing is encrypted (``result.ready`` is
        False) and the result says why, with the fetches that may help."""
        return self._sender.encrypt(recipients, body, content, to)

    def describe_missing(self, jid: str) -> str:
        """The sentence :class:`~e2ee.errors.NoEligibleDevices` carries for ``jid``."""
        return self._policy.describe_missing(jid)

    def decrypt(
        self,
        element: ET.Element,
        sender: str,
        *,
        to: str | None = None,
        timestamp: datetime | None = None,
        require_to: bool = False,
    ) -> DecryptResult:
        """Decrypt a received element of any backend, chosen by its namespace: OMEMO
        ``<encrypted/>`` of either namespace, or OpenPGP ``<openpgp/>`` when OpenPGP is set up.

        ``sender`` is the bare JID the message is from (for group chats: the occupant's real
        JID); ``to`` the stanza's bare ``to`` (checked against the OMEMO 2 ``<to>`` affix or the
        OpenPGP ``<to/>`` elements when given, except on our own copy: ``sender`` and ``to``
        both our account; ``require_to`` for group chats, OMEMO only); ``timestamp`` the delay
        stamp or receive time (the ``<time>`` affix is compared with it).  Returns a result
        value; raises a :class:`~e2ee.errors.PeerError` for forged, garbled or refused input,
        with the stored state unchanged."""
        if element.tag == _OX_TAG and self._openpgp is not None:
            if require_to:
                raise UsageError("OpenPGP messages are not used in group chats")
            return self._openpgp.decrypt(element, sender, to=to, timestamp=timestamp)
        return self._receiver.decrypt(element, sender, to=to, timestamp=timestamp, require_to=require_to)

    def empty_message(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """An empty message to one device (no trust needed), building a session from its stored
        bundle when there is none: completes a manual session replacement."""
        return self._sender.empty_message(jid, device_id, namespace)

    def replace_session(self, jid: str, device_id: int, namespace: str) -> list[Effect]:
        """Manual session replacement (XEP-0384 business rule): forget the current session with
        that device and its stored bundle; returns the bundle fetch.  Once the bundle is in,
        :meth:`empty_message` (or the next send) starts a fresh session."""
        return self._sender.replace_session(jid, device_id, namespace)
