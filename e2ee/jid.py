"""Comparing JIDs: the one comparison key the engine, OpenPGP and the client use."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["bare_jid_key"]


@lru_cache(maxsize=4096)
def bare_jid_key(jid: str) -> str:
    """Comparison key of a JID: bare, localpart and domainpart lower-cased, trailing dot of the
    domain dropped.  Returns ``""`` for a JID without domainpart."""
    bare = jid.partition("/")[0]
    local, at, domain = bare.partition("@")
    if not at:
        local, domain = "", bare
    domain = domain.lower().removesuffix(".")
    if not domain:
        return ""
    return f"{local.lower()}@{domain}" if at else domain
