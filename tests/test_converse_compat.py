"""What Converse.js (and other deployed stacks) publish and expect, without a browser (issue 20).

The real Converse.js in Chromium is exercised by the Converse harness; these tests pin the
shapes it showed us, with our real engine on both sides: bundles with ids 0 (Converse's
``generateSignedPreKey(..., 0, ...)`` and prekeys ``0..99``), refusals that say why.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest
import xeddsa

from e2ee import jsonrec
from e2ee.engine import Engine
from e2ee.errors import InvalidBundle, NoEligibleDevices
from e2ee.identity import IdentityKeyPair
from e2ee.results import Decrypted, Publish
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel
from e2ee.verification import FORM_LEGACY, FORM_OMEMO2, fingerprint_forms, identity_candidates

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
    spk = {
        e.get("id") or e.get("signedPreKeyId") or ""
        for e in bundle.iter()
        if str(e.tag).endswith(("}spk", "}signedPreKeyPublic"))
    }
    pks = {
        e.get("id") or e.get("preKeyId") or "" for e in bundle.iter() if str(e.tag).endswith(("}pk", "}preKeyPublic"))
    }
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
    rng.first = True  # signed prekey 0 and the first one-time prekey: 1, since Converse cannot use 0
    res = net.encrypt(alice, [BOB], "hello converse")
    rng.first = False
    assert res.ready, res.devices
    assert 0 in _unused_prekey_ids(bob)
    out = bob.decrypt(res.elements[ns], ALICE, to=BOB)
    assert isinstance(out, Decrypted) and out.body == "hello converse"
    unused = _unused_prekey_ids(bob)
    assert 0 in unused and 1 not in unused  # prekey 1 was the one used, never 0 (Converse's libomemo skips it)
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
        alice.encrypt([BOB], "x")
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
            node = (
                "urn:xmpp:omemo:2:bundles" if ns == O2 else f"eu.siacs.conversations.axolotl.bundles:{engine.device_id}"
            )
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
        old.context.own.rotate_signed_prekey(old.context.now(), force=True)
    published = {e.node: e.payload for e in old.publish() if isinstance(e, Publish)}
    assert _verifies_both_ways(O2, published["urn:xmpp:omemo:2:bundles"]) == (True, False)
    legacy_node = f"eu.siacs.conversations.axolotl.bundles:{old.device_id}"
    assert _verifies_both_ways(LEGACY, published[legacy_node]) == (True, False)


# ------------------------------------------------------------------ defects 2 and 3: fingerprints


def _known_bob(ns: str = O2) -> tuple[Net, Engine, Engine]:
    net = Net()
    bob = net.device(BOB, "bob-v", namespaces=(ns,) if ns == LEGACY else (O2, LEGACY))
    alice = net.device(ALICE, "alice-v")
    net.prepare(alice, [BOB])  # alice fetched bob's list and bundle: the key is known, blind
    (info,) = alice.devices(BOB)
    assert info.trust is TrustLevel.BLIND
    return net, alice, bob


def _trust_of(alice: Engine, device_id: int) -> TrustLevel | None:
    return next(d.trust for d in alice.devices(BOB) if d.device_id == device_id)


@pytest.mark.parametrize("form", ["ed25519", "curve25519"])
def test_a_uri_with_either_form_of_a_known_key_verifies_that_device(form: str) -> None:
    _net, alice, bob = _known_bob()
    key = bob.identity_key_ed25519 if form == "ed25519" else bob.identity_key
    for uri in (f"xmpp:{BOB}?omemo-sid-{bob.device_id}={key.hex()}", f"xmpp:{BOB}?omemo={key.hex()}"):
        alice.set_trust(BOB, bob.identity_key, TrustLevel.BLIND)
        jid, (d,) = alice.apply_uri(uri)
        assert jid == BOB and d.matched and d.identity_key == bob.identity_key and d.devices == (bob.device_id,)
        assert d.given == key and d.remembered == ()
        assert _trust_of(alice, bob.device_id) is TrustLevel.VERIFIED, uri
    # the decision reports the canonical key, whichever form the URI gave
    alice.set_trust(BOB, bob.identity_key, TrustLevel.BLIND)
    jid, decisions = alice.apply_uri(f"xmpp:{BOB}?omemo-sid-{bob.device_id}={key.hex()}")
    assert (jid, [(d.device_id, d.identity_key or d.given) for d in decisions]) == (
        BOB,
        [(bob.device_id, bob.identity_key)],
    )
    assert _trust_of(alice, bob.device_id) is TrustLevel.VERIFIED


def test_trust_and_distrust_take_either_form_of_a_legacy_only_devices_key() -> None:
    _net, alice, bob = _known_bob(LEGACY)
    d = alice.decide_fingerprint(BOB, bob.identity_key_ed25519, TrustLevel.DISTRUSTED)
    assert d.matched and d.devices == (bob.device_id,)
    assert _trust_of(alice, bob.device_id) is TrustLevel.DISTRUSTED
    d = alice.decide_fingerprint(BOB, bob.identity_key, TrustLevel.VERIFIED)
    assert d.matched and _trust_of(alice, bob.device_id) is TrustLevel.VERIFIED


def test_a_fingerprint_of_no_known_key_is_remembered_not_verified_and_applies_later() -> None:
    net, alice, bob = _known_bob()
    tablet = net.device(BOB, "bob-tablet")  # alice sees it listed, but has not fetched its key
    assert _trust_of(alice, tablet.device_id) is None
    before = snapshot(alice)
    uri = f"xmpp:{BOB}?omemo-sid-{tablet.device_id}={tablet.identity_key_ed25519.hex()}"
    _jid, (d,) = alice.apply_uri(uri)
    assert not d.matched and d.identity_key is None and d.devices == ()
    assert tablet.identity_key in d.remembered
    assert _trust_of(alice, bob.device_id) is TrustLevel.BLIND  # bob's other device is untouched
    assert snapshot(alice) != before  # remembered
    # a URI naming bob's known device with another key verifies nothing of it
    _jid, (wrong,) = alice.apply_uri(f"xmpp:{BOB}?omemo-sid-{bob.device_id}={tablet.identity_key.hex()}")
    assert not wrong.matched and _trust_of(alice, bob.device_id) is TrustLevel.BLIND
    # the key appears (alice fetches the tablet's bundle): the remembered decision applies
    net.prepare(alice, [BOB])
    assert _trust_of(alice, tablet.device_id) is TrustLevel.VERIFIED
    assert _trust_of(alice, bob.device_id) is TrustLevel.BLIND


def test_fingerprint_forms_are_labelled_and_exact() -> None:
    _net, alice, bob = _known_bob()
    (info,) = alice.devices(BOB)
    assert info.ed25519_key == bob.identity_key_ed25519  # from bob's OMEMO 2 bundle, exact
    forms = fingerprint_forms(info.identity_key or b"", info.ed25519_key)
    assert forms == {
        FORM_LEGACY: " ".join(bob.identity_key.hex()[i : i + 8] for i in range(0, 64, 8)),
        FORM_OMEMO2: " ".join(bob.identity_key_ed25519.hex()[i : i + 8] for i in range(0, 64, 8)),
    }
    assert "Conversations" in FORM_LEGACY and "Converse.js" in FORM_OMEMO2 and "Kaidan" in FORM_OMEMO2
    # without the exact Ed25519 key: the sign-bit-clear form, which is ours (new identities)
    assert fingerprint_forms(bob.identity_key)[FORM_OMEMO2].replace(" ", "") == bob.identity_key_ed25519.hex()
    assert identity_candidates(bob.identity_key_ed25519) == (bob.identity_key_ed25519, bob.identity_key)
    # a legacy-only device has no OMEMO 2 bundle: no Ed25519 form is claimed for it
    _net2, alice2, bob2 = _known_bob(LEGACY)
    (legacy_info,) = alice2.devices(BOB)
    assert legacy_info.identity_key == bob2.identity_key and legacy_info.ed25519_key is None


def test_the_ed25519_form_is_recognised_whatever_its_sign_bit() -> None:
    # Converse.js's own keys may have the sign bit set: its OMEMO 2 URI still names its key
    for i in range(32):
        pair = IdentityKeyPair.from_seed(bytes([i]) * 32)
        assert pair.x25519_public in identity_candidates(pair.ed25519_public)
        forms = fingerprint_forms(pair.x25519_public, pair.ed25519_public)
        assert forms[FORM_OMEMO2].replace(" ", "") == pair.ed25519_public.hex()
