"""Over a real server (Prosody and ejabberd): what Converse.js sends before its text -- encrypted OMEMO 2 stanzas
with no body (chat states: composing, paused) -- is not a message: ``e2ee recv`` neither prints
it nor counts it (issue 20, defect 5)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from e2ee.client.session import E2EESession
from e2ee.engine import NAMESPACES, Engine
from e2ee.results import FetchDeviceList
from e2ee.storage import MemoryStorage

from .support import run_cli
from .xmpp_server import Accounts

O2 = "urn:xmpp:omemo:2"
CHAT_STATES = "http://jabber.org/protocol/chatstates"


#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("conv", "pia")


def test_recv_does_not_print_or_count_encrypted_chat_states(server: Accounts, tmp_path: Path) -> None:
    pia = server.jid("pia")

    def e2ee(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(server, tmp_path / "pia", "pia-pw", *args)

    assert e2ee("init", "--jid", pia).returncode == 0
    published = e2ee("publish")
    assert published.returncode == 0, published.stderr

    async def converse_like() -> None:
        s = E2EESession(Engine.create(MemoryStorage(), server.jid("conv")), "conv-pw", ca_file=server.cert)
        await s.start("127.0.0.1", server.port)
        try:
            await s.run_effects([FetchDeviceList(pia, ns) for ns in NAMESPACES])
            for _ in range(4):
                fetches = s.engine.prepare([pia])
                if not fetches:
                    break
                await s.run_effects(fetches)

            def chat_state(name: str) -> None:
                res = s.engine.encrypt_omemo([pia], None, content=[ET.Element(f"{{{CHAT_STATES}}}{name}")])
                assert res.ready, res.devices
                s.e2ee.stanzas.send_element(pia, res.elements[O2], O2)

            chat_state("composing")
            assert (await s.send_text(pia, "first text")).ready
            chat_state("paused")
            chat_state("composing")
            assert (await s.send_text(pia, "second text")).ready
            chat_state("active")
            await asyncio.sleep(0.3)  # the server stores them for pia (offline)
        finally:
            s.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(converse_like())
    got = e2ee("recv", "--count", "2", "--timeout", "20", "--json")
    assert got.returncode == 0, got.stderr
    rows = [json.loads(line) for line in got.stdout.strip().splitlines()]
    assert [r["body"] for r in rows] == ["first text", "second text"], rows
    assert "Traceback" not in got.stderr
