"""Catch-up: what our message archive (XEP-0313) holds since we last read it, decrypted at
connect.

Results are accepted only from our own archive (from our bare JID, or from our server on our
behalf: no ``from``); slixmpp's MAM plugin accepts only results with our query id.  The engine
keeps used prekeys during the catch-up (:meth:`~e2ee.engine.Engine.begin_catch_up`).  Where we
read up to is kept in the engine's storage (client/archive.py) and advanced by live messages too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import slixmpp
from slixmpp import Iq
from slixmpp.exceptions import IqError, IqTimeout

from e2ee.engine import Engine

from .archive import SID_NS, AccountFeatures, ArchivePosition, archive_complete
from .incoming import Incoming
from .pep import Pep

__all__ = ["CLOCK_SKEW", "MAM_FORWARD_PAGE", "MAM_MAX", "MAM_PAGE", "CatchUp"]

log = logging.getLogger("e2ee.client.session")

#: Archived messages read at the first connect (newest first).
MAM_PAGE = 200
#: Page size when reading the archive forward from the remembered position.
MAM_FORWARD_PAGE = 100
#: At most this many archived messages are read at one connect.
MAM_MAX = 10_000
#: Reading forward by time (when the archive was empty last time) starts this much earlier.
CLOCK_SKEW = 300.0


class CatchUp:
    """Reads our archive for one session; decrypts through ``incoming``."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, engine: Engine, pep: Pep, incoming: Incoming) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.pep = pep
        self.incoming = incoming
        #: Archived messages processed by the catch-up at the last connect.
        self.caught_up = 0
        #: The caps hash (XEP-0115 ``ver``) in our server's stream features, None when it sent none.
        self.server_caps: str | None = None
        #: The first forward page, asked for ahead (:meth:`ask_ahead`), with the time it was asked.
        self._ahead: tuple[asyncio.Future[Iq], float] | None = None

    def ask_ahead(self) -> None:
        """Send the query for the first page forward from the remembered position now, so that
        it shares a round trip with the other reads at connect; :meth:`run` processes its answer
        (nothing is decrypted before then).  Without a remembered position nothing is asked."""
        position = ArchivePosition(self.engine.storage)
        if position.archive_id is None and position.time is None:
            return
        now = time.time()
        page: asyncio.Future[Iq] = asyncio.ensure_future(self._forward_page(position.archive_id, position.time, now))
        # an answer never collected (the set-up failed first) is not reported as unretrieved
        page.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self._ahead = (page, now)

    async def _forward_page(self, after: str | None, since: float | None, now: float) -> Iq:
        mam = self.xmpp.plugin["xep_0313"]
        if after is not None:
            iq: Iq = await mam.retrieve(jid=None, rsm={"max": MAM_FORWARD_PAGE, "after": after})
        else:  # we read the archive when it was empty: everything since then
            start = datetime.fromtimestamp((since or now) - CLOCK_SKEW, UTC)
            iq = await mam.retrieve(jid=None, start=start, rsm={"max": MAM_FORWARD_PAGE})
        return iq

    def drop_ahead(self) -> None:
        """Forget a page asked for ahead that :meth:`run` will not collect."""
        if self._ahead is not None:
            self._ahead[0].cancel()
            self._ahead = None

    async def announces_stanza_ids(self) -> bool:
        """Whether our account stamps stanza-ids (XEP-0359) on what it archives; live messages
        advance the archive position only then.  The answer (our account's disco#info) changes
        with the server's configuration only: it is kept in the storage with the server's caps
        hash (XEP-0115, from its stream features: :attr:`server_caps`) and asked again when that
        hash changes, or when the server announced none."""
        caps = self.server_caps
        known = AccountFeatures.load(self.engine.storage, self.xmpp.boundjid.domain, caps)
        if known is not None:
            self.incoming.stanza_ids = known
            return known
        try:
            info = await self.xmpp.plugin["xep_0030"].get_info(jid=slixmpp.JID(self.xmpp.boundjid.bare))
        except (IqError, IqTimeout):
            return False
        found = SID_NS in info["disco_info"]["features"]
        self.incoming.stanza_ids = found
        if caps is not None:
            AccountFeatures.save(self.engine.storage, self.xmpp.boundjid.domain, caps, found)
        return found

    async def run(self, max_messages: int = MAM_PAGE) -> int:
        """Decrypt what our archive holds since we last read it: forward from the remembered
        position, page by page (at most :data:`MAM_MAX` messages per connect; the next connect
        goes on from there), or the newest ``max_messages`` when there is no position yet or the
        archive no longer knows it.  Messages already decrypted are recognised by the engine.
        Returns how many archived messages were processed."""
        self.engine.begin_catch_up()
        try:
            position = self.incoming.position = ArchivePosition(self.engine.storage)
            if position.archive_id is not None or position.time is not None:
                try:
                    self.caught_up = await self._read_forward(position)
                    return self.caught_up
                except IqError as e:
                    if e.condition != "item-not-found":
                        raise
                    log.warning("the archive no longer has message %s: reading its newest page", position.archive_id)
            self.caught_up = await self._read_newest(position, max_messages)
            return self.caught_up
        finally:
            self.drop_ahead()
            await self.pep.run(self.engine.end_catch_up())

    async def _read_newest(self, position: ArchivePosition, max_messages: int) -> int:
        """The newest ``max_messages``: RSM pages backwards from the end (``<before/>``), as
        many as it takes; a server may cap a page below what we ask (Prosody: 50)."""
        now = time.time()
        results: list[slixmpp.Message] = []
        # with iterator=True, slixmpp returns an async iterator of result pages (typed as an awaitable)
        pages = cast(
            "AsyncIterator[Iq]",
            self.xmpp.plugin["xep_0313"].retrieve(jid=None, rsm={"max": max_messages}, reverse=True, iterator=True),
        )
        async for iq in pages:
            page = list(iq["mam"]["results"])  # oldest first within a page
            results[:0] = page
            if not page or len(results) >= max_messages or archive_complete(iq):
                break
        results = results[-max_messages:]
        await self.decrypt_archived(results)
        position.advance(results[-1]["mam_result"]["id"] if results else None, now)
        return len(results)

    async def _read_forward(self, position: ArchivePosition) -> int:
        count = 0
        after = position.archive_id
        ahead, self._ahead = self._ahead, None
        while count < MAM_MAX:
            if ahead is not None:  # the first page, asked for at connect from this position
                iq, now = await ahead[0], ahead[1]
                ahead = None
            else:
                now = time.time()
                iq = await self._forward_page(after, position.time, now)
            results = list(iq["mam"]["results"])
            await self.decrypt_archived(results)
            count += len(results)
            if results:  # the page may be shorter than asked: go on from its RSM <last/>
                after = str(iq["mam_fin"]["rsm"]["last"] or "") or results[-1]["mam_result"]["id"]
            position.advance(after, now)
            if not results or archive_complete(iq):
                return count
        log.warning("more than %d archived messages since the last connect: the rest is read at the next one", MAM_MAX)
        return count

    async def decrypt_archived(self, results: list[slixmpp.Message]) -> None:
        """Decrypt archive results (the ``<message>`` stanzas that carry them) that come from
        our own archive; others are skipped."""
        own = self.xmpp.boundjid.bare
        for result in results:
            frm = result["from"].bare
            if frm and frm != own:  # only our own archive
                continue
            inner = result.xml.find("{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
            if inner is None:
                continue
            sender = slixmpp.JID(inner.get("from", "")).bare
            to = slixmpp.JID(inner.get("to", "")).bare
            await self.incoming.decrypt_stanza(inner, sender, to, carbon=False, archived=True)
