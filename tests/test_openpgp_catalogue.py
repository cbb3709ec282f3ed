"""Must-show 3: security catalogue P1-P5 for the OpenPGP fallback, at the engine level with a real
GnuPG.

The attackers use the plain ``gpg`` command line (:class:`~tests.openpgp_support.PlainGpg`):
bob and mallory are gpg users with keys of their own; bob is a legitimate contact (which is what
a surreptitious forwarder has to be).  Every refusal is a typed error, and the receiving engine's
stored bytes are identical before and after it; a legitimate message still decrypts afterwards.
"""

from __future__ import annotations

import base64
import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from e2ee.client.gpg import GnuPG
from e2ee.engine import Engine
from e2ee.errors import (
    AffixMismatch,
    DecryptionFailed,
    E2EEError,
    InvalidPassphrase,
    InvalidPublicKey,
    InvalidSignature,
    MalformedMessage,
    NoEligibleDevices,
    PeerError,
    ReplayedMessage,
    SenderDistrusted,
    SignatureNotFromSender,
    StaleMessage,
    UntrustedKey,
    UsageError,
)
from e2ee.limits import OPENPGP_MAX_AGE
from e2ee.openpgp.crypto import SecretKey
from e2ee.openpgp.packets import encode_packet, split_packets
from e2ee.openpgp.status import check_decryption, parse_status
from e2ee.openpgp.xml import PUBLIC_KEYS_NODE, build_metadata, build_pubkey
from e2ee.results import Decrypted, FetchPublicKeys
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from .engine_support import snapshot
from .openpgp_support import OxNet, PlainGpg, openpgp_element, signcrypt_xml

BOB = "bob@example.net"
MALLORY = "mallory@example.net"


@dataclass
class World:
    net: OxNet
    alice: Engine
    carol: Engine
    bob: PlainGpg
    bob_fpr: str
    mallory: PlainGpg
    mallory_fpr: str

    def stamp(self, delta: timedelta = timedelta(0)) -> str:
        return (self.net.clock() + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    def from_bob(
        self,
        to: list[str],
        body: str,
        *,
        delta: timedelta = timedelta(0),
        root: str = "signcrypt",
        recipients: list[str] | None = None,
        signers: list[str] | None = None,
        extra: tuple[str, ...] = (),
        gpg: PlainGpg | None = None,
    ) -> ET.Element:
        """A message crafted with gpg: ``<root>`` addressed to ``to``, encrypted to ``recipients``
        (default: alice) and signed by ``signers`` (default: bob)."""
        xml = signcrypt_xml(to, self.stamp(delta), body, root=root)
        keys = recipients if recipients is not None else [self.alice.openpgp.fingerprint or ""]
        return openpgp_element(
            (gpg or self.bob).encrypt(xml, keys, signers=[self.bob_fpr] if signers is None else signers, extra=extra)
        )


def publish_plain(net: OxNet, jid: str, gpg: PlainGpg, fpr: str, *, announce: list[str] | None = None) -> None:
    net.latest[(jid, f"{PUBLIC_KEYS_NODE}:{fpr}")] = gpg.pubkey_item(fpr)
    net.latest[(jid, PUBLIC_KEYS_NODE)] = build_metadata({f: None for f in (announce or [fpr])})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    net = OxNet()
    bob, mallory = PlainGpg(tmp_path / "bob"), PlainGpg(tmp_path / "mallory")
    try:
        bob_fpr, mallory_fpr = bob.generate(f"xmpp:{BOB}"), mallory.generate(f"xmpp:{MALLORY}")
        publish_plain(net, BOB, bob, bob_fpr)
        publish_plain(net, MALLORY, mallory, mallory_fpr)
        alice = net.ox_device("alice@example.org", "alice", omemo=False)
        carol = net.ox_device("carol@example.org", "carol", omemo=False)
        for peer in (bob, mallory):
            for engine in (alice, carol):
                peer.import_key(
                    base64.b64decode(
                        net.latest[(engine.jid, f"{PUBLIC_KEYS_NODE}:{engine.openpgp.fingerprint}")][0].text or ""
                    )
                )
        for engine in (alice, carol):
            net.run(engine, engine.openpgp.prepare([BOB, MALLORY, "alice@example.org", "carol@example.org"]))
        yield World(net, alice, carol, bob, bob_fpr, mallory, mallory_fpr)
    finally:
        net.close()
        bob.close()
        mallory.close()


def refused(engine: Engine, error: type[E2EEError], call: Callable[[], object]) -> E2EEError:
    """``call`` raises ``error`` and leaves the engine's stored bytes as they were."""
    before = snapshot(engine)
    with pytest.raises(error) as info:
        call()
    assert snapshot(engine) == before, "a refused message changed the stored state"
    return info.value


def still_works(w: World) -> None:
    got = w.alice.openpgp.decrypt(w.from_bob([w.alice.jid], "still fine"), BOB, to=w.alice.jid, timestamp=w.net.clock())
    assert isinstance(got, Decrypted) and got.body == "still fine"


# ---- P1: surreptitious forwarding and replay ------------------------------------------------


def test_P1_surreptitious_forwarding_is_refused(world: World) -> None:
    w = world
    # alice writes to bob; bob (a legitimate recipient) strips the encryption with gpg --unwrap
    # and re-encrypts alice's signed packets, untouched, to carol (gpg --no-literal)
    msg = w.alice.openpgp.encrypt([BOB], "for bob only")
    signed = w.bob.run("--unwrap", "--output", "-", data=base64.b64decode(msg.element.text or "")).stdout
    forwarded = openpgp_element(
        w.bob.run("--no-literal", "--encrypt", "--recipient", w.carol.openpgp.fingerprint or "", data=signed).stdout
    )
    # as bob's stanza: the signature is alice's, not bob's
    refused(w.carol, SignatureNotFromSender, lambda: w.carol.openpgp.decrypt(forwarded, BOB, to=w.carol.jid))
    # as a stanza claiming to come from alice: the signature verifies, but <to/> names bob
    e = refused(w.carol, AffixMismatch, lambda: w.carol.openpgp.decrypt(forwarded, w.alice.jid, to=w.carol.jid))
    assert "carol@example.org" in str(e)
    # a <to/> naming someone else, whatever the stanza's to says, is not for us either
    refused(w.carol, AffixMismatch, lambda: w.carol.openpgp.decrypt(forwarded, w.alice.jid, to=BOB))
    # carol still reads what is really addressed to her
    direct = w.alice.openpgp.encrypt([w.carol.jid], "for carol")
    assert w.carol.openpgp.decrypt(direct.element, w.alice.jid, to=w.carol.jid).body == "for carol"


# ---- deployed senders (issue 13 part 3): variants accepted or refused on purpose -------------


def deployed(w: World, to: str, stamp: str, rpad: str | None, body: str) -> ET.Element:
    """A message as a deployed client writes it (crafted with plain gpg)."""
    pad = "" if rpad is None else f"<rpad>{rpad}</rpad>"
    xml = (
        f"<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='{to}'/><time stamp='{stamp}'/>{pad}"
        f"<payload><body xmlns='jabber:client'>{body}</body></payload></signcrypt>"
    ).encode()
    return openpgp_element(w.bob.encrypt(xml, [w.alice.openpgp.fingerprint or ""], signers=[w.bob_fpr]))


@pytest.mark.parametrize(
    ("to", "stamp_format", "rpad"),
    [
        # libstrophe/gpgme-based clients: offset without a colon
        ("alice@example.org", "%Y-%m-%dT%H:%M:%S+0000", "abc"),
        ("alice@example.org", "%Y-%m-%dt%H:%M:%S.123456789z", "abc"),
        # <rpad/> is a SHOULD: absent or empty is accepted
        ("alice@example.org", "%Y-%m-%dT%H:%M:%SZ", None),
        ("alice@example.org", "%Y-%m-%dT%H:%M:%SZ", ""),
        # <to/> naming our full JID: the same account, compared bare
        ("alice@example.org/phone", "%Y-%m-%dT%H:%M:%SZ", "abc"),
        ("Alice@Example.org", "%Y-%m-%dT%H:%M:%SZ", "abc"),
    ],
)
def test_deployed_sender_variants_are_accepted(world: World, to: str, stamp_format: str, rpad: str | None) -> None:
    w = world
    msg = deployed(w, to, w.net.clock().strftime(stamp_format), rpad, "from a deployed client")
    got = w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid, timestamp=w.net.clock())
    assert isinstance(got, Decrypted) and got.body == "from a deployed client"


@pytest.mark.parametrize(
    ("to", "stamp_format"),
    [
        ("alice@example.org", "%Y-%m-%dT%H:%M:%S"),  # no offset: local time of an unknown zone
        ("alice@example.org", "%Y-%m-%d %H:%M:%SZ"),  # space for T
        ("alice@example.org", "%Y-%m-%dT%H:%M:%S+00"),  # bare hour offset
    ],
)
def test_deployed_sender_ambiguous_stamps_are_refused(world: World, to: str, stamp_format: str) -> None:
    w = world
    msg = deployed(w, to, w.net.clock().strftime(stamp_format), "abc", "ambiguous")
    refused(
        w.alice, MalformedMessage, lambda: w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid, timestamp=w.net.clock())
    )
    still_works(w)


def test_key_metadata_without_date_is_accepted(world: World) -> None:
    # publish_plain announces bob's key with no date (as several deployed clients do); a date
    # is informative only, so an unreadable one is ignored too
    w = world
    w.net.latest[(BOB, PUBLIC_KEYS_NODE)] = ET.fromstring(
        f"<public-keys-list xmlns='urn:xmpp:openpgp:0'><pubkey-metadata v4-fingerprint='{w.bob_fpr}' date='2026-12-07 05:44'/>"
        "</public-keys-list>"
    )
    w.net.run(w.alice, w.alice.openpgp.prepare([BOB]))
    still_works(w)


def test_P1_replays_old_and_future_messages(world: World) -> None:
    w = world
    first = w.from_bob([w.alice.jid], "once")
    assert w.alice.openpgp.decrypt(first, BOB, to=w.alice.jid, timestamp=w.net.clock()).body == "once"
    # the same stanza again (server redelivery, archive and offline copies): a duplicate, ignored
    refused(
        w.alice, ReplayedMessage, lambda: w.alice.openpgp.decrypt(first, BOB, to=w.alice.jid, timestamp=w.net.clock())
    )
    # the same signed content re-encrypted (another ciphertext): still a replay
    xml = signcrypt_xml([w.alice.jid], w.stamp(), "twice")
    again = [
        openpgp_element(w.bob.encrypt(xml, [w.alice.openpgp.fingerprint or ""], signers=[w.bob_fpr])) for _ in range(2)
    ]
    assert w.alice.openpgp.decrypt(again[0], BOB, to=w.alice.jid, timestamp=w.net.clock()).body == "twice"
    refused(
        w.alice,
        ReplayedMessage,
        lambda: w.alice.openpgp.decrypt(again[1], BOB, to=w.alice.jid, timestamp=w.net.clock()),
    )
    # an hour later, live: the time no longer matches the receive time
    w.net.clock.advance(timedelta(hours=1))
    fresh = w.from_bob([w.alice.jid], "fresh", delta=-timedelta(hours=1))
    refused(w.alice, StaleMessage, lambda: w.alice.openpgp.decrypt(fresh, BOB, to=w.alice.jid, timestamp=w.net.clock()))
    # with a delay stamp forged to match its time, the replay memory still knows it
    refused(
        w.alice,
        ReplayedMessage,
        lambda: w.alice.openpgp.decrypt(first, BOB, to=w.alice.jid, timestamp=w.net.clock() - timedelta(hours=1)),
    )
    # a <time/> far in the future, and one older than the replay memory reaches
    future = w.from_bob([w.alice.jid], "from the future", delta=timedelta(days=1))
    refused(w.alice, StaleMessage, lambda: w.alice.openpgp.decrypt(future, BOB, to=w.alice.jid, timestamp=None))
    old = OPENPGP_MAX_AGE + timedelta(days=1)
    ancient = w.from_bob([w.alice.jid], "ancient", delta=-old)
    refused(
        w.alice,
        StaleMessage,
        lambda: w.alice.openpgp.decrypt(ancient, BOB, to=w.alice.jid, timestamp=w.net.clock() - old),
    )
    # an archived message without a delay stamp, within the memory, is read once
    archived = w.from_bob([w.alice.jid], "archived", delta=-timedelta(days=3))
    assert w.alice.openpgp.decrypt(archived, BOB, to=w.alice.jid, timestamp=None).body == "archived"
    refused(w.alice, ReplayedMessage, lambda: w.alice.openpgp.decrypt(archived, BOB, to=w.alice.jid, timestamp=None))
    still_works(w)


def test_P1_replay_memory_ages_out_with_the_clock(world: World) -> None:
    w = world
    msg = w.from_bob([w.alice.jid], "kept a while")
    w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid)
    keys = lambda: sorted(k for k in w.alice.storage.keys("openpgp") if k.startswith("seen/"))  # noqa: E731
    assert len(keys()) == 2  # one day record and the state
    w.net.clock.advance(OPENPGP_MAX_AGE + timedelta(days=3))
    still_works(w)
    assert len(keys()) == 2  # the old day was dropped, today's added
    refused(w.alice, StaleMessage, lambda: w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid))


def test_P1_after_a_keystore_rollback_older_messages_are_refused(world: World) -> None:
    """A restored older copy of the store has forgotten what it accepted since: after
    ``Engine.after_rollback`` everything older than the rollback is refused."""
    w = world
    storage = w.alice.storage
    assert isinstance(storage, MemoryStorage)
    copy = storage.snapshot()
    msg = w.from_bob([w.alice.jid], "accepted after the copy was made")
    assert w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid).body == "accepted after the copy was made"
    storage._tables = {t: dict(rows) for t, rows in copy.items()}  # the old copy comes back
    w.alice.context.sessions.forget_cache()
    w.alice.after_rollback()
    refused(w.alice, UntrustedKey, lambda: w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid))  # trust to re-confirm
    w.alice.set_trust(BOB, bytes.fromhex(w.bob_fpr), TrustLevel.VERIFIED)
    refused(w.alice, ReplayedMessage, lambda: w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid))
    w.net.clock.advance(timedelta(seconds=2))
    still_works(w)


# ---- P2: signature stripping, <crypt/> and <sign/> ------------------------------------------


def test_P2_only_signed_and_encrypted_signcrypt_is_accepted(world: World) -> None:
    w = world
    alice_fpr = w.alice.openpgp.fingerprint or ""
    crypt_only = w.from_bob([w.alice.jid], "unsigned", root="crypt", signers=[])
    refused(w.alice, InvalidSignature, lambda: w.alice.openpgp.decrypt(crypt_only, BOB, to=w.alice.jid))
    stripped = w.from_bob([w.alice.jid], "signature stripped", signers=[])
    refused(w.alice, InvalidSignature, lambda: w.alice.openpgp.decrypt(stripped, BOB, to=w.alice.jid))
    sign_only = openpgp_element(
        w.bob.sign(signcrypt_xml([w.alice.jid], w.stamp(), "signed only", root="sign"), w.bob_fpr)
    )
    refused(w.alice, DecryptionFailed, lambda: w.alice.openpgp.decrypt(sign_only, BOB, to=w.alice.jid))
    for root in ("crypt", "sign"):  # signed and encrypted, but the wrong content element
        wrapped = w.from_bob([w.alice.jid], f"a {root} in disguise", root=root)
        refused(w.alice, MalformedMessage, lambda: w.alice.openpgp.decrypt(wrapped, BOB, to=w.alice.jid))
    del alice_fpr
    still_works(w)


# ---- P3: wrong signer, expired or revoked keys, several signatures, key replacement ------


def test_P3_valid_signature_by_a_key_not_bound_to_the_sender(world: World) -> None:
    w = world
    # mallory's valid signature on a message that claims to be bob's (mallory's key is even in
    # alice's key ring: alice fetched it as a contact)
    forged = w.from_bob([w.alice.jid], "I am bob", signers=[w.mallory_fpr], gpg=w.mallory)
    e = refused(w.alice, SignatureNotFromSender, lambda: w.alice.openpgp.decrypt(forged, BOB, to=w.alice.jid))
    assert w.mallory_fpr in str(e)
    # bob's metadata names mallory's key and bob's node serves it: the key has no xmpp:bob uid
    refused(
        w.alice,
        InvalidPublicKey,
        lambda: w.alice.openpgp.on_public_key(BOB, w.mallory_fpr, w.mallory.pubkey_item(w.mallory_fpr)),
    )
    # a node whose key is another one than its fingerprint says
    refused(
        w.alice,
        InvalidPublicKey,
        lambda: w.alice.openpgp.on_public_key(BOB, w.mallory_fpr, w.bob.pubkey_item(w.bob_fpr)),
    )
    # a user id without the xmpp: form
    plain = w.mallory.generate(f"Bob <{BOB}>")
    refused(w.alice, InvalidPublicKey, lambda: w.alice.openpgp.on_public_key(BOB, plain, w.mallory.pubkey_item(plain)))
    # a user id xmpp:bob whose self-signature is mallory's signature of another user id
    packets = split_packets(w.mallory.export(w.mallory_fpr), InvalidPublicKey)
    swapped = b"".join(encode_packet(p.tag, f"xmpp:{BOB}".encode() if p.tag == 13 else p.body) for p in packets)
    refused(
        w.alice,
        InvalidPublicKey,
        lambda: w.alice.openpgp.on_public_key(BOB, w.mallory_fpr, build_pubkey(swapped, None)),
    )
    still_works(w)


def test_P3_expired_and_revoked_keys(world: World, tmp_path: Path) -> None:
    w = world
    past = (w.net.clock() - timedelta(days=30)).strftime("%Y%m%dT%H%M%S")
    expired = w.bob.generate(f"xmpp:{BOB}", expire="1d", faked_time=past)
    e = refused(
        w.alice, InvalidPublicKey, lambda: w.alice.openpgp.on_public_key(BOB, expired, w.bob.pubkey_item(expired))
    )
    assert "expired" in str(e)
    # bob revokes his key (with the certificate gpg stored at generation) after alice accepted it
    revocation = (w.bob.home / "openpgp-revocs.d" / f"{w.bob_fpr}.rev").read_text().replace(":-----BEGIN", "-----BEGIN")
    before_revocation = w.from_bob([w.alice.jid], "signed before the revocation")
    w.bob.import_key(revocation.encode())
    e = refused(
        w.alice, InvalidPublicKey, lambda: w.alice.openpgp.on_public_key(BOB, w.bob_fpr, w.bob.pubkey_item(w.bob_fpr))
    )
    assert "revoked" in str(e)
    # GnuPG now knows the revocation (the refused import still reached its key ring): REVKEYSIG
    refused(w.alice, InvalidSignature, lambda: w.alice.openpgp.decrypt(before_revocation, BOB, to=w.alice.jid))


def test_P3_two_signatures_are_refused(world: World) -> None:
    w = world
    second = w.bob.generate(f"xmpp:{BOB}")
    publish_plain(w.net, BOB, w.bob, second, announce=[w.bob_fpr, second])
    w.net.latest[(BOB, f"{PUBLIC_KEYS_NODE}:{w.bob_fpr}")] = w.bob.pubkey_item(w.bob_fpr)
    w.net.run(w.alice, [FetchPublicKeys(BOB)])  # bob's new metadata (a push, or a fetch before sending)
    w.alice.set_trust(BOB, bytes.fromhex(second), TrustLevel.VERIFIED)
    # (two announced, trusted keys: messages to bob are encrypted to both)
    assert set(w.alice.openpgp.encrypt([BOB], "to both keys").fingerprints[BOB]) == {w.bob_fpr, second}
    both = w.from_bob([w.alice.jid], "two signers", signers=[w.bob_fpr, second])
    refused(w.alice, InvalidSignature, lambda: w.alice.openpgp.decrypt(both, BOB, to=w.alice.jid))
    # one good signature and one by a key alice does not have
    stranger = w.bob.generate(f"xmpp:{MALLORY}")
    with_stranger = w.from_bob([w.alice.jid], "bob and a stranger", signers=[w.bob_fpr, stranger])
    refused(w.alice, InvalidSignature, lambda: w.alice.openpgp.decrypt(with_stranger, BOB, to=w.alice.jid))


@pytest.mark.parametrize(
    "lines",
    [
        "NEWSIG\nGOODSIG {k} x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}\nNEWSIG\nBADSIG 1111222233334444 y",
        "NEWSIG\nEXPKEYSIG {k} x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}",
        "NEWSIG\nREVKEYSIG {k} x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}",
        "NEWSIG\nGOODSIG {k} x\nVALIDSIG {f} d 1 0 3 0 22 10 00 {f}",  # a v3 signature
        "NEWSIG\nGOODSIG 1111222233334444 x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}",  # GOODSIG and VALIDSIG disagree
        "NEWSIG\nGOODSIG {k} x\nVALIDSIG {f} d 1 0 4 0 22 10 00",  # no primary fingerprint
        "NEWSIG\nERRSIG {k} 22 10 00 1 4 {f}",  # unsupported algorithm
        "NEWSIG\nERRSIG {k} 22 10 00 1 9 {f}\nNEWSIG\nGOODSIG {k} x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}",
        "GOODSIG {k} x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}",  # no NEWSIG
    ],
)
def test_P3_signature_status_verdicts(lines: str) -> None:
    f = "AB" * 20
    head = "BEGIN_DECRYPTION\nDECRYPTION_INFO 2 9 0\nPLAINTEXT 62 0 \n"
    tail = "\nDECRYPTION_OKAY\nGOODMDC\nEND_DECRYPTION"
    text = "\n".join(f"[GNUPG:] {line}" for line in (head + lines.format(f=f, k=f[-16:]) + tail).split("\n") if line)
    with pytest.raises(InvalidSignature):
        check_decryption(parse_status(text), 0)
    good = f"NEWSIG\nGOODSIG {f[-16:]} x\nVALIDSIG {f} d 1 0 4 0 22 10 00 {f}"
    ok = "\n".join(f"[GNUPG:] {line}" for line in (head + good + tail).split("\n") if line)
    assert check_decryption(parse_status(ok), 0) == (f, f)
    unknown = "NEWSIG\nERRSIG {k} 22 10 00 1 9 {f}\nNO_PUBKEY {k}".format(f=f, k=f[-16:])
    lines = "\n".join(f"[GNUPG:] {line}" for line in (head + unknown + tail).split("\n") if line)
    with pytest.raises(SignatureNotFromSender):  # a key we were not given: not the sender's
        check_decryption(parse_status(lines), 2)


def test_P3_a_new_fingerprint_needs_a_trust_decision(world: World, tmp_path: Path) -> None:
    w = world
    new = w.bob.generate(f"xmpp:{BOB}")
    publish_plain(w.net, BOB, w.bob, new)  # the metadata switches to the new key
    w.net.run(w.alice, [*w.alice.openpgp.on_public_keys(BOB, w.net.latest[(BOB, PUBLIC_KEYS_NODE)])])
    keys = {k.fingerprint: k for k in w.alice.openpgp.keys(BOB)}
    assert keys[new].trust is TrustLevel.UNDECIDED and keys[new].announced
    assert not keys[w.bob_fpr].announced  # kept, but no longer used
    msg = w.from_bob([w.alice.jid], "my new key", signers=[new])
    refused(w.alice, UntrustedKey, lambda: w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid))
    old_key = w.from_bob([w.alice.jid], "my old key")
    refused(w.alice, SignatureNotFromSender, lambda: w.alice.openpgp.decrypt(old_key, BOB, to=w.alice.jid))
    e = refused(w.alice, NoEligibleDevices, lambda: w.alice.encrypt([BOB], "hi"))
    assert "bob@example.net has no trusted OMEMO device and no trusted OpenPGP key" in str(e)
    assert "1 awaiting a trust decision" in str(e)
    w.alice.set_trust(BOB, bytes.fromhex(new), TrustLevel.VERIFIED)
    assert w.alice.openpgp.decrypt(msg, BOB, to=w.alice.jid).trust is TrustLevel.VERIFIED
    w.alice.set_trust(BOB, bytes.fromhex(new), TrustLevel.DISTRUSTED)
    again = w.from_bob([w.alice.jid], "distrusted now", signers=[new])
    refused(w.alice, SenderDistrusted, lambda: w.alice.openpgp.decrypt(again, BOB, to=w.alice.jid))


def test_P3_oversized_and_odd_keys_are_refused_before_gnupg(world: World) -> None:
    w = world
    runner = w.alice.openpgp.crypto
    assert isinstance(runner, GnuPG)
    key = w.bob.export(w.bob_fpr)
    packets = split_packets(key, InvalidPublicKey)
    uid = next(p for p in packets if p.tag == 13)
    many_uids = key + b"".join(encode_packet(13, uid.body) for _ in range(20))
    many_packets = key + encode_packet(2, b"\x04") * 300
    huge = key + encode_packet(13, b"x" * (130 * 1024))
    v3 = encode_packet(6, b"\x03" + packets[0].body[1:]) + b"".join(encode_packet(p.tag, p.body) for p in packets[1:])
    secret = encode_packet(5, packets[0].body + b"\x00") + b"".join(encode_packet(p.tag, p.body) for p in packets[1:])
    runs = runner.runs
    for data, error in (
        (many_uids, InvalidPublicKey),
        (many_packets, InvalidPublicKey),
        (huge, MalformedMessage),
        (v3, InvalidPublicKey),
        (secret, InvalidPublicKey),
        (b"\x00garbage", InvalidPublicKey),
    ):
        refused(w.alice, error, lambda: w.alice.openpgp.on_public_key(BOB, w.bob_fpr, build_pubkey(data, None)))
    assert runner.runs == runs  # GnuPG never saw them


# ---- P4: integrity failures (EFAIL) -------------------------------------------------------


def test_P4_integrity_failures_give_no_plaintext(world: World) -> None:
    w = world
    alice_fpr = w.alice.openpgp.fingerprint or ""
    xml = signcrypt_xml([w.alice.jid], w.stamp(), "no integrity protection")
    sed = w.bob.encrypt(xml, [alice_fpr], signers=[w.bob_fpr], extra=("--rfc2440",))
    assert ":encrypted data packet:" in w.bob.packets(sed)  # SED, no MDC
    runner = w.alice.openpgp.crypto
    assert isinstance(runner, GnuPG)
    # python-gnupg's own result holds the plaintext (the trap); our runner discards it
    own = w.alice.storage.get("own", "openpgp")
    assert own is not None
    passphrase = json.loads(own[1:])["passphrase"]
    raw = runner._g().decrypt(sed, passphrase=passphrase, always_trust=True)
    assert b"no integrity protection" in raw.data
    refused(w.alice, DecryptionFailed, lambda: w.alice.openpgp.decrypt(openpgp_element(sed), BOB, to=w.alice.jid))

    good = w.bob.encrypt(signcrypt_xml([w.alice.jid], w.stamp(), "tamper with me"), [alice_fpr], signers=[w.bob_fpr])
    for name, damaged in (
        (
            "a flipped bit in the middle",
            good[: len(good) // 2] + bytes((good[len(good) // 2] ^ 1,)) + good[len(good) // 2 + 1 :],
        ),
        ("a flipped bit in the MDC", good[:-3] + bytes((good[-3] ^ 1,)) + good[-2:]),
        ("truncated", good[:-30]),
        ("cut to the session key", good[:90]),
    ):
        refused(
            w.alice, DecryptionFailed, lambda: w.alice.openpgp.decrypt(openpgp_element(damaged), BOB, to=w.alice.jid)
        )
        del name
    assert w.alice.openpgp.decrypt(openpgp_element(good), BOB, to=w.alice.jid).body == "tamper with me"


def test_P4_garbage_only_raises_peer_errors(world: World) -> None:
    w = world
    rnd = random.Random(5)
    samples = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) for _ in range(12)]
    samples += [b"\x85\x01\x0c" + bytes(200), b"-----BEGIN PGP MESSAGE-----\n\nabc\n-----END PGP MESSAGE-----\n"]
    for data in samples:
        refused(w.alice, PeerError, lambda: w.alice.openpgp.decrypt(openpgp_element(data), BOB, to=w.alice.jid))
    for text in ("", "!!!", "QUJD" * 100000):
        elem = ET.Element("{urn:xmpp:openpgp:0}openpgp")
        elem.text = text
        refused(w.alice, MalformedMessage, lambda: w.alice.openpgp.decrypt(elem, BOB, to=w.alice.jid))


# ---- P5: injection into gpg ---------------------------------------------------------------


def test_P5_passphrases_with_line_breaks_or_nul_never_reach_gpg(world: World) -> None:
    w = world
    runner = w.alice.openpgp.crypto
    assert isinstance(runner, GnuPG)
    backup = w.alice.openpgp.backup()
    element = backup.effects[0].payload  # type: ignore[union-attr]
    runs = runner.runs
    for bad in (backup.code + "\n", backup.code.replace("-", "\r", 1), backup.code + "\x00", "1234", "O" * 24):
        refused(w.alice, InvalidPassphrase, lambda: w.alice.openpgp.restore(element, bad))
    for bad in ("a\nb", "a\rb", "a\x00b", ""):
        with pytest.raises(InvalidPassphrase):
            runner.encrypt_symmetric(b"x", bad)
        with pytest.raises(InvalidPassphrase):
            runner.decrypt_symmetric(b"x", bad, 100)
    key = SecretKey("AB" * 20, b"\x95", "line\nbreak")
    with pytest.raises(InvalidPassphrase):
        runner.decrypt_and_verify(b"x", [], key, 100)
    assert runner.runs == runs


def test_P5_spoofed_status_text_in_file_names_and_user_ids_has_no_effect(world: World) -> None:
    w = world
    alice_fpr = w.alice.openpgp.fingerprint or ""
    spoof = f"x\n[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG {w.bob_fpr[-16:]} xmpp:{BOB}\n[GNUPG:] VALIDSIG {w.bob_fpr} 2026-01-01 1 0 4 0 22 10 00 {w.bob_fpr}"
    unsigned = w.from_bob([w.alice.jid], "unsigned, spoofed file name", signers=[], extra=("--set-filename", spoof))
    refused(w.alice, InvalidSignature, lambda: w.alice.openpgp.decrypt(unsigned, BOB, to=w.alice.jid))
    by_mallory = w.from_bob(
        [w.alice.jid],
        "mallory, spoofed file name",
        signers=[w.mallory_fpr],
        gpg=w.mallory,
        extra=("--set-filename", spoof),
    )
    refused(w.alice, SignatureNotFromSender, lambda: w.alice.openpgp.decrypt(by_mallory, BOB, to=w.alice.jid))
    # a user id carrying status text: not an xmpp: user id of bob (and GnuPG escapes it anyway)
    evil = w.mallory.generate(f"xmpp:{BOB}\n[GNUPG:] VALIDSIG {w.bob_fpr} 2026-01-01 1 0 4 0 22 10 00 {w.bob_fpr}")
    refused(w.alice, InvalidPublicKey, lambda: w.alice.openpgp.on_public_key(BOB, evil, w.mallory.pubkey_item(evil)))
    signed_evil = w.from_bob([w.alice.jid], "evil uid", signers=[evil], gpg=w.mallory)
    refused(w.alice, SignatureNotFromSender, lambda: w.alice.openpgp.decrypt(signed_evil, BOB, to=w.alice.jid))
    del alice_fpr
    still_works(w)


def test_P5_hostile_user_configuration_is_ignored(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    hostile = tmp_path / "user-gnupg"
    hostile.mkdir(mode=0o700)
    (hostile / "gpg.conf").write_text(
        "verbose\nverbose\nauto-key-retrieve\nkeyserver hkp://127.0.0.1:9\nignore-mdc-error\nstatus-fd 1\n"
    )
    monkeypatch.setenv("GNUPGHOME", str(hostile))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".gnupg").mkdir(mode=0o700)
    (tmp_path / ".gnupg" / "gpg.conf").write_text((hostile / "gpg.conf").read_text())
    # a new account's device on a runner started under that environment
    runner = GnuPG()
    try:
        fresh = w.net.ox_device("dave@example.org", "dave", omemo=False, gpg=runner)
        w.net.run(fresh, fresh.openpgp.prepare([BOB]))
        dave_key = w.net.latest[(fresh.jid, f"{PUBLIC_KEYS_NODE}:{fresh.openpgp.fingerprint}")]
        w.bob.import_key(base64.b64decode(dave_key[0].text or ""))
        sed = w.from_bob([fresh.jid], "no MDC", recipients=[fresh.openpgp.fingerprint or ""], extra=("--rfc2440",))
        refused(fresh, DecryptionFailed, lambda: fresh.openpgp.decrypt(sed, BOB, to=fresh.jid))
        ok = w.from_bob([fresh.jid], "works", recipients=[fresh.openpgp.fingerprint or ""])
        assert fresh.openpgp.decrypt(ok, BOB, to=fresh.jid).body == "works"
        assert runner.home is not None and not (runner.home / "gpg.conf").exists()
        assert sorted(p.name for p in hostile.iterdir()) == ["gpg.conf"]  # nothing used or written there
        assert not (tmp_path / ".gnupg" / "pubring.kbx").exists()
    finally:
        runner.close()


def test_P5_jid_that_would_inject_key_parameters_is_refused(tmp_path: Path) -> None:
    runner = GnuPG()
    try:
        engine = Engine.create(MemoryStorage(), "evil\n%no-protection@example.org", openpgp=runner)
        with pytest.raises(UsageError):
            engine.openpgp.generate()
        with pytest.raises(UsageError):
            runner.generate_key("xmpp:a@b\nPassphrase: x", "p" * 8)
        assert runner.runs == 0 and runner.home is None
    finally:
        runner.close()
