"""An independent OMEMO 2 client for interop tests: slixmpp 1.17 + slixmpp-omemo 2.2.0 machinery
around python-omemo 2.1.0's ``SessionManager`` with the twomemo backend only, plus XEP-0420 (SCE).

slixmpp-omemo cannot speak OMEMO 2 by itself: ``encrypt_message()`` never produces an
``urn:xmpp:omemo:2`` plaintext ("Here I would prepare the plaintext for omemo:2 using my SCE
plugin ... IF I HAD ONE!!!") and ``decrypt_message()`` of an OMEMO 2 stanza advances the ratchet
and then raises ``NotImplementedError``.  Its plugin machinery is still what a real client runs:
PEP publication of the device list and bundle (publish-options, node reconfiguration), bundle and
device-list downloads, manual device-list subscriptions, BTBV trust, and the sending of the
library's empty messages (key-exchange answers, heartbeats) as ``<message>`` stanzas.  So:

* :class:`TwomemoOnlyXEP0384` overrides :meth:`XEP_0384.get_session_manager` (as
  :mod:`tests.peers.slixmpp_omemo_peer` does for oldmemo) and builds the plugin's own session
  manager class (``slixmpp_omemo.xep_0384._make_session_manager``) with ONLY ``twomemo.Twomemo``.
  Nothing is published under the legacy namespace.  ``update_device_list`` / ``refresh_device_list``
  drop legacy device lists (the plugin still receives its contacts' legacy device-list
  notifications, and its ``refresh_device_lists`` is hard-wired for both namespaces), which would
  otherwise raise ``UnknownNamespace``.  ``_send_message`` (the empty messages) is wrapped to
  record each one in :attr:`TwomemoOnlyXEP0384.sent_empty` before the plugin sends it.
* :meth:`Omemo2Peer.send_text` does what slixmpp-omemo cannot: it builds the SCE envelope
  (:func:`tests.peers.session_manager.sce_envelope`: ``<content><body xmlns='jabber:client'>``,
  ``<rpad>``, ``<time>``, ``<from>``, ``<to>``) as the ``urn:xmpp:omemo:2`` plaintext, calls
  ``SessionManager.encrypt`` directly, serialises with ``twomemo.etree.serialize_message`` and
  sends it in a ``<message type='chat'>`` with a store hint and a clear-text fallback body.
* Incoming ``<message><encrypted xmlns='urn:xmpp:omemo:2'>`` stanzas (a stanza handler, not the
  ``message`` event, which needs a ``<body>``) are parsed with ``twomemo.etree.parse_message``,
  decrypted with ``SessionManager.decrypt``, and the plaintext parsed as an SCE envelope: the
  ``<body>`` is extracted, and ``<from jid>`` must be the stanza's bare sender and ``<to jid>``
  our bare JID (a mismatch is recorded as the message's error).

``staleness_threshold`` (constructor) overrides python-omemo's ``STALENESS_MAGIC_NUMBER`` (53:
past that many messages received in a row without answering, every decrypt sends a heartbeat),
so that tests can make heartbeats happen with a few messages.

Storage in memory (:class:`tests.peers.omemo_peer.InMemoryStorage`): a new device id on each
run.  Session-manager operations are serialised with one lock.  Test oracle only: nothing in the
engine or the client may import this module.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oldmemo.oldmemo
import slixmpp
import twomemo
import twomemo.etree
import twomemo.twomemo
from omemo.message import Message
from omemo.session_manager import SessionManager
from omemo.storage import Storage
from omemo.types import DeviceInformation, DeviceList
from slixmpp.jid import JID
from slixmpp.plugins.base import register_plugin
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp_omemo import XEP_0384
from slixmpp_omemo.base_session_manager import TrustLevel
from slixmpp_omemo.xep_0384 import _make_session_manager

from .omemo_peer import InMemoryStorage
from .session_manager import sce_envelope

__all__ = ["O2", "PLUGIN", "Omemo2Message", "Omemo2Peer", "SentEmpty", "TwomemoOnlyXEP0384", "parse_envelope"]

log = logging.getLogger(__name__)

O2 = twomemo.twomemo.NAMESPACE
LEGACY = oldmemo.oldmemo.NAMESPACE
NS_SCE = "urn:xmpp:sce:1"
NS_CLIENT = "jabber:client"
PLUGIN = "xep_0384_twomemo_only"  # own registry name: the global "xep_0384" entry stays untouched
FALLBACK = "This message is OMEMO 2 encrypted."


@dataclass(frozen=True)
class SentEmpty:
    """An empty OMEMO message the library sent: to whom, and whether it carried a key exchange."""

    bare_jid: str
    key_exchange: bool


class TwomemoOnlyXEP0384(XEP_0384):
    """slixmpp-omemo's plugin with a session manager holding only the twomemo backend."""

    name = PLUGIN

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._storage = InMemoryStorage()
        self._sm: SessionManager | None = None
        self._sm_task: asyncio.Task[SessionManager] | None = None
        self.staleness_threshold: int | None = None  # set before connecting
        self.sent_empty: list[SentEmpty] = []

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _prompt_manual_trust(self, manually_trusted: frozenset[DeviceInformation], identifier: str | None) -> None:
        sm = await self.get_session_manager()
        for device in manually_trusted:
            await sm.set_trust(device.bare_jid, device.identity_key, TrustLevel.TRUSTED.value)

    async def get_session_manager(self) -> SessionManager:
        if self._sm is not None:
            return self._sm
        if self._sm_task is None:
            self._sm_task = asyncio.create_task(self._create_session_manager())
            try:
                self._sm = await self._sm_task
            finally:
                self._sm_task = None
            self.xmpp.event("omemo_initialized")
            return self._sm
        return await self._sm_task

    async def _create_session_manager(self) -> SessionManager:
        base = _make_session_manager(self.xmpp, self)
        sent_empty = self.sent_empty
        attrs: dict[str, Any] = {}
        if self.staleness_threshold is not None:
            attrs["STALENESS_MAGIC_NUMBER"] = self.staleness_threshold

        class TwomemoOnlySessionManager(base):  # type: ignore[misc, valid-type]
            async def update_device_list(self, namespace: str, bare_jid: str, device_list: DeviceList) -> None:
                if namespace != O2:
                    log.debug("ignoring the %s device list of %s (OMEMO 2-only peer)", namespace, bare_jid)
                    return
                await super().update_device_list(namespace, bare_jid, device_list)

            async def refresh_device_list(self, namespace: str, bare_jid: str) -> None:
                if namespace != O2:
                    return
                await super().refresh_device_list(namespace, bare_jid)

            async def _send_message(self, message: Message, bare_jid: str) -> None:
                kex = any(key_exchange is not None for _key, key_exchange in message.keys)
                sent_empty.append(SentEmpty(bare_jid, kex))
                await super()._send_message(message, bare_jid)

        for k, v in attrs.items():
            setattr(TwomemoOnlySessionManager, k, v)

        sm = await TwomemoOnlySessionManager.create(
            [twomemo.Twomemo(self._storage, 1000, None)],
            self._storage,
            self.xmpp.boundjid.bare,
            initial_own_label=None,
            undecided_trust_level_name=TrustLevel.UNDECIDED.value,
        )
        await sm.ensure_data_consistency()
        await sm.after_history_sync()
        return sm  # type: ignore[no-any-return]


register_plugin(TwomemoOnlyXEP0384)


def parse_envelope(plaintext: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(body, from jid, to jid, time stamp) of an SCE envelope; ValueError if it is none."""
    try:
        envelope = ET.fromstring(plaintext)
    except ET.ParseError as e:
        raise ValueError(f"OMEMO 2 plaintext is not XML: {e}") from e
    if envelope.tag != f"{{{NS_SCE}}}envelope":
        raise ValueError(f"OMEMO 2 plaintext is not an SCE envelope: {envelope.tag!r}")
    content = envelope.find(f"{{{NS_SCE}}}content")
    if content is None:
        raise ValueError("SCE envelope without <content>")
    body = content.find(f"{{{NS_CLIENT}}}body")
    frm = envelope.find(f"{{{NS_SCE}}}from")
    to = envelope.find(f"{{{NS_SCE}}}to")
    time = envelope.find(f"{{{NS_SCE}}}time")
    return (
        None if body is None else (body.text or ""),
        None if frm is None else frm.get("jid"),
        None if to is None else to.get("jid"),
        None if time is None else time.get("stamp"),
    )


@dataclass
class Omemo2Message:
    """One OMEMO 2 message the peer received.  ``body`` None: an empty OMEMO message (or an
    error).  ``key_exchange``: the ``<key>`` for this device had ``kex='true'``.  ``stanza_type``:
    the ``type`` attribute of the ``<message>``.  ``envelope_from``/``envelope_to``/``stamp``:
    the SCE affixes."""

    body: str | None
    key_exchange: bool
    device: DeviceInformation | None
    error: BaseException | None
    stanza_type: str = ""
    envelope_from: str | None = None
    envelope_to: str | None = None
    stamp: str | None = None
    raw: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return (f"Omemo2Message(kex={self.key_exchange}, device={self.device and self.device.device_id}, "
                f"empty={self.body is None}, error={self.error!r})")


class Omemo2Peer(slixmpp.ClientXMPP):
    """A slixmpp client with :class:`TwomemoOnlyXEP0384`; :meth:`start` returns once it is
    connected, has sent presence and has published its OMEMO 2 device list and bundle."""

    def __init__(self, jid: str, password: str, *, ca_file: Path, staleness_threshold: int | None = None) -> None:
        super().__init__(jid, password)
        self.enable_direct_tls = False
        self.ca_certs = Path(ca_file)
        self.register_plugin(PLUGIN)
        self.omemo.staleness_threshold = staleness_threshold
        self.inbox: list[Omemo2Message] = []
        self.failed: str | None = None
        self._peer_lock = asyncio.Lock()
        self._peer_started = asyncio.Event()
        self._peer_omemo_ready = asyncio.Event()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("omemo_initialized", lambda _e: self._peer_omemo_ready.set())
        self.register_handler(CoroutineCallback(
            "OMEMO 2 message", MatchXPath(f"{{jabber:client}}message/{{{O2}}}encrypted"), self._on_message))
        self.add_event_handler("failed_auth", lambda _e: self._fail("authentication failed"))
        self.add_event_handler("ssl_invalid_chain", lambda _e: self._fail("certificate not trusted"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed ({e})"))

    @property
    def omemo(self) -> TwomemoOnlyXEP0384:
        return self.plugin[PLUGIN]  # type: ignore[literal-required, no-any-return]

    def _fail(self, why: str) -> None:
        self.failed = why
        self._peer_started.set()
        self._peer_omemo_ready.set()
        self.disconnect()

    async def start(self, host: str, port: int, timeout: float = 20) -> None:
        self.connect(host, port)
        await asyncio.wait_for(asyncio.gather(self._peer_started.wait(), self._peer_omemo_ready.wait()), timeout)
        if self.failed:
            raise ConnectionError(self.failed)

    def _on_session_start(self, _event: object) -> None:
        self.send_presence()
        self._peer_started.set()

    async def device_id(self) -> int:
        own, _ = await (await self.omemo.get_session_manager()).get_own_device_information()
        return int(own.device_id)

    async def _on_message(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal"):
            return
        sender = msg["from"].bare
        own_bare = self.boundjid.bare
        own_device = str(await self.device_id())
        encrypted = msg.xml.find(f"{{{O2}}}encrypted")
        kex = False
        for keys in encrypted.iter(f"{{{O2}}}keys"):
            if keys.get("jid") != own_bare:
                continue
            for key in keys.iter(f"{{{O2}}}key"):
                if key.get("rid") == own_device:
                    kex = key.get("kex", "false") in ("true", "1")
        entry = Omemo2Message(None, kex, None, None, stanza_type=msg["type"], raw=str(msg))
        async with self._peer_lock:
            try:
                sm = await self.omemo.get_session_manager()
                message = twomemo.etree.parse_message(encrypted, sender)
                plaintext, device, _ = await sm.decrypt(message)
            except Exception as e:  # noqa: BLE001  (recorded for the test to report)
                entry.error = e
                self.inbox.append(entry)
                return
        entry.device = device
        if plaintext is not None:
            try:
                entry.body, entry.envelope_from, entry.envelope_to, entry.stamp = parse_envelope(plaintext)
                if entry.envelope_from != sender:
                    raise ValueError(f"SCE <from jid={entry.envelope_from!r}> is not the sender {sender!r}")
                if entry.envelope_to != own_bare:
                    raise ValueError(f"SCE <to jid={entry.envelope_to!r}> is not us ({own_bare!r})")
                if entry.body is None:
                    raise ValueError("SCE envelope without <body xmlns='jabber:client'>")
            except ValueError as e:
                entry.error = e
        self.inbox.append(entry)

    async def send_text(self, to: str, body: str) -> tuple[Any, frozenset[Any]]:
        """Build the SCE envelope, encrypt it with ``SessionManager.encrypt`` (OMEMO 2 only) and
        send it; returns the sent stanza and the non-critical encryption errors."""
        to_bare = JID(to).bare
        # the plugin's own device-list refresh: a manual pubsub subscription and a download the
        # first time (no presence subscription between the test accounts)
        await self.omemo.refresh_device_lists({JID(to_bare)})
        plaintext = sce_envelope(body, self.boundjid.bare, to_bare)
        async with self._peer_lock:
            sm = await self.omemo.get_session_manager()
            messages, errors = await sm.encrypt(frozenset({to_bare}), {O2: plaintext}, backend_priority_order=[O2])
        elements = [twomemo.etree.serialize_message(m) for m in messages]
        if len(elements) != 1:
            raise RuntimeError(f"expected one OMEMO 2 message for {to_bare}, got {len(elements)}: {errors}")
        stanza = self.make_message(mto=JID(to_bare), mtype="chat", mbody=FALLBACK)
        stanza.append(elements[0])
        stanza.enable("store")
        stanza.send()
        return stanza, errors
