"""The ``e2ee`` command line for people comparing with Converse.js and other OMEMO 2 clients
(issue 20): the sign-bit warning, both fingerprint forms, URIs with either form."""

from __future__ import annotations

import json
from pathlib import Path

from e2ee import jsonrec
from e2ee.identity import IdentityKeyPair

from .test_cli import JID, PW, e2ee


def _fresh(tmp_path: Path, name: str = "h") -> Path:
    h = tmp_path / name
    proc = e2ee(h, "init", "--jid", JID)
    assert proc.returncode == 0, proc.stderr
    return h


def _set_seed(home: Path, seed: bytes) -> None:
    """Give the stored identity another seed, as an identity made before the fix may have."""
    from keystore import Keystore

    with Keystore.open(home / "keystore.db", PW) as ks, ks.transaction():
        rec = jsonrec.load(ks.get("own", "identity") or b"", 1, "identity")
        rec["seed"] = seed.hex()
        ks.put("own", "identity", jsonrec.dump(1, rec))


def test_fingerprint_and_devices_warn_about_an_identity_with_the_sign_bit_set(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    for cmd in (("fingerprint",), ("devices", JID)):
        proc = e2ee(h, *cmd)
        assert proc.returncode == 0 and "sign bit" not in proc.stderr, proc.stderr  # new: bit clear
    assert json.loads(e2ee(h, "fingerprint", "--json").stdout)["sign_bit_set"] is False
    seed = next(bytes([i]) * 32 for i in range(256) if IdentityKeyPair.from_seed(bytes([i]) * 32).sign_bit_set)
    _set_seed(h, seed)
    for cmd in (("fingerprint",), ("devices", JID), ("fingerprint", "--json")):
        proc = e2ee(h, *cmd)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "sign bit set" in lines[0] and "Converse.js" in lines[0], proc.stderr
        assert f"init --jid {JID}" in lines[0] and "replace the device" in lines[0]
    assert json.loads(e2ee(h, "fingerprint", "--json").stdout)["sign_bit_set"] is True
