"""Publishing our PEP nodes on both servers (client/publish.py): ejabberd 23.01 refuses
``pubsub#max_items`` as a publish-option (``resource-constraint`` "Unknown field"), so the
session configures the node instead, and says once what the server lacked; concurrent first
publications that race inside the server are retried."""

from __future__ import annotations

import asyncio
import logging

import pytest

import e2ee.client.publish
from e2ee.client.session import E2EESession
from e2ee.engine import Engine
from e2ee.storage import MemoryStorage

from .xmpp_server import Accounts

SERVER_USERS = ("alice",)  # registered on this module's share of each server (tests/conftest.py)
BUNDLES = "urn:xmpp:omemo:2:bundles"


async def _session(server: Accounts, user: str) -> E2EESession:
    s = E2EESession(Engine.create(MemoryStorage(), server.jid(user)), f"{user}-pw", ca_file=server.cert)
    await s.start("127.0.0.1", server.port)
    return s


async def _bundle_ids(session: E2EESession) -> set[str]:
    iq = await session.plugin["xep_0060"].get_items(session.boundjid.bare, BUNDLES)  # type: ignore[no-untyped-call]
    return {item["id"] for item in iq["pubsub"]["items"]}


def test_a_second_device_does_not_evict_the_first_devices_bundle(
    server: Accounts, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both devices' OMEMO 2 bundles stay on the one bundles node (its max_items is more than
    one on either server); on ejabberd the refusal is logged once, naming the field, and later
    publications do not send the options again."""
    monkeypatch.setattr(e2ee.client.publish, "_said", set())  # earlier tests' sessions said it already
    caplog.set_level(logging.INFO, logger="e2ee.client.publish")

    async def run() -> None:
        first = await _session(server, "alice")
        second = await _session(server, "alice")
        third = await _session(server, "alice")
        try:
            ids = await _bundle_ids(first)
            assert {str(d.engine.device_id) for d in (first, second, third)} <= ids, ids
            config = await first.plugin["xep_0060"].get_node_config(first.boundjid.bare, BUNDLES)  # type: ignore[no-untyped-call]
            max_items = config["pubsub_owner"]["configure"]["form"]["values"]["pubsub#max_items"]
            assert max_items == "max" or int(max_items) >= 256, max_items
            said = [r.getMessage() for r in caplog.records if "refused our publish-options" in r.getMessage()]
            if server.kind == "ejabberd":
                assert len(said) == 1 and "resource-constraint" in said[0] and "pubsub#max_items" in said[0], said
                assert all(s.e2ee.pep.publisher.options_refused for s in (first, second, third))
            else:  # Prosody takes the options
                assert said == []
        finally:
            for s in (first, second, third):
                await s.close()

    asyncio.run(run())


def test_concurrent_first_publications_of_fresh_accounts(server: Accounts) -> None:
    """Two fresh accounts connect at once (each publishing both device lists and both bundles
    for the first time), a few times over: every session comes up with its bundle published.
    ejabberd answers such races with item-not-found or "Database failure" now and then."""

    async def run(round_: int) -> None:
        users = [f"fresh{round_}a", f"fresh{round_}b"]
        for user in users:
            server.register(user, f"{user}-pw")
        sessions = await asyncio.gather(*(_session(server, u) for u in users))
        try:
            for s in sessions:
                assert str(s.engine.device_id) in await _bundle_ids(s)
        finally:
            for s in sessions:
                await s.close()

    for round_ in range(4):
        asyncio.run(run(round_))
