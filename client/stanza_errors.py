"""One short line for a failed server operation: what we asked, the error condition and the
server's text, never the stanza (an error reply may echo the whole request: a refused bundle
publish carries its 100 prekeys).

``str()`` of slixmpp's :class:`~slixmpp.exceptions.IqError` is the serialised error stanza;
:func:`describe` is what the user sees instead.
"""

from __future__ import annotations

import re

from slixmpp.exceptions import IqError, IqTimeout, PresenceError, XMPPError

__all__ = ["describe", "MAX_TEXT"]

#: The server's text is cut to this many characters.
MAX_TEXT = 200
_PUBSUB = "http://jabber.org/protocol/pubsub"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def _clean(text: str, limit: int) -> str:
    """One line without control or bidi characters, at most ``limit`` characters."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _request(e: IqError) -> str:
    """What the failed request was about, from the error reply's echo (a PubSub node), or ""."""
    try:
        xml = e.iq.xml
    except AttributeError:
        return ""
    for action in ("publish", "items", "configure", "create", "retract", "delete"):
        elem = xml.find(f"{{{_PUBSUB}}}pubsub/{{{_PUBSUB}}}{action}")
        if elem is None:
            elem = xml.find(f"{{{_PUBSUB}#owner}}pubsub/{{{_PUBSUB}#owner}}{action}")
        if elem is not None and elem.get("node"):
            return f"{action} {_clean(elem.get('node') or '', 100)}"
    return ""


def describe(e: BaseException) -> str:
    """``condition (type): text`` for an XMPP error, else ``str(e)`` on one line; short."""
    if isinstance(e, IqTimeout):
        return "the server did not answer in time"
    if isinstance(e, XMPPError):
        condition = _clean(str(e.condition or "undefined-condition"), 60)
        line = f"{condition} ({_clean(str(e.etype), 20)})" if e.etype else condition
        text = _clean(str(e.text or ""), MAX_TEXT)
        if text:
            line += f": {text}"
        what = _request(e) if isinstance(e, IqError) else ""
        if isinstance(e, PresenceError):
            what = "presence"
        return f"{what}: {line}" if what else line
    return _clean(str(e), MAX_TEXT * 2) or type(e).__name__
