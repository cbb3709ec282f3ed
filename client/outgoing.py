"""Sending: one path from a body to the stanzas on the wire, for 1:1 chats and rooms alike.

What a recipient's devices need is fetched first (their device lists when no PEP notification
reaches us through a presence subscription and the lists fetched and followed last are older
than :data:`~e2ee.client.followed.FRESH_WINDOW`: client/followed.py; then what
:meth:`~e2ee.engine.Engine.prepare` asks for, a few rounds at most), then the engine encrypts
and :class:`~e2ee.client.stanzas.Stanzas` sends: one message per namespace in use, our own
copy to our bare JID.  Nothing is sent when a recipient has no eligible device (the result says
why).  :meth:`Outgoing.send_chat` follows the engine's OMEMO-then-OpenPGP policy instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import slixmpp
from slixmpp.types import MessageTypes

from e2ee.engine import NAMESPACES, Engine
from e2ee.fallback import Route, SendResult
from e2ee.nodes import DEVICE_LIST_NODES
from e2ee.openpgp.xml import PUBLIC_KEYS_NODE
from e2ee.results import Effect, EncryptResult, FetchDeviceList, FetchPublicKeys

from .followed import Followed
from .pep import Pep
from .stanzas import Stanzas

__all__ = ["Outgoing", "PREPARE_ROUNDS", "Sent"]

#: Rounds of fetching before an OMEMO send (device lists, then bundles).
PREPARE_ROUNDS = 4
#: Rounds before a send by the fallback policy (device lists, bundles, OpenPGP metadata, keys).
FALLBACK_ROUNDS = 6


@dataclass(frozen=True, slots=True)
class Sent:
    """The engine's result and the id of the stanza sent to the recipient (None: not sent)."""

    result: EncryptResult
    id: str | None


class Outgoing:
    """The send path of one session; ``omemo=False`` is an OpenPGP-only client."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, engine: Engine, pep: Pep, stanzas: Stanzas, *, omemo: bool) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.pep = pep
        self.stanzas = stanzas
        self.omemo = omemo
        #: contacts' nodes fetched and subscribed to (client/followed.py)
        self.followed = Followed(xmpp, engine.storage)

    def _nodes(self, *, openpgp: bool) -> list[str]:
        """The nodes of a contact fetched before a send (device lists; OpenPGP key metadata)."""
        nodes = [DEVICE_LIST_NODES[ns] for ns in NAMESPACES] if self.omemo else []
        return [*nodes, PUBLIC_KEYS_NODE] if openpgp else nodes

    def _stale(self, jids: Sequence[str], nodes: Sequence[str]) -> list[str]:
        """Those of ``jids`` (bare) whose ``nodes`` must be fetched before a send: no presence
        subscription brings their notifications, and none fetched and followed is fresh."""
        bare = dict.fromkeys(slixmpp.JID(j).bare for j in jids)
        return [j for j in bare if not self.subscribed(j) and not self.followed.fresh(j, nodes)]

    async def _fetch_and_follow(self, jids: Sequence[str], nodes: Sequence[str], *, openpgp: bool) -> None:
        """Fetch ``nodes`` of each of ``jids`` and subscribe to them, all in one round trip."""
        if not jids:
            return
        fetches: list[Effect] = []
        for j in jids:
            fetches += [FetchDeviceList(j, ns) for ns in NAMESPACES] if self.omemo else []
            fetches += [FetchPublicKeys(j)] if openpgp else []
        when = time.time()
        subscribed = asyncio.gather(*(self.followed.subscribe(j, nodes) for j in jids))
        _, accepted = await asyncio.gather(self.pep.run_parallel(fetches), subscribed)
        for j, nodes_accepted in zip(jids, accepted, strict=True):
            self.followed.fetched(j, nodes_accepted, when)

    def subscribed(self, jid: str) -> bool:
        """Whether PEP notifications of ``jid`` reach us (our own account, or a presence
        subscription to it): then its device lists need no fetching before a send."""
        bare = slixmpp.JID(jid).bare
        if bare == self.xmpp.boundjid.bare:
            return True
        roster = self.xmpp.client_roster
        item = roster[bare] if bare in roster else None
        return item is not None and item["subscription"] in ("to", "both")

    async def send(
        self, recipients: Sequence[str], body: str, *, to: str, room: str | None = None, mtype: MessageTypes = "chat"
    ) -> Sent:
        """Encrypt ``body`` for every trusted device of ``recipients`` and of our account and
        send it to ``to`` (a contact, or the ``room`` whose members the recipients are: then the
        room is the SCE ``<to>``)."""
        accounts = list(recipients)
        nodes = self._nodes(openpgp=False)
        await self._fetch_and_follow(self._stale(accounts, nodes), nodes, openpgp=False)
        for _ in range(PREPARE_ROUNDS):
            fetches = self.engine.prepare(accounts, use_openpgp=False)
            if not fetches:
                break
            await self.pep.run_parallel(fetches)
        result = self.engine.encrypt_omemo(accounts, body, to=room)
        if not result.ready:
            return Sent(result, None)
        return Sent(result, self.stanzas.send_result(to, result, mtype=mtype))

    async def send_text(self, to: str, body: str) -> EncryptResult:
        """Encrypt ``body`` for every trusted device of ``to`` and of our account, fetching what
        is missing first, and send one message per namespace.  Nothing is sent when ``to`` has
        no eligible device (the result says why).  Without a presence subscription to ``to`` no
        device-list notification reaches us, so its lists are fetched again first."""
        return (await self.send([to], body, to=to)).result

    async def send_chat(self, to: str, body: str, *, allow_plaintext: bool = False) -> SendResult:
        """Send ``body`` to ``to`` by the engine's policy (:mod:`e2ee.fallback`): OMEMO when ``to``
        has a trusted OMEMO device, else OpenPGP when it has a trusted OpenPGP key, else clear
        text only with ``allow_plaintext``.  Raises :class:`~e2ee.errors.NoEligibleDevices`
        (nothing is sent) otherwise.  What is missing is fetched first."""
        bare = slixmpp.JID(to).bare
        openpgp = self.engine.has_openpgp
        nodes = self._nodes(openpgp=openpgp)
        await self._fetch_and_follow(self._stale([bare], nodes), nodes, openpgp=openpgp)
        for _ in range(FALLBACK_ROUNDS):
            effects = self.engine.prepare([bare], use_omemo=self.omemo)
            if not effects:
                break
            await self.pep.run_parallel(effects)  # independent fetches: together
        result = self.engine.encrypt([bare], body, allow_plaintext=allow_plaintext, use_omemo=self.omemo)
        for r in result.recipients:
            if r.route is Route.OMEMO and r.omemo is not None and r.omemo.ready:
                self.stanzas.send_result(to, r.omemo)
            elif r.route is Route.OPENPGP and r.openpgp is not None:
                self.stanzas.send_openpgp(to, r.openpgp)
            elif r.route is Route.PLAINTEXT:
                self.stanzas.send_plain(to, body)
        return result
