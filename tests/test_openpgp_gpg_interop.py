"""Must-show 1: messages we produce decrypt and verify with the plain ``gpg`` command line, and
messages made with ``gpg`` as XEP-0373 describes decrypt with us.

The other side is :class:`~tests.openpgp_support.PlainGpg`: ``gpg`` in its own home, run as a
command, with a key it generated itself (user id ``xmpp:JID``), published as XEP-0373 says (binary
transferable key, base64, in ``<pubkey><data/>``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from e2ee.openpgp.xml import PUBLIC_KEYS_NODE, build_metadata, parse_signcrypt
from e2ee.results import Decrypted
from e2ee.trust import TrustLevel

from .openpgp_support import OxNet, PlainGpg, openpgp_element, signcrypt_xml

BOB = "bob@example.net"


@pytest.fixture
def net() -> Iterator[OxNet]:
    n = OxNet()
    yield n
    n.close()


@pytest.fixture
def bob(tmp_path: Path, net: OxNet) -> Iterator[tuple[PlainGpg, str]]:
    """bob: a plain-gpg user whose key sits on the PEP stand-in as XEP-0373 says."""
    g = PlainGpg(tmp_path / "bob-gpg")
    fpr = g.generate(f"xmpp:{BOB}")
    net.latest[(BOB, f"{PUBLIC_KEYS_NODE}:{fpr}")] = g.pubkey_item(fpr)
    net.latest[(BOB, PUBLIC_KEYS_NODE)] = build_metadata({fpr: None})
    yield g, fpr
    g.close()


def _status(proc_stderr: bytes) -> list[list[str]]:
    return [line.split()[1:] for line in proc_stderr.decode().splitlines() if line.startswith("[GNUPG:] ")]


def test_our_message_decrypts_and_verifies_with_gpg(net: OxNet, bob: tuple[PlainGpg, str]) -> None:
    gpg, bob_fpr = bob
    alice = net.ox_device("alice@example.org", "alice")
    net.ox_prepare(alice, [BOB])
    assert [k.trust for k in alice.openpgp.keys(BOB)] == [TrustLevel.BLIND]
    sent = alice.encrypt([BOB], "Hello Bob, from our engine")
    (r,) = sent.recipients
    assert r.route.value == "openpgp" and r.openpgp is not None
    assert set(r.fingerprints) == {bob_fpr, alice.openpgp.fingerprint}

    gpg.import_key(
        base64.b64decode(net.latest[(alice.jid, f"{PUBLIC_KEYS_NODE}:{alice.openpgp.fingerprint}")][0].text or "")
    )
    proc = gpg.decrypt(base64.b64decode(r.openpgp.text or ""))
    assert proc.returncode == 0, proc.stderr
    status = _status(proc.stderr)
    keywords = [s[0] for s in status]
    assert "DECRYPTION_OKAY" in keywords and "GOODMDC" in keywords
    assert [s[0] for s in status if s[0] in ("GOODSIG", "BADSIG", "ERRSIG")] == ["GOODSIG"]
    validsig = next(s for s in status if s[0] == "VALIDSIG")
    assert validsig[10] == alice.openpgp.fingerprint  # primary key of the signer
    content = parse_signcrypt(proc.stdout)
    assert content.to == (BOB,) and content.body == "Hello Bob, from our engine"
    assert abs((content.time - datetime.now(UTC)).total_seconds()) < 3600
    assert proc.stdout.startswith(b"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='bob@example.net'/><time stamp=")
    assert b"<rpad>" in proc.stdout and b"<payload><body xmlns='jabber:client'>Hello Bob" in proc.stdout


def test_gpg_made_message_decrypts_with_us(net: OxNet, bob: tuple[PlainGpg, str]) -> None:
    gpg, bob_fpr = bob
    alice = net.ox_device("alice@example.org", "alice")
    alice_key = base64.b64decode(
        net.latest[(alice.jid, f"{PUBLIC_KEYS_NODE}:{alice.openpgp.fingerprint}")][0].text or ""
    )
    gpg.import_key(alice_key)
    stamp = net.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = signcrypt_xml([alice.jid], stamp, "Hi Alice, from the gpg command line", rpad="f0rm1l4n4-mT8y33j!Y")
    message = gpg.encrypt(xml, [alice.openpgp.fingerprint or "", bob_fpr], signers=[bob_fpr])
    net.run(alice, alice.openpgp.prepare([BOB]))  # the sender's keys, as a client fetches them first
    got = alice.openpgp.decrypt(openpgp_element(message), BOB, to=alice.jid, timestamp=net.clock())
    assert isinstance(got, Decrypted)
    assert got.body == "Hi Alice, from the gpg command line"
    assert got.jid == BOB and got.namespace == "urn:xmpp:openpgp:0" and got.identity_key == bytes.fromhex(bob_fpr)
    assert got.trust is TrustLevel.BLIND and got.timestamp == net.clock()
    # gpg's default compression (zlib) is read as well; our own messages are uncompressed
    zipped = gpg.encrypt(
        signcrypt_xml([alice.jid], stamp, "compressed"),
        [alice.openpgp.fingerprint or ""],
        signers=[bob_fpr],
        extra=("--compress-algo", "zlib"),
    )
    assert alice.openpgp.decrypt(openpgp_element(zipped), BOB, to=alice.jid).body == "compressed"
