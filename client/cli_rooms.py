"""The ``e2ee`` group-chat commands (XEP-0045): ``room-create``, ``room-affiliation``,
``room-members`` and ``room-send``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from .cli_common import _online, _report
from .safe_text import safe

if TYPE_CHECKING:
    from .session import E2EESession
    from .types import Received


def _room_create(args: argparse.Namespace) -> int:
    async def work(session: E2EESession, _received: list[Received]) -> int:
        state = await session.rooms.create(args.room, args.nick, args.member)
        members = safe(", ".join(sorted(state.members)))
        print(f"created {safe(state.jid)} (members-only, real JIDs visible); members: {members}")
        session.rooms.leave(state.jid)
        return 0

    return _online(args, work)


def _room_affiliation(args: argparse.Namespace) -> int:
    async def work(session: E2EESession, _received: list[Received]) -> int:
        state = await session.rooms.join(args.room, args.nick)
        await session.rooms.set_affiliation(state.jid, args.jid, args.affiliation)
        print(f"{safe(args.jid)} is now {args.affiliation} in {safe(state.jid)}")
        session.rooms.leave(state.jid)
        return 0

    return _online(args, work)


def _room_members(args: argparse.Namespace) -> int:
    async def work(session: E2EESession, _received: list[Received]) -> int:
        state = await session.rooms.join(args.room, args.nick)
        present = set(state.occupants.values())
        rows = [{"jid": j, "affiliation": a, "present": j in present} for j, a in sorted(state.members.items())]
        if args.json:
            print(json.dumps({"room": state.jid, "members": rows}))
        else:
            for r in rows:
                print(f"{safe(r['jid'])} {safe(r['affiliation'])}{' (present)' if r['present'] else ''}")
        session.rooms.leave(state.jid)
        return 0

    return _online(args, work)


def _room_send(args: argparse.Namespace) -> int:
    async def work(session: E2EESession, _received: list[Received]) -> int:
        state = await session.rooms.join(args.room, args.nick)
        result = await session.rooms.send_text(state.jid, args.text)
        # stay until the room echoes the message back: it was delivered (and the echo is not
        # taken for a message from a room we are not in)
        reflected = await session.rooms.reflected(state.jid) if result.ready else False
        session.rooms.leave(state.jid)
        if result.ready and not reflected:
            print(f"e2ee: warning: {state.jid} did not echo the message back (delivery not confirmed)", file=sys.stderr)
        return _report(result, args, {"id": None, "room": state.jid, "reflected": reflected})

    return _online(args, work)
