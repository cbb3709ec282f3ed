"""The engine's maintenance run by the client: at connect and periodically in a long session,
the signed prekey is rotated when due and the new bundle is published (a new contact's key
exchange then uses it)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from e2ee.client import plugin as plugin_module
from e2ee.client.session import E2EESession, Received
from e2ee.engine import NAMESPACES, Engine
from e2ee.limits import SPK_ROTATION
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage

from .xmpp_server import Accounts

#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob", "carol")


def test_signed_prekey_rotates_at_connect_and_periodically(server: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine = Engine.create(MemoryStorage(), server.jid("alice"), clock=lambda: now[0])

    def spk_id() -> int:
        return int(engine.context.own._spk()["current"]["id"])

    async def run() -> None:
        inbox: list[Received] = []
        alice = E2EESession(engine, "alice-pw", ca_file=server.cert, on_received=inbox.append)
        await alice.start("127.0.0.1", server.port)
        assert spk_id() == 1
        await alice.close()

        now[0] += SPK_ROTATION + timedelta(hours=1)
        monkeypatch.setattr(plugin_module, "MAINTENANCE_INTERVAL", 0.2)
        alice = E2EESession(engine, "alice-pw", ca_file=server.cert, on_received=inbox.append)
        await alice.start("127.0.0.1", server.port)
        assert spk_id() == 2  # rotated at connect
        bob = E2EESession(Engine.create(MemoryStorage(), server.jid("bob")), "bob-pw", ca_file=server.cert)
        await bob.start("127.0.0.1", server.port)
        assert (await bob.send_text(alice.boundjid.bare, "to the second signed prekey")).ready

        now[0] += SPK_ROTATION + timedelta(hours=1)  # a week passes in a long session
        for _ in range(100):
            if spk_id() == 3:
                break
            await asyncio.sleep(0.05)
        assert spk_id() == 3  # rotated by the periodic maintenance
        await asyncio.sleep(0.3)  # its publication went out
        carol = E2EESession(Engine.create(MemoryStorage(), server.jid("carol")), "carol-pw", ca_file=server.cert)
        await carol.start("127.0.0.1", server.port)
        for namespace in NAMESPACES:  # both published bundles carry the new signed prekey
            bundle = await carol.e2ee.fetch_bundle(alice.boundjid.bare, engine.device_id, namespace)
            assert bundle is not None
            ids = {
                e.get("id") or e.get("signedPreKeyId")
                for e in bundle.iter()
                if e.tag.endswith(("}spk", "}signedPreKeyPublic"))
            }
            assert ids == {"3"}, (namespace, ids)
        assert (await carol.send_text(alice.boundjid.bare, "to the third signed prekey")).ready
        for _ in range(200):
            if len([r for r in inbox if isinstance(r.result, Decrypted)]) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted(r.result.body for r in inbox if isinstance(r.result, Decrypted)) == [
            "to the second signed prekey",
            "to the third signed prekey",
        ]
        assert not [r for r in inbox if r.error is not None]
        for client in (alice, bob, carol):
            await client.close()

    asyncio.run(run())
