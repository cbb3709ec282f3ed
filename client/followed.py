"""Contacts' PEP nodes we follow without a presence subscription: fetched, and subscribed to.

Before a send to a contact whose PEP notifications do not reach us through a presence
subscription, its device lists (and OpenPGP key metadata) are fetched; with the fetch goes an
explicit subscription (XEP-0060 §6.1, for our bare JID) to the same nodes, so that later changes
(a device added) are notified to every session of ours while it is connected.  When both the
fetch and the subscription succeeded, the time is kept in the engine's storage (table ``own``,
key ``followed``).  A later send, in this session or the next process, fetches again only when
that is older than :data:`FRESH_WINDOW`: what changed while no session of ours was connected is
picked up at the latest then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from e2ee.storage import Storage

__all__ = ["FRESH_WINDOW", "MAX_FOLLOWED", "Followed"]

log = logging.getLogger("e2ee.client.session")

#: Seconds for which a contact's nodes, fetched and subscribed to, are not fetched again.
FRESH_WINDOW = 300.0
#: At most this many contacts are remembered (the least recently fetched are forgotten).
MAX_FOLLOWED = 1000
_KEY = "followed"


class Followed:
    """The contacts' nodes fetched and subscribed to, kept in ``storage``."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, storage: Storage) -> None:
        self.xmpp = xmpp
        self.storage = storage

    def _load(self) -> dict[str, dict[str, float]]:
        raw = self.storage.get("own", _KEY)
        try:
            data = json.loads(raw.decode()) if raw else {}
        except (UnicodeDecodeError, ValueError):
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("jids"), dict):
            return {}
        out: dict[str, dict[str, float]] = {}
        for jid, nodes in data["jids"].items():
            if isinstance(jid, str) and isinstance(nodes, dict):
                out[jid] = {n: float(t) for n, t in nodes.items() if isinstance(n, str) and isinstance(t, int | float)}
        return out

    def fresh(self, jid: str, nodes: Sequence[str], now: float | None = None) -> bool:
        """Whether every node of ``nodes`` of ``jid`` was fetched and subscribed to less than
        :data:`FRESH_WINDOW` ago (and not in the future: a clock set back fetches again)."""
        now = time.time() if now is None else now
        known = self._load().get(jid, {})
        return all(n in known and 0 <= now - known[n] < FRESH_WINDOW for n in nodes)

    def forget(self, jid: str) -> None:
        """Fetch ``jid``'s nodes again at the next send."""
        data = self._load()
        if data.pop(jid, None) is not None:
            self._save(data)

    async def subscribe(self, jid: str, nodes: Sequence[str]) -> list[str]:
        """Subscribe our bare JID to ``nodes`` of ``jid`` (all at once); returns those the
        service accepted (a refusal is not an error: those nodes are fetched at every send)."""
        pubsub = self.xmpp.plugin["xep_0060"]
        answers = await asyncio.gather(
            *(pubsub.subscribe(jid, node, bare=True) for node in nodes),  # type: ignore[no-untyped-call]
            return_exceptions=True,
        )
        accepted = []
        for node, answer in zip(nodes, answers, strict=True):
            if isinstance(answer, (IqError, IqTimeout)):
                log.debug("subscribing to %s of %s refused: %s", node, jid, answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                accepted.append(node)
        return accepted

    def fetched(self, jid: str, nodes: Sequence[str], when: float) -> None:
        """``nodes`` of ``jid`` were fetched at ``when`` and we are subscribed to them."""
        if not nodes:
            return
        data = self._load()
        entry = data.pop(jid, {})
        entry.update(dict.fromkeys(nodes, when))
        data[jid] = entry  # (last: the most recently fetched)
        while len(data) > MAX_FOLLOWED:
            data.pop(next(iter(data)))
        self._save(data)

    def _save(self, data: dict[str, dict[str, float]]) -> None:
        record = json.dumps({"v": 1, "jids": data}).encode()
        with self.storage.transaction():
            self.storage.put("own", _KEY, record)
