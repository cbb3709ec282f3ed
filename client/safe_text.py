"""Untrusted text made safe for a terminal.

Message bodies, device labels, nicknames, JIDs, file names, room names and error lines come
from peers or the server.  Printed raw, a contact can send ESC/CSI/OSC sequences (erase lines,
set the window title, hide output), a carriage return or line feed to forge a line such as
``alice@x/4242 [verified]: ...``, or bidi overrides that reorder what the user reads.

:func:`safe` shows every such character escaped (``\\x1b``, ``\\r``, ``\\u202e``, ``\\x00``);
:func:`safe_body` keeps a body's line breaks but indents each continuation line with
:data:`CONTINUATION`, so no line of a body can pass for another message's header (headers start
in the first column).  :func:`message_header` and :func:`message_line` are the way to print a
received message; an interactive chat uses the same functions.  JSON output needs none of this (``json.dumps`` escapes).
"""

from __future__ import annotations

import unicodedata

__all__ = ["CONTINUATION", "message_header", "message_line", "safe", "safe_body"]

#: put in front of the second and later lines of a multi-line body
CONTINUATION = "    | "

#: bidi embeddings, overrides, isolates and marks (format characters, category Cf)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: line and paragraph separators (terminals may break lines on them)
_SEPARATORS = frozenset("\u2028\u2029")


def _unsafe(ch: str) -> bool:
    if ch in _BIDI or ch in _SEPARATORS:
        return True
    cat = unicodedata.category(ch)
    return cat == "Cc" or cat == "Cs"  # C0, DEL, C1 (NEL, CSI 0x9b...), lone surrogates


def _escape(ch: str) -> str:
    n = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def safe(text: object) -> str:
    """``text`` (``str()`` of it) on one line, with control, bidi and separator characters
    shown escaped.  Printable text, emoji sequences and backslashes are kept as they are."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # the common case: nothing to do (isprintable is False for every escaped one)
        return s
    return "".join(_escape(c) if _unsafe(c) else c for c in s)


def safe_body(text: str, continuation: str = CONTINUATION) -> str:
    """A possibly multi-line body: each line made :func:`safe` (CR, tabs and the rest shown
    escaped), line feeds kept, every line after the first prefixed with ``continuation``."""
    return ("\n" + continuation).join(safe(line) for line in text.split("\n"))


def message_header(jid: str, device_id: int | str, trust: str, room: str | None = None) -> str:
    """``[room] jid/device [trust]`` with every part made :func:`safe` (for :func:`message_line`)."""
    where = f"[{safe(room)}] " if room else ""
    return f"{where}{safe(jid)}/{safe(device_id)} [{safe(trust)}]"


def message_line(header: str, body: str) -> str:
    """``header: body`` for a received message; ``header`` must already be safe (built from
    :func:`safe` parts), the body is made safe here."""
    return f"{header}: {safe_body(body)}"
