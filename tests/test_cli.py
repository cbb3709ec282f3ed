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

ROOT = Path(__file__).resolve().parent.parent
JID = "alice@example.org"
PW = "cli test passphrase"


def e2ee(home: Path, *args: str, passphrase: str = PW, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "E2EE_PASSPHRASE": passphrase, "E2EE_KDF": "floor", "E2EE_XMPP_PASSWORD": "xmpp-pw", **env}
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "--home", str(home), *args],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=60,
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
    from keystore import Keystore

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
