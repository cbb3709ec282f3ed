"""Must-show 6: no unprotected secret key material on disk.  After key generation, the import of
a contact's key, a send, a receive and a backup restore, every file under the keystore's
directory and under the temporary GnuPG homes is scanned for the secret key values (raw and as
hex), the passphrase that protects them and the message text.  Closing a runner stops its agent
and removes its home."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

from e2ee.client.gpg import GnuPG
from e2ee.engine import Engine
from e2ee.errors import CorruptState
from e2ee.keystore import KdfParams, Keystore
from e2ee.openpgp.packets import parse_key_block
from e2ee.openpgp.secretkey import is_protected, secret_values, unprotect
from e2ee.openpgp.xml import SECRET_KEY_NODE

from .openpgp_support import OxNet
from .support import seeded_rng
from .xmpp_server import process_running


def _secrets(ks: Keystore) -> tuple[list[bytes], str]:
    raw = ks.get("own", "openpgp")
    assert raw is not None
    rec = json.loads(raw[1:])
    block = parse_key_block(bytes.fromhex(rec["secret"]), CorruptState, secret=True)
    assert is_protected(block, CorruptState)  # even inside the encrypted keystore
    values = secret_values(block, rec["passphrase"], CorruptState)
    assert len(values) == 2 and all(len(v) >= 30 for v in values)  # the EdDSA and the ECDH secret
    return values, rec["passphrase"]


def _needles(values: Iterable[bytes], texts: Iterable[str]) -> list[bytes]:
    out: list[bytes] = []
    for v in values:
        out += [v, v.hex().encode(), v.hex().upper().encode()]
    out += [t.encode() for t in texts]
    return out


def _files(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not stat.S_ISSOCK(path.stat().st_mode):
                found.append(path)
    return found


def _scan(roots: list[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for path in _files(*roots):
        data = path.read_bytes()
        hits += [f"{path}: {n[:12]!r}" for n in needles if n in data]
    return hits


def _agent_pid(home: Path) -> int:
    out = subprocess.run(
        ["gpg-connect-agent", "--homedir", str(home), "getinfo pid", "/bye"], capture_output=True, text=True, timeout=15
    ).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("D ")))


def test_no_unprotected_secret_key_on_disk(tmp_path: Path) -> None:
    net = OxNet()
    stores = [tmp_path / "alice", tmp_path / "phone"]
    for d in stores:
        d.mkdir()
    alice_gpg, phone_gpg = GnuPG(), GnuPG()
    try:
        with (
            Keystore.create(stores[0] / "keystore.db", "pw", kdf=KdfParams.floor()) as ks,
            Keystore.create(stores[1] / "keystore.db", "pw", kdf=KdfParams.floor()) as ks2,
        ):
            alice = net.ox_device("alice@example.org", "alice", storage=ks, gpg=alice_gpg)  # generation
            bob = net.ox_device("bob@example.net", "bob", omemo=False)
            values, passphrase = _secrets(ks)
            bob_values = secret_values(
                parse_key_block(
                    bytes.fromhex(json.loads((bob.storage.get("own", "openpgp") or b" ")[1:])["secret"]),
                    CorruptState,
                    secret=True,
                ),
                json.loads((bob.storage.get("own", "openpgp") or b" ")[1:])["passphrase"],
                CorruptState,
            )
            net.ox_prepare(alice, [bob.jid])  # import of a contact's key
            net.run(bob, bob.openpgp.prepare([alice.jid]))  # its keys, to check signatures
            sent = alice.encrypt([bob.jid], "SEND-BODY-1234").recipients[0]  # send
            assert sent.openpgp is not None and bob.openpgp.decrypt(sent.openpgp, alice.jid).body == "SEND-BODY-1234"
            reply = bob.openpgp.encrypt([alice.jid], "RECEIVE-BODY-5678")
            assert alice.openpgp.decrypt(reply.element, bob.jid).body == "RECEIVE-BODY-5678"  # receive
            backup = alice.openpgp.backup()
            net.run(alice, list(backup.effects))
            phone = Engine.create(ks2, alice.jid, rng=seeded_rng("phone"), clock=net.clock, openpgp=phone_gpg)
            phone.openpgp.restore(net.latest[(alice.jid, SECRET_KEY_NODE)], backup.code)  # restore
            net.ox_prepare(phone, [bob.jid])
            assert (
                phone.openpgp.decrypt(bob.openpgp.encrypt([alice.jid], "TO-PHONE-9").element, bob.jid).body
                == "TO-PHONE-9"
            )
            _phone_values, phone_passphrase = _secrets(ks2)

            homes = [g.home for g in (alice_gpg, phone_gpg, *net.runners) if g.home is not None]
            assert len(homes) == 3
            for home in homes:
                assert stat.S_IMODE(home.stat().st_mode) == 0o700
                keys = list((home / "private-keys-v1.d").glob("*.key"))
                assert keys and all(b"(protected " in k.read_bytes() for k in keys)
            needles = _needles(
                [*values, *bob_values],
                [passphrase, phone_passphrase, backup.code, "SEND-BODY-1234", "RECEIVE-BODY-5678", "TO-PHONE-9"],
            )
            roots = [*stores, *homes]
            assert _files(*roots)  # the scan looks at something
            assert _scan(roots, needles) == []
            # the scan is not blind: an unprotected export (what GnuPG would have stored for an
            # unprotected import) is found, in binary and in the agent's hex form
            rec = json.loads((ks.get("own", "openpgp") or b" ")[1:])
            clear = unprotect(
                parse_key_block(bytes.fromhex(rec["secret"]), CorruptState, secret=True),
                rec["passphrase"],
                CorruptState,
            )
            probe = homes[0] / "probe"
            for form in (clear, clear.hex().upper().encode()):
                probe.write_bytes(form)
                assert _scan([homes[0]], needles), "the scan misses an unprotected key"
            probe.unlink()

            pid = _agent_pid(alice_gpg.home)  # type: ignore[arg-type]
            assert process_running(pid)
        home = alice_gpg.home
        alice_gpg.close()
        assert home is not None and not home.exists() and not process_running(pid)
        assert _scan(stores, needles) == []  # the closed keystores too
    finally:
        for g in (alice_gpg, phone_gpg):
            g.close()
        net.close()
    assert all(not h.exists() for h in homes)
