"""Publishing our PEP items on servers that differ (XEP-0060 §7.1.5, XEP-0223).

Every :class:`~e2ee.results.Publish` carries publish-options (``pubsub#access_model=open``,
and ``pubsub#max_items=max`` for the OMEMO 2 bundles node, so that one device's bundle does not
evict another's).  Servers answer those differently:

* Prosody accepts them; a node that exists with other settings is answered
  ``precondition-not-met`` (or ``conflict``).
* ejabberd 23.01 does not know ``pubsub#max_items`` as a publish-option and answers
  ``<resource-constraint/>`` "Unknown field ..."; others use ``not-acceptable``,
  ``bad-request`` or ``feature-not-implemented``.

Whatever the error, a refusal of the options degrades instead of failing: the node is configured
to the same settings (``max_items=max``, or a number when the server refuses ``max``) and the
item is published without options.  The node is configured *before* the item goes in when it
exists (so the publication cannot evict other items under the old limit), after when it does
not (publishing creates it).  Once a server refused the options, later publications of the
session go straight to that path.  What the server lacked is logged once (info: nothing is
lost, the nodes end up with the settings asked for).

On first publication ejabberd sometimes answers concurrent node creations with
``<item-not-found/>`` (type cancel), and concurrent configurations of one node (two devices of
an account) with ``<internal-server-error/>`` "Database failure" (type wait): races inside the
server.  Such a publication is retried, a bounded number of times, with a growing pause.

A node configured once in a session is not configured again: later items go in without
options (the server keeps the node's settings).
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Protocol

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from e2ee.results import Publish

from .types import FormValue

__all__ = ["MAX_ITEMS_FALLBACK", "Publisher", "describe_error"]

log = logging.getLogger(__name__)

PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
#: ``pubsub#max_items`` when the server refuses ``max`` (Prosody's ``pep_max_items`` default;
#: far more devices than an account has).
MAX_ITEMS_FALLBACK = "256"
#: the conditions servers use to refuse publish-options (or a node's settings)
_OPTIONS_REFUSED = frozenset(
    {
        "conflict",
        "resource-constraint",
        "not-acceptable",
        "bad-request",
        "feature-not-implemented",
        "policy-violation",
        "not-allowed",
    }
)
#: retries of a publication answered item-not-found (ejabberd's first-creation race)
RACE_RETRIES = 4
_RACE_BACKOFF = 0.05

#: what was said already, per server domain: one line per process, not per session
_said: set[tuple[str, str]] = set()

FormMaker = Callable[[tuple[tuple[str, FormValue], ...], str], Form]


class PubSub(Protocol):
    """What :class:`Publisher` uses of slixmpp's XEP-0060 plugin."""

    def publish(
        self, jid: str, node: str, *, id: str | None, payload: ET.Element, options: Form | None = None
    ) -> Awaitable[object]: ...

    def set_node_config(self, jid: str, node: str, config: Form) -> Awaitable[object]: ...


def describe_error(e: IqError) -> str:
    """``condition`` or ``condition ("server's text")``: one line, never the stanza."""
    condition = str(e.iq["error"]["condition"])
    text = str(e.iq["error"]["text"] or "").strip()
    return f'{condition} ("{text}")' if text else condition


def _precondition(e: IqError) -> bool:
    return e.iq.xml.find(f".//{{{_PUBSUB_ERRORS}}}precondition-not-met") is not None


def _options_refused(e: IqError) -> bool:
    return _precondition(e) or e.iq["error"]["condition"] in _OPTIONS_REFUSED


def _race(e: IqError) -> bool:
    """ejabberd's answers when two of our publications (or two of our devices) create or
    configure a node at once: item-not-found (cancel) on first creation, "Database failure"
    (internal-server-error, wait) on concurrent configuration."""
    condition, kind = e.iq["error"]["condition"], e.iq["error"]["type"]
    return bool(
        (condition == "item-not-found" and kind == "cancel")
        or (condition == "internal-server-error" and kind == "wait")
    )


class Publisher:
    """Publishes our items through the session's XEP-0060 plugin (``pubsub``); ``own`` gives our
    bare JID, ``form`` builds a data form of ``(var, value)`` fields and a FORM_TYPE."""

    def __init__(self, pubsub: PubSub, own: Callable[[], str], form: FormMaker) -> None:
        self._pubsub = pubsub
        self._own = own
        self._form = form
        #: the server refused publish-options once: later publications configure the node instead
        self.options_refused = False
        #: ``pubsub#max_items=max`` refused in a node configuration: use the number
        self.max_refused = False
        #: nodes this session configured (when the options were refused): no need again
        self._configured: set[str] = set()

    def _say_once(self, key: str, message: str, *args: object) -> None:
        """Log (info: the publication still has its settings) once per process and server."""
        domain = self._own().partition("@")[2]
        if (domain, key) not in _said:
            _said.add((domain, key))
            log.info(message, *args)

    async def publish(self, effect: Publish) -> None:
        for attempt in range(RACE_RETRIES + 1):
            try:
                await self._publish_once(effect)
                return
            except IqError as e:
                if not _race(e) or attempt == RACE_RETRIES:
                    raise
                log.info("publishing on %s met a race in the server (%s): trying again", effect.node, describe_error(e))
                await asyncio.sleep(_RACE_BACKOFF * (2**attempt))

    async def _publish_once(self, effect: Publish) -> None:
        if not effect.options or effect.node in self._configured:
            await self._item(effect)
            return
        if not self.options_refused:
            try:
                await self._item(effect, self._form(effect.options, PUBLISH_OPTIONS))
                return
            except IqError as e:
                if not _options_refused(e):
                    raise
                if not _precondition(e) and e.iq["error"]["condition"] != "conflict":
                    # the server does not take these publish-options at all (not just: the
                    # node exists with other settings): do not send them again this session
                    self.options_refused = True
                    self._say_once(
                        "options",
                        "the server refused our publish-options (%s): "
                        "publishing without them and configuring the nodes instead",
                        describe_error(e),
                    )
        # configure first when the node exists (no eviction under its old limit); else create it
        # by publishing, then configure it
        if await self._configure(effect):
            await self._item(effect)
        else:
            await self._item(effect)
            if not await self._configure(effect):
                log.warning("could not configure %s after creating it", effect.node)

    async def _item(self, effect: Publish, options: Form | None = None) -> None:
        if options is None:
            await self._pubsub.publish(self._own(), effect.node, id=effect.item_id, payload=effect.payload)
        else:
            await self._pubsub.publish(
                self._own(), effect.node, id=effect.item_id, payload=effect.payload, options=options
            )

    def _settings(self, effect: Publish) -> tuple[tuple[str, str], ...]:
        if not self.max_refused:
            return effect.options
        return tuple(
            (k, MAX_ITEMS_FALLBACK if k == "pubsub#max_items" and v == "max" else v) for k, v in effect.options
        )

    async def _configure(self, effect: Publish) -> bool:
        """Set the node's configuration to ``effect.options``; False when the node does not
        exist.  A refused ``max_items=max`` is retried with :data:`MAX_ITEMS_FALLBACK`."""
        while True:
            settings = self._settings(effect)
            try:
                await self._pubsub.set_node_config(self._own(), effect.node, self._form(settings, NODE_CONFIG))
                self._configured.add(effect.node)
                return True
            except IqError as e:
                if e.iq["error"]["condition"] == "item-not-found":
                    return False
                uses_max = ("pubsub#max_items", "max") in settings
                if not uses_max or e.iq["error"]["condition"] not in ("not-acceptable", "bad-request"):
                    raise
                self.max_refused = True
                self._say_once(
                    "max",
                    "the server refused pubsub#max_items=max (%s): asking for %s items instead",
                    describe_error(e),
                    MAX_ITEMS_FALLBACK,
                )
