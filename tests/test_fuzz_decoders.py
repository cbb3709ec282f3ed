"""Arbitrary bytes fed to every binary decoder and to decryption raise only peer-blame
errors (subclasses of PeerError), never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2ee.errors import PeerError
from e2ee.legacy.wire import LEGACY
from e2ee.omemo2.wire import OMEMO2
from tests.support import OurDevice, seeded_rng

A, B = ("alice@example.org", 1), ("bob@example.net", 2)
FLAVOURS = [OMEMO2, LEGACY]


def _pairs() -> dict[str, tuple[OurDevice, OurDevice]]:
    out = {}
    for name in ("omemo2", "legacy"):
        a = OurDevice(name, *A, rng=seeded_rng("fa" + name))  # type: ignore[arg-type]
        b = OurDevice(name, *B, rng=seeded_rng("fb" + name))  # type: ignore[arg-type]
        b.decrypt(*A, a.initiate(*B, b.bundle(), b"k" * 32), True)
        a.decrypt(*B, b.encrypt(*A, b"r" * 32)[0], False)
        out[name] = (a, b)
    return out


PAIRS = _pairs()


def _valid_samples() -> list[bytes]:
    samples = []
    for a, _b in PAIRS.values():
        samples.append(a.encrypt(*B, b"s" * 32)[0])
    fresh_a = OurDevice("omemo2", *A, rng=seeded_rng("x"))
    fresh_b = OurDevice("omemo2", *B, rng=seeded_rng("y"))
    samples.append(fresh_a.initiate(*B, fresh_b.bundle(), b"k" * 48))
    fresh_a = OurDevice("legacy", *A, rng=seeded_rng("x"))
    fresh_b = OurDevice("legacy", *B, rng=seeded_rng("y"))
    samples.append(fresh_a.initiate(*B, fresh_b.bundle(), b"k" * 32))
    return samples


SAMPLES = _valid_samples()


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Random bytes, or a genuine message with random edits (reaches deeper code)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def _only_peer_errors(fn, data: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(data)
    except PeerError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile())
def test_parsers_raise_only_peer_errors(data: bytes) -> None:
    for f in FLAVOURS:
        _only_peer_errors(f.parse_message, data)
        _only_peer_errors(f.parse_key_exchange, data)
        for decode in (f.decode_public, f.identity_to_x25519):
            _only_peer_errors(decode, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile())
def test_decryption_raises_only_peer_errors_and_changes_nothing(data: bytes) -> None:
    for name, (_a, b) in PAIRS.items():
        before = b.state(*A)
        for kex in (False, True):
            try:
                b.decrypt(*A, data, kex)
            except PeerError:
                pass
            else:
                # a mutated genuine message can still be a valid, previously unseen one
                # (e.g. a re-encoding of a key exchange): then it must be a real decryption
                return
            assert b.state(*A) == before, name
