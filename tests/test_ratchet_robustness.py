"""Hostile ratchet messages: every rejected input raises one typed peer error and leaves the
serialized state byte-identical (security catalogue R2-R5, R11)."""

from __future__ import annotations

import time
import tracemalloc

import pytest

import e2ee.ratchet as ratchet_mod
from e2ee.errors import (
    AuthenticationFailed,
    DuplicateMessage,
    InvalidKey,
    MalformedMessage,
    PeerError,
    TooManySkippedKeys,
    UnsupportedVersion,
)
from e2ee.limits import MAX_SKIP, MAX_SKIPPED_KEYS_PER_SESSION
from e2ee.primitives import x25519_public
from tests.support import FLAVOURS, OurDevice, seeded_rng

A, B = ("alice@example.org", 1), ("bob@example.net", 2)
FLAVOUR_NAMES = ["omemo2", "legacy"]


def pair(flavour: str) -> tuple[OurDevice, OurDevice]:
    """Alice and Bob with a confirmed session and a few DH steps behind them."""
    alice = OurDevice(flavour, *A, rng=seeded_rng(f"a/{flavour}"))  # type: ignore[arg-type]
    bob = OurDevice(flavour, *B, rng=seeded_rng(f"b/{flavour}"))  # type: ignore[arg-type]
    bob.decrypt(*A, alice.initiate(*B, bob.bundle(), b"k" * 32), True)
    for i in range(3):
        assert alice.decrypt(*B, bob.encrypt(*A, b"r" * 32)[0], False) == b"r" * 32
        assert bob.decrypt(*A, alice.encrypt(*B, b"s" * 32)[0], False) == b"s" * 32
    return alice, bob


def flips(data: bytes):
    for i in range(len(data) * 8):
        b = bytearray(data)
        b[i // 8] ^= 1 << (i % 8)
        yield i, bytes(b)


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
@pytest.mark.parametrize("new_chain", [False, True], ids=["same-chain", "new-ratchet-key"])
def test_every_bit_flip_is_rejected_and_changes_nothing(flavour: str, new_chain: bool) -> None:
    alice, bob = pair(flavour)
    if not new_chain:
        alice.encrypt(*B, b"x" * 32)  # the flipped message is the second on its chain
    wire, kex = alice.encrypt(*B, b"m" * 32)
    assert not kex
    before = bob.state(*A)
    seen: dict[str, int] = {}
    for i, bad in flips(wire):
        with pytest.raises(PeerError) as info:
            bob.decrypt(*A, bad, False)
        # The catalogue's R4 set, plus: InvalidKey when the flip lands in the ratchet key's top
        # bit, DuplicateMessage when it lowers the counter below the chain (no key left to
        # check a MAC with, as in libsignal), TooManySkippedKeys when it raises it too far.
        assert type(info.value) in (
            AuthenticationFailed,
            MalformedMessage,
            InvalidKey,
            DuplicateMessage,
            TooManySkippedKeys,
            UnsupportedVersion,
        ), (i, info.value)
        seen[type(info.value).__name__] = seen.get(type(info.value).__name__, 0) + 1
        assert bob.state(*A) == before, f"state changed after flip of bit {i}"
    assert seen.get("AuthenticationFailed", 0) > len(wire) * 4  # most flips reach the MAC
    assert bob.decrypt(*A, wire, False) == b"m" * 32  # the genuine message still decrypts


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
def test_every_bit_flip_of_a_key_exchange_is_rejected(flavour: str) -> None:
    alice = OurDevice(flavour, *A, rng=seeded_rng("a"))  # type: ignore[arg-type]
    bob = OurDevice(flavour, *B, rng=seeded_rng("b"))  # type: ignore[arg-type]
    wire = alice.initiate(*B, bob.bundle(), b"k" * 32)
    prekeys = dict(bob.prekeys)
    for i, bad in flips(wire):
        # A flip of a prekey or signed-prekey id that names another existing key changes the
        # X3DH secret, so it too fails the MAC; the legacy version byte is checked exactly.
        with pytest.raises(PeerError):
            bob.decrypt(*A, bad, True)
        assert bob.prekeys == prekeys and not bob.sessions, f"flip {i} changed state"
    assert bob.decrypt(*A, wire, True) == b"k" * 32


def _forged(flavour: str, alice: OurDevice, n: int, pn: int, new_key: bool) -> bytes:
    f = FLAVOURS[flavour]
    r = alice.sessions[B].ratchet
    dh = x25519_public(b"\x42" * 32) if new_key else r.dhs_pub
    return f.pack_message(dh, n, pn, b"\x00" * 16, b"\x01" * 32, r.ad_send)


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
@pytest.mark.parametrize(
    "n,pn,new_key",
    [
        (2**32 - 1, 0, False),  # counter jump on the current chain
        (MAX_SKIP + 10, 0, False),
        (0, 2**32 - 1, True),  # new ratchet key claiming a huge previous chain
        (2**32 - 1, 0, True),
        (MAX_SKIP, MAX_SKIP, True),  # together over the limit
    ],
)
def test_huge_skip_rejected_before_any_key_derivation(
    flavour: str, n: int, pn: int, new_key: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = pair(flavour)
    before = bob.state(*A)
    forged = _forged(flavour, alice, n, pn, new_key)
    derivations = 0
    real_hmac = ratchet_mod.hmac_sha256

    def counting_hmac(key: bytes, data: bytes) -> bytes:
        nonlocal derivations
        derivations += 1
        return real_hmac(key, data)

    monkeypatch.setattr(ratchet_mod, "hmac_sha256", counting_hmac)
    monkeypatch.setattr(ratchet_mod, "hkdf_sha256", lambda *a: pytest.fail("KDF called"))
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(TooManySkippedKeys):
        bob.decrypt(*A, forged, False)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert derivations == 0
    assert elapsed < 0.05 and peak < 256 * 1024
    assert bob.state(*A) == before
    monkeypatch.undo()
    assert bob.decrypt(*A, alice.encrypt(*B, b"ok" * 16)[0], False) == b"ok" * 16


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
def test_skip_up_to_the_limit_works(flavour: str) -> None:
    alice, bob = pair(flavour)
    wires = [alice.encrypt(*B, bytes([i % 256]) * 32)[0] for i in range(MAX_SKIP + 1)]
    assert bob.decrypt(*A, wires[-1], False) == bytes([MAX_SKIP % 256]) * 32
    assert len(bob.sessions[A].ratchet.skipped) == MAX_SKIP
    for i in (0, 500, 999):
        assert bob.decrypt(*A, wires[i], False) == bytes([i % 256]) * 32


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
def test_duplicates_and_replays(flavour: str) -> None:
    alice, bob = pair(flavour)
    w1 = alice.encrypt(*B, b"1" * 32)[0]
    w2 = alice.encrypt(*B, b"2" * 32)[0]
    assert bob.decrypt(*A, w2, False) == b"2" * 32  # w1's key is now skipped
    for replay in (w2, w2):
        before = bob.state(*A)
        with pytest.raises(DuplicateMessage):
            bob.decrypt(*A, replay, False)
        assert bob.state(*A) == before
    assert bob.decrypt(*A, w1, False) == b"1" * 32
    with pytest.raises(DuplicateMessage):
        bob.decrypt(*A, w1, False)
    # after a DH step, a replay from the previous chain is still recognised
    alice.decrypt(*B, bob.encrypt(*A, b"r" * 32)[0], False)
    assert bob.decrypt(*A, alice.encrypt(*B, b"3" * 32)[0], False) == b"3" * 32
    before = bob.state(*A)
    with pytest.raises(DuplicateMessage):
        bob.decrypt(*A, w2, False)
    assert bob.state(*A) == before


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
def test_skipped_store_is_capped_fifo(flavour: str) -> None:
    alice, bob = pair(flavour)
    held = []
    for _round in range(3):  # three chains of 600 skipped keys each: more than the cap
        chain = [alice.encrypt(*B, b"h" * 32)[0] for _ in range(601)]
        held.append(chain)
        bob.decrypt(*A, chain[-1], False)
        alice.decrypt(*B, bob.encrypt(*A, b"r" * 32)[0], False)
    r = bob.sessions[A].ratchet
    assert len(r.skipped) == MAX_SKIPPED_KEYS_PER_SESSION
    with pytest.raises(DuplicateMessage):  # the oldest were evicted first
        bob.decrypt(*A, held[0][0], False)
    assert bob.decrypt(*A, held[2][0], False) == b"h" * 32  # the newest are kept


@pytest.mark.parametrize("flavour", FLAVOUR_NAMES)
def test_garbage_with_fresh_ratchet_keys_leaves_no_trace(flavour: str) -> None:
    """R5: valid framing, fresh ratchet keys, wrong MAC: 200 of them, then real traffic."""
    alice, bob = pair(flavour)
    f = FLAVOURS[flavour]
    before = bob.state(*A)
    rng = seeded_rng("garbage")
    for i in range(200):
        dh = x25519_public(rng(32))
        forged = f.pack_message(dh, i % 5, i % 3, rng(32), rng(32), rng(64))  # any AD: the MAC is wrong anyway
        with pytest.raises(AuthenticationFailed):
            bob.decrypt(*A, forged, False)
        assert bob.state(*A) == before
    assert bob.decrypt(*A, alice.encrypt(*B, b"z" * 32)[0], False) == b"z" * 32


def test_message_kind_confusion() -> None:
    """R11: a legacy message on the OMEMO 2 path and the reverse, a KEX where a message is
    expected, an unknown version byte."""
    for src, dst in (("legacy", "omemo2"), ("omemo2", "legacy")):
        alice, _ = pair(src)
        _, bob = pair(dst)
        wire = alice.encrypt(*B, b"m" * 32)[0]
        before = bob.state(*A)
        with pytest.raises((MalformedMessage, InvalidKey, AuthenticationFailed)):
            bob.decrypt(*A, wire, False)
        assert bob.state(*A) == before
    alice, bob = pair("legacy")
    wire = alice.encrypt(*B, b"m" * 32)[0]
    for version in (0x23, 0x43, 0x03, 0xF3):
        with pytest.raises(UnsupportedVersion):
            bob.decrypt(*A, bytes((version,)) + wire[1:], False)
    fresh_a = OurDevice("omemo2", *A, rng=seeded_rng("x"))
    fresh_b = OurDevice("omemo2", *B, rng=seeded_rng("y"))
    kex = fresh_a.initiate(*B, fresh_b.bundle(), b"k" * 48)
    fresh_b.decrypt(*A, kex, True)
    before = fresh_b.state(*A)
    with pytest.raises(PeerError):
        fresh_b.decrypt(*A, kex, False)  # a key exchange given as a plain message
    assert fresh_b.state(*A) == before
