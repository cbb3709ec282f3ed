"""``e2ee demo --server HOST:PORT [--ca-file F] [--domain D]``: the demo over a real server.

Two fresh accounts are registered in-band (XEP-0077; the server must allow it), alice with two
devices and bob with one; every device publishes, then they exchange messages and each device
prints what it decrypted (alice's second device through carbons).  Nothing is kept: the engines
live in memory.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from pathlib import Path
from typing import TextIO

from e2ee.engine import Engine
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage
from e2ee.trust import fingerprint

from .register import register_account
from .session import E2EESession, Received, cancel_pending_tasks


def _collect(received: list[tuple[str, Received]], name: str, r: Received) -> None:
    received.append((name, r))


async def run_over_server(out: TextIO, host: str, port: int, domain: str, ca_file: Path | None) -> int:
    tag = secrets.token_hex(3)
    accounts = {name: (f"demo-{name}-{tag}@{domain}", secrets.token_urlsafe(12)) for name in ("alice", "bob")}
    print(f"Registering two accounts on {host}:{port}:", file=out)
    for jid, password in accounts.values():
        await register_account(host, port, jid, password, ca_file)
        print(f"  {jid}", file=out)
    received: list[tuple[str, Received]] = []
    devices: dict[str, E2EESession] = {}
    try:
        for name, account in (("alice-laptop", "alice"), ("alice-phone", "alice"), ("bob-desktop", "bob")):
            jid, password = accounts[account]
            engine = Engine.create(MemoryStorage(), jid)
            session = E2EESession(
                engine, password, ca_file=ca_file, on_received=functools.partial(_collect, received, name)
            )
            await session.start(host, port)
            devices[name] = session
            print(f"  {name:13} device {engine.device_id:<10} fingerprint {fingerprint(engine.identity_key)}", file=out)
        await asyncio.sleep(0.3)
        script = [
            ("alice-laptop", "bob", "Hi Bob, over a real server."),
            ("bob-desktop", "alice", "Hello Alice, both of your devices get this."),
            ("alice-phone", "bob", "And this is my phone."),
        ]
        for sender, to, text in script:
            print(f"\n  {sender} -> {accounts[to][0]}: {text!r}", file=out)
            before = len(received)
            result = await devices[sender].send_text(accounts[to][0], text)
            for d in result.devices:
                print(f"    device {d.device_id:<10} {d.outcome.value}", file=out)
            expected = sum(1 for d in result.devices if d.outcome.value == "encrypted")
            for _ in range(250):
                if sum(1 for _n, r in received[before:] if isinstance(r.result, Decrypted)) >= expected:
                    break
                await asyncio.sleep(0.02)
            for name, r in received[before:]:
                if isinstance(r.result, Decrypted):
                    how = " (carbon)" if r.carbon else ""
                    print(f"    {name:13} decrypted{how}, sender {r.result.trust.value}: {r.result.body!r}", file=out)
        print("\ndemo finished over the server", file=out)
        return 0
    finally:
        for session in devices.values():
            await session.close()
        await cancel_pending_tasks()
