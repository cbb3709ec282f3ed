"""A device that writes to us on a session we no longer have: the client builds a new session
from its bundle and sends it an empty message, and the device's next message decrypts."""

from __future__ import annotations

import asyncio
import logging

import pytest

from e2ee.client.session import E2EESession, Received
from e2ee.engine import Engine
from e2ee.errors import NoSession
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage

from .xmpp_server import Accounts

#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob")


async def _arrived(inbox: list[Received], count: int) -> None:
    for _ in range(300):
        if len(inbox) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(inbox)} of {count} arrived")


def test_a_lost_session_is_rebuilt_and_the_next_message_decrypts(
    server: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2ee.client.session")

    async def run() -> None:
        inbox: list[Received] = []
        alice = E2EESession(
            Engine.create(MemoryStorage(), server.jid("alice")),
            "alice-pw",
            ca_file=server.cert,
            on_received=inbox.append,
        )
        bob = E2EESession(Engine.create(MemoryStorage(), server.jid("bob")), "bob-pw", ca_file=server.cert)
        await alice.start("127.0.0.1", server.port)
        await bob.start("127.0.0.1", server.port)
        a = alice.boundjid.bare
        assert (await bob.send_text(a, "first")).ready
        await _arrived(inbox, 1)
        assert (await bob.send_text(a, "second")).ready  # not a key exchange any more once answered
        await _arrived(inbox, 2)

        storage = alice.engine.storage
        for key in storage.keys("session"):  # alice loses her sessions (e.g. an old backup)
            storage.delete("session", key)
        alice.engine.context.sessions.forget_cache()

        assert (await bob.send_text(a, "lost")).ready
        await _arrived(inbox, 3)
        assert isinstance(inbox[2].error, NoSession) and inbox[2].error.device_id == bob.engine.device_id
        for _ in range(200):  # alice's empty message reaches bob and he takes the new session
            if any("built a new session" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("alice built no new session")
        await asyncio.sleep(0.3)
        assert (await bob.send_text(a, "healed")).ready
        for _ in range(300):
            if any(isinstance(r.result, Decrypted) and r.result.body == "healed" for r in inbox):
                break
            await asyncio.sleep(0.02)
        assert [r.result.body for r in inbox if isinstance(r.result, Decrypted)] == ["first", "second", "healed"]
        assert [type(r.error) for r in inbox if r.error is not None] == [NoSession]  # no other failure
        for client in (alice, bob):
            await client.close()

    asyncio.run(run())
