"""The message stanzas the client sends, built on slixmpp's stanza plugins.

An encrypted message holds the engine's element per namespace, one XEP-0380 marker per
namespace (through the ``xep_0380`` plugin, which is told the names of our namespaces), the
XEP-0334 ``<store/>`` hint (through ``xep_0334``) and a short clear-text body for clients that
cannot decrypt it (none on key-exchange answers, heartbeats and our own copies).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

import slixmpp
from slixmpp.plugins.xep_0380 import Encryption
from slixmpp.types import MessageTypes

from e2ee.engine import NAMESPACES
from e2ee.openpgp.xml import NS as OX
from e2ee.results import EncryptResult

__all__ = ["EME_NAMES", "FALLBACK_BODY", "OX_FALLBACK_BODY", "Stanzas"]

O2, LEGACY = NAMESPACES
FALLBACK_BODY = "This message is end-to-end encrypted (OMEMO); your client cannot show it."
#: The clear-text hint of an OpenPGP for XMPP message (XEP-0374).
OX_FALLBACK_BODY = "This message is encrypted using OpenPGP for XMPP."
#: The XEP-0380 ``name`` of each namespace we send (the spec digests: both OMEMO namespaces are
#: "OMEMO"; slixmpp's table lacks OMEMO 2 and the OpenPGP for XMPP namespace).
EME_NAMES = {O2: "OMEMO", LEGACY: "OMEMO", OX: "OpenPGP for XMPP"}


class Stanzas:
    """Builds and sends our messages on ``xmpp`` (which has the ``xep_0380`` and ``xep_0334``
    plugins: the e2ee plugin depends on them)."""

    def __init__(self, xmpp: slixmpp.ClientXMPP) -> None:
        self.xmpp = xmpp
        self._mechanisms: dict[str, str] | None = None

    def install(self) -> None:
        """Tell the EME plugin the names of our namespaces (for this client only)."""
        eme = self.xmpp.plugin["xep_0380"]
        self._mechanisms = eme.mechanisms
        eme.mechanisms = {**eme.mechanisms, **EME_NAMES}

    def uninstall(self) -> None:
        if self._mechanisms is not None:
            self.xmpp.plugin["xep_0380"].mechanisms = self._mechanisms
            self._mechanisms = None

    def _mark(self, msg: slixmpp.Message, namespaces: Iterable[str]) -> None:
        """One EME marker per namespace (the plugin's stanza holds one: further ones are built
        from its stanza class and names) and the store hint."""
        eme = self.xmpp.plugin["xep_0380"]
        for namespace in namespaces:
            if msg.xml.find(f"{{{Encryption.namespace}}}{Encryption.name}") is None:
                eme.add_eme(msg, namespace)
            else:
                extra = Encryption()
                extra["namespace"] = namespace
                extra["name"] = eme.mechanisms[namespace]
                msg.appendxml(extra.xml)
        msg.enable("store")

    def send_encrypted(
        self, to: str, elements: Mapping[str, ET.Element], body: str | None, mtype: MessageTypes = "chat"
    ) -> str:
        """One ``<message>`` holding every element (one per namespace) and an EME per namespace;
        returns the message's id."""
        msg = self.xmpp.make_message(mto=to, mtype=mtype, mbody=body)
        if not msg["id"]:
            msg["id"] = self.xmpp.new_id()
        for elem in elements.values():
            msg.xml.append(elem)
        self._mark(msg, elements)
        msg.send()
        return str(msg["id"])

    def send_element(
        self, to: str, elem: ET.Element, namespace: str, body: str | None = None, mtype: MessageTypes = "chat"
    ) -> str:
        """Send ``elem`` (of ``namespace``) in a message to ``to``; returns the message's id."""
        return self.send_encrypted(to, {namespace: elem}, body=body, mtype=mtype)

    def send_result(self, to: str, result: EncryptResult, mtype: MessageTypes = "chat") -> str:
        """Send what :meth:`~e2ee.engine.Engine.encrypt` made as it says: its ``elements`` in one
        stanza to ``to`` (with the fallback body), its ``own_copy`` in one stanza without a
        body to our own bare JID.  Returns the id of the stanza to ``to``."""
        msg_id = self.send_encrypted(to, result.elements, body=FALLBACK_BODY, mtype=mtype)
        if result.own_copy:
            self.send_encrypted(self.xmpp.boundjid.bare, result.own_copy, body=None)
        return msg_id

    def send_openpgp(self, to: str, elem: ET.Element) -> None:
        """An OpenPGP for XMPP ``<openpgp/>`` element (XEP-0374) with its clear-text hint."""
        msg = self.xmpp.make_message(mto=to, mtype="chat", mbody=OX_FALLBACK_BODY)
        msg.xml.append(elem)
        self._mark(msg, (OX,))
        msg.send()

    def send_plain(self, to: str, body: str) -> None:
        """A clear-text chat message (only when the user allowed it)."""
        self.xmpp.make_message(mto=to, mtype="chat", mbody=body).send()
