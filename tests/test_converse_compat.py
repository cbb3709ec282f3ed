"""What Converse.js (and other deployed stacks) publish and expect, without a browser (issue 20).

The real Converse.js in Chromium is exercised by the Converse harness; these tests pin the
shapes it showed us, with our real engine on both sides: bundles with ids 0 (Converse's
``generateSignedPreKey(..., 0, ...)`` and prekeys ``0..99``), refusals that say why.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import base64

import pytest
import xeddsa

from e2ee import jsonrec
from e2ee.identity import IdentityKeyPair
from e2ee.engine import Engine
from e2ee.errors import InvalidBundle, NoEligibleDevices
from e2ee.results import Decrypted, Publish
from e2ee.storage import MemoryStorage

from .engine_support import LEGACY, O2, Net, snapshot
from .support import seeded_rng

ALICE, BOB = "alice@example.org", "bob@example.org"
NS_BOTH = [O2, LEGACY]


def converse_shaped(net: Net, jid: str, seed: str, ns: str) -> Engine:
    """A real engine made to look like a Converse.js device, announced in ``ns`` only: its
    signed prekey has id 0 and its one-time prekeys are 0..99.  Our engine never writes such
    ids, so the published bundle and the stored keys are renumbered (1 -> 0, k -> k - 1; the
    signature covers the key, not its id)."""
    storage = MemoryStorage()
    engine = Engine.create(storage, jid, rng=seeded_rng(seed), clock=net.clock)
    net.engines.append(engine)
    node_ns = {O2: "urn:xmpp:omemo:2", LEGACY: "eu.siacs.conversations.axolotl"}[ns]
    for effect in engine.publish():
        if isinstance(effect, Publish) and effect.node.startswith(node_ns):
            net.publish(engine, effect)
    spk = jsonrec.load(storage.get("own", "spk") or b"", 1, "spk")
    assert spk["current"]["id"] == 1
    spk["current"]["id"] = 0
    storage.put("own", "spk", jsonrec.dump(1, spk))
    pks = jsonrec.load(storage.get("own", "prekeys") or b"", 1, "prekeys")
    pks["keys"] = {str(int(k) - 1): v for k, v in pks["keys"].items()}
    storage.put("own", "prekeys", jsonrec.dump(1, pks))
    bundle = net.pep.bundle(jid, ns, engine.device_id)
    assert bundle is not None
    for e in bundle.iter():
        for attr in ("id", "signedPreKeyId", "preKeyId"):
            if e.get(attr) is not None:
                e.set(attr, str(int(e.get(attr) or "") - 1))
    return Engine(storage, rng=seeded_rng(seed + "/2"), clock=net.clock)


def _ids(bundle: ET.Element) -> tuple[set[str], set[str]]:
    spk = {e.get("id") or e.get("signedPreKeyId") or "" for e in bundle.iter() if str(e.tag).endswith(("}spk", "}signedPreKeyPublic"))}
    pks = {e.get("id") or e.get("preKeyId") or "" for e in bundle.iter() if str(e.tag).endswith(("}pk", "}preKeyPublic"))}
    return spk, pks


class PickFirst:
    """Seeded randomness that, while :attr:`first` is set, answers 4-byte requests with zeros:
    the engine then picks the lowest prekey id of a bundle (prekey 0 of a Converse bundle)."""

    def __init__(self, seed: str) -> None:
        self._rng = seeded_rng(seed)
        self.first = False

    def __call__(self, n: int) -> bytes:
        return bytes(4) if self.first and n == 4 else self._rng(n)


def _unused_prekey_ids(engine: Engine) -> set[int]:
    rec = jsonrec.load(engine.storage.get("own", "prekeys") or b"", 1, "prekeys")
    return {int(k) for k, v in rec["keys"].items() if not v["used"]}


@pytest.mark.parametrize("ns", NS_BOTH)
def test_a_bundle_shaped_as_converses_with_ids_0_is_accepted_and_works(ns: str) -> None:
    net = Net()
    bob = converse_shaped(net, BOB, "bob-converse", ns)
    published = net.pep.bundle(BOB, ns, bob.device_id)
    assert published is not None
    spk_ids, pk_ids = _ids(published)
    assert spk_ids == {"0"} and pk_ids == {str(i) for i in range(100)}  # the shape under test
    rng = PickFirst("alice")
    alice = net.device(ALICE, "alice", rng=rng)
    rng.first = True  # the key exchange uses signed prekey 0 and one-time prekey 0
    res = net.encrypt(alice, [BOB], "hello converse")
    rng.first = False
    assert res.ready, res.devices
    assert 0 in _unused_prekey_ids(bob)
    out = bob.decrypt(res.elements[ns], ALICE, to=BOB)
    assert isinstance(out, Decrypted) and out.body == "hello converse"
    assert 0 not in _unused_prekey_ids(bob)  # prekey 0 was the one used
    net.run(bob, out.effects)
    reply = net.encrypt(bob, [ALICE], "hello project")
    assert reply.ready, reply.devices
    back = alice.decrypt(reply.elements[O2], BOB, to=ALICE)
    assert isinstance(back, Decrypted) and back.body == "hello project"


def test_our_own_prekey_ids_stay_from_1() -> None:
    net = Net()
    alice = net.device(ALICE, "alice")
    for ns in NS_BOTH:
        bundle = net.pep.bundle(ALICE, ns, alice.device_id)
        assert bundle is not None
        spk_ids, pk_ids = _ids(bundle)
        assert spk_ids == {"1"} and pk_ids == {str(i) for i in range(1, 101)}


@pytest.mark.parametrize("ns", NS_BOTH)
def test_a_refused_bundle_is_named_with_its_reason_in_the_not_sent_error(ns: str) -> None:
    net = Net()
    bob = net.device(BOB, "bob", namespaces=(ns,))
    published = net.pep.bundle(BOB, ns, bob.device_id)
    assert published is not None
    spk = next(e for e in published if str(e.tag).endswith(("}spk", "}signedPreKeyPublic")))
    spk.set("id" if ns == O2 else "signedPreKeyId", str(2**31))  # still out of range
    alice = net.device(ALICE, "alice")
    net.run(alice, alice.on_device_list(BOB, ns, net.pep.device_list(BOB, ns)))
    before = snapshot(alice)
    with pytest.raises(InvalidBundle):
        alice.on_bundle(BOB, bob.device_id, ns, published)
    assert snapshot(alice) == before  # a refused bundle changes no stored byte
    with pytest.raises(NoEligibleDevices) as info:
        alice.encrypt_with_fallback([BOB], "x")
    text = str(info.value)
    name = "OMEMO 2" if ns == O2 else "legacy OMEMO"
    assert f"1 whose bundle we refused: device {bob.device_id} ({name}): " in text, text
    assert "2147483648 outside [0, 2147483647]" in text, text
    assert "without a bundle" not in text, text


# ------------------------------------------------------------------ defect 0: the sign bit


def _text(bundle: ET.Element, local: str) -> bytes:
    elem = next(e for e in bundle.iter() if str(e.tag).endswith("}" + local))
    return base64.b64decode(elem.text or "")


def _verifies_both_ways(ns: str, bundle: ET.Element) -> tuple[bool, bool]:
    """(plain Ed25519 / libsignal convention, XEdDSA convention) for the bundle's signed-prekey
    signature, checked by python-xeddsa (libsodium and Syndace's C code, not ours)."""
    if ns == O2:
        ik, spk, sig = _text(bundle, "ik"), _text(bundle, "spk"), _text(bundle, "spks")
        plain = xeddsa.ed25519_verify(sig, ik, spk)
        mont = xeddsa.ed25519_pub_to_curve25519_pub(ik)
        xed = xeddsa.ed25519_verify(sig, xeddsa.curve25519_pub_to_ed25519_pub(mont, False), spk)
        return plain, xed
    ik, spk = _text(bundle, "identityKey"), _text(bundle, "signedPreKeyPublic")
    sig = _text(bundle, "signedPreKeySignature")
    assert ik[0] == 5 and spk[0] == 5
    mont = ik[1:]
    # libsignal: the sign of the Edwards key travels in bit 7 of sig[63]
    signed = xeddsa.curve25519_pub_to_ed25519_pub(mont, bool(sig[63] & 0x80))
    libsignal = xeddsa.ed25519_verify(sig[:63] + bytes((sig[63] & 0x7F,)), signed, spk)
    # XEdDSA: the Edwards key with sign 0, the signature as it is
    xed = xeddsa.ed25519_verify(sig, xeddsa.curve25519_pub_to_ed25519_pub(mont, False), spk)
    return libsignal, xed


def test_new_identities_have_the_sign_bit_clear_and_both_conventions_verify_our_bundles() -> None:
    net = Net()
    for i in range(40):  # with the bit left to chance, all 40 pass with probability 2^-40
        jid = f"user{i}@example.org"
        engine = Engine.create(MemoryStorage(), jid, clock=net.clock)  # the system's randomness
        assert not engine.identity_sign_bit_set
        assert engine.identity_key_ed25519[31] & 0x80 == 0
        published = {e.node: e.payload for e in engine.publish() if isinstance(e, Publish)}
        for ns in NS_BOTH:
            node = "urn:xmpp:omemo:2:bundles" if ns == O2 else f"eu.siacs.conversations.axolotl.bundles:{engine.device_id}"
            assert _verifies_both_ways(ns, published[node]) == (True, True), (i, ns)


def test_generation_rejects_seeds_whose_key_has_the_sign_bit_set() -> None:
    seeds = [bytes([i]) * 32 for i in range(16)]
    bits = [IdentityKeyPair.from_seed(s).sign_bit_set for s in seeds]
    assert any(bits) and not all(bits)
    stream = iter(seeds)
    pair = IdentityKeyPair.generate(lambda n: next(stream))
    first_clear = seeds[bits.index(False)]
    assert pair.seed == first_clear and not pair.sign_bit_set


def test_an_old_identity_with_the_sign_bit_set_is_reported() -> None:
    storage = MemoryStorage()
    engine = Engine.create(storage, ALICE, rng=seeded_rng("old"))
    assert not engine.identity_sign_bit_set
    seed = next(bytes([i]) * 32 for i in range(256) if IdentityKeyPair.from_seed(bytes([i]) * 32).sign_bit_set)
    rec = jsonrec.load(storage.get("own", "identity") or b"", 1, "identity")
    rec["seed"] = seed.hex()  # as an identity made before the fix may be
    storage.put("own", "identity", jsonrec.dump(1, rec))
    old = Engine(storage)
    assert old.identity_sign_bit_set
    # signed afresh with that key: plain-Ed25519 / libsignal verifiers accept, XEdDSA ones
    # refuse (what Converse.js did) -- the check above can fail
    with storage.transaction():
        old._own.rotate_signed_prekey(old._now(), force=True)
    published = {e.node: e.payload for e in old.publish() if isinstance(e, Publish)}
    assert _verifies_both_ways(O2, published["urn:xmpp:omemo:2:bundles"]) == (True, False)
    legacy_node = f"eu.siacs.conversations.axolotl.bundles:{old.device_id}"
    assert _verifies_both_ways(LEGACY, published[legacy_node]) == (True, False)
