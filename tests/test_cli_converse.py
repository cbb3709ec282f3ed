"""The ``e2ee`` command line for people comparing with Converse.js and other OMEMO 2 clients
(issue 20): the sign-bit warning, both fingerprint forms, URIs with either form."""

from __future__ import annotations

import json
from pathlib import Path

from e2ee import jsonrec
from e2ee.engine import Engine
from e2ee.identity import IdentityKeyPair
from e2ee.results import Publish
from e2ee.storage import MemoryStorage

from .test_cli import JID, PW, e2ee

BOB = "bob@example.net"
O2 = "urn:xmpp:omemo:2"


def _fresh(tmp_path: Path, name: str = "h") -> Path:
    h = tmp_path / name
    proc = e2ee(h, "init", "--jid", JID)
    assert proc.returncode == 0, proc.stderr
    return h


def _set_seed(home: Path, seed: bytes) -> None:
    """Give the stored identity another seed, as an identity made before the fix may have."""
    from e2ee.keystore import Keystore

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


def _learn_contact(home: Path, contact: Engine) -> None:
    """Put ``contact``'s device list and OMEMO 2 bundle into the keystore of ``home``, as a fetch
    over a server would."""
    from e2ee.keystore import Keystore

    with Keystore.open(home / "keystore.db", PW) as ks:
        engine = Engine(ks)
        for e in contact.publish():
            if isinstance(e, Publish) and e.node == "urn:xmpp:omemo:2:devices":
                engine.on_device_list(contact.jid, O2, e.payload)
            elif isinstance(e, Publish) and e.node == "urn:xmpp:omemo:2:bundles":
                engine.on_bundle(contact.jid, contact.device_id, O2, e.payload)


def _grouped(key: bytes) -> str:
    return " ".join(key.hex()[i : i + 8] for i in range(0, 64, 8))


def test_fingerprint_shows_both_forms_labelled(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    data = json.loads(e2ee(h, "fingerprint", "--json").stdout)
    x, ed = bytes.fromhex(data["fingerprint"]), bytes.fromhex(data["fingerprint_ed25519"])
    assert ed[31] & 0x80 == 0
    text = e2ee(h, "fingerprint").stdout.splitlines()
    assert text[1] == f"fingerprint {_grouped(x)}  (Curve25519: Conversations, Dino, Gajim, Monal)"
    assert text[2] == f"ed25519     {_grouped(ed)}  (OMEMO 2: Converse.js, Kaidan)"
    assert text[-1] == data["uri"] and data["uri"].endswith(f"={x.hex()}")  # the URI keeps the Curve25519 form


def test_verify_and_trust_take_either_form_and_never_say_verified_for_an_unknown_key(tmp_path: Path) -> None:
    h = _fresh(tmp_path)
    bob = Engine.create(MemoryStorage(), BOB)
    _learn_contact(h, bob)
    rows = json.loads(e2ee(h, "devices", BOB, "--json").stdout)
    assert [(r["device"], r["trust"], r["fingerprint"], r["fingerprint_ed25519"]) for r in rows] == [
        (bob.device_id, "blind", bob.identity_key.hex(), bob.identity_key_ed25519.hex())
    ]
    listing = e2ee(h, "devices", BOB).stdout
    assert _grouped(bob.identity_key) in listing and _grouped(bob.identity_key_ed25519) in listing

    # the OMEMO 2 form, as Converse.js and Kaidan show it: that device is verified
    out = e2ee(h, "verify", f"xmpp:{BOB}?omemo-sid-{bob.device_id}={bob.identity_key_ed25519.hex()}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"{BOB}: device {bob.device_id} {_grouped(bob.identity_key)} (given in its Ed25519 form) is now verified"
    )
    assert json.loads(e2ee(h, "devices", BOB, "--json").stdout)[0]["trust"] == "verified"

    # `trust`/`distrust` with the Ed25519 form, spaced as Converse shows it
    out = e2ee(h, "distrust", BOB, _grouped(bob.identity_key_ed25519))
    assert out.returncode == 0 and out.stdout.strip().endswith("is now distrusted"), out
    assert json.loads(e2ee(h, "devices", BOB, "--json").stdout)[0]["trust"] == "distrusted"
    out = e2ee(h, "trust", BOB, bob.identity_key.hex())
    assert out.returncode == 0 and out.stdout.strip().endswith("is now verified"), out

    # a key nobody has shown yet: said plainly, not "verified"
    other = IdentityKeyPair.generate()
    out = e2ee(h, "verify", f"xmpp:{BOB}?omemo-sid-77={other.ed25519_public.hex()}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"{BOB}: device 77 {_grouped(other.ed25519_public)} matches no key of {BOB} seen so far; remembered,"
        " applies when that key appears"
    )
    out = e2ee(h, "trust", BOB, other.x25519_public.hex())
    assert "remembered" in out.stdout and "verified" not in out.stdout
