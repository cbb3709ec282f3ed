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

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oldmemo.oldmemo
import twomemo
import twomemo.etree
import twomemo.twomemo
from omemo.storage import Storage
from omemo.types import DeviceInformation
from slixmpp.jid import JID
from slixmpp.plugins.base import register_plugin

from .session_manager import sce_envelope
from .slixmpp_peer_base import OneBackendXEP0384, PeerClient, SentEmpty

__all__ = ["O2", "PLUGIN", "Omemo2Message", "Omemo2Peer", "SentEmpty", "TwomemoOnlyXEP0384", "parse_envelope"]

log = logging.getLogger(__name__)

O2 = twomemo.twomemo.NAMESPACE
LEGACY = oldmemo.oldmemo.NAMESPACE
NS_SCE = "urn:xmpp:sce:1"
NS_CLIENT = "jabber:client"
PLUGIN = "xep_0384_twomemo_only"  # own registry name: the global "xep_0384" entry stays untouched
FALLBACK = "This message is OMEMO 2 encrypted."


class TwomemoOnlyXEP0384(OneBackendXEP0384):
    """slixmpp-omemo's plugin with a session manager holding only the twomemo backend."""

    name = PLUGIN
    namespace = O2

    def backend(self, storage: Storage) -> twomemo.Twomemo:
        return twomemo.Twomemo(storage, 1000, None)


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
        return (
            f"Omemo2Message(kex={self.key_exchange}, device={self.device and self.device.device_id}, "
            f"empty={self.body is None}, error={self.error!r})"
        )


class Omemo2Peer(PeerClient):
    """A slixmpp client with :class:`TwomemoOnlyXEP0384`; :meth:`start` returns once it is
    connected, has sent presence and has published its OMEMO 2 device list and bundle."""

    plugin_name = PLUGIN
    namespace = O2

    def __init__(self, jid: str, password: str, *, ca_file: Path, staleness_threshold: int | None = None) -> None:
        super().__init__(jid, password, ca_file=ca_file, staleness_threshold=staleness_threshold)
        self.inbox: list[Omemo2Message] = []

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
