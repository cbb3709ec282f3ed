"""``e2ee chat`` driven in a real terminal (tmux: ``send-keys`` types, ``capture-pane`` reads
the screen) against a private server (Prosody and ejabberd), with a second account on the
command line; and the scriptable ``e2ee send JID -`` and ``e2ee recv --follow``.

Every wait below polls for work done (a line on the screen, a message received, a process
ended) under a generous deadline; nothing asserts on how long anything took."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .doc_examples import example
from .support import ROOT, cli_command, cli_env, run_cli
from .xmpp_server import Accounts

#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("ann", "ben", "cid", "dot", "eve", "fay", "gus", "hal")

#: a deadline for work that takes a second or two on loopback
PATIENCE = 60.0

#: The terminal tests are about the screen, not the server (sending and receiving are tested on
#: both kinds elsewhere, and the scriptable commands below run on both): they run on the first
#: server kind of the run (Prosody unless E2EE_TEST_SERVERS names another), which halves their cost.
ONE_SERVER = pytest.mark.parametrize(
    "xmpp_server", [(os.environ.get("E2EE_TEST_SERVERS") or "prosody").split(",")[0]], indirect=True
)


def _until(check: Callable[[], object], what: str, timeout: float = PATIENCE) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


class Terminal:
    """One tmux pane on a tmux server of its own (its own socket: nothing else's sessions)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        """Run ``command`` in a 160x50 pane; when it ends, the pane shows ``EXIT=<status>``."""
        wanted = {k: v for k, v in env.items() if k.startswith("E2EE_") or k in ("PATH", "HOME", "LANG")}
        line = f"env {shlex.join(f'{k}={v}' for k, v in wanted.items())} {shlex.join(command)}; echo EXIT=$?; sleep 600"
        assert not self.alive()
        self.tmux("-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", "-c", str(ROOT), line)
        self.tmux("set-option", "-g", "history-limit", "5000")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session"], capture_output=True).returncode == 0

    def screen(self) -> str:
        """What the pane shows, its scrollback included, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-")

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)
        self.tmux("send-keys", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def wait_for(self, text: str) -> str:
        def shown() -> str | None:
            screen = self.screen()
            return screen if text in screen else None

        try:
            return str(_until(shown, f"{text!r} on the screen"))
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen:\n{self.screen()}") from None

    def exit_status(self) -> int:
        screen = self.wait_for("EXIT=")
        return int(screen.rsplit("EXIT=", 1)[1].split()[0])

    def terminate(self) -> None:
        """SIGTERM to the program in the pane (the child of the pane's shell, found by its parent's id)."""
        shell = self.tmux("display-message", "-p", "#{pane_pid}").strip()
        found = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True, timeout=30)
        (pid,) = found.stdout.split()
        os.kill(int(pid), signal.SIGTERM)

    def title(self) -> str:
        return self.tmux("display-message", "-p", "#{pane_title}").strip()


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    t = Terminal(f"e2ee-test-{os.getpid()}")
    try:
        yield t
    finally:
        if t.alive():
            t.tmux("kill-server")


def _accounts(server: Accounts, tmp_path: Path, *homes: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Each home initialised and published; a home named ``dot2`` is a second device of ``dot``.
    Returns ``e2ee(home, *args)``, the CLI on that home."""

    def e2ee(home: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(server, tmp_path / home, f"{home.rstrip('0123456789')}-pw", *args, **env)

    for home in homes:
        assert e2ee(home, "init", "--jid", server.jid(home.rstrip("0123456789"))).returncode == 0
        published = e2ee(home, "publish")
        assert published.returncode == 0, published.stderr
    return e2ee


#: a message with what a terminal acts on and XML still carries: C1 controls (CSI, OSC, ST:
#: U+009B/9D/9C), a carriage return, a line feed followed by a forged header, a bidi override
#: and a line separator
HOSTILE = "evil \u009b2J\u009d0;pwned\u009c \r\nann@x/1 [verified]: forged \u202eabc\u2028end"


@ONE_SERVER
def test_chat_in_a_terminal(server: Accounts, tmp_path: Path, terminal: Terminal) -> None:
    e2ee = _accounts(server, tmp_path, "ann", "ben")
    ann, ben = server.jid("ann"), server.jid("ben")
    assert e2ee("ben", "send", ann, "written while you were away").returncode == 0

    saved = tmp_path / "ann-downloads"
    saved.mkdir()
    terminal.start(cli_command(server, tmp_path / "ann", "chat", ben, "--download-dir", str(saved)), cli_env("ann-pw"))
    screen = terminal.wait_for(f"conversation with {ben}")
    # the archive catch-up at start: the message sent before, with its markers
    assert "[OMEMO 2] [blind] " in screen and "(archive): written while you were away" in screen
    assert "; 1 archived message read" in screen  # the catch-up's count: the one message waiting
    terminal.wait_for("| online |")

    # a live message arrives and is shown with time, sender, device, encryption and trust
    ben_device = json.loads(e2ee("ben", "fingerprint", "--json").stdout)["device"]
    assert e2ee("ben", "send", ann, "hello ann, live").returncode == 0
    screen = terminal.wait_for("hello ann, live")
    (line,) = [x for x in screen.splitlines() if x.endswith("hello ann, live")]
    clock, rest = line.split(" ", 1)
    assert len(clock) == 8 and clock.count(":") == 2
    assert rest == f"[OMEMO 2] [blind] {ben}/{ben_device}: hello ann, live"

    # hostile text is shown escaped: no control character reaches the terminal raw
    assert e2ee("ben", "send", ann, HOSTILE).returncode == 0
    screen = terminal.wait_for(r"\u2028end")
    assert r"evil \x9b2J\x9d0;pwned\x9c \r" in screen
    assert r"    | ann@x/1 [verified]: forged \u202eabc\u2028end" in screen  # the forged header is indented
    assert not any(line.startswith("ann@x/1") for line in screen.splitlines())
    assert "pwned" not in terminal.title() and "\u202e" not in screen and "\u009b" not in screen

    # a typed line is sent by the policy of `send` and arrives decrypted at the other account
    terminal.type("hi ben, typed in the chat")
    terminal.wait_for(f"[OMEMO 2] me -> {ben}: hi ben, typed in the chat")
    got = e2ee("ben", "recv", "--count", "1", "--json")
    assert got.returncode == 0, got.stderr
    (msg,) = [json.loads(x) for x in got.stdout.splitlines()]
    assert msg["from"] == ann and msg["body"] == "hi ben, typed in the chat" and msg["trust"] == "blind"

    # slash commands: the contact's devices, our fingerprint with its QR code, trust in words
    terminal.type("/devices")
    terminal.wait_for(f"{ben_device} active   blind")
    terminal.type("/fingerprint")
    screen = terminal.wait_for(f"xmpp:{ann}?omemo-sid-")
    assert "\u2588\u2588\u2588\u2588" in screen  # the QR code's quiet zone, in half blocks
    terminal.type("/trust 12 34")
    terminal.wait_for("an OMEMO fingerprint has 64 hex digits")
    terminal.type("/verify https://example.org/")
    terminal.wait_for("not a verification URI")
    ben_uri = json.loads(e2ee("ben", "fingerprint", "--json").stdout)["uri"]
    terminal.type(f"/verify {ben_uri}")
    terminal.wait_for(f"{ben}: device {ben_device} ")
    terminal.wait_for("is now verified")
    assert e2ee("ben", "send", ann, "now you trust me").returncode == 0
    terminal.wait_for(f"[OMEMO 2] [verified] {ben}/{ben_device}: now you trust me")

    # /file: encrypted, uploaded, sent; the other account downloads and decrypts it
    report = tmp_path / "report.txt"
    report.write_bytes(b"quarterly numbers\n" * 1000)
    terminal.type(f"/file {report}")
    terminal.wait_for(f"sent the file report.txt ({report.stat().st_size} bytes), encrypted for 1 device")
    (tmp_path / "downloads").mkdir()
    got = e2ee("ben", "recv", "--count", "1", "--json", "--download-dir", str(tmp_path / "downloads"))
    assert got.returncode == 0, got.stderr
    (row,) = [json.loads(x) for x in got.stdout.splitlines()]
    assert row["from"] == ann and Path(row["file"]["path"]).read_bytes() == report.read_bytes()

    # a file shared with us: named (never shown as a link), downloaded, decrypted, saved
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"minutes of the meeting\n" * 500)
    assert e2ee("ben", "send-file", ann, str(notes)).returncode == 0
    terminal.wait_for(f"{ben}/{ben_device}: shared a file: notes.txt, saving it in {saved}")
    terminal.wait_for(f"saved notes.txt as {saved / 'notes.txt'}")
    assert (saved / "notes.txt").read_bytes() == notes.read_bytes()
    assert "aesgcm://" not in terminal.screen()

    terminal.type("/quit")
    assert terminal.exit_status() == 0
    screen = terminal.screen()
    assert "Traceback" not in screen and f"the keystore of {ann} is closed" in screen
    # the keystore is intact and not locked: a later recv works and gets what came meanwhile
    assert e2ee("ben", "send", ann, "after the chat").returncode == 0
    after = e2ee("ann", "recv", "--count", "1", "--json")
    assert after.returncode == 0, after.stderr
    assert [json.loads(x)["body"] for x in after.stdout.splitlines()] == ["after the chat"]


@ONE_SERVER
def test_chat_tells_each_device_failure_once_and_leaves_on_ctrl_c(
    server: Accounts, tmp_path: Path, terminal: Terminal
) -> None:
    e2ee = _accounts(server, tmp_path, "cid", "dot", "dot2")
    dot = server.jid("dot")
    # dot's second device: cid refuses its key (compared and found wrong)
    second = json.loads(e2ee("dot2", "fingerprint", "--json").stdout)
    terminal.start(cli_command(server, tmp_path / "cid", "chat", dot), cli_env("cid-pw"))
    terminal.wait_for("| online |")
    terminal.type(f"/distrust {dot} {second['fingerprint']}")
    terminal.wait_for("(distrusted), applies when that key appears")
    refused = f"{dot}: device {second['device']} (OMEMO 2) was left out: you refused its key"
    terminal.type("first line")
    screen = terminal.wait_for(f"me -> {dot}: first line")
    terminal.wait_for(refused)
    terminal.type("second line")
    terminal.wait_for(f"me -> {dot}: second line")
    terminal.type("/help")  # answered after the second line was handled: its failures are on the screen
    screen = terminal.wait_for("/quit")
    assert screen.count(refused) == 1, screen  # told once, not at every line
    got = e2ee("dot", "recv", "--count", "2", "--json")
    assert [json.loads(x)["body"] for x in got.stdout.splitlines()] == ["first line", "second line"]
    terminal.keys("C-c")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.screen()
    assert e2ee("cid", "devices", dot).returncode == 0  # the keystore was closed, not left locked


class Follow:
    """``recv --follow --json ARGS`` running in the background; its output lines read by threads
    (a pipe read ahead by Python's buffering would hide lines from ``select``)."""

    def __init__(self, server: Accounts, tmp_path: Path, home: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            cli_command(server, tmp_path / home, "recv", "--follow", "--json", *args),
            cwd=ROOT,
            env=cli_env(f"{home}-pw"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        for pipe, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda p=pipe, q=q: [q.put(x) for x in p], daemon=True).start()
        while "following" not in self.line(self.err, "recv --follow to be connected"):
            pass

    def line(self, q: queue.Queue[str], what: str) -> str:
        try:
            got = q.get(timeout=PATIENCE)
        except queue.Empty:
            raise AssertionError(f"gave up waiting for {what}") from None
        if q is self.err:
            self.errors.append(got)
        return got

    def row(self, what: str) -> dict[str, Any]:
        """The next JSON object printed."""
        return dict(json.loads(self.line(self.out, what)))

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig``; the exit status (the process is killed if it does not end)."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=PATIENCE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def stderr(self) -> str:
        while not self.err.empty():
            self.errors.append(self.err.get())
        return "".join(self.errors)


@ONE_SERVER
def test_chat_in_a_room(server: Accounts, tmp_path: Path, terminal: Terminal) -> None:
    e2ee = _accounts(server, tmp_path, "gus", "hal", "hal2")  # hal2: hal's second device
    gus, hal, room = server.jid("gus"), server.jid("hal"), server.room("den")
    created = e2ee("gus", "room-create", room, "--member", hal)
    assert created.returncode == 0, created.stderr
    terminal.start(cli_command(server, tmp_path / "gus", "chat", room), cli_env("gus-pw"))
    terminal.wait_for(f"joined {room} as {server.user('gus')}; members: {gus}, {hal}")
    terminal.wait_for(f"| room {room} | online |")
    follow = Follow(server, tmp_path, "hal", "--room", room)
    try:
        assert e2ee("hal2", "room-send", room, "hello from hal").returncode == 0
        hal_device = json.loads(e2ee("hal2", "fingerprint", "--json").stdout)["device"]
        terminal.wait_for(f"[OMEMO 2] [blind] {room} {server.user('hal')} ({hal}/{hal_device}): hello from hal")
        terminal.type("hello den")
        terminal.wait_for(f"me -> {room}: hello den")
        rows = [follow.row("the room messages") for _ in range(2)]  # hal2's, then ours
        assert (rows[-1]["from"], rows[-1]["room"], rows[-1]["body"]) == (gus, room, "hello den")
    finally:
        assert follow.stop() == 0
    terminal.terminate()  # SIGTERM (a shutdown, a supervisor) leaves as /quit does
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.screen()
    assert e2ee("gus", "devices", hal).returncode == 0  # the keystore was closed


def test_chat_without_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "e2ee.client.cli", "--home", str(tmp_path), "--server", "127.0.0.1:1", "chat"],
        cwd=ROOT,
        env=cli_env("x"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "e2ee: chat needs a terminal; in a script use 'e2ee send JID -' and 'e2ee recv --follow'"
    ]


def test_send_reads_standard_input_and_recv_follows_until_a_signal(server: Accounts, tmp_path: Path) -> None:
    e2ee = _accounts(server, tmp_path, "eve", "fay")
    ann, ben = server.jid("eve"), server.jid("fay")

    def send_stdin(data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            cli_command(server, tmp_path / "eve", "send", ben, "-"),
            cwd=ROOT,
            env=cli_env("eve-pw"),
            input=data,
            capture_output=True,
            timeout=60,
        )

    for sig in (signal.SIGTERM, signal.SIGINT):
        follow = Follow(server, tmp_path, "fay")
        try:
            body = f"disk full on host-1 ({sig.name})\nsecond line"
            sent = send_stdin(body.encode() + b"\n")  # a cron job's message, ending in a line feed
            assert sent.returncode == 0, sent.stderr
            row = follow.row("the message")  # one JSON object per line, as it arrives
            assert row["from"] == ann and row["body"] == body and row["archived"] is False
        finally:
            assert follow.stop(sig) == 0
        assert "Traceback" not in follow.stderr()
    # the example of docs/cli-chat.md, as written, with `e2ee` the CLI on eve's home
    follow = Follow(server, tmp_path, "fay")
    try:
        script = f'e2ee() {{ {shlex.join(cli_command(server, tmp_path / "eve"))} "$@"; }}\n{example("send from standard input")}'
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env={**cli_env("eve-pw"), "BOB": ben},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        df = subprocess.run(["df", "-h", "/"], capture_output=True, text=True, check=True).stdout
        rows = [follow.row("the example's messages") for _ in range(2)]
        hostname = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
        # df's own output, its line breaks kept, the final line feed dropped (its figures may have moved since)
        assert rows[0]["body"].split("\n")[0] == df.split("\n")[0] and not rows[0]["body"].endswith("\n")
        assert rows[0]["body"].count("\n") == df.count("\n") - 1 and rows[0]["body"].endswith(" /")
        assert rows[1]["body"] == f"backup of {hostname} failed"
        assert json.loads(ran.stdout.splitlines()[-1])["to"] == ben  # --json: one object
    finally:
        assert follow.stop() == 0
    # an empty message or one that is not UTF-8 is refused before connecting
    for bad, why in ((b"\n", "empty"), (b"\xff\xfe", "not UTF-8")):
        proc = send_stdin(bad)
        assert proc.returncode == 2 and why in proc.stderr.decode() and b"connecting" not in proc.stderr
    # and recv still works on the keystore the signals left closed
    assert e2ee("fay", "recv", "--timeout", "1").returncode == 0


def test_the_exit_statuses_are_documented_alike_in_help_and_docs() -> None:
    from e2ee.client.cli import EXIT_STATUS

    shown = subprocess.run(
        [sys.executable, "-m", "e2ee.client.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and EXIT_STATUS in shown.stdout
    doc = (ROOT / "docs" / "cli-chat.md").read_text()
    table = [line for line in doc.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert [line[2] for line in table] == ["0", "1", "2"]
    for code, words in (("0", "long-running command"), ("1", "not sent"), ("2", "usage error")):
        assert words in next(x for x in EXIT_STATUS.splitlines() if x.strip().startswith(code))
        assert words in next(x for x in table if x[2] == code)
