"""Our X3DH + Double Ratchet against the independent implementation (python-x3dh and
python-doubleratchet as configured by twomemo / oldmemo 2.1.0), on the wire bytes.

For both protocol versions and with the session started from either side: at least 200
messages each way, in bursts that force DH ratchet steps, delivered shuffled, with some held
back across later ratchet steps, and repeated key exchanges before the responder answers.
"""

from __future__ import annotations

import random
import zlib
from typing import Protocol

import pytest

from tests.peers.omemo_peer import PeerDevice, WireBundle
from tests.support import OurDevice, seeded_rng


class Device(Protocol):
    def bundle(self) -> WireBundle: ...
    def initiate(self, jid: str, device_id: int, bundle: WireBundle, key_material: bytes) -> bytes: ...
    def encrypt(self, jid: str, device_id: int, key_material: bytes) -> tuple[bytes, bool]: ...
    def decrypt(self, jid: str, device_id: int, wire: bytes, is_key_exchange: bool) -> bytes: ...


A, B = ("alice@example.org", 1001), ("bob@example.net", 2002)
PER_DIRECTION = 200


def make(kind: str, flavour: str, who: tuple[str, int]) -> Device:
    if kind == "ours":
        return OurDevice(flavour, who[0], who[1], rng=seeded_rng(f"{flavour}/{who[0]}"))  # type: ignore[arg-type]
    return PeerDevice(flavour, who[0], who[1])  # type: ignore[arg-type]


def key_material(rnd: random.Random, flavour: str) -> bytes:
    if flavour == "omemo2":
        return bytes(32) if rnd.random() < 0.1 else rnd.randbytes(48)  # 32 zero bytes: empty message
    return rnd.randbytes(32)


def converse(alice: Device, bob: Device, flavour: str, seed: int) -> dict[str, int]:
    rnd = random.Random(seed)
    devices = {A: alice, B: bob}
    other = {A: B, B: A}
    sent = {A: 0, B: 0}
    held: list[tuple[tuple[str, int], bytes, bool, bytes]] = []  # (receiver, wire, kex, expected)
    stats = {"kex_delivered": 0, "held_back": 0, "bursts": 0}

    def deliver(receiver: tuple[str, int], wire: bytes, kex: bool, expected: bytes) -> None:
        got = devices[receiver].decrypt(*other[receiver], wire, kex)
        assert got == expected
        stats["kex_delivered"] += kex

    # Alice starts with a burst of key exchanges; Bob gets them out of order.
    first = key_material(rnd, flavour)
    burst = [(alice.initiate(*B, bob.bundle(), first), True, first)]
    for _ in range(3):
        km = key_material(rnd, flavour)
        wire, kex = alice.encrypt(*B, km)
        assert kex, "messages before the first answer repeat the key exchange"
        burst.append((wire, kex, km))
    sent[A] += len(burst)
    rnd.shuffle(burst)
    held.append((B, *burst.pop()))  # one key exchange arrives much later
    for wire, kex, km in burst:
        deliver(B, wire, kex, km)

    sender = B
    while sent[A] < PER_DIRECTION or sent[B] < PER_DIRECTION:
        stats["bursts"] += 1
        receiver = other[sender]
        msgs = []
        for _ in range(rnd.randint(1, 8)):
            km = key_material(rnd, flavour)
            wire, kex = devices[sender].encrypt(*receiver, km)
            msgs.append((wire, kex, km))
        sent[sender] += len(msgs)
        rnd.shuffle(msgs)
        if len(msgs) > 2 and rnd.random() < 0.3:
            held.append((receiver, *msgs.pop()))  # delivered after later ratchet steps
            stats["held_back"] += 1
        for m in msgs:
            deliver(receiver, *m)
        if held and rnd.random() < 0.25:
            deliver(*held.pop(rnd.randrange(len(held))))
        # mostly alternate (DH ratchet step each time), sometimes the same side goes again
        if rnd.random() < 0.8:
            sender = receiver
    for h in held:
        deliver(*h)
    stats.update(sent_a=sent[A], sent_b=sent[B])
    return stats


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
@pytest.mark.parametrize("initiator,responder", [("ours", "peer"), ("peer", "ours")])
def test_exchange_with_independent_implementation(flavour: str, initiator: str, responder: str) -> None:
    alice = make(initiator, flavour, A)
    bob = make(responder, flavour, B)
    stats = converse(alice, bob, flavour, seed=zlib.crc32(f"{flavour}/{initiator}".encode()))
    assert stats["sent_a"] >= PER_DIRECTION and stats["sent_b"] >= PER_DIRECTION
    assert stats["held_back"] >= 5
    assert stats["kex_delivered"] >= 4


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_peer_with_itself_under_same_schedule(flavour: str) -> None:
    """Control: the schedule is valid for the reference implementation on both sides."""
    converse(make("peer", flavour, A), make("peer", flavour, B), flavour, seed=7)


@pytest.mark.parametrize("flavour", ["omemo2", "legacy"])
def test_ours_with_ourselves_under_same_schedule(flavour: str) -> None:
    converse(make("ours", flavour, A), make("ours", flavour, B), flavour, seed=7)
