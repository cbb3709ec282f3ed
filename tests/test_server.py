"""Over a real server (Prosody and ejabberd) on 127.0.0.1: our client sessions publish, fetch, send and decrypt,
including the carbon copy for our own other device."""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2ee.client.session import E2EESession, Received
from e2ee.engine import Engine
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage

from .support import run_cli
from .xmpp_server import Accounts

#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob")


async def _session(server: Accounts, user: str, inbox: list[tuple[str, Received]], name: str) -> E2EESession:
    engine = Engine.create(MemoryStorage(), server.jid(user))
    s = E2EESession(engine, f"{user}-pw", ca_file=server.cert, on_received=lambda r: inbox.append((name, r)))
    await s.start("127.0.0.1", server.port)
    return s


async def _wait(inbox: list[tuple[str, Received]], count: int, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(1 for _n, r in inbox if isinstance(r.result, Decrypted)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"only {[(n, r.result, r.error) for n, r in inbox]}")
        await asyncio.sleep(0.02)


def test_two_accounts_three_devices_over_the_server(server: Accounts) -> None:
    async def run() -> None:
        inbox: list[tuple[str, Received]] = []
        alice1 = await _session(server, "alice", inbox, "alice1")
        alice2 = await _session(server, "alice", inbox, "alice2")
        bob = await _session(server, "bob", inbox, "bob")
        try:
            await asyncio.sleep(0.3)  # device-list notifications reach the other devices
            result = await alice1.send_text(bob.boundjid.bare, "hello bob, over a real server")
            assert result.ready, result.devices
            reached = {d.device_id for d in result.devices if d.outcome.value == "encrypted"}
            assert reached == {alice2.engine.device_id, bob.engine.device_id}
            await _wait(inbox, 2)
            got = {(n, r.result.body, r.carbon) for n, r in inbox if isinstance(r.result, Decrypted)}
            assert got == {
                ("bob", "hello bob, over a real server", False),
                ("alice2", "hello bob, over a real server", True),
            }
            inbox.clear()
            reply = await bob.send_text(alice1.boundjid.bare, "hi alice")
            assert reply.ready
            await _wait(inbox, 2)
            got = {(n, r.result.body) for n, r in inbox if isinstance(r.result, Decrypted)}
            assert got == {("alice1", "hi alice"), ("alice2", "hi alice")}
        finally:
            for s in (alice1, alice2, bob):
                s.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_cli_publish_send_recv_over_the_server(server: Accounts, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    server.register("carol", "carol-pw")
    server.register("dave", "dave-pw")

    def e2ee(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(server, tmp_path / user, f"{user}-pw", *args)

    for user in ("carol", "dave"):
        assert e2ee(user, "init", "--jid", server.jid(user)).returncode == 0
        proc = e2ee(user, "publish")
        assert proc.returncode == 0, proc.stderr
    sent = e2ee("carol", "send", server.jid("dave"), "hello from the command line", "--json")
    assert sent.returncode == 0, sent.stderr
    data = json.loads(sent.stdout)
    assert [r["status"] for r in data["recipients"]] == ["encrypted"]
    got = e2ee("dave", "recv", "--count", "1", "--timeout", "10", "--json")
    assert got.returncode == 0, got.stderr
    (line,) = got.stdout.strip().splitlines()
    msg = json.loads(line)
    assert msg["from"] == server.jid("carol") and msg["body"] == "hello from the command line"
    assert msg["trust"] == "blind" and msg["carbon"] is False
    nobody = e2ee("carol", "send", server.jid("nobody"), "x")
    assert nobody.returncode == 1 and "not sent" in nobody.stderr and "Traceback" not in nobody.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2ee.client.cli",
            "--home",
            str(tmp_path / "carol"),
            "--server",
            "127.0.0.1:1",
            "publish",
        ],
        cwd=root,
        env={**os.environ, "E2EE_PASSPHRASE": "pw"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) <= 2 and "Traceback" not in bad.stderr


def test_messages_sent_while_offline_are_decrypted_from_the_archive(server: Accounts) -> None:
    server.register("erin", "erin-pw")
    server.register("frank", "frank-pw")

    async def run() -> None:
        inbox: list[tuple[str, Received]] = []
        erin = await _session(server, "erin", inbox, "erin")
        frank_engine = Engine.create(MemoryStorage(), server.jid("frank"))
        frank = E2EESession(
            frank_engine, "frank-pw", ca_file=server.cert, on_received=lambda r: inbox.append(("frank", r))
        )
        await frank.start("127.0.0.1", server.port)
        frank.disconnect()  # frank published his keys and went offline
        await asyncio.sleep(0.2)
        try:
            for i in range(3):
                assert (await erin.send_text(server.jid("frank"), f"while you were away {i}")).ready
            await asyncio.sleep(0.3)
            frank2 = E2EESession(
                frank_engine, "frank-pw", ca_file=server.cert, on_received=lambda r: inbox.append(("frank", r))
            )
            await frank2.start("127.0.0.1", server.port)  # catches up from MAM at connect
            await _wait(inbox, 3)
            got = [(r.result.body, r.archived) for n, r in inbox if n == "frank" and isinstance(r.result, Decrypted)]
            assert sorted(b for b, _a in got) == [f"while you were away {i}" for i in range(3)]
            assert all(archived for _b, archived in got)  # from the archive; offline copies were duplicates
            frank2.disconnect()
        finally:
            erin.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_two_accounts_two_devices_each_offline_device_and_a_device_added_later(server: Accounts) -> None:
    """Must-show 1 of issue 6: every message from any device decrypts on every other device of
    both accounts (own copies through carbons); a device that was offline decrypts everything
    after reconnecting; a device added later receives messages once it has published."""
    server.register("gina", "gina-pw")
    server.register("hank", "hank-pw")
    g, h = server.jid("gina"), server.jid("hank")

    async def run() -> None:
        inbox: list[tuple[str, Received]] = []
        devices = {
            "gina1": await _session(server, "gina", inbox, "gina1"),
            "gina2": await _session(server, "gina", inbox, "gina2"),
            "hank1": await _session(server, "hank", inbox, "hank1"),
            "hank2": await _session(server, "hank", inbox, "hank2"),
        }
        online = dict(devices)
        await asyncio.sleep(0.3)

        def bodies(name: str) -> list[str]:
            return sorted(r.result.body for n, r in inbox if n == name and isinstance(r.result, Decrypted))

        try:
            expected: dict[str, list[str]] = {n: [] for n in devices}
            for i, sender in enumerate(["gina1", "hank2", "gina2", "hank1"]):
                to = h if sender.startswith("gina") else g
                body = f"round one {i} from {sender}"
                assert (await online[sender].send_text(to, body)).ready
                for n in devices:
                    if n != sender:
                        expected[n].append(body)
            await _wait(inbox, sum(len(v) for v in expected.values()))
            for n in devices:
                assert bodies(n) == sorted(expected[n]), n
            # hank2 goes offline; messages keep coming
            online.pop("hank2").disconnect()
            await asyncio.sleep(0.2)
            for i, sender in enumerate(["gina1", "gina2", "hank1"]):
                to = h if sender.startswith("gina") else g
                body = f"while hank2 is away {i} from {sender}"
                assert (await online[sender].send_text(to, body)).ready
                for n in devices:
                    if n != sender:
                        expected[n].append(body)
            # hank2 comes back (same engine, new connection): catch-up from MAM and offline storage
            back = E2EESession(
                devices["hank2"].engine,
                "hank-pw",
                ca_file=server.cert,
                on_received=lambda r: inbox.append(("hank2", r)),
            )
            await back.start("127.0.0.1", server.port)
            online["hank2"] = back
            await _wait(inbox, sum(len(v) for v in expected.values()))
            for n in devices:
                assert bodies(n) == sorted(expected[n]), n
            # a device added later gets messages once it has published
            late = await _session(server, "gina", inbox, "gina3")
            online["gina3"] = late
            await asyncio.sleep(0.3)
            welcome = await online["hank1"].send_text(g, "welcome, new device")
            assert welcome.ready and late.engine.device_id in {
                d.device_id for d in welcome.devices if d.outcome.value == "encrypted"
            }, welcome.devices
            for name in ("gina1", "gina2", "gina3", "hank2"):
                deadline = asyncio.get_running_loop().time() + 10
                while "welcome, new device" not in bodies(name):
                    assert asyncio.get_running_loop().time() < deadline, (name, bodies(name))
                    await asyncio.sleep(0.02)
        finally:
            for s in online.values():
                s.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_the_whole_cli_flow_of_a_new_user(server: Accounts, tmp_path: Path) -> None:
    """Must-show 3 of issue 6: init, fingerprint, publish, send, recv, devices, verify with the
    other side's URI, distrust, and send again: the distrusted device no longer gets it."""
    import json
    import subprocess

    server.register("ivy", "ivy-pw")
    server.register("jack", "jack-pw")
    jack = server.jid("jack")

    def e2ee(home: str, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = run_cli(server, tmp_path / home, f"{user}-pw", *args)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    for home, user in (("ivy", "ivy"), ("jack1", "jack"), ("jack2", "jack")):
        assert e2ee(home, user, "init", "--jid", server.jid(user)).returncode == 0
        assert e2ee(home, user, "publish").returncode == 0
    jack1 = json.loads(e2ee("jack1", "jack", "fingerprint", "--json").stdout)
    assert e2ee("ivy", "ivy", "send", jack, "first message").returncode == 0
    got = e2ee("jack1", "jack", "recv", "--count", "1", "--json")
    assert json.loads(got.stdout.splitlines()[0])["body"] == "first message"
    devices = json.loads(e2ee("ivy", "ivy", "devices", jack, "--json").stdout)
    assert {d["device"] for d in devices} >= {jack1["device"]}
    assert e2ee("ivy", "ivy", "verify", jack1["uri"]).returncode == 0
    devices = {d["device"]: d for d in json.loads(e2ee("ivy", "ivy", "devices", jack, "--json").stdout)}
    assert devices[jack1["device"]]["trust"] == "verified"
    assert e2ee("ivy", "ivy", "distrust", jack, jack1["fingerprint"]).returncode == 0
    again = json.loads(e2ee("ivy", "ivy", "send", jack, "second message", "--json").stdout)
    status = {r["device"]: r["status"] for r in again["recipients"] if r["jid"] == jack}
    assert status[jack1["device"]] == "distrusted"
    assert "encrypted" in status.values()  # jack's other device still gets it
    got = e2ee("jack2", "jack", "recv", "--count", "2", "--timeout", "5", "--json")
    bodies = [json.loads(line)["body"] for line in got.stdout.splitlines()]
    assert "second message" in bodies
    got = e2ee("jack1", "jack", "recv", "--timeout", "2", "--json")
    assert got.returncode == 0, got.stderr
    assert "second message" not in got.stdout


def test_demo_over_the_server(server: Accounts) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2ee.client.cli",
            "--server",
            f"127.0.0.1:{server.port}",
            "--ca-file",
            str(server.cert),
            "demo",
            "--domain",
            server.domain,
        ],
        cwd=root,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("decrypted") == 2 + 2 + 2  # bob + alice's other device; alice x2; bob + alice's laptop
    assert "(carbon)" in out and "demo finished over the server" in out
    assert proc.stderr == ""  # no stray slixmpp noise


def test_cli_recv_shows_hostile_bodies_labels_and_jids_escaped(server: Accounts, tmp_path: Path) -> None:
    """Issue 14.2 over a real server: a contact's bodies (OMEMO 2, and legacy OMEMO whose body is
    raw UTF-8: ESC, OSC, NUL get through) and device label hold control and bidi characters and
    forged header lines.  ``recv`` prints them escaped, continuation lines indented (no line
    passes for a message header); ``devices`` shows the label escaped; ``--json`` is exact."""
    import json
    import subprocess
    import xml.etree.ElementTree as ET

    from e2ee.client.safe_text import CONTINUATION
    from e2ee.engine import NAMESPACES
    from e2ee.results import FetchDeviceList

    server.register("quinn", "quinn-pw")
    server.register("rosa", "rosa-pw")
    quinn, rosa_jid = server.jid("quinn"), server.jid("rosa")

    def e2ee(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(server, tmp_path / "quinn", "quinn-pw", *args)

    assert e2ee("init", "--jid", quinn).returncode == 0
    assert e2ee("publish").returncode == 0
    # (no CR/LF: slixmpp writes them raw into attributes, where XML turns them into spaces)
    label = "phone\u202eenohp\u2066 [verified]\x9b2J\x85"
    o2_body = f"hi\nrosa@{server.domain}/1 [verified]: forged\u202eevil\u2066\x9b2J\x85end"
    legacy_body = f"\x1b]0;pwned\x07\x1b[2J\x00\rgone\nalice@{server.domain}/4242 [verified]: forged\u202e"

    engine = Engine.create(MemoryStorage(), rosa_jid, label=label)

    async def send(with_o2: bool) -> None:
        rosa = E2EESession(engine, "rosa-pw", ca_file=server.cert)
        await rosa.start("127.0.0.1", server.port)
        try:
            if with_o2:
                assert (await rosa.send_text(quinn, o2_body)).ready
            # quinn's device as legacy-only: the legacy body carries what XML cannot
            engine.on_device_list(quinn, NAMESPACES[0], ET.Element(f"{{{NAMESPACES[0]}}}devices"))
            for _ in range(4):
                fetches = engine.prepare([quinn])
                if not fetches:
                    break
                await rosa.run_effects(fetches)
            # (again, with no await before the encrypt: a late answer to an earlier fetch may
            # have put the OMEMO 2 list back meanwhile)
            engine.on_device_list(quinn, NAMESPACES[0], ET.Element(f"{{{NAMESPACES[0]}}}devices"))
            res = engine.encrypt_omemo([quinn], legacy_body)
            assert res.ready and list(res.elements) == [NAMESPACES[1]], res.devices
            rosa.e2ee.stanzas.send_element(quinn, res.elements[NAMESPACES[1]], NAMESPACES[1])
            # a round trip after it (the legacy list, unchanged): the server handles our stream
            # in order, so the message is in offline storage before we go
            await rosa.run_effects([FetchDeviceList(quinn, NAMESPACES[1])])
        finally:
            rosa.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(send(True))
    got = e2ee("recv", "--count", "2", "--timeout", "20")
    assert got.returncode == 0, got.stderr
    out = got.stdout
    for raw in ("\x1b", "\x00", "\r", "\x07", "\u202e", "\u2066", "\x9b", "\x85"):
        assert raw not in out, repr(raw)
    lines = out.rstrip("\n").split("\n")
    header = f"{rosa_jid}/"
    headers = [line for line in lines if not line.startswith(CONTINUATION)]
    assert len(headers) == 2 and all(h.startswith(header) and " [blind]: " in h for h in headers), lines
    assert "[blind]: hi" in headers[0] and "forged\\u202eevil\\u2066\\x9b2J\\x85end" in lines[1]
    assert lines[1].startswith(CONTINUATION) and lines[3].startswith(CONTINUATION)
    assert headers[1].endswith("[blind]: \\x1b]0;pwned\\x07\\x1b[2J\\x00\\rgone"), headers[1]

    devices = e2ee("devices", rosa_jid)
    assert devices.returncode == 0, devices.stderr
    assert all(c not in devices.stdout for c in "\u202e\u2066\x9b\x85") and len(devices.stdout.splitlines()) == 1
    assert "'phone\\u202eenohp\\u2066 [verified]\\x9b2J\\x85'" in devices.stdout, devices.stdout
    as_json = json.loads(e2ee("devices", rosa_jid, "--json").stdout)
    assert [d["label"] for d in as_json] == [label]

    asyncio.run(send(False))
    got = e2ee("recv", "--count", "1", "--timeout", "20", "--json")
    assert got.returncode == 0, got.stderr
    (line,) = got.stdout.strip().splitlines()
    assert json.loads(line)["body"] == legacy_body
