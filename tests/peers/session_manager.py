"""Synchronous XML-level test peer built on python-omemo 2.1.0's :class:`omemo.SessionManager`.

Where :mod:`tests.peers.omemo_peer` drives the twomemo/oldmemo *backends* session by session, this
module drives the whole library core as a client would: device lists, bundles, trust, session
building, key-exchange completion and heartbeats are python-omemo's own logic, and everything that
crosses the "network" is XML produced and parsed by ``twomemo.etree`` / ``oldmemo.etree``.

* :class:`Directory` is the fake PEP service.  It holds, per bare JID and namespace, the device list
  element (the PEP item payload ``<devices xmlns='urn:xmpp:omemo:2'>`` / ``<list
  xmlns='eu.siacs.conversations.axolotl'>``) and per (JID, namespace, device id) the ``<bundle>``
  element.  Our engine (in other tests) and every :class:`SMPeer` read and write it.  Elements are
  deep-copied in and out, so nobody can change a published item behind the directory's back.
  Every device list publication bumps a per-(JID, namespace) revision counter.
* :class:`SMPeer` is one device of one account, a ``SessionManager`` subclass loaded with
  ``twomemo.Twomemo`` and/or ``oldmemo.Oldmemo`` over :class:`~tests.peers.omemo_peer.InMemoryStorage`.

Behaviour worth knowing (python-omemo 2.1.0):

* **No SCE in python-omemo.**  ``SessionManager.encrypt`` takes one plaintext per namespace and
  encrypts the bytes as given; neither omemo, twomemo nor slixmpp-omemo 2.2.0 build or parse
  XEP-0420 envelopes.  :meth:`SMPeer.encrypt` therefore builds the envelope itself for
  ``urn:xmpp:omemo:2``::

      <envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>TEXT</body></content>
      <rpad>BASE64</rpad><time stamp='YYYY-MM-DDThh:mm:ssZ'/><from jid='SENDER'/><to jid='RCPT'/></envelope>

  (no whitespace between the elements; ``<rpad>`` is base64 of 0..200 random bytes).  With several
  recipients ``<to>`` names the *first* one; with none (own devices only) it names the sender.  For
  the legacy namespace the plaintext is the UTF-8 body.  :meth:`SMPeer.decrypt` parses an OMEMO 2
  plaintext as an envelope with :mod:`xml.etree` and returns the ``<body>`` text; it does not check
  the affixes (``from``/``to``/``time``), it only exposes them.
* **History synchronisation mode is left at once.**  ``SessionManager.create`` starts in history
  sync mode, in which used pre keys are only hidden and empty messages are queued instead of sent.
  :meth:`SMPeer.create` calls ``after_history_sync()`` right away, so every key exchange received
  deletes its pre key immediately (the library then refills to 100 and re-uploads the bundle) and
  empty messages go out immediately.
* **Empty messages** (key-exchange completion after receiving a key exchange, heartbeats when the
  receiving chain is longer than ``STALENESS_MAGIC_NUMBER`` = 53, session replacement) leave
  through ``_send_message``; they are serialised and appended to :attr:`SMPeer.sent_empty` as
  ``(recipient_bare_jid, <encrypted/>)``.  Nothing is delivered automatically.  Note that past 53
  messages received without answering, *every* further decrypt emits a heartbeat.
  ``staleness_threshold`` overrides the constant (through the subclass; the library reads it as
  ``self.__class__.STALENESS_MAGIC_NUMBER``), e.g. 2 to test heartbeats quickly, or a huge value to
  switch them off.
* **Trust**: blind trust.  A new identity key gets the trust level name ``"undecided"`` (evaluated
  as ``UNDECIDED``: decrypting from it is allowed); when encrypting, the library asks
  :meth:`_make_trust_decision`, which sets every undecided key to ``"trusted"``.  :meth:`SMPeer.set_trust`
  can set ``"distrusted"`` explicitly.
* **Device lists**: the library only knows what it has been fed through ``update_device_list``
  (real clients get PEP notifications).  :meth:`SMPeer.refresh_device_lists` re-reads a JID's lists
  from the directory.  With ``auto_refresh=True`` (default) the peer imitates a PEP subscription:
  before each encrypt (for all recipients and the own JID) and decrypt (for the sender) it refreshes
  the lists whose directory revision changed since it last looked.  With ``auto_refresh=False`` only
  explicit refreshes (and the library's own refresh when a message arrives from an unknown device)
  update its view.
* **Bundles** are downloaded lazily by the library: for a device whose identity key it does not know
  yet (first contact) and to build a session.
* **Signed pre key rotation** runs in python-omemo as a background task started by ``create``.  The
  peer cancels it right after creation (``SessionManager.shutdown()`` does exactly that and nothing
  else), so no task outlives a call and no rotation ever happens in tests.

Event loop: all SMPeers of a thread share ONE persistent asyncio event loop (created lazily, one per
thread) and every public method runs its coroutine with ``loop.run_until_complete``.  Not
``asyncio.run`` per call (the session-level :func:`tests.peers.omemo_peer._run` does that): a new
loop per call costs more than some of the operations benchmarked with this peer, and it would cancel
the library's background task at the end of the first call.  Consequence: the sync methods cannot be
called from inside a running event loop (``RuntimeError``).

Test oracle only; nothing in the engine may import this module.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import secrets
import threading
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree
from omemo import (
    Bundle,
    BundleDownloadFailed,
    BundleNotFound,
    DeviceInformation,
    DeviceList,
    DeviceListDownloadFailed,
    EncryptionError,
    Message,
    SessionManager,
    TrustLevel,
    UnknownNamespace,
    UnknownTrustLevel,
)

from .omemo_peer import InMemoryStorage

__all__ = [
    "NS_OMEMO2",
    "NS_LEGACY",
    "NS_SCE",
    "Directory",
    "DecryptedSM",
    "SMPeer",
    "SMPeerError",
    "sce_envelope",
]

NS_OMEMO2 = "urn:xmpp:omemo:2"
NS_LEGACY = "eu.siacs.conversations.axolotl"
NS_SCE = "urn:xmpp:sce:1"
NS_CLIENT = "jabber:client"

_ETREE: dict[str, ModuleType] = {NS_OMEMO2: twomemo.etree, NS_LEGACY: oldmemo.etree}

TRUSTED, DISTRUSTED, UNDECIDED = "trusted", "distrusted", "undecided"
_TRUST_LEVELS = {TRUSTED: TrustLevel.TRUSTED, DISTRUSTED: TrustLevel.DISTRUSTED, UNDECIDED: TrustLevel.UNDECIDED}

_T = TypeVar("_T")

# python-omemo logs expected events of normal operation (e.g. "Own device id was not included in the online
# device list" on every first start) at WARNING.  A NullHandler keeps them off stderr when nothing else is
# configured (logging's last-resort handler); pytest's log capture and any configured root handler still
# see them.
logging.getLogger("omemo").addHandler(logging.NullHandler())


class SMPeerError(Exception):
    """Any failure of an :class:`SMPeer` operation; the library's exception is the ``__cause__``.

    ``plaintext`` is set when decryption succeeded but the OMEMO 2 plaintext was not an SCE envelope.
    """

    def __init__(self, message: str, plaintext: bytes | None = None) -> None:
        super().__init__(message)
        self.plaintext = plaintext


# ---- event loop ----------------------------------------------------------------------------

_local = threading.local()


def _run(coro: Awaitable[_T]) -> _T:
    """Run ``coro`` to completion on this thread's persistent loop."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop

    async def wrapper() -> _T:
        return await coro

    return loop.run_until_complete(wrapper())


# ---- the fake PEP service ------------------------------------------------------------------


class Directory:
    """Fake PEP: device list and bundle elements per bare JID and namespace (deep-copied in and out)."""

    def __init__(self) -> None:
        self._lists: dict[tuple[str, str], ET.Element] = {}
        self._bundles: dict[tuple[str, str, int], ET.Element] = {}
        self._revisions: dict[tuple[str, str], int] = {}

    def publish_device_list(self, jid: str, ns: str, elem: ET.Element) -> None:
        self._lists[(jid, ns)] = copy.deepcopy(elem)
        self._revisions[(jid, ns)] = self._revisions.get((jid, ns), 0) + 1

    def device_list(self, jid: str, ns: str) -> ET.Element | None:
        elem = self._lists.get((jid, ns))
        return None if elem is None else copy.deepcopy(elem)

    def delete_device_list(self, jid: str, ns: str) -> None:
        if self._lists.pop((jid, ns), None) is not None:
            self._revisions[(jid, ns)] = self._revisions.get((jid, ns), 0) + 1

    def revision(self, jid: str, ns: str) -> int:
        """Number of changes of the device list node of ``jid``/``ns`` so far (0: never published)."""
        return self._revisions.get((jid, ns), 0)

    def publish_bundle(self, jid: str, ns: str, device_id: int, elem: ET.Element) -> None:
        self._bundles[(jid, ns, device_id)] = copy.deepcopy(elem)

    def bundle(self, jid: str, ns: str, device_id: int) -> ET.Element | None:
        elem = self._bundles.get((jid, ns, device_id))
        return None if elem is None else copy.deepcopy(elem)

    def delete_bundle(self, jid: str, ns: str, device_id: int) -> None:
        self._bundles.pop((jid, ns, device_id), None)

    def device_ids(self, jid: str, ns: str) -> list[int]:
        """Device ids in the published list of ``jid``/``ns`` (document order); [] when absent."""
        elem = self._lists.get((jid, ns))
        return [] if elem is None else [int(d.get("id", "0")) for d in elem if d.get("id") is not None]


# ---- the SessionManager subclass -----------------------------------------------------------


def _etree(ns: str) -> ModuleType:
    try:
        return _ETREE[ns]
    except KeyError:
        raise UnknownNamespace(f"unknown namespace {ns!r}") from None


class _DirectorySessionManager(SessionManager):
    """SessionManager against a :class:`Directory`.

    ``SessionManager.create`` instantiates ``cls()`` without arguments and already calls the XMPP
    hooks before returning, so the per-peer context lives in class attributes of a per-peer subclass
    made by :func:`_sm_class`.
    """

    _directory: Directory
    _own_jid: str
    _outbox: list[tuple[str, ET.Element]]

    async def _upload_bundle(self, bundle: Bundle) -> None:  # type: ignore[override]
        elem = _etree(bundle.namespace).serialize_bundle(bundle)
        self._directory.publish_bundle(self._own_jid, bundle.namespace, bundle.device_id, elem)

    async def _download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> Bundle:  # type: ignore[override]
        mod = _etree(namespace)
        elem = self._directory.bundle(bare_jid, namespace, device_id)
        if elem is None:
            raise BundleNotFound(f"no {namespace} bundle for {bare_jid}/{device_id}")
        try:
            return mod.parse_bundle(elem, bare_jid, device_id)  # type: ignore[no-any-return]
        except Exception as e:
            raise BundleDownloadFailed(f"unparsable {namespace} bundle of {bare_jid}/{device_id}: {e}") from e

    async def _delete_bundle(self, namespace: str, device_id: int) -> None:  # type: ignore[override]
        _etree(namespace)
        self._directory.delete_bundle(self._own_jid, namespace, device_id)

    async def _upload_device_list(self, namespace: str, device_list: DeviceList) -> None:  # type: ignore[override]
        self._directory.publish_device_list(
            self._own_jid, namespace, _etree(namespace).serialize_device_list(device_list)
        )

    async def _download_device_list(self, namespace: str, bare_jid: str) -> DeviceList:  # type: ignore[override]
        mod = _etree(namespace)
        elem = self._directory.device_list(bare_jid, namespace)
        if elem is None:
            return {}
        try:
            return mod.parse_device_list(elem)  # type: ignore[no-any-return]
        except Exception as e:
            raise DeviceListDownloadFailed(f"unparsable {namespace} device list of {bare_jid}: {e}") from e

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        try:
            return _TRUST_LEVELS[device.trust_level_name]
        except KeyError:
            raise UnknownTrustLevel(f"unknown trust level name {device.trust_level_name!r}") from None

    async def _make_trust_decision(self, undecided: frozenset[DeviceInformation], identifier: str | None) -> None:
        for device in undecided:
            await self.set_trust(device.bare_jid, device.identity_key, TRUSTED)

    async def _send_message(self, message: Message, bare_jid: str) -> None:  # type: ignore[override]
        self._outbox.append((bare_jid, _etree(message.namespace).serialize_message(message)))


def _sm_class(directory: Directory, own_jid: str, outbox: list[tuple[str, ET.Element]], staleness: int | None) -> type:
    attrs: dict[str, Any] = {"_directory": directory, "_own_jid": own_jid, "_outbox": outbox}
    if staleness is not None:
        attrs["STALENESS_MAGIC_NUMBER"] = staleness
    return type("_PeerSessionManager", (_DirectorySessionManager,), attrs)


# ---- SCE -----------------------------------------------------------------------------------


def _attr(value: str) -> str:
    return escape(value, {"'": "&apos;", '"': "&quot;"})


def sce_envelope(body: str, from_jid: str, to_jid: str, *, stamp: datetime | None = None) -> bytes:
    """The XEP-0420 envelope around ``<body xmlns='jabber:client'>body</body>`` (see module doc)."""
    when = (stamp or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rpad = base64.b64encode(secrets.token_bytes(secrets.randbelow(201))).decode("ascii")
    return (
        f"<envelope xmlns='{NS_SCE}'><content><body xmlns='{NS_CLIENT}'>{escape(body)}</body></content>"
        f"<rpad>{rpad}</rpad><time stamp='{when}'/><from jid='{_attr(from_jid)}'/>"
        f"<to jid='{_attr(to_jid)}'/></envelope>"
    ).encode()


# ---- the peer ------------------------------------------------------------------------------


@dataclass
class DecryptedSM:
    """Result of :meth:`SMPeer.decrypt`.

    ``plaintext`` is None for empty (key transport / completion / heartbeat) messages.  ``body``: for
    OMEMO 2 the text of ``<body xmlns='jabber:client'>`` inside the envelope's ``<content>`` (None when
    absent or empty message); for legacy the plaintext decoded as UTF-8.  ``envelope``: the parsed
    OMEMO 2 envelope element (None otherwise).
    """

    namespace: str
    sender_device: int
    plaintext: bytes | None
    body: str | None
    sender_jid: str = ""
    envelope: ET.Element | None = field(default=None, repr=False)


class SMPeer:
    """One python-omemo device (a SessionManager) of ``bare_jid`` talking through a :class:`Directory`.

    Use :meth:`create`.  Attributes: ``directory``, ``bare_jid``, ``namespaces`` (loaded backends in
    priority order), ``sm`` (the SessionManager, for anything not wrapped here), ``storage``,
    ``sent_empty`` (outbox of empty messages, see module doc; the library appends to this very list,
    so clear it in place, e.g. with :meth:`take_sent_empty`, never rebind it) and
    ``last_encryption_errors``.
    """

    def __init__(self) -> None:  # use create()
        self.directory: Directory
        self.bare_jid: str
        self.namespaces: tuple[str, ...]
        self.storage: InMemoryStorage
        self.sm: _DirectorySessionManager
        self.sent_empty: list[tuple[str, ET.Element]] = []
        self.last_encryption_errors: frozenset[EncryptionError] = frozenset()
        self.auto_refresh = True
        self._device_id = 0
        self._identity_key = b""
        self._seen: dict[tuple[str, str], int] = {}

    @classmethod
    def create(
        cls,
        directory: Directory,
        bare_jid: str,
        namespaces: Sequence[str] = (NS_OMEMO2, NS_LEGACY),
        *,
        auto_refresh: bool = True,
        staleness_threshold: int | None = None,
        storage: InMemoryStorage | None = None,
        label: str | None = None,
    ) -> SMPeer:
        """Create (or, given the ``storage`` of an earlier peer, reload) a device and publish it.

        ``namespaces``: the backends to load, in priority order (a recipient device supporting several
        gets the first).  On first creation the library picks a random device id not in the published
        lists, generates 100 pre keys per backend, uploads the bundles and adds itself to the device
        lists.  ``staleness_threshold`` overrides ``STALENESS_MAGIC_NUMBER`` (53).
        """
        namespaces = tuple(namespaces)
        if not namespaces or len(set(namespaces)) != len(namespaces):
            raise SMPeerError(f"namespaces must be distinct and non-empty: {namespaces!r}")
        for ns in namespaces:
            if ns not in _ETREE:
                raise SMPeerError(f"unknown namespace {ns!r}")
        self = cls()
        self.directory = directory
        self.bare_jid = bare_jid
        self.namespaces = namespaces
        self.auto_refresh = auto_refresh
        self.storage = storage if storage is not None else InMemoryStorage()
        sm_cls = _sm_class(directory, bare_jid, self.sent_empty, staleness_threshold)
        try:
            _run(self._setup(sm_cls, label))
        except Exception as e:
            raise SMPeerError(f"SessionManager.create failed for {bare_jid}: {e!r}") from e
        return self

    async def _setup(self, sm_cls: type, label: str | None) -> None:
        backends = [
            twomemo.Twomemo(self.storage) if ns == NS_OMEMO2 else oldmemo.Oldmemo(self.storage)
            for ns in self.namespaces
        ]
        self.sm = await sm_cls.create(backends, self.storage, self.bare_jid, label, UNDECIDED)
        await self.sm.shutdown()  # cancels the signed pre key rotation task (see module doc)
        await self.sm.after_history_sync()
        own, _ = await self.sm.get_own_device_information()
        self._device_id = own.device_id
        self._identity_key = own.identity_key
        for ns in self.namespaces:
            self._seen[(self.bare_jid, ns)] = self.directory.revision(self.bare_jid, ns)

    # ---- properties -------------------------------------------------------------------------

    @property
    def device_id(self) -> int:
        return self._device_id

    @property
    def identity_key(self) -> bytes:
        """The Ed25519 public identity key (shared by all backends of this device)."""
        return self._identity_key

    # ---- device lists and trust ---------------------------------------------------------------

    def refresh_device_lists(self, jid: str) -> None:
        """Re-read ``jid``'s device lists of all loaded namespaces from the directory."""
        try:
            _run(self._refresh(jid, self.namespaces))
        except Exception as e:
            raise SMPeerError(f"device list refresh of {jid} failed: {e!r}") from e

    async def _refresh(self, jid: str, namespaces: Sequence[str]) -> None:
        for ns in namespaces:
            await self.sm.refresh_device_list(ns, jid)
            self._seen[(jid, ns)] = self.directory.revision(jid, ns)

    async def _sync(self, jids: Sequence[str]) -> None:
        if not self.auto_refresh:
            return
        for jid in jids:
            stale = [ns for ns in self.namespaces if self._seen.get((jid, ns)) != self.directory.revision(jid, ns)]
            if stale:
                await self._refresh(jid, stale)

    def devices(self, jid: str) -> frozenset[DeviceInformation]:
        """The library's cached view of ``jid``'s devices (may download bundles for unknown keys)."""
        try:
            return _run(self.sm.get_device_information(jid))
        except Exception as e:
            raise SMPeerError(f"device information of {jid} failed: {e!r}") from e

    def set_trust(self, jid: str, identity_key: bytes, level: str) -> None:
        """Set ``"trusted"``, ``"distrusted"`` or ``"undecided"`` for an Ed25519 identity key."""
        if level not in _TRUST_LEVELS:
            raise SMPeerError(f"unknown trust level {level!r}")
        try:
            _run(self.sm.set_trust(jid, identity_key, level))
        except Exception as e:
            raise SMPeerError(f"set_trust failed: {e!r}") from e

    # ---- encryption -----------------------------------------------------------------------------

    def encrypt(
        self,
        recipients: Sequence[str],
        body: str,
        *,
        namespaces: Sequence[str] | None = None,
        allow_errors: bool = False,
    ) -> dict[str, ET.Element]:
        """Encrypt ``body`` for all devices of ``recipients`` and the own other devices.

        Returns namespace -> ``<encrypted>`` element, one per namespace actually used (python-omemo
        picks, per recipient device, the first of ``namespaces`` (default: the loaded ones, in
        order) that the device has).  OMEMO 2 plaintext is an SCE envelope (see module doc), legacy
        plaintext the UTF-8 body.  Non-critical library errors (bundle missing/unparsable, key
        exchange failed for some device) raise :class:`SMPeerError` unless ``allow_errors``; they are
        kept in ``last_encryption_errors`` either way.
        """
        to = recipients[0] if recipients else self.bare_jid
        plaintexts = {
            ns: sce_envelope(body, self.bare_jid, to) if ns == NS_OMEMO2 else body.encode("utf-8")
            for ns in self.namespaces
        }
        return self.encrypt_plaintexts(recipients, plaintexts, namespaces=namespaces, allow_errors=allow_errors)

    def encrypt_plaintexts(
        self,
        recipients: Sequence[str],
        plaintexts: Mapping[str, bytes],
        *,
        namespaces: Sequence[str] | None = None,
        allow_errors: bool = False,
    ) -> dict[str, ET.Element]:
        """Like :meth:`encrypt` with the raw plaintext bytes per namespace (no envelope is built)."""
        try:
            messages, errors = _run(self._encrypt(recipients, plaintexts, namespaces))
        except Exception as e:
            raise SMPeerError(f"encryption for {list(recipients)} failed: {e!r}") from e
        self.last_encryption_errors = errors
        if errors and not allow_errors:
            raise SMPeerError(f"encryption errors for some devices: {sorted(map(repr, errors))}")
        return messages

    async def _encrypt(
        self, recipients: Sequence[str], plaintexts: Mapping[str, bytes], namespaces: Sequence[str] | None
    ) -> tuple[dict[str, ET.Element], frozenset[EncryptionError]]:
        await self._sync([*recipients, self.bare_jid])
        messages, errors = await self.sm.encrypt(
            frozenset(recipients),
            dict(plaintexts),
            backend_priority_order=None if namespaces is None else list(namespaces),
        )
        return {m.namespace: _etree(m.namespace).serialize_message(m) for m in messages}, errors

    # ---- decryption -----------------------------------------------------------------------------

    def decrypt(self, sender_bare_jid: str, encrypted: ET.Element) -> DecryptedSM:
        """Decrypt an ``<encrypted>`` element of either namespace sent by ``sender_bare_jid``.

        May append to :attr:`sent_empty` (key-exchange completion, heartbeat).  Any failure raises
        :class:`SMPeerError` with the library exception as ``__cause__``.
        """
        tag = encrypted.tag if isinstance(encrypted, ET.Element) else None
        ns = tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""
        if ns not in self.namespaces or tag != f"{{{ns}}}encrypted":
            raise SMPeerError(f"not an <encrypted> element of a loaded namespace: {tag!r}")
        try:
            plaintext, device, _ = _run(self._decrypt(ns, sender_bare_jid, encrypted))
        except Exception as e:
            raise SMPeerError(f"decryption of a {ns} message from {sender_bare_jid} failed: {e!r}") from e
        result = DecryptedSM(ns, device.device_id, plaintext, None, sender_bare_jid)
        if plaintext is None:
            return result
        if ns == NS_LEGACY:
            try:
                result.body = plaintext.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SMPeerError("legacy plaintext is not UTF-8", plaintext) from e
            return result
        try:
            envelope = ET.fromstring(plaintext)
        except ET.ParseError as e:
            raise SMPeerError(f"OMEMO 2 plaintext is not XML: {e}", plaintext) from e
        if envelope.tag != f"{{{NS_SCE}}}envelope":
            raise SMPeerError(f"OMEMO 2 plaintext is not an SCE envelope: {envelope.tag!r}", plaintext)
        result.envelope = envelope
        body = envelope.find(f"{{{NS_SCE}}}content/{{{NS_CLIENT}}}body")
        result.body = None if body is None else (body.text or "")
        return result

    async def _decrypt(
        self, ns: str, sender: str, encrypted: ET.Element
    ) -> tuple[bytes | None, DeviceInformation, Any]:
        await self._sync([sender])
        message: Message
        if ns == NS_OMEMO2:
            message = twomemo.etree.parse_message(encrypted, sender)
        else:
            message = await oldmemo.etree.parse_message(encrypted, sender, self.bare_jid, self.sm)
        return await self.sm.decrypt(message)

    # ---- misc -----------------------------------------------------------------------------------

    def take_sent_empty(self) -> list[tuple[str, ET.Element]]:
        """Return and clear the outbox of empty messages."""
        out = list(self.sent_empty)
        self.sent_empty.clear()
        return out

    def __repr__(self) -> str:
        return f"SMPeer({self.bare_jid}/{self._device_id}, {list(self.namespaces)})"
