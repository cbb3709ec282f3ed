"""The send policy (issue 5, must-show 5 at the engine level): per recipient OMEMO when a trusted
OMEMO device exists, else OpenPGP when a trusted OpenPGP key exists, else a clear error naming
what is missing and nothing encrypted; clear text only when explicitly allowed.  The full
end-to-end test over Prosody is in ``tests/test_openpgp_server.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2ee.engine import Engine
from e2ee.errors import NoEligibleDevices, UsageError
from e2ee.fallback import Route
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from .engine_support import snapshot
from .openpgp_support import OxNet


@pytest.fixture
def net() -> Iterator[OxNet]:
    n = OxNet()
    yield n
    n.close()


def test_omemo_first_then_openpgp_then_refusal(net: OxNet) -> None:
    alice = net.ox_device("alice@example.org", "alice")
    bob = net.ox_device("bob@example.org", "bob")  # OMEMO and OpenPGP
    dave = net.ox_device("dave@example.org", "dave", omemo=False)  # OpenPGP only
    carol = "carol@example.org"  # neither
    net.ox_prepare(alice, [bob.jid, dave.jid, carol])

    sent = alice.encrypt([bob.jid, dave.jid], "hello both")
    assert [(r.jid, r.route) for r in sent.recipients] == [(bob.jid, Route.OMEMO), (dave.jid, Route.OPENPGP)]
    omemo = sent.recipients[0].omemo
    assert omemo is not None and omemo.ready
    got = bob.decrypt(omemo.elements["urn:xmpp:omemo:2"], alice.jid, to=bob.jid)
    assert isinstance(got, Decrypted) and got.body == "hello both"
    pgp = sent.recipients[1].openpgp
    assert pgp is not None
    net.run(dave, dave.openpgp.prepare([alice.jid]))
    got = dave.decrypt(pgp, alice.jid, to=dave.jid)  # one entry point, chosen by namespace
    assert isinstance(got, Decrypted) and got.body == "hello both" and got.namespace == "urn:xmpp:openpgp:0"
    assert set(sent.recipients[1].fingerprints) == {dave.openpgp.fingerprint, alice.openpgp.fingerprint}

    before = snapshot(alice)
    with pytest.raises(NoEligibleDevices) as info:
        alice.encrypt([dave.jid, carol], "to carol too")
    assert snapshot(alice) == before  # nothing encrypted, not even for dave
    assert info.value.missing.keys() == {carol}
    assert str(info.value).startswith("carol@example.org has no trusted OMEMO device and no trusted OpenPGP key")
    assert "it announces no OpenPGP key" in str(info.value)

    clear = alice.encrypt([carol, dave.jid], "explicitly in clear", allow_plaintext=True)
    assert [r.route for r in clear.recipients] == [Route.PLAINTEXT, Route.OPENPGP]
    assert clear.route(carol) is Route.PLAINTEXT and clear.recipients[0].openpgp is None


def test_distrusted_omemo_devices_fall_back_to_openpgp(net: OxNet) -> None:
    alice = net.ox_device("alice@example.org", "alice")
    bob = net.ox_device("bob@example.org", "bob")
    net.ox_prepare(alice, [bob.jid])
    alice.set_trust(bob.jid, bob.identity_key, TrustLevel.DISTRUSTED)
    net.ox_prepare(alice, [bob.jid])
    assert alice.encrypt([bob.jid], "via OpenPGP").route(bob.jid) is Route.OPENPGP
    alice.set_trust(bob.jid, bytes.fromhex(bob.openpgp.fingerprint or ""), TrustLevel.DISTRUSTED)
    with pytest.raises(NoEligibleDevices) as info:
        alice.encrypt([bob.jid], "nothing left")
    assert "its OMEMO devices: 1 distrusted; its OpenPGP keys: 1 distrusted" in str(info.value)


def test_no_silent_downgrade_to_an_unverified_openpgp_key(net: OxNet) -> None:
    """Catalogue D5: once bob's OMEMO key is verified, an OpenPGP key that shows up when his OMEMO
    devices disappear is not trusted blindly."""
    alice = net.ox_device("alice@example.org", "alice")
    bob = net.device("bob@example.org", "bob-omemo")  # an OMEMO device without OpenPGP
    net.ox_prepare(alice, [bob.jid])
    alice.set_trust(bob.jid, bob.identity_key, TrustLevel.VERIFIED)
    assert alice.encrypt([bob.jid], "omemo").route(bob.jid) is Route.OMEMO
    # the server now shows no OMEMO device for bob, and an OpenPGP key appears
    for ns in ("urn:xmpp:omemo:2", "eu.siacs.conversations.axolotl"):
        net.run(alice, alice.on_device_list(bob.jid, ns, None))
    bob_pgp = net.ox_device("bob@example.org", "bob-pgp", omemo=False)
    net.ox_prepare(alice, [bob.jid])
    (key,) = alice.openpgp.keys(bob.jid)
    assert key.fingerprint == bob_pgp.openpgp.fingerprint and key.trust is TrustLevel.UNDECIDED
    with pytest.raises(NoEligibleDevices) as info:
        alice.encrypt([bob.jid], "downgrade?")
    assert "1 awaiting a trust decision" in str(info.value)
    alice.set_trust(bob.jid, bytes.fromhex(key.fingerprint), TrustLevel.VERIFIED)
    assert alice.encrypt([bob.jid], "after checking").route(bob.jid) is Route.OPENPGP


def test_without_openpgp_or_without_an_own_key(net: OxNet) -> None:
    plain = net.device("erin@example.org", "erin")  # an engine without OpenPGP
    dave = net.ox_device("dave@example.org", "dave", omemo=False)
    net.prepare(plain, [dave.jid])
    with pytest.raises(NoEligibleDevices) as info:
        plain.encrypt([dave.jid], "hi")
    assert "OpenPGP is not set up" in str(info.value)
    with pytest.raises(UsageError):
        plain.openpgp  # noqa: B018
    assert not plain.has_openpgp and dave.has_openpgp
    fresh = Engine.create(MemoryStorage(), "frank@example.org", clock=net.clock, openpgp=net.runner())
    net.run(fresh, fresh.openpgp.prepare([dave.jid]))
    with pytest.raises(NoEligibleDevices) as info:
        fresh.encrypt([dave.jid], "hi")
    assert "this device has no OpenPGP key yet" in str(info.value)
    with pytest.raises(UsageError):
        fresh.encrypt([], "nobody")
