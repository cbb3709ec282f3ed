"""Archive catch-up: while it runs, used prekeys are kept (hidden) and key-exchange answers are
postponed; at its end the kept prekeys go and every session built meanwhile is answered with
an empty message.  The state is one record, ``own`` / ``state``."""

from __future__ import annotations

from dataclasses import dataclass

from . import jsonrec
from .context import Context
from .errors import CorruptState
from .registry import by_flavour
from .results import Effect
from .sending import empty_message
from .sessions import session_key
from .storage import Storage

__all__ = ["CatchUp", "load", "save", "begin", "end"]


@dataclass(slots=True)
class CatchUp:
    """Whether an archive catch-up is running, and the sessions built during it (flavour name,
    bare JID, device id), answered with an empty message when it ends."""

    catching_up: bool
    pending: list[tuple[str, str, int]]


def load(storage: Storage) -> CatchUp:
    raw = storage.get("own", "state")
    if raw is None:
        return CatchUp(False, [])
    rec = jsonrec.load(raw, 1, "engine state")
    try:
        return CatchUp(bool(rec["catching_up"]), [(str(f), str(j), int(d)) for f, j, d in rec["pending"]])
    except (KeyError, TypeError, ValueError):
        raise CorruptState("engine state is damaged") from None


def save(storage: Storage, state: CatchUp) -> None:
    rec = {"catching_up": state.catching_up, "pending": [list(p) for p in state.pending]}
    storage.put("own", "state", jsonrec.dump(1, rec))


def begin(ctx: Context) -> None:
    """Archive catch-up starts (at connect, before MAM and offline messages): used prekeys are
    kept (hidden) until :func:`end`, so that repeated key exchanges in the archive still
    decrypt, and key-exchange answers are postponed."""

    def op() -> None:
        state = load(ctx.storage)
        state.catching_up = True
        save(ctx.storage, state)

    ctx.run(op)


def end(ctx: Context) -> list[Effect]:
    """Catch-up done: delete the prekeys kept back and answer every session built during it
    with an empty message."""

    def op() -> list[Effect]:
        state = load(ctx.storage)
        ctx.own.delete_used_prekeys()
        effects: list[Effect] = []
        for fname, jid, dev in dict.fromkeys(state.pending):
            sset = ctx.sessions.load(session_key(fname, jid, dev))
            if sset.entries and sset.entries[0].session.ratchet.can_send:
                effects.append(empty_message(ctx, by_flavour(fname), jid, dev, sset, "catch-up-end"))
        save(ctx.storage, CatchUp(False, []))
        return effects

    return ctx.run(op)
