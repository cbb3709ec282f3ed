"""An independent OMEMO client for interop tests: slixmpp 1.17 + slixmpp-omemo 2.2.0, legacy only.

slixmpp-omemo publishes device lists and bundles for both ``urn:xmpp:omemo:2`` and
``eu.siacs.conversations.axolotl``, but its ``encrypt_message()`` only produces legacy OMEMO (it
has no XEP-0420 envelope) and its ``decrypt_message()`` of an OMEMO 2 stanza advances the
ratchet and then raises ``NotImplementedError``.  A client that sends OMEMO 2 to every device on
the account's OMEMO 2 device list would therefore talk OMEMO 2 to a device that cannot read it.
This peer is made to speak legacy OMEMO only, so that it announces nothing it cannot handle.

How: the plugin has no option for it (its module-level ``_prepare()`` always passes
``[Twomemo(...), Oldmemo(...)]`` to ``SessionManager.create``), but python-omemo's
``SessionManager`` works with any subset of backends.  :class:`LegacyOnlyXEP0384` overrides
:meth:`XEP_0384.get_session_manager` (the single place through which the plugin obtains its
session manager: ``session_bind``, ``encrypt_message``, ``decrypt_message`` and the device-list
handlers all call it) and builds the plugin's own session manager class
(``slixmpp_omemo.xep_0384._make_session_manager``: same pubsub, message-sending and BTBV code)
with only the ``Oldmemo`` backend.  So nothing is published under ``urn:xmpp:omemo:2`` at all —
no device list, no bundle — and nothing has to be deleted from PEP afterwards.  Two methods of
that session manager drop OMEMO 2 device lists instead of raising ``UnknownNamespace``: the
plugin still subscribes to and receives its contacts' ``urn:xmpp:omemo:2:devices`` nodes (its
``refresh_device_lists`` and ``+notify`` interest are hard-wired for both namespaces).

Storage is in memory (:class:`tests.peers.omemo_peer.InMemoryStorage`): a new device id on each
run, so use a fresh server per test run.  Trust: BTBV on, and any manual trust prompt trusts
everything.  Session-manager operations (encrypt, decrypt) are serialised with one lock, since
slixmpp runs each message handler as its own task.  Incoming messages are taken by a stanza
handler on ``<message><encrypted xmlns='eu.siacs.conversations.axolotl'>``, not by slixmpp's
``message`` event, which fires only for stanzas with a ``<body>``.

Test oracle only: nothing in the engine or the client may import this module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import oldmemo
import oldmemo.oldmemo
from omemo.storage import Storage
from omemo.types import DeviceInformation
from slixmpp.jid import JID
from slixmpp.plugins.base import register_plugin

from .slixmpp_peer_base import OneBackendXEP0384, PeerClient

__all__ = ["PLUGIN", "LegacyOmemoPeer", "LegacyOnlyXEP0384", "PeerMessage"]

log = logging.getLogger(__name__)

LEGACY = oldmemo.oldmemo.NAMESPACE
PLUGIN = "xep_0384_legacy_only"  # own registry name: the global "xep_0384" entry stays untouched


class LegacyOnlyXEP0384(OneBackendXEP0384):
    """slixmpp-omemo's plugin with a session manager holding only the oldmemo backend."""

    name = PLUGIN
    namespace = LEGACY

    def backend(self, storage: Storage) -> oldmemo.Oldmemo:
        return oldmemo.Oldmemo(storage, 1000, None)


register_plugin(LegacyOnlyXEP0384)


class PeerMessage:
    """One message the peer received: the decrypted body (``None``: an empty OMEMO message),
    whether the ``<key>`` for this device was a key exchange (``prekey='true'``), the sending
    device, or the exception decryption raised."""

    def __init__(
        self, body: str | None, key_exchange: bool, device: DeviceInformation | None, error: BaseException | None
    ) -> None:
        self.body = body
        self.key_exchange = key_exchange
        self.device = device
        self.error = error

    def __repr__(self) -> str:
        return f"PeerMessage(kex={self.key_exchange}, device={self.device and self.device.device_id}, error={self.error!r})"


class LegacyOmemoPeer(PeerClient):
    """A slixmpp client with :class:`LegacyOnlyXEP0384`; :meth:`start` returns once it is
    connected, has sent presence and has published its legacy device list and bundle."""

    plugin_name = PLUGIN
    namespace = LEGACY

    def __init__(self, jid: str, password: str, *, ca_file: Path) -> None:
        super().__init__(jid, password, ca_file=ca_file)
        self.inbox: list[PeerMessage] = []

    async def _on_message(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal"):
            return
        kex = False
        own = await self.device_id()
        for key in msg.xml.iter(f"{{{LEGACY}}}key"):
            if key.get("rid") == str(own):
                kex = key.get("prekey", "false") in ("true", "1")
        async with self._peer_lock:
            try:
                decrypted, device = await self.omemo.decrypt_message(msg)
            except Exception as e:  # noqa: BLE001  (recorded for the test to report)
                self.inbox.append(PeerMessage(None, kex, None, e))
                return
        body = decrypted["body"] or None
        self.inbox.append(PeerMessage(body, kex, device, None))

    async def send_text(self, to: str, body: str) -> tuple[Any, frozenset[Any]]:
        """Encrypt with the plugin's ``encrypt_message`` and send; returns the sent stanza and the
        non-critical encryption errors."""
        msg = self.make_message(mto=JID(to), mtype="chat", mbody=body)
        async with self._peer_lock:
            encrypted, errors = await self.omemo.encrypt_message(msg, JID(to))
        if encrypted is None:
            raise RuntimeError(f"nothing to send to {to}: {errors}")
        encrypted.send()
        return encrypted, errors
