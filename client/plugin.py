"""The slixmpp plugin: OMEMO 2 and legacy OMEMO (and OpenPGP for XMPP) through the e2ee engine.

Register it on any ``slixmpp.ClientXMPP`` with an engine (on the encrypted keystore or any other
storage)::

    xmpp.register_plugin("e2ee_omemo", module="e2ee.client.plugin",
                         pconfig={"engine": engine, "on_received": handle})

It loads the plugins it uses (:attr:`e2ee_omemo.dependencies`).  At ``session_start`` it
publishes the device lists and bundles, catches up from the archive and sends presence;
``await xmpp.plugin["e2ee_omemo"].send_text(jid, text)`` encrypts and sends; every decrypted
message (or refusal) is passed to ``on_received`` as a :class:`e2ee.client.types.Received`.
``xmpp.plugin.disable("e2ee_omemo")`` removes its handlers again (:meth:`e2ee_omemo.plugin_end`).

The work is split by job: :mod:`~e2ee.client.pep` (effects, publish, fetch),
:mod:`~e2ee.client.incoming` (messages, carbons, healing), :mod:`~e2ee.client.catchup` (MAM),
:mod:`~e2ee.client.outgoing` (the send path) over :mod:`~e2ee.client.stanzas`, and
:mod:`~e2ee.client.muc` (rooms).
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import ClassVar

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.base import BasePlugin
from slixmpp.xmlstream.xmlstream import NotConnectedError

from e2ee.client.republish import drop_held, drop_unchanged
from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import E2EEError
from e2ee.fallback import SendResult
from e2ee.media import MediaLink
from e2ee.nodes import DEVICE_LIST_NODES, bundle_node, bundle_publish_item
from e2ee.openpgp.xml import IM_FEATURE, PUBLIC_KEYS_NODE, public_key_node
from e2ee.results import Effect, EncryptResult, Publish

from . import media
from .catchup import MAM_PAGE, CatchUp
from .guard import install_depth_guard, remove_depth_guard
from .incoming import Incoming
from .muc import Rooms
from .outgoing import Outgoing
from .pep import Pep
from .stanza_errors import describe
from .stanzas import Stanzas
from .types import Effects, OnReceived

__all__ = ["MAINTENANCE_INTERVAL", "e2ee_omemo"]

log = logging.getLogger("e2ee.client.session")

#: Seconds between two runs of the engine's maintenance (signed-prekey rotation, prekey refill)
#: in a long-lived session; it also runs at every connect.
MAINTENANCE_INTERVAL = 6 * 3600
_MAINTENANCE = "e2ee maintenance"


async def _caught(read: Awaitable[ET.Element | None]) -> ET.Element | None | BaseException:
    """``read``'s answer, or the exception it raised (a failed read is decided on later)."""
    try:
        return await read
    except (IqError, IqTimeout) as e:
        return e


class e2ee_omemo(BasePlugin):  # slixmpp finds a plugin class by its name
    name = "e2ee_omemo"
    description = "End-to-end encryption with OMEMO 2 and legacy OMEMO (e2ee engine)"
    #: disco and forms, MUC, RSM (for MAM), PubSub and PEP, entity caps (the +notify interests),
    #: carbons, forwarding, MAM, hints, EME
    dependencies: ClassVar[set[str]] = {
        "xep_0004",
        "xep_0030",
        "xep_0045",
        "xep_0059",
        "xep_0060",
        "xep_0115",
        "xep_0163",
        "xep_0280",
        "xep_0297",
        "xep_0313",
        "xep_0334",
        "xep_0380",
    }
    #: ``engine`` (required), ``on_received(Received)``, ``omemo`` (publish our OMEMO device at
    #: start; False: an OpenPGP-only client), ``openpgp_generate`` (with an OpenPGP backend,
    #: create our key at start when there is none; an existing key is always re-announced)
    default_config: ClassVar[dict[str, object]] = {
        "engine": None,
        "on_received": None,
        "omemo": True,
        "openpgp_generate": True,
    }

    def plugin_init(self) -> None:
        engine, client = self.config["engine"], self.xmpp
        if not isinstance(engine, Engine):
            raise ValueError("register e2ee_omemo with pconfig={'engine': ...}")
        if not isinstance(client, slixmpp.ClientXMPP):
            raise TypeError("e2ee_omemo works on a ClientXMPP")
        on_received: OnReceived | None = self.config["on_received"]
        self._engine = engine
        self.client = client
        self.ready = asyncio.Event()  #: set once the session is published and caught up (or failed)
        self.failed: str | None = None  #: why the session could not be set up
        self._tasks: set[asyncio.Future[None]] = set()
        self.stanzas = Stanzas(client)
        self.pep = Pep(client, engine, self.stanzas)
        self.outgoing = Outgoing(client, engine, self.pep, self.stanzas, omemo=bool(self.config["omemo"]))
        self.incoming = Incoming(client, engine, self.pep, on_received)
        self.archive = CatchUp(client, engine, self.pep, self.incoming)
        install_depth_guard(client)
        self.stanzas.install()
        self.pep.install()
        self.incoming.install()
        #: group chats (XEP-0045): join, send_text, ...
        self.rooms = Rooms(client, engine, self.pep, self.incoming, self.outgoing, self.spawn)
        for event, handler in self._events():
            client.add_event_handler(event, handler)
        if client.session_bind_event.is_set():  # registered after binding
            self._announce()

    def _events(self) -> list[tuple[str, Callable[[object], object]]]:
        return [
            ("session_start", self._session_start),
            ("disconnected", self._disconnected),
            ("failed_auth", self._failed_auth),
            ("connection_failed", self._connection_failed),
            ("ssl_invalid_chain", self._invalid_chain),
            ("entity_caps", self._entity_caps),
        ]

    def plugin_end(self) -> None:
        """Remove every handler, event handler, disco feature and schedule this plugin added."""
        client = self.client
        for event, handler in self._events():
            client.del_event_handler(event, handler)
        client.cancel_schedule(_MAINTENANCE)
        self.rooms.uninstall()
        self.incoming.uninstall()
        self.pep.uninstall()
        self.stanzas.uninstall()
        remove_depth_guard(client)
        if self._engine.has_openpgp:
            client.plugin["xep_0030"].del_feature(feature=IM_FEATURE)
        for task in self._tasks:
            task.cancel()

    def session_bind(self, jid: object) -> None:
        if "pep" in vars(self):  # (slixmpp calls it before plugin_init when already bound)
            self._announce()

    def _announce(self) -> None:
        """Our ``+notify`` interests and the OpenPGP feature, in the disco#info of our full JID."""
        self.pep.announce_interest()
        if self._engine.has_openpgp:
            self.client.plugin["xep_0030"].add_feature(IM_FEATURE)

    # ------------------------------------------------------------------ what users call

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def caught_up(self) -> int:
        """Archived messages processed by the catch-up at the last connect."""
        return self.archive.caught_up

    @property
    def stanza_ids(self) -> bool:
        """Whether our account stamps stanza-ids on what it archives (known after connecting)."""
        return self.incoming.stanza_ids

    async def send_text(self, to: str, body: str) -> EncryptResult:
        """Encrypt for every trusted device of ``to`` and of our account, and send."""
        return await self.outgoing.send_text(to, body)

    async def send_chat(self, to: str, body: str, *, allow_plaintext: bool = False) -> SendResult:
        """Send by the engine's policy: OMEMO, else OpenPGP (with an engine created with
        ``openpgp=e2ee.client.gpg.GnuPG()``), else refused (:class:`~e2ee.errors.NoEligibleDevices`)
        unless ``allow_plaintext``."""
        return await self.outgoing.send_chat(to, body, allow_plaintext=allow_plaintext)

    async def send_file(self, to: str, path: Path, progress: media.Progress | None = None) -> media.SentFile:
        """Encrypt and upload a file (XEP-0363) and send its ``aesgcm://`` link (XEP-0454).
        Fetch received ones with :meth:`download` (``Received.media`` holds the link)."""
        return await media.send_file(self.outgoing, to, path, progress=progress)

    async def download(self, link: MediaLink | str, dest_path: Path, progress: media.Progress | None = None) -> Path:
        """Download, decrypt and verify a shared file into ``dest_path`` (a file, or a directory
        to save it in under its own name), trusting the client's ``ca_certs`` file too (see
        :func:`e2ee.client.media.download`)."""
        return await media.download(link, dest_path, progress=progress, ca_file=media.session_ca(self.client))

    async def run_effects(self, effects: Effects) -> None:
        """Carry out what an engine call returned (:meth:`e2ee.client.pep.Pep.run`)."""
        await self.pep.run(effects)

    async def first_item(self, jid: str, node: str, item_id: str | None = None) -> ET.Element | None:
        """The payload of one PEP item of ``jid`` (the newest when ``item_id`` is None)."""
        return await self.pep.first_item(jid, node, item_id)

    async def fetch_bundle(self, jid: str, device_id: int, namespace: str) -> ET.Element | None:
        """The bundle ``jid`` publishes for ``device_id`` in ``namespace`` as the server holds
        it (None when there is none); nothing is passed to the engine."""
        return await self.pep.fetch_bundle(jid, device_id, namespace)

    async def catch_up(self, max_messages: int = MAM_PAGE) -> int:
        """Decrypt what our archive holds since we last read it (:meth:`CatchUp.run`)."""
        return await self.archive.run(max_messages)

    def spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ start-up

    def _fail(self, why: str) -> None:
        if self.ready.is_set():
            return
        self.failed = why
        self.ready.set()
        self.client.disconnect()

    def _disconnected(self, _event: object) -> None:
        self.client.cancel_schedule(_MAINTENANCE)
        self.archive.drop_ahead()

    def _entity_caps(self, presence: object) -> None:
        """Note our server's caps hash (its stream features, which slixmpp passes on as a
        presence from the domain): the key under which our account's features are kept."""
        if isinstance(presence, slixmpp.Presence) and presence["from"] == slixmpp.JID(self.client.boundjid.domain):
            ver = str(presence["caps"]["ver"] or "")
            self.archive.server_caps = ver or None

    def _failed_auth(self, _event: object) -> None:
        self._fail("authentication failed")

    def _connection_failed(self, event: object) -> None:
        self._fail(f"connection failed ({event})")

    def _invalid_chain(self, _event: object) -> None:
        self._fail("the server's certificate is not trusted")

    async def _session_start(self, _event: object) -> None:
        try:
            await self._start()
        except (IqError, IqTimeout, E2EEError) as e:
            self._fail(f"setting up the session failed: {describe(e)}")
            return
        except Exception as e:  # a bug must not leave start() waiting for its timeout
            log.exception("session set-up failed")
            self._fail(f"setting up the session failed: {type(e).__name__}: {e}")
            return
        self.ready.set()

    async def _start(self) -> None:
        client, engine, pep = self.client, self._engine, self.pep
        own = client.boundjid.bare
        omemo = bool(self.config["omemo"])
        op = engine.openpgp if engine.has_openpgp else None
        fingerprint = op.fingerprint if op is not None else None
        # every read goes out at once (one round trip; the server answers in order): carbons,
        # our two device lists, our OpenPGP key metadata and key data, whether our account
        # stamps stanza-ids (unless known for this server), our bundles, the archive's first page
        reads: dict[str, Awaitable[ET.Element | None]] = {}
        if omemo:
            reads.update({DEVICE_LIST_NODES[ns]: pep.fetch_device_list(own, ns) for ns in NAMESPACES})
        if op is not None:
            reads[PUBLIC_KEYS_NODE] = pep.first_item(own, PUBLIC_KEYS_NODE, None)
            if fingerprint is not None:
                reads[public_key_node(fingerprint)] = pep.first_item(own, public_key_node(fingerprint), None)
        # the archive's first page since we last read it is asked for in the same round trip
        # (decrypted below, after our devices are set up and before anything is sent)
        self.archive.ask_ahead()
        # and our own bundles as the server holds them (their nodes and items are known before
        # the device lists are): for the publication check below; a failed read keeps the item
        bundles: dict[tuple[str, str | None], Awaitable[ET.Element | None | BaseException]] = {}
        if omemo:
            for ns in NAMESPACES:
                where = (bundle_node(ns, engine.device_id), bundle_publish_item(ns, engine.device_id))
                bundles[where] = _caught(pep.first_item(own, *where))
        _, _, *answers = await asyncio.gather(
            client.plugin["xep_0280"].enable(),
            self.archive.announces_stanza_ids(),
            *reads.values(),
            *bundles.values(),
        )
        #: the newest item of each of our nodes read above, as the server holds it now
        held: dict[str, ET.Element | None] = dict(zip(reads, answers[: len(reads)], strict=True))
        held_bundles: dict[tuple[str, str | None], ET.Element | None | BaseException] = dict(
            zip(bundles, answers[len(reads) :], strict=True)
        )
        effects: list[Effect] = []
        if omemo:
            for ns in NAMESPACES:
                await self._run_noting(engine.on_device_list(own, ns, held[DEVICE_LIST_NODES[ns]]), held)
            engine.maintenance()  # rotate the signed prekey when due; publish() below carries it
            effects += engine.publish()
            client.cancel_schedule(_MAINTENANCE)
            client.schedule(_MAINTENANCE, MAINTENANCE_INTERVAL, self._maintenance, repeat=True)
        if op is not None:
            # follow our own metadata, then announce our key (created first when allowed)
            await self._run_noting(op.on_public_keys(own, held[PUBLIC_KEYS_NODE]), held)
            if op.fingerprint is not None or self.config["openpgp_generate"]:
                effects += op.publish()
        # republish nothing the server holds (all read above; anything else is read back here)
        effects = drop_held(held, effects)

        async def read_back(node: str, item_id: str | None) -> ET.Element | None:
            if node in held:  # (changed: the newest item was read above)
                return held[node]
            if (node, item_id) in held_bundles:
                known = held_bundles[node, item_id]
                if isinstance(known, BaseException):
                    raise known
                return known
            return await pep.first_item(own, node, item_id)

        await pep.run(await drop_unchanged(read_back, effects))
        await self.archive.run()
        # presence last: offline messages then arrive after the archive was read, and are
        # recognised as duplicates of what the catch-up decrypted
        client.send_presence()

    async def _run_noting(self, effects: Effects, held: dict[str, ET.Element | None]) -> None:
        """Run ``effects``; what they published is what the server holds now (``held``)."""
        await self.pep.run(effects)
        for e in effects:
            if isinstance(e, Publish):
                held[e.node] = e.payload

    def _maintenance(self) -> None:
        async def run() -> None:
            try:
                await self.pep.run(self._engine.maintenance())
            except (IqError, IqTimeout, E2EEError, NotConnectedError) as e:
                log.warning("periodic maintenance failed: %s", describe(e))

        self.spawn(run())
