"""Must-show 4: the XEP-0373 §5 secret-key backup and its restore between two encrypted
keystores (two devices of one account), with interop checks against the plain ``gpg`` command
line: our backup is a passphrase-encrypted OpenPGP message holding the *unprotected* secret key,
and a backup made with ``gpg`` alone restores with us."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2ee.engine import Engine
from e2ee.errors import DecryptionFailed, InvalidPassphrase, MalformedMessage, ReplayedMessage, UsageError
from e2ee.keystore import KdfParams, Keystore
from e2ee.openpgp.backend import BACKUP_ALPHABET, make_backup_code, parse_backup_code
from e2ee.openpgp.xml import PUBLIC_KEYS_NODE, SECRET_KEY_NODE, build_secretkey
from e2ee.results import Publish
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from .engine_support import snapshot
from .openpgp_support import OxNet, PlainGpg, openpgp_element, signcrypt_xml
from .support import seeded_rng

ALICE = "alice@example.org"


@pytest.fixture
def net() -> Iterator[OxNet]:
    n = OxNet()
    yield n
    n.close()


def keystore(path: Path) -> Keystore:
    return Keystore.create(path, "pw", kdf=KdfParams.floor())


def test_backup_code_format_and_parsing() -> None:
    code = make_backup_code(seeded_rng("code"))
    assert len(code) == 29 and code.count("-") == 5
    assert all(c in BACKUP_ALPHABET for c in code.replace("-", ""))
    assert "0" not in BACKUP_ALPHABET and "O" not in BACKUP_ALPHABET and len(BACKUP_ALPHABET) == 34
    assert parse_backup_code(code.lower().replace("-", " ")) == code
    assert parse_backup_code(code.replace("-", "")) == code
    codes = {make_backup_code(seeded_rng(f"c{i}")) for i in range(50)}
    assert len(codes) == 50
    for bad in ("", code[:-1], code + "A", code.replace(code[0], "0"), code + "\n", "\x00" + code[1:]):
        with pytest.raises(InvalidPassphrase):
            parse_backup_code(bad)


def test_backup_and_restore_between_two_keystores(net: OxNet, tmp_path: Path) -> None:
    with keystore(tmp_path / "laptop.db") as ks1, keystore(tmp_path / "phone.db") as ks2:
        laptop = net.ox_device(ALICE, "laptop", storage=ks1)
        bob = net.ox_device("bob@example.net", "bob", omemo=False)
        fpr = laptop.openpgp.fingerprint
        backup = laptop.openpgp.backup()
        net.run(laptop, list(backup.effects))
        element = net.latest[(ALICE, SECRET_KEY_NODE)]

        # the second device: a keystore of its own, no key yet
        phone_gpg = net.runner()
        phone = Engine.create(ks2, ALICE, rng=seeded_rng("phone"), clock=net.clock, openpgp=phone_gpg)
        assert phone.openpgp.fingerprint is None
        with pytest.raises(DecryptionFailed):  # a wrong (well-formed) code
            phone.openpgp.restore(element, make_backup_code(seeded_rng("wrong")))
        assert phone.openpgp.fingerprint is None
        assert phone.openpgp.restore(element, backup.code.lower()) == fpr
        assert phone.openpgp.fingerprint == fpr
        # the restored key was re-protected with a passphrase of the phone's own
        laptop_rec = json.loads((ks1.get("own", "openpgp") or b" ")[1:])
        phone_rec = json.loads((ks2.get("own", "openpgp") or b" ")[1:])
        assert laptop_rec["passphrase"] != phone_rec["passphrase"] and laptop_rec["secret"] != phone_rec["secret"]

        # bob writes to alice; both devices read it
        net.run(bob, bob.openpgp.prepare([ALICE]))
        msg = bob.openpgp.encrypt([ALICE], "to both of alice's devices")
        for device in (laptop, phone):
            net.run(device, device.openpgp.prepare(["bob@example.net"]))
            assert device.openpgp.decrypt(msg.element, "bob@example.net", to=ALICE).body == "to both of alice's devices"
        # the phone sends; bob checks the signature against the one announced key
        net.run(phone, [*phone.openpgp.on_public_keys(ALICE, net.latest[(ALICE, PUBLIC_KEYS_NODE)])])
        net.ox_prepare(phone, ["bob@example.net"])
        reply = phone.encrypt(["bob@example.net"], "from the phone").recipients[0]
        assert reply.openpgp is not None
        assert bob.openpgp.decrypt(reply.openpgp, ALICE, to="bob@example.net").body == "from the phone"
        # the copy the server keeps (archive, carbon): the laptop reads it, the phone knows it sent it
        own_copy = laptop.openpgp.decrypt(reply.openpgp, ALICE, to="bob@example.net", timestamp=None)
        assert own_copy.body == "from the phone" and own_copy.trust is TrustLevel.VERIFIED
        with pytest.raises(ReplayedMessage):
            phone.openpgp.decrypt(reply.openpgp, ALICE, to="bob@example.net", timestamp=None)
        # a device that has a key of its own keeps it unless told to replace it
        other = net.ox_device("alice@example.org", "tablet")
        before = snapshot(other)
        with pytest.raises(UsageError):
            other.openpgp.restore(element, backup.code)
        assert snapshot(other) == before
        assert other.openpgp.restore(element, backup.code, replace=True) == fpr


def test_backup_is_an_unprotected_key_under_the_code_readable_by_gpg(net: OxNet, tmp_path: Path) -> None:
    alice = net.ox_device(ALICE, "alice")
    backup = alice.openpgp.backup()
    (publish,) = backup.effects
    assert isinstance(publish, Publish)
    encrypted = base64.b64decode(publish.payload.text or "")
    gpg = PlainGpg(tmp_path / "gpg")
    try:
        packets = gpg.packets(encrypted, passphrase=backup.code)
        assert ":symkey enc packet:" in packets and ":pubkey enc packet:" not in packets
        assert "cipher 7" in packets  # AES-128
        clear = gpg.decrypt(encrypted, passphrase=backup.code)
        assert clear.returncode == 0 and b"DECRYPTION_OKAY" in clear.stderr and b"GOODMDC" in clear.stderr
        inner = gpg.packets(clear.stdout)
        assert ":secret key packet:" in inner and ":secret sub key packet:" in inner
        assert "protected" not in inner  # S2K usage 0 (XEP-0373 §5.3)
        assert "xmpp:alice@example.org" in inner
        gpg.import_key(clear.stdout)  # gpg takes it as it is
    finally:
        gpg.close()


def test_restore_of_a_backup_made_with_gpg_alone(net: OxNet, tmp_path: Path) -> None:
    gpg = PlainGpg(tmp_path / "gpg")
    try:
        fpr = gpg.generate(f"xmpp:{ALICE}")
        secret = gpg.run("--passphrase", "", "--pinentry-mode", "loopback", "--export-secret-keys", fpr).stdout
        code = make_backup_code(seeded_rng("gpg-code"))
        encrypted = gpg.run("--symmetric", "--cipher-algo", "AES128", passphrase=code, data=secret).stdout
        device = net.ox_device("carol@example.org", "carol")  # a stranger's backup is refused
        with pytest.raises(MalformedMessage):
            device.openpgp.restore(build_secretkey(encrypted), code, replace=True)
        alice = Engine.create(MemoryStorage(), ALICE, rng=seeded_rng("a"), clock=net.clock, openpgp=net.runner())
        assert alice.openpgp.restore(build_secretkey(encrypted), code) == fpr
        stamp = net.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        msg = gpg.encrypt(signcrypt_xml([ALICE], stamp, "note to self"), [fpr], signers=[fpr])
        assert alice.openpgp.decrypt(openpgp_element(msg), ALICE, to=ALICE).body == "note to self"
        other = Engine.create(MemoryStorage(), ALICE, rng=seeded_rng("b"), clock=net.clock, openpgp=net.runner())
        # a backup whose inner key is still passphrase-protected is not XEP-0373 §5: refused
        gpg.run(
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "inner",
            "--yes",
            "--quick-gen-key",
            f"xmpp:{ALICE}",
            "ed25519",
            "sign",
            "0",
        )
        newest = gpg.run("--with-colons", "--list-secret-keys").stdout.decode().split("fpr:::::::::")[-1].split(":")[0]
        inner = gpg.run("--pinentry-mode", "loopback", "--passphrase", "inner", "--export-secret-keys", newest).stdout
        assert "protected" in gpg.packets(inner)
        wrapped = gpg.run("--symmetric", passphrase=code, data=inner).stdout
        with pytest.raises(MalformedMessage):
            other.openpgp.restore(build_secretkey(wrapped), code)
        # a <secretkey/> encrypted to a public key instead of the code
        wrong = gpg.encrypt(secret, [fpr])
        with pytest.raises(DecryptionFailed):
            other.openpgp.restore(build_secretkey(wrong), code)
        assert other.openpgp.fingerprint is None
    finally:
        gpg.close()
