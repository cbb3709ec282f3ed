"""Serialized ratchet and session state: versioned, round-trips exactly, and any damage is a
typed CorruptState, never another exception or a wrong value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee.errors import CorruptState
from e2ee.ratchet import STATE_VERSION, DoubleRatchet
from e2ee.session import Session
from tests.support import OurDevice, seeded_rng

A, B = ("alice@example.org", 1), ("bob@example.net", 2)


def _bob(flavour: str) -> OurDevice:
    alice = OurDevice(flavour, *A, rng=seeded_rng("sa" + flavour))  # type: ignore[arg-type]
    bob = OurDevice(flavour, *B, rng=seeded_rng("sb" + flavour))  # type: ignore[arg-type]
    bob.decrypt(*A, alice.initiate(*B, bob.bundle(), b"k" * 32), True)
    wires = [alice.encrypt(*B, b"m" * 32) for _ in range(5)]  # still key exchanges
    bob.decrypt(*A, *wires[-1])  # the same key exchange again: leaves four skipped keys
    return bob


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_round_trip_is_exact(flavour: str) -> None:
    bob = _bob(flavour)
    session = bob.sessions[A]
    assert len(session.ratchet.skipped) == 4
    data = session.to_bytes()
    again = Session.from_bytes(data, bob.ik)
    assert again.to_bytes() == data
    assert again.ratchet.skipped == session.ratchet.skipped
    r = session.ratchet.to_bytes()
    assert r[0] == STATE_VERSION and DoubleRatchet.from_bytes(r).to_bytes() == r


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x02" + b"x" * 10, b"\x01\xff\xff\xff", b"\x01"])
def test_unknown_version_or_garbage(bad: bytes) -> None:
    bob = _bob("omemo2")
    with pytest.raises(CorruptState):
        DoubleRatchet.from_bytes(bad)
    with pytest.raises(CorruptState):
        Session.from_bytes(bad, bob.ik)


BOB = _bob("legacy")
GOOD = BOB.sessions[A].ratchet.to_bytes()


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, len(GOOD) - 1), value=st.integers(0, 255))
def test_damaged_ratchet_state_is_corrupt_or_parses(pos: int, value: int) -> None:
    """Any damaged byte gives CorruptState or a state that parses (the keystore's AEAD, not
    this layer, detects tampering); never another exception."""
    data = bytearray(GOOD)
    data[pos] = value
    try:
        DoubleRatchet.from_bytes(bytes(data))
    except CorruptState:
        pass
