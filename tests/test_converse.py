"""Issue 20: the real Converse.js 14.0.0 (npm, pinned in tests/converse/) in headless Chromium over
a private Prosody's WebSocket, against our `e2ee` command line run as a person would.

One browser for the module: Converse logs in as conv@localhost, OMEMO on by default. Our side:
alice with two fresh devices (alice1, alice2) and bob with two (bob1, bob2), four fresh
identities in all. Under the old key generation each had its Ed25519 sign bit set with
probability 1/2 (Converse could then write to none of them: "Invalid signature"), so the four
would all have been clear with probability 1/16; the tests assert every one is clear now and
that Converse writes to all four.

The tests run in file order and build on each other (one conversation); on a failure the
screenshot, page, browser console and server log are kept under tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2ee.client.session import FALLBACK_BODY

from .converse_web import ERROR_TEXTS, Browser, missing, until
from .xmpp_server import Prosody, _free_port, available

ROOT = Path(__file__).resolve().parent.parent
CONVERSE = "conv"
P = 2**255 - 19


@dataclass
class World:
    server: Prosody
    browser: Browser
    homes: Path
    devices: dict[str, int] = field(default_factory=dict)  # home -> device id
    _running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    shown: dict[str, list[str]] = field(default_factory=dict)  # home -> what Converse shows

    @property
    def conv(self) -> str:
        return f"{CONVERSE}@{self.server.domain}"

    def jid(self, user: str) -> str:
        return f"{user}@{self.server.domain}"

    def e2ee(self, home: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """The command line as a person runs it (``home`` is alice1, alice2, bob1 or bob2)."""
        command, env = self._command(home, *args)
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok:
            assert proc.returncode == 0, f"e2ee {' '.join(args)}: {proc.stderr}{proc.stdout}"
        return proc

    def _command(self, home: str, *args: str) -> tuple[list[str], dict[str, str]]:
        user = home.rstrip("0123456789")
        env = {**os.environ, "E2EE_PASSPHRASE": "pw", "E2EE_KDF": "floor", "E2EE_XMPP_PASSWORD": f"{user}-pw"}
        return [
            sys.executable,
            "-m",
            "e2ee.client.cli",
            "--home",
            str(self.homes / home),
            "--server",
            f"127.0.0.1:{self.server.port}",
            "--ca-file",
            str(self.server.cert),
            *args,
        ], env

    def listen(self, home: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        """`e2ee recv --json ARGS` left running; its output and error go to files."""
        out, err = self.homes / f"{home}.recv.out", self.homes / f"{home}.recv.err"
        command, env = self._command(home, "recv", "--timeout", "60", "--json", *args)
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=o, stderr=e)
        self._running.append(proc)
        return proc, out, err

    def recv(self, home: str, body: str, attempts: int = 5) -> list[dict[str, object]]:
        """What `e2ee recv --json` prints on ``home`` (several runs of a few seconds, at most
        ``attempts``, until one message with ``body`` came: Converse shows what it sends
        before it has encrypted and sent it)."""
        got: list[dict[str, object]] = []
        for _ in range(attempts):
            out = self.e2ee(home, "recv", "--timeout", "3", "--json").stdout
            got += [json.loads(line) for line in out.splitlines() if line.strip()]
            if any(m.get("body") == body for m in got):
                break
        return [m for m in got if m.get("body") == body]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    assert available(), "Prosody is missing: scripts/test.sh installs it (apt-get install prosody)"
    assert not missing(), missing()
    base = tmp_path_factory.mktemp("converse")
    with Prosody(base / "prosody", websocket_port=_free_port()) as server:
        for user in (CONVERSE, "alice", "bob"):
            server.register(user, f"{user}-pw")
        server.start()
        browser = Browser(
            f"{CONVERSE}@{server.domain}", f"{CONVERSE}-pw", server.websocket_url, [server.directory / "prosody.log"]
        )
        w = World(server, browser, base / "homes")
        try:
            with browser.evidence("login"):
                browser.wait_logged_in()
            for home in ("alice1", "alice2", "bob1", "bob2"):
                user = home.rstrip("0123456789")
                w.e2ee(home, "init", "--jid", w.jid(user))
                w.e2ee(home, "publish")
                w.devices[home] = int(json.loads(w.e2ee(home, "fingerprint", "--json").stdout)["device"])
            yield w
        finally:
            for proc in w._running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            browser.close()


def _no_errors_shown(w: World, jid: str) -> None:
    """Nothing in the chat with ``jid`` (opened first: full-screen mode shows one chat) is an
    error or our fallback text, and no error dialog is open."""
    if jid.split("@", 1)[1] != w.server.muc:
        w.browser.open_chat(jid)
    assert [m for m in w.browser.messages(jid) if not m.info], f"the chat with {jid} shows no message"
    for m in w.browser.messages(jid):
        assert not m.error, f"Converse shows an error in the chat with {jid}: {m}"
        assert FALLBACK_BODY not in m.text and not any(e in m.text for e in ERROR_TEXTS), m
    assert not w.browser.alerts(), w.browser.alerts()


def test_a_we_write_first_and_converse_shows_it_decrypted_with_its_padlock(world: World) -> None:
    w = world
    with w.browser.evidence("a_we_write_first"):
        sent = json.loads(w.e2ee("alice1", "send", w.conv, "hello Converse, alice1 here", "--json").stdout)
        to_conv = [r for r in sent["recipients"] if r["jid"] == w.conv]
        assert to_conv and all(r["status"] == "encrypted" for r in to_conv), sent
        w.browser.wait_chat_started(w.jid("alice"))
        w.browser.open_chat(w.jid("alice"))
        shown = w.browser.wait_message(w.jid("alice"), "hello Converse, alice1 here")
        assert shown.encrypted and shown.padlock and not shown.error, shown


def test_b_converse_writes_and_both_our_devices_decrypt(world: World) -> None:
    w = world
    with w.browser.evidence("b_converse_writes"):
        w.browser.open_chat(w.jid("alice"))
        w.browser.type_message(w.jid("alice"), "hello alice, Converse here")
        shown = w.browser.wait_message(w.jid("alice"), "hello alice, Converse here")
        assert shown.encrypted and not shown.error, shown
        _no_errors_shown(w, w.jid("alice"))
        for home in ("alice1", "alice2"):
            got = w.recv(home, "hello alice, Converse here")
            assert len(got) == 1 and got[0]["from"] == w.conv, (home, got)


def test_c_our_second_device_is_shown_and_its_copy_reaches_our_first(world: World) -> None:
    w = world
    with w.browser.evidence("c_second_device"):
        w.e2ee("alice2", "send", w.conv, "and alice2 as well")
        shown = w.browser.wait_message(w.jid("alice"), "and alice2 as well")
        assert shown.encrypted and not shown.error, shown
        copies = w.recv("alice1", "and alice2 as well")
        assert len(copies) == 1 and copies[0]["from"] == w.jid("alice"), copies  # ours, from the other device


def test_d_bob_too_and_no_message_in_converse_shows_an_error_or_the_fallback(world: World) -> None:
    """Converse writes to bob's two devices as well (four fresh identities of ours in all),
    and nothing Converse shows, in any chat, is an error or our fallback text."""
    w = world
    with w.browser.evidence("d_no_errors"):
        w.browser.open_chat(w.jid("bob"))
        w.browser.type_message(w.jid("bob"), "hello bob")
        for home in ("bob1", "bob2"):
            got = w.recv(home, "hello bob")
            assert len(got) == 1, (home, got)
        w.e2ee("bob2", "send", w.conv, "hello back from bob2")
        w.browser.wait_message(w.jid("bob"), "hello back from bob2")
        expected = {
            w.jid("alice"): ["hello Converse, alice1 here", "hello alice, Converse here", "and alice2 as well"],
            w.jid("bob"): ["hello bob", "hello back from bob2"],
        }
        for jid, texts in expected.items():
            _no_errors_shown(w, jid)
            shown = [m for m in w.browser.messages(jid) if not m.info]
            assert [m.text for m in shown] == texts and all(m.encrypted for m in shown), shown
        bad = [
            line
            for line in w.browser.console()
            if "Invalid signature" in line or "Could not build an OMEMO session" in line
        ]
        assert not bad, bad


def _ed25519_to_curve25519(ed_hex: str) -> str:
    """u = (1 + y) / (1 - y) mod p, the Montgomery form of an Edwards point (sign dropped)."""
    raw = bytes.fromhex(ed_hex)
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, P - 2, P) % P
    return u.to_bytes(32, "little").hex()


def _compact(text: str) -> str:
    return re.sub(r"\s", "", text).lower()


def _shown_for_ours(w: World) -> dict[str, list[str]]:
    """The fingerprints Converse shows for each of our four devices (contact details → OMEMO),
    one per namespace; read once."""
    if not w.shown:
        for user in ("alice", "bob"):
            shown = w.browser.contact_fingerprints(w.jid(user))
            for home in (f"{user}1", f"{user}2"):
                w.shown[home] = shown.get(w.devices[home], [])
    return w.shown


def _ed25519_form(forms: list[str]) -> str:
    """Of the two strings Converse shows for one device, the Ed25519 one (OMEMO 2): the one
    whose Montgomery conversion is the other (Converse shows the same key in both forms)."""
    assert len(forms) == 2, f"Converse shows {forms}: one per namespace expected"
    (ed,) = [fp for fp in forms if _ed25519_to_curve25519(fp) in forms]
    return ed


def test_our_four_fresh_identities_have_the_sign_bit_clear(world: World) -> None:
    """Read from Converse's own display (the Ed25519 form it shows for OMEMO 2), so the key
    checked is the one Converse verified our bundle signatures with (a, b, d passed for all)."""
    w = world
    with w.browser.evidence("sign_bit"):
        shown = _shown_for_ours(w)
        assert sorted(shown) == ["alice1", "alice2", "bob1", "bob2"]
        for home, forms in shown.items():
            ed = _ed25519_form(forms)
            assert bytes.fromhex(ed)[31] & 0x80 == 0, f"{home}: the Ed25519 sign bit is set in {ed}"


def test_e_fingerprints_each_side_shows_for_the_other_match(world: World) -> None:
    """What Converse shows for each of our devices (in both namespaces) is printed by `e2ee
    fingerprint` on that device; what Converse shows as its own (both forms) is printed by
    `e2ee devices` for Converse's device."""
    w = world
    with w.browser.evidence("e_fingerprints"):
        for home, forms in _shown_for_ours(w).items():
            ours = w.e2ee(home, "fingerprint").stdout
            for fp in forms:
                assert fp in _compact(ours), f"Converse shows {fp} for {home}; e2ee fingerprint prints:\n{ours}"
        own, _uris = w.browser.own_shown_fingerprints()
        assert len(own) == 2, own
        listed = w.e2ee("alice1", "devices", w.conv).stdout
        for fp in own:
            assert fp in _compact(listed), f"Converse shows {fp} as its own; e2ee devices prints:\n{listed}"


def _trust_of_converse(w: World, home: str) -> list[str]:
    rows = json.loads(w.e2ee(home, "devices", w.conv, "--json").stdout)
    return [str(r["trust"]) for r in rows if r["device"] is not None]


def test_f_a_uri_with_either_key_form_verifies(world: World) -> None:
    """Converse's two QR codes carry its key in the Curve25519 form (legacy) and in the
    Ed25519 form (OMEMO 2). bob1 applies only the Ed25519 one, bob2 only the Curve25519 one:
    each then shows Converse's device as verified (not merely says so)."""
    w = world
    with w.browser.evidence("f_verify"):
        _own, uris = w.browser.own_shown_fingerprints()
        assert len(uris) == 2 and all(u.startswith(f"xmpp:{w.conv}?omemo-sid-") for u in uris), uris
        keys = {uri: uri.rsplit("=", 1)[1] for uri in uris}
        (ed_uri,) = [u for u in uris if _ed25519_to_curve25519(keys[u]) in keys.values()]
        (curve_uri,) = [u for u in uris if u != ed_uri]
        for home, uri in (("bob1", ed_uri), ("bob2", curve_uri)):
            assert _trust_of_converse(w, home) == ["blind"], w.e2ee(home, "devices", w.conv).stdout
            out = w.e2ee(home, "verify", uri).stdout
            assert "verified" in out and "remembered" not in out, out
            assert _trust_of_converse(w, home) == ["verified"], (uri, w.e2ee(home, "devices", w.conv).stdout)


def test_g_members_only_room_messages_go_both_ways(world: World) -> None:
    w = world
    room = f"omemo@{w.server.muc}"
    with w.browser.evidence("g_room"):
        w.e2ee("bob1", "room-create", room, "--member", w.conv, "--member", w.jid("alice"))
        w.browser.open_room(room, CONVERSE)
        sent = json.loads(w.e2ee("bob1", "room-send", room, "hello room, bob1 here", "--json").stdout)
        assert any(r["jid"] == w.conv and r["status"] == "encrypted" for r in sent["recipients"]), sent
        shown = w.browser.wait_message(room, "hello room, bob1 here")
        assert shown.encrypted and not shown.error, shown
        # bob's two devices listen in the room (no history at join: they must be there)
        listening = {home: w.listen(home, "--room", room, "--count", "1") for home in ("bob1", "bob2")}
        for home, (_proc, _out, err) in listening.items():
            until(lambda: "joined" in err.read_text(), lambda: f"{home} did not join: {err.read_text()}", timeout=30)
        w.browser.type_message(room, "hello bob, Converse in the room")
        shown = w.browser.wait_message(room, "hello bob, Converse in the room")
        assert shown.encrypted and not shown.error, shown
        for home, (proc, out, err) in listening.items():
            assert proc.wait(timeout=60) == 0, err.read_text()
            got = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
            assert [(m["body"], m["from"], m["room"]) for m in got] == [
                ("hello bob, Converse in the room", w.conv, room)
            ], (home, got)
        _no_errors_shown(w, room)
