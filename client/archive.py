"""Where our message archive (XEP-0313) was last read up to.

The position is kept in the engine's storage (table ``own``, key ``mam``: the keystore encrypts
it like everything else), so that the next connect reads forward from it instead of only the
newest page.  It is advanced by the catch-up (the id of the last result it processed) and by
live messages, from the ``<stanza-id/>`` (XEP-0359) that *our own server* stamped on them: only a
stanza-id whose ``by`` is our bare JID, only when our account announces ``urn:xmpp:sid:0``, and
only when the message carries exactly one such element (a sender can add its own stanza-ids; a
server that announces the feature strips those, and two of them leave us unsure which is real).

Deduplication never relies on a stanza-id: the engine recognises a message it already decrypted
by its keys (:class:`e2ee.errors.DuplicateMessage`), so a forged stanza-id cannot hide a message.
A forged one that got through could at worst make the next catch-up start elsewhere: from an id
the archive does not know, the catch-up falls back to the newest page.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from slixmpp.xmlstream import StanzaBase

from e2ee.storage import Storage

__all__ = ["SID_NS", "AccountFeatures", "ArchivePosition", "archive_complete", "own_stanza_id"]

SID_NS = "urn:xmpp:sid:0"
_KEY = "mam"
_DISCO_KEY = "disco"
#: An archive id longer than this is not one we store (Prosody's are 36-character UUIDs).
MAX_ID_LENGTH = 256


class ArchivePosition:
    """The archive id (and time, seconds since the epoch) last read; both ``None`` at first."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        raw = storage.get("own", _KEY)
        data = json.loads(raw.decode()) if raw else {}
        self.archive_id: str | None = data.get("id")
        self.time: float | None = data.get("time")

    def advance(self, archive_id: str | None, time: float) -> None:
        """Remember ``archive_id`` (or only the time, when the archive gave no id) as read."""
        if archive_id is not None and (not archive_id or len(archive_id) > MAX_ID_LENGTH):
            return
        if archive_id is not None:
            self.archive_id = archive_id
        self.time = time
        record = json.dumps({"v": 1, "id": self.archive_id, "time": self.time}).encode()
        with self._storage.transaction():
            self._storage.put("own", _KEY, record)


class AccountFeatures:
    """Whether our account announces ``urn:xmpp:sid:0`` (its disco#info), kept in the engine's
    storage (table ``own``, key ``disco``) with the server's domain and caps hash (XEP-0115) it
    was asked under; valid only while the server announces the same hash."""

    @staticmethod
    def load(storage: Storage, server: str, caps: str | None) -> bool | None:
        """The stored answer when it was given under ``caps`` by ``server``; else None."""
        if caps is None:
            return None
        raw = storage.get("own", _DISCO_KEY)
        try:
            data = json.loads(raw.decode()) if raw else {}
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("server") != server or data.get("caps") != caps:
            return None
        sid = data.get("sid")
        return sid if isinstance(sid, bool) else None

    @staticmethod
    def save(storage: Storage, server: str, caps: str, stanza_ids: bool) -> None:
        if len(caps) > MAX_ID_LENGTH:
            return
        record = json.dumps({"v": 1, "server": server, "caps": caps, "sid": stanza_ids}).encode()
        with storage.transaction():
            storage.put("own", _DISCO_KEY, record)


def archive_complete(fin_iq: StanzaBase) -> bool:
    """The archive's ``<fin complete='true'/>`` (or ``'1'``): there are no more pages.  Servers
    differ in how they say "not complete" (Prosody leaves the attribute out, ejabberd writes
    ``complete='false'``): only the true values count."""
    fin = fin_iq.xml.find("{urn:xmpp:mam:2}fin")
    return fin is not None and fin.get("complete") in ("true", "1")


def own_stanza_id(stanza: ET.Element, own_bare: str) -> str | None:
    """The id of the single ``<stanza-id/>`` our own server put on ``stanza``, else ``None``."""
    ids = [
        e.get("id") for e in stanza.findall(f"{{{SID_NS}}}stanza-id") if (e.get("by") or "").lower() == own_bare.lower()
    ]
    if len(ids) != 1 or not ids[0]:
        return None
    return ids[0]
