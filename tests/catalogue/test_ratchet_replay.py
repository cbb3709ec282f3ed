"""Catalogue section 1, R1-R5: out-of-order delivery, duplicates and replays, counter jumps,
bit flips and garbage at the OMEMO message layer (both namespaces).
"""

from __future__ import annotations

import copy
import random
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

import e2ee.ratchet as ratchet_mod
from e2ee.engine import Engine
from e2ee.errors import (
    AuthenticationFailed,
    E2EEError,
    InvalidKey,
    MalformedMessage,
    TooManySkippedKeys,
    UnsupportedVersion,
)
from e2ee.limits import (
    MAX_SKIP,
    MAX_SKIPPED_KEYS_PER_SESSION,
)
from e2ee.primitives import x25519_public
from e2ee.results import (
    Duplicate,
)

from ..engine_support import LEGACY, Net, snapshot
from .support import (
    ALICE,
    BOB,
    FLAVOUR,
    NS_BOTH,
    Checks,
    b64,
    dev,
    encode_key,
    establish,
    flip,
    flush,
    is_kex,
    key_bytes,
    key_elem,
    prekey_ids,
    recv_body,
    repack,
    repack_kex,
    round_trip,
    send,
    with_key,
)

# ================================================================== R1


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R1_held_back_and_shuffled_delivery_decrypt_exactly_once_and_skipped_store_empties(ns: str) -> None:
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)

    held = [(send(net, a, BOB, f"held {i}", ns), f"held {i}") for i in range(10)]
    for i in range(10):
        recv_body(net, b, send(net, a, BOB, f"a {i}", ns), ALICE, f"a {i}")
    for i in range(10):  # one DH step each way
        recv_body(net, a, send(net, b, ALICE, f"b {i}", ns), BOB, f"b {i}")
    recv_body(net, b, send(net, a, BOB, "after", ns), ALICE, "after")  # bob leaves the held chain
    flush(net)
    assert len(snapshot(b)["skipped"]) >= 10  # the held-back keys wait in the store
    for el, body in held:
        recv_body(net, b, el, ALICE, body)
    for el, _ in held:  # exactly once
        before = snapshot(b)
        assert isinstance(b.decrypt(el, ALICE, to=BOB), Duplicate)
        assert snapshot(b) == before

    # 50 each way, sent interleaved, delivered shuffled and interleaved with the sending
    rnd = random.Random(f"R1/{ns}")
    order = ["a"] * 50 + ["b"] * 50
    rnd.shuffle(order)
    pending: list[tuple[Engine, Engine, ET.Element, str]] = []
    delivered: list[tuple[Engine, Engine, ET.Element, str]] = []
    counts = {"a": 0, "b": 0}
    for who in order:
        s, r = (a, b) if who == "a" else (b, a)
        body = f"shuffled {who} {counts[who]}"
        counts[who] += 1
        pending.append((s, r, send(net, s, r.jid, body, ns), body))
        if rnd.random() < 0.4:
            rnd.shuffle(pending)
            item = pending.pop()
            recv_body(net, item[1], item[2], item[0].jid, item[3])
            delivered.append(item)
    rnd.shuffle(pending)
    for item in pending:
        recv_body(net, item[1], item[2], item[0].jid, item[3])
        delivered.append(item)
    assert len(delivered) == 100
    for s, r, el, _ in delivered:
        assert isinstance(r.decrypt(el, s.jid, to=r.jid), Duplicate)
    flush(net)
    round_trip(net, a, b, ns, "final")

    # the skipped-key store returns to empty
    left = {e.jid: len(snapshot(e)["skipped"]) for e in (a, b)}
    assert left == {ALICE: 0, BOB: 0}, f"skipped keys left over after every message was delivered: {left}"


# ================================================================== R2


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R2_redelivered_replayed_and_evicted_messages_are_Duplicate_and_change_nothing(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)

    live = send(net, a, BOB, "live", ns)
    recv_body(net, b, live, ALICE, "live")
    c.returns("live duplicate", b, lambda: b.decrypt(live, ALICE, to=BOB), Duplicate, unchanged=True)

    # a message delivered out of order (its key came from the skipped store), then replayed
    late = send(net, a, BOB, "late", ns)
    recv_body(net, b, send(net, a, BOB, "early", ns), ALICE, "early")
    recv_body(net, b, late, ALICE, "late")
    c.returns("skipped-key duplicate", b, lambda: b.decrypt(late, ALICE, to=BOB), Duplicate, unchanged=True)

    # a MAM duplicate after several DH steps (its chain is now an old one), with a delay stamp
    for i in range(3):
        round_trip(net, a, b, ns, f"step {i}")
    stamp = net.clock() - timedelta(hours=1)
    for label, el in (("MAM duplicate", live), ("MAM duplicate of skipped", late)):
        c.returns(label, b, lambda el=el: b.decrypt(el, ALICE, to=BOB, timestamp=stamp), Duplicate, unchanged=True)

    # a message whose skipped key was evicted (FIFO beyond MAX_SKIPPED_KEYS_PER_SESSION)
    net.prepare(a, [BOB])
    burst = [a.encrypt_omemo([BOB], f"burst {i}").elements[ns] for i in range(MAX_SKIPPED_KEYS_PER_SESSION + 3)]
    recv_body(net, b, burst[MAX_SKIPPED_KEYS_PER_SESSION], ALICE, f"burst {MAX_SKIPPED_KEYS_PER_SESSION}")
    recv_body(net, b, burst[-1], ALICE, f"burst {len(burst) - 1}")  # one more skip: burst 0 evicted
    c.expect(len(snapshot(b)["skipped"]) == MAX_SKIPPED_KEYS_PER_SESSION, "skipped store not capped at its limit")
    c.returns("evicted-key replay", b, lambda: b.decrypt(burst[0], ALICE, to=BOB), Duplicate, unchanged=True)
    recv_body(net, b, burst[1], ALICE, "burst 1")  # the next-oldest key was kept
    recv_body(net, b, burst[-2], ALICE, f"burst {len(burst) - 2}")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R3


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R3_counter_jumps_beyond_MAX_SKIP_are_refused_before_any_derivation(
    ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Checks()
    rnd = random.Random(f"R3/{ns}")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    recv_body(net, b, send(net, a, BOB, "0", ns), ALICE, "0")  # bob's receiving chain: nr = 1
    legit = send(net, a, BOB, "1", ns)
    rid = b.device_id
    data = key_bytes(legit, rid)
    m = FLAVOUR[ns].parse_message(data)
    assert m.n == 1

    def fresh() -> bytes:
        return x25519_public(rnd.randbytes(32))

    cases = {
        # (a) same chain, counter jump above the limit
        "same chain, n = nr + MAX_SKIP + 1": repack(ns, data, rnd, n=1 + MAX_SKIP + 1),
        "same chain, n = 2^32 - 1": repack(ns, data, rnd, n=2**32 - 1),
        # (b) a new ratchet key forcing skips on the old chain
        "new key, pn = 2^32 - 1": repack(ns, data, rnd, dh=fresh(), n=0, pn=2**32 - 1),
        "new key, n = MAX_SKIP + 1": repack(ns, data, rnd, dh=fresh(), n=MAX_SKIP + 1, pn=0),
        "new key, old + new chain together above the limit": repack(ns, data, rnd, dh=fresh(), n=401, pn=1 + 600),
    }
    calls = {"hmac": 0, "dh": 0}
    real_hmac, real_dh = ratchet_mod.hmac_sha256, ratchet_mod.x25519

    def counting_hmac(key: bytes, msg: bytes) -> bytes:
        calls["hmac"] += 1
        return real_hmac(key, msg)

    def counting_dh(priv: bytes, pub: bytes) -> bytes:
        calls["dh"] += 1
        return real_dh(priv, pub)

    monkeypatch.setattr(ratchet_mod, "hmac_sha256", counting_hmac)
    monkeypatch.setattr(ratchet_mod, "x25519", counting_dh)
    for label, forged in cases.items():
        c.decrypt_rejected(label, b, with_key(legit, rid, forged), ALICE, TooManySkippedKeys)
    # (c) 10^4 such messages
    template = copy.deepcopy(legit)
    k = key_elem(template, rid)
    before = snapshot(b)
    wrong = 0
    for i in range(10_000):
        if i % 2:
            forged = repack(ns, data, rnd, n=2 + MAX_SKIP + rnd.randrange(2**31))
        else:
            forged = repack(ns, data, rnd, dh=fresh(), n=rnd.randrange(1000), pn=1 + MAX_SKIP + rnd.randrange(2**31))
        k.text = b64(forged)
        try:
            b.decrypt(template, ALICE, to=BOB)
        except TooManySkippedKeys:
            continue
        except E2EEError:
            wrong += 1
    c.expect(wrong == 0, f"10^4 flood: {wrong} messages not refused as TooManySkippedKeys")
    c.expect(snapshot(b) == before, "10^4 flood: stored state changed")
    c.expect(calls == {"hmac": 0, "dh": 0}, f"keys were derived before the refusal: {calls}")

    # exactly at the limit: keys are derived (so the counters above are live), then the forged
    # MAC fails; nothing is kept
    c.decrypt_rejected(
        "same chain, n = nr + MAX_SKIP (bad MAC)",
        b,
        with_key(legit, rid, repack(ns, data, rnd, n=1 + MAX_SKIP)),
        ALICE,
        AuthenticationFailed,
    )
    c.expect(calls["hmac"] >= 2 * MAX_SKIP, f"derivation counter not live: {calls}")
    monkeypatch.undo()
    c.expect(len(snapshot(b)["skipped"]) <= MAX_SKIPPED_KEYS_PER_SESSION, "skipped store above its limit")
    recv_body(net, b, legit, ALICE, "1")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R4


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R4_bit_flips_of_the_authenticated_message_are_rejected_and_change_nothing(ns: str) -> None:
    c = Checks()
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    establish(net, a, b, ns)
    legit = send(net, a, BOB, "flip me", ns)  # the first message of alice's new ratchet key
    rid = b.device_id
    assert not is_kex(legit, rid)
    data = key_bytes(legit, rid)
    m = FLAVOUR[ns].parse_message(data)
    assert m.n == 0

    def region(part: bytes) -> range:
        start = data.find(part)
        assert start >= 0 and data.find(part, start + 1) < 0
        return range(start, start + len(part))

    key_bytes_range = region(encode_key(ns, m.dh_pub))
    ct_bytes = region(m.ciphertext)
    mac_bytes = region(m.mac)
    header = [i for i in range(len(data)) if i not in ct_bytes and i not in mac_bytes]
    rnd = random.Random(f"R4/{ns}")
    bits = set(range(8))  # the first byte (legacy: the version byte)
    bits |= set(rnd.sample([i * 8 + j for i in header for j in range(8)], 24))
    bits |= set(rnd.sample([i * 8 + j for i in ct_bytes for j in range(8)], 20))
    bits |= set(rnd.sample([i * 8 + j for i in mac_bytes for j in range(8)], 20))
    bits |= {key_bytes_range[-1] * 8 + 7}  # the top bit of the ratchet key
    template = copy.deepcopy(legit)
    k = key_elem(template, rid)
    seen: dict[str, int] = {}
    for bit in sorted(bits):
        k.text = b64(flip(data, bit))
        allowed: tuple[type[E2EEError], ...] = (AuthenticationFailed, MalformedMessage)
        if bit // 8 in key_bytes_range:  # catalogue X2: a malformed ratchet key is InvalidKey
            allowed += (InvalidKey,)
        err = c.decrypt_rejected(f"bit {bit} (byte {bit // 8} of {len(data)})", b, template, ALICE, allowed)
        if err is not None:
            seen[type(err).__name__] = seen.get(type(err).__name__, 0) + 1
    c.expect(seen.get("AuthenticationFailed", 0) >= 40, f"most flips must reach the MAC check: {seen}")
    if ns == LEGACY:
        c.decrypt_rejected("version byte 0x32", b, with_key(legit, rid, b"\x32" + data[1:]), ALICE, UnsupportedVersion)
    recv_body(net, b, legit, ALICE, "flip me")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()


# ================================================================== R5


@pytest.mark.parametrize("ns", NS_BOTH)
def test_R5_garbage_with_fresh_ratchet_keys_and_a_forged_kex_leave_no_trace(ns: str) -> None:
    c = Checks()
    rnd = random.Random(f"R5/{ns}")
    net = Net()
    a = dev(net, ALICE, "a", ns)
    b = dev(net, BOB, "b", ns)
    rid = b.device_id

    # a forged key exchange: alice's ciphertext under a swapped base key
    first = send(net, a, BOB, "first", ns)
    assert is_kex(first, rid)
    kdata = key_bytes(first, rid)
    pk_id = FLAVOUR[ns].parse_key_exchange(kdata).pk_id
    for i in range(3):
        forged = repack_kex(ns, kdata, ek=x25519_public(rnd.randbytes(32)))
        c.decrypt_rejected(
            f"kex with swapped base key #{i}", b, with_key(first, rid, forged), ALICE, AuthenticationFailed
        )
    c.expect(pk_id in prekey_ids(b), "the forged key exchange consumed the prekey")
    recv_body(net, b, first, ALICE, "first")
    flush(net)

    # 1000 garbage messages with fresh ratchet keys and valid framing
    template_src = send(net, a, BOB, "after garbage", ns)
    template = copy.deepcopy(template_src)
    k = key_elem(template, rid)
    before = snapshot(b)
    outcomes: dict[str, int] = {}
    for _ in range(1000):
        garbage = FLAVOUR[ns].pack_message(
            x25519_public(rnd.randbytes(32)),
            rnd.randrange(20),
            rnd.randrange(20),
            rnd.randbytes(16 * rnd.randint(1, 4)),
            rnd.randbytes(32),
            rnd.randbytes(64),
        )
        k.text = b64(garbage)
        try:
            got = b.decrypt(template, ALICE, to=BOB)
            name = f"accepted:{type(got).__name__}"
        except E2EEError as e:
            name = type(e).__name__
        outcomes[name] = outcomes.get(name, 0) + 1
        if snapshot(b) != before:
            c.problems.append("garbage message changed the stored state")
            break
    c.expect(outcomes == {"AuthenticationFailed": 1000}, f"garbage outcomes: {outcomes}")
    recv_body(net, b, template_src, ALICE, "after garbage")
    flush(net)
    round_trip(net, a, b, ns, "after")
    c.done()
