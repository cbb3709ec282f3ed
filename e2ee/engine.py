"""The engine a client embeds: synchronous, free of I/O.

Inputs go in (device lists, bundles, received elements, the user's trust decisions); values
come out (elements to send, decrypted results) with *effects* the embedder carries out
(:mod:`e2ee.results`).  Every operation is one storage transaction and persists the advanced
ratchets before it returns a ciphertext; one that fails leaves the stored bytes unchanged.
One identity key and one device id serve both OMEMO namespaces (a device gets OMEMO 2 when it
is on the account's OMEMO 2 list, else legacy OMEMO).

:class:`Engine` is a facade; each call is documented where it is done, by parts that share one
:class:`~e2ee.context.Context`: :class:`~e2ee.pep.Pep` (publishing, PEP input),
:class:`~e2ee.fallback.SendPolicy` over :class:`~e2ee.sending.OmemoSender` and
:class:`~e2ee.openpgp.backend.OpenPgp` (sending), :class:`~e2ee.receiving.OmemoReceiver`,
:mod:`e2ee.catchup` and :class:`~e2ee.keys.Keys` (devices, trust, verification).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from . import catchup
from .context import Context, bare, delegate
from .devices import DeviceRegistry
from .errors import UsageError
from .fallback import SendPolicy
from .keys import DeviceInfo, KeyDecision, Keys
from .model import DeviceList
from .openpgp.backend import OpenPgp
from .openpgp.crypto import OpenPgpCrypto
from .openpgp.xml import NS as OX_NS
from .own import OwnDevice
from .pep import Pep, parse_device_list
from .receiving import OmemoReceiver
from .registry import NAMESPACES
from .results import DecryptResult, Effect
from .rng import Clock, Random, system_clock, system_random
from .sending import OmemoSender
from .storage import Storage
from .trust import TrustPolicy, TrustStore

__all__ = ["Engine", "NAMESPACES", "DeviceInfo", "KeyDecision", "parse_device_list"]

_OX_TAG = f"{{{OX_NS}}}openpgp"


class Engine:
    """One device of one account: :meth:`create` makes a new identity; ``Engine(storage)`` opens
    the one a storage holds.  ``openpgp`` (an :class:`~e2ee.openpgp.crypto.OpenPgpCrypto`, e.g.
    ``e2ee.client.gpg.GnuPG``) enables the OpenPGP fallback of :meth:`encrypt` and
    :meth:`decrypt`; ``legacy_tag_in_payload`` accepts the historical legacy OMEMO variant
    (16-byte key material, tag at the end of ``<payload/>``), which no current sender makes."""

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
        namespaces first): the device id is chosen outside them, and :meth:`publish` keeps them."""
        jid = bare(jid)
        lists = list(own_device_lists)
        with storage.transaction():
            OwnDevice.create(storage, jid, set().union(*(dl.ids for dl in lists)), clock(), rng, label)
            registry = DeviceRegistry(storage)
            for dl in lists:
                registry.set_list(jid, dl)
        return cls(
            storage, rng=rng, clock=clock, policy=policy, openpgp=openpgp, legacy_tag_in_payload=legacy_tag_in_payload
        )

    # ---- identity and parts --------------------------------------------------------------

    @property
    def context(self) -> Context:
        """The state the parts share, for tools and tests that inspect it (writing to it
        directly bypasses every check)."""
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
        """Our identity key, X25519 form (what fingerprints show)."""
        return self._ctx.own.identity.x25519_public

    @property
    def identity_key_ed25519(self) -> bytes:
        """Our identity key, Ed25519 form (what Converse.js and Kaidan show)."""
        return self._ctx.own.identity.ed25519_public

    @property
    def identity_sign_bit_set(self) -> bool:
        """An identity from before issue 20 (Ed25519 sign bit set): XEdDSA-only verifiers such
        as Converse.js reject its bundles; only a new device fixes it."""
        return self._ctx.own.identity.sign_bit_set

    @property
    def has_openpgp(self) -> bool:
        return self._openpgp is not None

    @property
    def openpgp(self) -> OpenPgp:
        """The OpenPGP for XMPP backend; :class:`~e2ee.errors.UsageError` without one."""
        if self._openpgp is None:
            raise UsageError("OpenPGP is not set up: create the engine with openpgp=<an OpenPgpCrypto>")
        return self._openpgp

    # ---- publishing and PEP input: e2ee.pep ----------------------------------------------

    publish = delegate("_pep", Pep.publish)
    maintenance = delegate("_pep", Pep.maintenance)
    on_device_list = delegate("_pep", Pep.on_device_list)
    on_bundle = delegate("_pep", Pep.on_bundle)

    # ---- archive catch-up: e2ee.catchup --------------------------------------------------

    def begin_catch_up(self) -> None:
        """:func:`e2ee.catchup.begin`: before MAM and offline messages."""
        catchup.begin(self._ctx)

    def end_catch_up(self) -> list[Effect]:
        """:func:`e2ee.catchup.end`: the answers postponed during the catch-up."""
        return catchup.end(self._ctx)

    @property
    def catching_up(self) -> bool:
        return catchup.load(self._ctx.storage).catching_up

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many operations (an archive catch-up) into one storage commit.  Each inside is
        a savepoint (one that raises undoes only itself); a crash before the block ends undoes
        them all, so nothing they return may leave the process before it ends."""
        with self._ctx.storage.transaction():
            yield

    # ---- devices, trust and verification: e2ee.keys --------------------------------------

    devices = delegate("_keys", Keys.devices)
    set_trust = delegate("_keys", Keys.set_trust)
    decide_fingerprint = delegate("_keys", Keys.decide_fingerprint)
    apply_uri = delegate("_keys", Keys.apply_uri)
    own_uri = delegate("_keys", Keys.own_uri)

    def after_rollback(self) -> int:
        """The storage was restored from an older copy (the keystore raised ``RollbackDetected``):
        every session is quarantined until :meth:`replace_session` (it may repeat message keys)
        and every trusted key goes back to undecided.  Returns the sessions quarantined."""

        def op() -> int:
            count = self._keys.quarantine_all()
            if self._openpgp is not None:
                self._openpgp.after_rollback()
            return count

        return self._ctx.run(op)

    # ---- sending and receiving: e2ee.fallback, e2ee.sending, e2ee.receiving --------------

    prepare = delegate("_policy", SendPolicy.prepare)
    encrypt = delegate("_policy", SendPolicy.encrypt)
    #: the explicit OMEMO-only send, one message for all recipients (a room's members, with
    #: ``to=`` the room), after ``prepare(..., use_openpgp=False)``
    encrypt_omemo = delegate("_sender", OmemoSender.encrypt)
    empty_message = delegate("_sender", OmemoSender.empty_message)
    replace_session = delegate("_sender", OmemoSender.replace_session)

    def decrypt(
        self,
        element: ET.Element,
        sender: str,
        *,
        to: str | None = None,
        timestamp: datetime | None = None,
        require_to: bool = False,
    ) -> DecryptResult:
        """A received element of any backend, by its namespace: OMEMO
        (:meth:`OmemoReceiver.decrypt <e2ee.receiving.OmemoReceiver.decrypt>`) or, when set up,
        OpenPGP (:meth:`OpenPgp.decrypt <e2ee.openpgp.backend.OpenPgp.decrypt>`; not in rooms)."""
        if element.tag == _OX_TAG and self._openpgp is not None:
            if require_to:
                raise UsageError("OpenPGP messages are not used in group chats")
            return self._openpgp.decrypt(element, sender, to=to, timestamp=timestamp)
        return self._receiver.decrypt(element, sender, to=to, timestamp=timestamp, require_to=require_to)
