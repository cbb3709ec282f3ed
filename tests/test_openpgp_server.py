"""Must-show 5 over a real server (Prosody and ejabberd) on 127.0.0.1: bob runs an OpenPGP-only client (no OMEMO
device), alice's message goes out with OpenPGP and bob reads it, live and after being offline
(archive and offline copies are one message); to carol, who has neither, sending fails with a
clear error and nothing is sent.  Then the same through the ``e2ee`` command line, with
``devices``, ``trust``/``distrust`` of OpenPGP fingerprints, ``--plaintext`` and
``backup``/``restore``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from e2ee.client.gpg import GnuPG
from e2ee.client.session import E2EESession, Received
from e2ee.engine import Engine
from e2ee.errors import NoEligibleDevices
from e2ee.fallback import Route
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage

from .support import run_cli
from .xmpp_server import Accounts

#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob", "carol", "dave", "erin")


async def _wait(pred: Any, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_openpgp_fallback_between_sessions_over_the_server(server: Accounts) -> None:
    runners: list[GnuPG] = []

    def engine(user: str, openpgp: bool = True) -> Engine:
        runner = GnuPG() if openpgp else None
        if runner is not None:
            runners.append(runner)
        return Engine.create(MemoryStorage(), server.jid(user), openpgp=runner)

    async def run() -> None:
        inbox: list[tuple[str, Received]] = []
        wire: dict[str, list[ET.Element]] = {"bob": [], "carol": []}

        async def connect(name: str, e: Engine, **kw: Any) -> E2EESession:
            s = E2EESession(e, f"{name}-pw", ca_file=server.cert, on_received=lambda r: inbox.append((name, r)), **kw)
            if name in wire:
                s.add_event_handler("message", lambda m, n=name: wire[n].append(m.xml))
            await s.start("127.0.0.1", server.port)
            return s

        alice = await connect("alice", engine("alice"))
        bob_engine = engine("bob")
        bob = await connect("bob", bob_engine, omemo=False)  # an OpenPGP-only client
        carol = await connect("carol", engine("carol", openpgp=False), omemo=False)  # neither
        sessions = [alice, bob, carol]
        try:
            info = await alice.plugin["xep_0030"].get_info(jid=bob.boundjid.full)
            features = set(info["disco_info"]["features"])
            assert {"urn:xmpp:openpgp:im:0", "urn:xmpp:openpgp:0:public-keys+notify"} <= features
            result = await alice.send_chat(bob.boundjid.bare, "hello bob, over OpenPGP")
            assert result.route(bob.boundjid.bare) is Route.OPENPGP
            await _wait(lambda: any(isinstance(r.result, Decrypted) for n, r in inbox if n == "bob"), "bob's message")
            (got,) = [r.result for n, r in inbox if n == "bob" and isinstance(r.result, Decrypted)]
            assert got.body == "hello bob, over OpenPGP" and got.namespace == "urn:xmpp:openpgp:0"
            assert got.jid == alice.boundjid.bare and got.identity_key == bytes.fromhex(
                alice.engine.openpgp.fingerprint or ""
            )
            (stanza,) = wire["bob"]
            assert stanza.find("{urn:xmpp:openpgp:0}openpgp") is not None
            assert stanza.findtext("{jabber:client}body") == "This message is encrypted using OpenPGP for XMPP."
            assert stanza.find("{urn:xmpp:hints}store") is not None
            eme = stanza.find("{urn:xmpp:eme:0}encryption")
            assert eme is not None and eme.get("namespace") == "urn:xmpp:openpgp:0"
            assert stanza.find("{urn:xmpp:omemo:2}encrypted") is None

            # bob's OpenPGP-only client answers with OpenPGP although alice has OMEMO devices
            reply = await bob.send_chat(alice.boundjid.bare, "hi alice, OpenPGP only here")
            assert reply.route(alice.boundjid.bare) is Route.OPENPGP
            await _wait(lambda: any(isinstance(r.result, Decrypted) for n, r in inbox if n == "alice"), "alice's reply")
            assert [r.result.body for n, r in inbox if n == "alice" and isinstance(r.result, Decrypted)] == [
                "hi alice, OpenPGP only here"
            ]

            # carol: no OMEMO device and no OpenPGP key -> a clear error, nothing sent
            with pytest.raises(NoEligibleDevices) as info:
                await alice.send_chat(carol.boundjid.bare, "this must not leave")
            assert str(info.value).startswith(
                f"{server.jid('carol')} has no trusted OMEMO device and no trusted OpenPGP key"
            )
            await alice.send_chat(carol.boundjid.bare, "explicitly in clear text", allow_plaintext=True)
            await _wait(lambda: wire["carol"], "carol's message")
            assert [m.findtext("{jabber:client}body") for m in wire["carol"]] == ["explicitly in clear text"]

            # bob goes offline; alice writes; bob comes back: the archive and the offline copy
            # of the message are one message
            bob.disconnect()
            await asyncio.sleep(0.3)
            inbox.clear()
            await alice.send_chat(bob.boundjid.bare, "while you were away")
            await asyncio.sleep(0.3)
            bob = await connect("bob", bob_engine, omemo=False)
            sessions.append(bob)
            await _wait(
                lambda: any(isinstance(r.result, Decrypted) for n, r in inbox if n == "bob"), "the offline message"
            )
            await asyncio.sleep(0.5)  # let the offline copy arrive too
            bodies = [r.result.body for n, r in inbox if n == "bob" and isinstance(r.result, Decrypted)]
            assert bodies.count("while you were away") == 1, bodies
            assert [r.error for n, r in inbox if n == "bob" and r.error is not None] == []
        finally:
            for s in sessions:
                s.disconnect()
            await asyncio.sleep(0.1)

    try:
        asyncio.run(run())
    finally:
        for r in runners:
            r.close()


def test_openpgp_through_the_command_line(server: Accounts, tmp_path: Path) -> None:
    def e2ee(home: str, user: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = run_cli(server, tmp_path / home, f"{user}-pw", *args, timeout=90, **env)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    dave, erin = server.jid("dave"), server.jid("erin")
    for user in ("dave", "erin"):
        assert e2ee(user, user, "init", "--jid", server.jid(user)).returncode == 0
        published = e2ee(user, user, "publish")
        assert published.returncode == 0, published.stderr
        assert "published OpenPGP key " in published.stdout
    erin_fp = json.loads(e2ee("erin", "erin", "fingerprint", "--json").stdout)
    assert len(erin_fp["openpgp"]) == 40
    # dave refuses erin's OMEMO device: the message goes out with OpenPGP
    assert e2ee("dave", "dave", "distrust", erin, erin_fp["fingerprint"]).returncode == 0
    sent = e2ee("dave", "dave", "send", erin, "hello erin, via OpenPGP", "--json")
    assert sent.returncode == 0, sent.stderr
    out = json.loads(sent.stdout)
    assert out["route"] == "openpgp" and erin_fp["openpgp"] in out["openpgp"]
    got = e2ee("erin", "erin", "recv", "--count", "1", "--json")
    row = json.loads(got.stdout.splitlines()[0])
    assert row["body"] == "hello erin, via OpenPGP" and row["namespace"] == "urn:xmpp:openpgp:0" and row["from"] == dave

    devices = json.loads(e2ee("dave", "dave", "devices", erin, "--json").stdout)
    (pgp,) = [d for d in devices if d["namespaces"] == ["urn:xmpp:openpgp:0"]]
    assert pgp["fingerprint"] == erin_fp["openpgp"] and pgp["trust"] == "blind"
    text = e2ee("dave", "dave", "devices", erin).stdout
    fpr = erin_fp["openpgp"]
    grouped = (
        " ".join(fpr[i : i + 4] for i in range(0, 20, 4)) + "  " + " ".join(fpr[i : i + 4] for i in range(20, 40, 4))
    )
    assert f"openpgp active   blind      {grouped}" in text

    # with the OpenPGP key distrusted too, nothing can be sent, unless in clear on request
    assert e2ee("dave", "dave", "distrust", erin, grouped).returncode == 0
    refused = e2ee("dave", "dave", "send", erin, "no way")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"e2ee: error: not sent: {erin} has no trusted OMEMO device and no trusted OpenPGP key"
    ), refused.stderr
    clear = e2ee("dave", "dave", "send", erin, "in clear, on request", "--plaintext")
    assert clear.returncode == 0 and "clear text" in clear.stdout
    assert e2ee("dave", "dave", "trust", erin, fpr.lower()).returncode == 0
    assert json.loads(e2ee("dave", "dave", "send", erin, "trusted again", "--json").stdout)["route"] == "openpgp"

    # backup on one device, restore on another
    backup = e2ee("dave", "dave", "backup")
    assert backup.returncode == 0, backup.stderr
    code = backup.stdout.strip()
    assert len(code) == 29
    assert e2ee("dave2", "dave", "init", "--jid", dave).returncode == 0
    bad = e2ee("dave2", "dave", "restore", E2EE_BACKUP_CODE="0000-0000")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    wrong = e2ee("dave2", "dave", "restore", E2EE_BACKUP_CODE="AAAA-AAAA-AAAA-AAAA-AAAA-AAAA")
    assert wrong.returncode == 1 and wrong.stderr.strip().splitlines()[-1].startswith("e2ee: error: ")
    restored = e2ee("dave2", "dave", "restore", E2EE_BACKUP_CODE=code)
    assert restored.returncode == 0, restored.stderr
    dave_fpr = json.loads(e2ee("dave", "dave", "fingerprint", "--json").stdout)["openpgp"]
    assert json.loads(e2ee("dave2", "dave", "fingerprint", "--json").stdout)["openpgp"] == dave_fpr
