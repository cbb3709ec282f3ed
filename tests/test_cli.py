"""The ``e2ee`` command line without a server: init, fingerprint (text, JSON, QR), devices,
trust/distrust/verify, passphrase change, and one clear line with exit status 1 for every kind
of keystore damage (never a traceback)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .xmpp_server import Accounts

#: the server-backed test here registers its own account (the ``server`` fixture, tests/conftest.py)
SERVER_USERS: tuple[str, ...] = ()

ROOT = Path(__file__).resolve().parent.parent
JID = "alice@example.org"
PW = "cli test passphrase"


def e2ee(home: Path, *args: str, passphrase: str = PW, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "E2EE_PASSPHRASE": passphrase, "E2EE_KDF": "floor", "E2EE_XMPP_PASSWORD": "xmpp-pw", **env}
    return subprocess.run(
        [sys.executable, "-m", "e2ee.client.cli", "--home", str(home), *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("cli") / "home"
    proc = e2ee(h, "init", "--jid", JID, "--device-label", "laptop")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{JID}: device ")
    return h


def test_fingerprint_text_json_and_qr(home: Path) -> None:
    text = e2ee(home, "fingerprint")
    assert text.returncode == 0, text.stderr
    data = json.loads(e2ee(home, "fingerprint", "--json").stdout)
    assert data["jid"] == JID and len(data["fingerprint"]) == 64
    assert data["uri"] == f"xmpp:{JID}?omemo-sid-{data['device']}={data['fingerprint']}"
    grouped = " ".join(data["fingerprint"][i : i + 8] for i in range(0, 64, 8))
    assert grouped in text.stdout
    qr = e2ee(home, "fingerprint", "--qr")
    assert qr.returncode == 0 and ("▀" in qr.stdout or "█" in qr.stdout or "▄" in qr.stdout)


def test_trust_distrust_verify_and_devices(home: Path) -> None:
    assert e2ee(home, "trust", "bob@example.net", "AB" * 32).returncode == 0
    assert e2ee(home, "distrust", "bob@example.net", " ".join(["abababab"] * 8)).returncode == 0
    uri = f"xmpp:carol@example.com?omemo-sid-1234={'cd' * 32};omemo-sid-99={'ef' * 32}"
    out = e2ee(home, "verify", uri)
    # keys never seen: remembered, not "verified" (issue 20)
    assert out.returncode == 0 and out.stdout.count("remembered") == 2 and "verified" not in out.stdout
    assert e2ee(home, "devices", "bob@example.net", "--json").stdout.strip() == "[]"
    bad = e2ee(home, "trust", "bob@example.net", "not hex")
    assert one_error_line(bad, 2).startswith("e2ee: ")
    bad = e2ee(home, "verify", "xmpp:carol@example.com?omemo-sid-1=zz")
    assert "not a verification URI" in one_error_line(bad, 2)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = e2ee(tmp_path / "nothing", "fingerprint")
    assert "run 'e2ee init" in one_error_line(proc, 2)
    proc = e2ee(tmp_path, "frobnicate")
    assert proc.returncode == 2


def _fresh(tmp_path: Path) -> Path:
    h = tmp_path / "h"
    assert e2ee(h, "init", "--jid", JID).returncode == 0
    return h


def test_wrong_passphrase_is_one_line(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    assert one_error_line(e2ee(h, "fingerprint", passphrase="nope")) == "e2ee: error: wrong passphrase"


def test_flipped_byte_in_a_record_is_one_line(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    db = h / "keystore.db"
    con = sqlite3.connect(db)
    for k, v in con.execute("SELECT k, v FROM records").fetchall():
        flipped = bytearray(v)
        flipped[len(flipped) // 2] ^= 0x40
        con.execute("UPDATE records SET v=? WHERE k=?", (bytes(flipped), k))
    con.commit()
    con.close()
    assert "keystore is damaged" in one_error_line(e2ee(h, "fingerprint"))


def test_record_copied_into_another_row_is_one_line(tmp_path: Path) -> None:
    from e2ee.keystore import Keystore

    h = _fresh(tmp_path)
    with Keystore.open(h / "keystore.db", PW) as ks:  # which row holds the identity (the file does not say)
        identity = ks._k().blind_key("own", "identity")
    con = sqlite3.connect(h / "keystore.db")
    other = con.execute("SELECT v FROM records WHERE k != ? LIMIT 1", (identity,)).fetchone()[0]
    con.execute("UPDATE records SET v=? WHERE k=?", (other, identity))
    con.commit()
    con.close()
    assert "keystore is damaged" in one_error_line(e2ee(h, "fingerprint"))


def test_truncated_file_is_one_line(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    db = h / "keystore.db"
    db.write_bytes(db.read_bytes()[:2048])
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert "keystore is damaged" in one_error_line(e2ee(h, "fingerprint"))


def test_restored_older_copy_is_one_line(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    db = h / "keystore.db"
    shutil.copy(db, tmp_path / "old.db")
    assert e2ee(h, "trust", "bob@example.net", "ab" * 32).returncode == 0  # a later commit
    shutil.copy(tmp_path / "old.db", db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    line = one_error_line(e2ee(h, "fingerprint"))
    assert "old copy was restored" in line


def test_passphrase_change(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    assert e2ee(h, "passphrase", E2EE_NEW_PASSPHRASE="second passphrase").returncode == 0
    assert one_error_line(e2ee(h, "fingerprint")) == "e2ee: error: wrong passphrase"
    assert e2ee(h, "fingerprint", passphrase="second passphrase").returncode == 0


def test_no_terminal_to_ask_for_a_secret_is_a_usage_error(tmp_path: Path) -> None:
    """With standard input closed and no variable set, ``init`` cannot ask for the XMPP password
    (or the passphrase): it ends with a line naming the variable to set, not an EOFError."""
    for unset, wanted in (("E2EE_XMPP_PASSWORD", "set E2EE_XMPP_PASSWORD"), ("E2EE_PASSPHRASE", "set E2EE_PASSPHRASE")):
        env = {**os.environ, "E2EE_PASSPHRASE": PW, "E2EE_KDF": "floor", "E2EE_XMPP_PASSWORD": "x"}
        del env[unset]
        proc = subprocess.run(
            [sys.executable, "-m", "e2ee.client.cli", "--home", str(tmp_path / unset), "init", "--jid", JID],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].endswith(wanted), proc.stderr


def test_damaged_schema_is_one_line(tmp_path: Path) -> None:
    """Issue 14.6: a schema name that is not UTF-8 (sqlite3 raises UnicodeDecodeError)."""
    h = _fresh(tmp_path)
    con = sqlite3.connect(h / "keystore.db")
    con.execute("PRAGMA writable_schema=ON")
    con.execute("UPDATE sqlite_master SET name = CAST(X'ff41' AS TEXT) WHERE name = 'meta'")
    con.commit()
    con.close()
    assert "keystore is damaged" in one_error_line(e2ee(h, "fingerprint"))


def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14.6: whatever a command raises, ``main`` prints one line and exits 1; ``--debug``
    or ``E2EE_DEBUG=1`` lets the traceback through."""
    import logging

    levels = {name: logging.getLogger(name).level for name in ("asyncio", "slixmpp")}
    try:
        _unexpected_exception_checks(tmp_path, monkeypatch, capsys)
    finally:  # main() quietens these loggers: undo that for the other tests
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _unexpected_exception_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from e2ee.client import cli

    def bug(_args: object) -> int:
        raise RuntimeError("a bug with \x1b[2J in its message")

    monkeypatch.setattr(cli, "_fingerprint", bug)
    monkeypatch.delenv("E2EE_DEBUG", raising=False)
    assert cli.main(["--home", str(tmp_path), "fingerprint"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "\x1b" not in err
    assert err.startswith("e2ee: error: unexpected RuntimeError: a bug with \\x1b[2J in its message")
    with pytest.raises(RuntimeError):
        cli.main(["--home", str(tmp_path), "--debug", "fingerprint"])
    monkeypatch.setenv("E2EE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["--home", str(tmp_path), "fingerprint"])


def test_error_lines_show_hostile_characters_escaped(tmp_path: Path) -> None:
    """Issue 14.2: an error line that quotes a path (or anything else) shows controls escaped."""
    h = tmp_path / "x\x1b]0;pwned\x07\u202e\rhome"
    line = one_error_line(e2ee(h, "fingerprint"), code=2)
    assert "\x1b" not in line and "\u202e" not in line and "\r" not in line and "\x07" not in line
    assert "x\\x1b]0;pwned\\x07\\u202e\\rhome" in line


# ---- global options where people type them; server errors in one line (issue 13 part 4) ----


def e2ee_raw(*args: str, passphrase: str = PW, **env: str) -> subprocess.CompletedProcess[str]:
    """The command line exactly as typed (no ``--home`` put first)."""
    full = {**os.environ, "E2EE_PASSPHRASE": passphrase, "E2EE_KDF": "floor", "E2EE_XMPP_PASSWORD": "xmpp-pw", **env}
    return subprocess.run(
        [sys.executable, "-m", "e2ee.client.cli", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60
    )


def test_global_options_work_after_the_command(tmp_path: Path) -> None:
    h = tmp_path / "h"
    made = e2ee_raw("init", "--jid", JID, "--home", str(h))
    assert made.returncode == 0 and (h / "keystore.db").exists(), made.stderr
    before = e2ee_raw("--home", str(h), "fingerprint", "--json")
    after = e2ee_raw("fingerprint", "--json", "--home", str(h))
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout
    # the value after the command wins; one given only before it is kept
    both = e2ee_raw("--home", str(tmp_path / "elsewhere"), "fingerprint", "--home", str(h), "--json")
    assert both.stdout == before.stdout
    # --server and --ca-file after the command: the connection goes where they say (port 1:
    # nobody listens), not to the JID's domain
    for args in (
        ["--server", "127.0.0.1:1", "--ca-file", str(tmp_path / "ca.pem"), "send", "bob@example.net", "hi"],
        ["send", "bob@example.net", "hi", "--server", "127.0.0.1:1", "--ca-file", str(tmp_path / "ca.pem")],
        ["send", "--server", "127.0.0.1:1", "bob@example.net", "hi", "--home", str(h)],
    ):
        proc = e2ee_raw(*(["--home", str(h)] if "--home" not in args else []), *args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("e2ee: error: could not connect to 127.0.0.1:1"), (
            proc.stderr
        )
    assert e2ee_raw("send", "bob@example.net", "hi", "--server", "nonsense", "--home", str(h)).returncode == 2
    assert e2ee_raw("demo", "--server", "127.0.0.1:1").returncode == 1


def test_a_refused_server_operation_is_one_short_line(server: Accounts, tmp_path: Path) -> None:
    """Over each real server: a request the server refuses (a device-list fetch from a domain it
    cannot reach, no s2s) ends the command with one line naming the condition and the server's
    text, never the stanza."""
    server.register("carol", "carol-pw")
    h = tmp_path / "carol"
    env = {"E2EE_XMPP_PASSWORD": "carol-pw"}
    assert e2ee_raw("init", "--jid", server.jid("carol"), "--home", str(h), **env).returncode == 0
    where = ("--server", f"127.0.0.1:{server.port}", "--ca-file", str(server.cert))
    published = e2ee_raw("publish", "--home", str(h), *where, **env)
    assert published.returncode == 0, published.stderr
    proc = e2ee_raw("send", "bob@unreachable.invalid", "hi", "--home", str(h), *where, **env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("e2ee: error: the server refused: "), proc.stderr
    assert "<" not in last and len(last) < 300, last
    if server.server.kind == "prosody":
        assert last == (
            "e2ee: error: the server refused: not-allowed (cancel): Communication with remote domains is not enabled"
        ), proc.stderr


def test_a_refused_publish_is_described_without_its_stanza() -> None:
    # ejabberd 23.01's answer to an OMEMO 2 bundle publish echoes the request: 100 prekeys
    from slixmpp import ET as SET
    from slixmpp.exceptions import IqError, IqTimeout
    from slixmpp.stanza import Iq

    from e2ee.client.stanza_errors import describe

    prekeys = "".join(f"<pk id='{i}'>{'A' * 44}</pk>" for i in range(1, 101))
    reply = Iq(
        xml=SET.fromstring(
            "<iq xmlns='jabber:client' type='error' id='x1' from='carol@localhost'>"
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:omemo:2:bundles'>"
            f"<item id='7'><bundle xmlns='urn:xmpp:omemo:2'><prekeys>{prekeys}</prekeys></bundle></item></publish>"
            "</pubsub><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Unknown field 'pubsub#max_items' of type "
            "'http://jabber.org/protocol/pubsub#publish-options'&#10;\u202eevil</text></error></iq>"
        )
    )
    error = IqError(reply)
    assert len(str(error)) > 5000  # what used to reach the user
    assert describe(error) == (
        "publish urn:xmpp:omemo:2:bundles: resource-constraint (wait): Unknown field "
        "'pubsub#max_items' of type 'http://jabber.org/protocol/pubsub#publish-options' evil"
    )
    assert describe(IqTimeout(reply)) == "the server did not answer in time"
    long = Iq(
        xml=SET.fromstring(
            "<iq xmlns='jabber:client' type='error' id='x2'><error type='cancel'>"
            "<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            f"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{'x' * 5000}</text></error></iq>"
        )
    )
    assert len(describe(IqError(long))) < 240
