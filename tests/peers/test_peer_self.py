"""Self-check of the test-peer driver: two library-backed devices talking to each other."""

from __future__ import annotations

import hashlib

import pytest
import xeddsa

from .omemo_peer import Flavour, PeerDevice, PeerError, WireBundle

FLAVOURS: list[Flavour] = ["omemo2", "legacy"]
A_JID, A_DEV = "alice@example.org", 1001
B_JID, B_DEV = "bob@example.net", 2002


def km(flavour: Flavour, label: str) -> bytes:
    """Key material of the right size for the flavour: omemo2 48 bytes, legacy 32 bytes."""
    digest = hashlib.sha512(label.encode("ascii")).digest()
    return digest[:48] if flavour == "omemo2" else digest[:32]


def pair(flavour: Flavour, num_prekeys: int = 10) -> tuple[PeerDevice, PeerDevice]:
    alice = PeerDevice(flavour, A_JID, A_DEV, hashlib.sha256(b"alice seed").digest(), num_prekeys=num_prekeys)
    bob = PeerDevice(flavour, B_JID, B_DEV, hashlib.sha256(b"bob seed").digest(), num_prekeys=num_prekeys)
    return alice, bob


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_bundle_format(flavour: Flavour) -> None:
    _, bob = pair(flavour, num_prekeys=5)
    b = bob.bundle()
    assert sorted(b.prekeys) == [1, 2, 3, 4, 5]
    assert b.spk_id == 1
    assert b.ik == bob.identity_key()
    assert len(b.spk_sig) == 64
    ed = bob.identity_key_ed25519()
    if flavour == "omemo2":
        assert len(b.ik) == 32 and b.ik == ed
        assert len(b.spk) == 32 and all(len(p) == 32 for p in b.prekeys.values())
        assert xeddsa.ed25519_verify(b.spk_sig, ed, b.spk)
    else:
        assert len(b.ik) == 33 and b.ik[0] == 5
        assert b.ik[1:] == xeddsa.ed25519_pub_to_curve25519_pub(ed)
        assert len(b.spk) == 33 and b.spk[0] == 5
        assert all(len(p) == 33 and p[0] == 5 for p in b.prekeys.values())
        # libsignal-style signature: sign bit of the Ed25519 IK in sig[63] bit 7, signed bytes 0x05 || spk
        assert b.spk_sig[63] >> 7 == ed[31] >> 7
        sig = bytearray(b.spk_sig)
        sig[63] &= 0x7F
        assert xeddsa.ed25519_verify(bytes(sig), ed, b.spk)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_conversation(flavour: Flavour) -> None:
    alice, bob = pair(flavour)
    bundle = bob.bundle()

    # Alice initiates; her messages stay wrapped in the same key exchange until she hears from Bob.
    m0 = alice.initiate(B_JID, B_DEV, bundle, km(flavour, "m0"), prekey_id=3)
    m1, kex1 = alice.encrypt(B_JID, B_DEV, km(flavour, "m1"))
    assert kex1
    assert alice.session_initiation(B_JID, B_DEV) == "active"
    assert not alice.session_confirmed(B_JID, B_DEV)
    if flavour == "legacy":
        assert m0[0] == 0x33 and m1[0] == 0x33

    # Out of order: the repeated key exchange arrives first and builds the session, the first one is then
    # decrypted with the same session (skipped message key).
    assert bob.decrypt(A_JID, A_DEV, m1, True) == km(flavour, "m1")
    assert bob.session_initiation(A_JID, A_DEV) == "passive"
    assert 3 not in bob.prekey_ids()
    assert bob.decrypt(A_JID, A_DEV, m0, True) == km(flavour, "m0")

    # Bob answers (empty OMEMO 2 message: 32 zero bytes; legacy key transport: 16 bytes).
    empty = bytes(32) if flavour == "omemo2" else bytes(range(16))
    m2, kex2 = bob.encrypt(A_JID, A_DEV, empty)
    assert not kex2
    assert alice.decrypt(B_JID, B_DEV, m2, False) == empty
    assert alice.session_confirmed(B_JID, B_DEV)

    # From now on no key exchange any more; several ratchet steps with out-of-order delivery.
    sent: list[tuple[str, bytes, bytes]] = []
    for i in range(3):
        wire, kex = alice.encrypt(B_JID, B_DEV, km(flavour, f"a{i}"))
        assert not kex
        sent.append((f"a{i}", wire, km(flavour, f"a{i}")))
    for name in ("a2", "a0"):
        _, wire, expected = next(s for s in sent if s[0] == name)
        assert bob.decrypt(A_JID, A_DEV, wire, False) == expected

    b_msgs = [bob.encrypt(A_JID, A_DEV, km(flavour, f"b{i}")) for i in range(2)]
    assert all(not kex for _, kex in b_msgs)
    assert alice.decrypt(B_JID, B_DEV, b_msgs[0][0], False) == km(flavour, "b0")

    a3, _ = alice.encrypt(B_JID, B_DEV, km(flavour, "a3"))
    assert bob.decrypt(A_JID, A_DEV, a3, False) == km(flavour, "a3")
    # a1 from the previous chain arrives late, after Bob already ratcheted forward.
    assert bob.decrypt(A_JID, A_DEV, sent[1][1], False) == sent[1][2]

    b2, _ = bob.encrypt(A_JID, A_DEV, km(flavour, "b2"))
    assert alice.decrypt(B_JID, B_DEV, b2, False) == km(flavour, "b2")
    # b1 from Bob's previous chain arrives late at Alice.
    assert alice.decrypt(B_JID, B_DEV, b_msgs[1][0], False) == km(flavour, "b1")

    # Duplicates are rejected.
    with pytest.raises(PeerError):
        alice.decrypt(B_JID, B_DEV, b2, False)
    with pytest.raises(PeerError):
        bob.decrypt(A_JID, A_DEV, a3, False)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_replayed_and_reused_prekey(flavour: Flavour) -> None:
    alice, bob = pair(flavour)
    bundle = bob.bundle()
    m0 = alice.initiate(B_JID, B_DEV, bundle, km(flavour, "m0"), prekey_id=5)
    assert bob.decrypt(A_JID, A_DEV, m0, True) == km(flavour, "m0")
    # The identical key exchange again: same session, but the message key is used up.
    with pytest.raises(PeerError):
        bob.decrypt(A_JID, A_DEV, m0, True)
    # A fresh key exchange (new ephemeral key) on the consumed prekey fails: prekey deleted.
    alice2 = PeerDevice(flavour, A_JID, A_DEV, alice.ik_seed, num_prekeys=1)
    fresh = alice2.initiate(B_JID, B_DEV, bundle, km(flavour, "x"), prekey_id=5)
    with pytest.raises(PeerError):
        bob.decrypt(A_JID, A_DEV, fresh, True)
    # The session built from m0 is still usable.
    wire, _ = bob.encrypt(A_JID, A_DEV, km(flavour, "r"))
    assert alice.decrypt(B_JID, B_DEV, wire, False) == km(flavour, "r")
    # A fresh key exchange on another prekey replaces the session.
    other = alice2.initiate(B_JID, B_DEV, bundle, km(flavour, "y"), prekey_id=6)
    assert bob.decrypt(A_JID, A_DEV, other, True) == km(flavour, "y")
    wire, kex = bob.encrypt(A_JID, A_DEV, km(flavour, "z"))
    assert not kex
    assert alice2.decrypt(B_JID, B_DEV, wire, False) == km(flavour, "z")
    with pytest.raises(PeerError):
        alice.decrypt(B_JID, B_DEV, bob.encrypt(A_JID, A_DEV, km(flavour, "w"))[0], False)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_failures_leave_state_untouched(flavour: Flavour) -> None:
    alice, bob = pair(flavour)
    with pytest.raises(PeerError):
        alice.encrypt(B_JID, B_DEV, km(flavour, "nosession"))
    m0 = alice.initiate(B_JID, B_DEV, bob.bundle(), km(flavour, "m0"))
    with pytest.raises(PeerError):
        bob.decrypt(A_JID, A_DEV, m0, False)  # key exchange passed as a plain message
    tampered = bytearray(m0)
    tampered[-3] ^= 1
    with pytest.raises(PeerError):
        bob.decrypt(A_JID, A_DEV, bytes(tampered), True)
    assert not bob.has_session(A_JID, A_DEV)
    assert bob.decrypt(A_JID, A_DEV, m0, True) == km(flavour, "m0")
    wire, _ = bob.encrypt(A_JID, A_DEV, km(flavour, "m1"))
    bad = bytearray(wire)
    bad[-1] ^= 0x80
    with pytest.raises(PeerError):
        alice.decrypt(B_JID, B_DEV, bytes(bad), False)
    assert not alice.session_confirmed(B_JID, B_DEV)
    assert alice.decrypt(B_JID, B_DEV, wire, False) == km(flavour, "m1")
    with pytest.raises(PeerError):
        alice.decrypt(B_JID, B_DEV, b"\x00garbage", True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_bad_bundle_signature_rejected(flavour: Flavour) -> None:
    alice, bob = pair(flavour)
    b = bob.bundle()
    sig = bytearray(b.spk_sig)
    sig[0] ^= 1
    bad = WireBundle(b.ik, b.spk_id, b.spk, bytes(sig), b.prekeys)
    with pytest.raises(PeerError):
        alice.initiate(B_JID, B_DEV, bad, km(flavour, "m0"))
    if flavour == "legacy":
        # Wrong sign bit in sig[63]: the Ed25519 form of the IK is rebuilt wrongly, verification fails.
        sig = bytearray(b.spk_sig)
        sig[63] ^= 0x80
        with pytest.raises(PeerError):
            alice.initiate(B_JID, B_DEV, WireBundle(b.ik, b.spk_id, b.spk, bytes(sig), b.prekeys), b"\x00" * 32)
    assert not alice.has_session(B_JID, B_DEV)
