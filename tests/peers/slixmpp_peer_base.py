"""What the two slixmpp-omemo test peers share: slixmpp-omemo's plugin with a python-omemo
session manager holding a single backend, and a slixmpp client around it.

:class:`OneBackendXEP0384` overrides ``XEP_0384.get_session_manager`` (the single place through
which the plugin obtains its session manager) and builds the plugin's own session-manager class
(``slixmpp_omemo.xep_0384._make_session_manager``: the real pubsub, message-sending and BTBV code)
with only :meth:`OneBackendXEP0384.backend`.  Device lists of the other namespace are dropped (the
plugin still subscribes to both), every empty message the library sends is recorded in
``sent_empty``, and ``staleness_threshold`` overrides python-omemo's heartbeat threshold (53).

:class:`PeerClient` connects, sends presence, waits for the plugin to publish, and hands every
``<message><encrypted xmlns=NAMESPACE>`` to :meth:`PeerClient._on_message` (a stanza handler:
slixmpp's ``message`` event needs a ``<body>``, and empty OMEMO messages have none).
Session-manager operations are serialised with ``_peer_lock``.  Test oracles only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slixmpp
from omemo.backend import Backend
from omemo.message import Message
from omemo.session_manager import SessionManager
from omemo.storage import Storage
from omemo.types import DeviceInformation, DeviceList
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp_omemo import XEP_0384
from slixmpp_omemo.base_session_manager import TrustLevel
from slixmpp_omemo.xep_0384 import _make_session_manager

from .omemo_peer import InMemoryStorage

__all__ = ["OneBackendXEP0384", "PeerClient", "SentEmpty"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentEmpty:
    """An empty OMEMO message the library sent: to whom, and whether it carried a key exchange."""

    bare_jid: str
    key_exchange: bool


class OneBackendXEP0384(XEP_0384):
    """slixmpp-omemo's plugin with a session manager holding only one backend (subclasses set
    ``name`` (their registry name), ``namespace`` and :meth:`backend`)."""

    namespace: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._storage = InMemoryStorage()
        self._sm: SessionManager | None = None
        self._sm_task: asyncio.Task[SessionManager] | None = None
        self.staleness_threshold: int | None = None  # set before connecting
        self.sent_empty: list[SentEmpty] = []

    def backend(self, storage: Storage) -> Backend:
        raise NotImplementedError

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _prompt_manual_trust(
        self, manually_trusted: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
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
        namespace, sent_empty = self.namespace, self.sent_empty

        class OneBackendSessionManager(base):  # type: ignore[misc, valid-type]
            async def update_device_list(self, ns: str, bare_jid: str, device_list: DeviceList) -> None:
                if ns != namespace:
                    log.debug("ignoring the %s device list of %s (%s-only peer)", ns, bare_jid, namespace)
                    return
                await super().update_device_list(ns, bare_jid, device_list)

            async def refresh_device_list(self, ns: str, bare_jid: str) -> None:
                if ns == namespace:
                    await super().refresh_device_list(ns, bare_jid)

            async def _send_message(self, message: Message, bare_jid: str) -> None:
                kex = any(key_exchange is not None for _key, key_exchange in message.keys)
                sent_empty.append(SentEmpty(bare_jid, kex))
                await super()._send_message(message, bare_jid)

        if self.staleness_threshold is not None:
            OneBackendSessionManager.STALENESS_MAGIC_NUMBER = self.staleness_threshold
        sm = await OneBackendSessionManager.create(
            [self.backend(self._storage)],
            self._storage,
            self.xmpp.boundjid.bare,
            initial_own_label=None,
            undecided_trust_level_name=TrustLevel.UNDECIDED.value,
        )
        await sm.ensure_data_consistency()
        await sm.after_history_sync()
        return sm  # type: ignore[no-any-return]


class PeerClient(slixmpp.ClientXMPP):
    """A slixmpp client with a :class:`OneBackendXEP0384` plugin (``plugin_name``);
    :meth:`start` returns once it is connected, has sent presence and has published."""

    plugin_name: str
    namespace: str

    def __init__(self, jid: str, password: str, *, ca_file: Path, staleness_threshold: int | None = None) -> None:
        super().__init__(jid, password)
        self.enable_direct_tls = False
        self.ca_certs = Path(ca_file)
        self.register_plugin(self.plugin_name)
        self.omemo.staleness_threshold = staleness_threshold
        self.failed: str | None = None
        self._peer_lock = asyncio.Lock()
        self._peer_started = asyncio.Event()
        self._peer_omemo_ready = asyncio.Event()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("omemo_initialized", lambda _e: self._peer_omemo_ready.set())
        self.register_handler(
            CoroutineCallback(
                f"{self.namespace} message",
                MatchXPath(f"{{jabber:client}}message/{{{self.namespace}}}encrypted"),
                self._on_message,
            )
        )
        self.add_event_handler("failed_auth", lambda _e: self._fail("authentication failed"))
        self.add_event_handler("ssl_invalid_chain", lambda _e: self._fail("certificate not trusted"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed ({e})"))

    @property
    def omemo(self) -> Any:
        return self.plugin[self.plugin_name]

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
        raise NotImplementedError
