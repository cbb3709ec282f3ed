"""Interop over a real server (Prosody and ejabberd) with an independent client: slixmpp 1.17 + slixmpp-omemo 2.2.0.

Our client session (``e2ee.client.session.E2EESession`` around the engine) is alice; bob is
slixmpp-omemo's XEP-0384 plugin made to speak legacy OMEMO only
(``tests/peers/slixmpp_omemo_peer.py`` explains why and how: slixmpp-omemo cannot decrypt
OMEMO 2, so it must not announce an OMEMO 2 device).  Both ends use their own code for
everything: PEP publication and fetches, X3DH, the double ratchet, XML.

1. alice → bob: 5 messages, the first a key exchange; bob decrypts all 5 with
   ``decrypt_message``.
2. bob → alice: 5 messages made by ``encrypt_message``; alice decrypts all 5 (legacy namespace,
   trust ``blind``).
3. 10 more each way, sent alternately without waiting in between (messages cross on the wire);
   all decrypt on both sides, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from e2ee.client.session import E2EESession, Received
from e2ee.engine import NAMESPACES, Engine
from e2ee.results import Decrypted, EmptyMessage
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from .peers.slixmpp_omemo_peer import LegacyOmemoPeer, PeerMessage
from .xmpp_server import Accounts

# slixmpp-omemo 2.2.0 itself uses the deprecated xmpp["xep_0060"] plugin access
pytestmark = pytest.mark.filterwarnings("ignore:Accessing plugins through the XMPP object:DeprecationWarning")


O2, LEGACY = NAMESPACES


#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob")


async def _until(done: Callable[[], bool], what: Callable[[], str], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what()}")
        await asyncio.sleep(0.005)


def test_interop_with_slixmpp_omemo_over_the_server(server: Accounts) -> None:
    timings: dict[str, float] = {}

    async def run() -> None:
        alice_jid, bob_jid = server.jid("alice"), server.jid("bob")
        got: list[Received] = []

        def alice_msgs() -> list[Decrypted]:
            return [r.result for r in got if isinstance(r.result, Decrypted)]

        def alice_errors() -> list[str]:
            return [repr(r.error) for r in got if r.error is not None]

        def bob_bodies() -> list[str | None]:
            return [m.body for m in bob.inbox if m.body is not None]

        def bob_errors() -> list[PeerMessage]:
            return [m for m in bob.inbox if m.error is not None]

        t0 = time.perf_counter()
        bob = LegacyOmemoPeer(bob_jid, "bob-pw", ca_file=server.cert)
        alice = E2EESession(
            Engine.create(MemoryStorage(), alice_jid), "alice-pw", ca_file=server.cert, on_received=got.append
        )
        # one after the other: the independent client does not retry ejabberd's races on a
        # first publication (ours does: tests/test_server_publish.py)
        await bob.start("127.0.0.1", server.port)
        await alice.start("127.0.0.1", server.port)
        timings["connect+publish both"] = time.perf_counter() - t0
        try:
            bob_device = await bob.device_id()

            # the peer announces nothing under OMEMO 2: only its legacy device list exists
            # (asked from bob's own connection: to others Prosody answers `forbidden` either way)
            for node in ("urn:xmpp:omemo:2:devices", "urn:xmpp:omemo:2:bundles"):
                with pytest.raises(IqError) as no_o2:
                    await bob.plugin["xep_0060"].get_items(bob_jid, node)
                assert no_o2.value.condition == "item-not-found", node
            legacy_list = await alice.plugin["xep_0060"].get_items(bob_jid, "eu.siacs.conversations.axolotl.devicelist")
            assert f'id="{bob_device}"' in str(legacy_list)

            # 1. alice -> bob
            t0 = time.perf_counter()
            sent1 = [f"alice to bob #{i}: Grüße ✓ <&>" for i in range(5)]
            for i, body in enumerate(sent1):
                result = await alice.send_text(bob_jid, body)
                assert result.ready, result.devices
                assert set(result.elements) == {LEGACY}
                reached = {(d.jid, d.device_id, d.namespace) for d in result.devices if d.outcome.value == "encrypted"}
                assert reached == {(bob_jid, bob_device, LEGACY)}, result.devices
                if i == 0:
                    timings["first send (fetch + X3DH)"] = time.perf_counter() - t0
            await _until(lambda: len(bob_bodies()) >= 5 or bool(bob_errors()), lambda: f"bob got {bob.inbox}")
            timings["phase 1: 5 alice->bob, all decrypted"] = time.perf_counter() - t0
            assert not bob_errors(), bob_errors()
            assert bob_bodies() == sent1
            assert bob.inbox[0].key_exchange, "the first message must be a key exchange"
            devices = [m.device for m in bob.inbox if m.device is not None]
            assert len(devices) == len(bob.inbox)
            assert {(d.bare_jid, d.device_id, d.namespaces) for d in devices} == {
                (alice_jid, alice.engine.device_id, frozenset({LEGACY}))
            }
            kex_count = sum(m.key_exchange for m in bob.inbox)
            timings["phase 1: key-exchange-wrapped messages"] = kex_count

            # 2. bob -> alice
            t0 = time.perf_counter()
            sent2 = [f"bob to alice #{i}: ça va? 🙂" for i in range(5)]
            for body in sent2:
                _stanza, errors = await bob.send_text(alice_jid, body)
                assert not errors, errors
            await _until(lambda: len(alice_msgs()) >= 5 or bool(alice_errors()), lambda: f"alice got {got}")
            timings["phase 2: 5 bob->alice, all decrypted"] = time.perf_counter() - t0
            assert not alice_errors(), alice_errors()
            assert [m.body for m in alice_msgs()] == sent2
            for m in alice_msgs():
                assert (m.jid, m.device_id, m.namespace, m.trust) == (bob_jid, bob_device, LEGACY, TrustLevel.BLIND)
            assert all(not r.carbon and r.stanza_from == bob_jid for r in got)

            # 3. interleaved: alternate sends without waiting for delivery in between
            t0 = time.perf_counter()
            to_bob = [f"interleaved a->b #{i}" for i in range(10)]
            to_alice = [f"interleaved b->a #{i}" for i in range(10)]
            for a_body, b_body in zip(to_bob, to_alice, strict=True):
                result = await alice.send_text(bob_jid, a_body)
                assert result.ready and set(result.elements) == {LEGACY}, result.devices
                _stanza, errors = await bob.send_text(alice_jid, b_body)
                assert not errors, errors
            await _until(
                lambda: (len(bob_bodies()) >= 15 and len(alice_msgs()) >= 15) or bool(bob_errors() or alice_errors()),
                lambda: f"bob got {bob.inbox}; alice got {got}",
            )
            timings["phase 3: 10+10 interleaved, all decrypted"] = time.perf_counter() - t0
            assert not bob_errors(), bob_errors()
            assert not alice_errors(), alice_errors()
            assert bob_bodies() == sent1 + to_bob
            assert [m.body for m in alice_msgs()] == sent2 + to_alice
            assert {(m.namespace, m.trust) for m in alice_msgs()} == {(LEGACY, TrustLevel.BLIND)}
            await asyncio.sleep(0.05)  # nothing else arrives late (e.g. a failed heartbeat)
            assert not bob_errors() and not alice_errors()
            assert len(bob_bodies()) == 15 and len(alice_msgs()) == 15
        finally:
            alice.disconnect()
            bob.disconnect()
            await asyncio.sleep(0.1)

    t = time.perf_counter()
    asyncio.run(run())
    timings["total"] = time.perf_counter() - t
    print("\n" + "\n".join(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}" for k, v in timings.items()))


def test_key_exchange_answer_without_body_reaches_the_engine(server: Accounts) -> None:
    """python-omemo answers every key exchange with an empty OMEMO message (a ``<message>`` with
    an ``<encrypted>`` and no ``<body>``) to complete the session.  Our session must hand it to
    the engine (an ``EmptyMessage`` result), and the engine must then stop wrapping its messages
    to that device as key exchanges — without waiting for a reply with text."""

    server.register("carol", "carol-pw")
    server.register("dave", "dave-pw")

    async def run() -> None:
        carol_jid, dave_jid = server.jid("carol"), server.jid("dave")
        got: list[Received] = []
        dave = LegacyOmemoPeer(dave_jid, "dave-pw", ca_file=server.cert)
        carol = E2EESession(
            Engine.create(MemoryStorage(), carol_jid), "carol-pw", ca_file=server.cert, on_received=got.append
        )
        # observation only: every legacy OMEMO stanza that reaches carol's connection, body or not
        wire: list[str] = []
        carol.register_handler(
            Callback(
                "test: legacy OMEMO on the wire",
                MatchXPath(f"{{jabber:client}}message/{{{LEGACY}}}encrypted"),
                lambda m: wire.append(str(m)),
            )
        )
        # one after the other: the independent client does not retry ejabberd's races on a
        # first publication (ours does: tests/test_server_publish.py)
        await dave.start("127.0.0.1", server.port)
        await carol.start("127.0.0.1", server.port)
        problems: list[str] = []
        try:
            assert (await carol.send_text(dave_jid, "one")).ready
            await _until(lambda: len(dave.inbox) >= 1, lambda: f"dave got {dave.inbox}")
            assert dave.inbox[0].body == "one" and dave.inbox[0].key_exchange and dave.inbox[0].error is None
            # dave's session-completing empty message
            await _until(lambda: len(wire) >= 1, lambda: "dave's key-exchange answer never reached carol's connection")
            assert "<body" not in wire[0]
            await asyncio.sleep(0.2)
            if not any(isinstance(r.result, EmptyMessage) and r.result.jid == dave_jid for r in got):
                problems.append(
                    "dave's body-less key-exchange answer reached carol's stream but E2EESession never "
                    f"decrypted it (received: {[(type(r.result).__name__, r.error) for r in got]})"
                )

            assert (await carol.send_text(dave_jid, "two")).ready
            await _until(lambda: len(dave.inbox) >= 2, lambda: f"dave got {dave.inbox}")
            assert dave.inbox[1].body == "two" and dave.inbox[1].error is None
            if dave.inbox[1].key_exchange:
                problems.append("carol's second message is still wrapped as a key exchange after dave's answer")
        finally:
            carol.disconnect()
            dave.disconnect()
            await asyncio.sleep(0.1)
        assert not problems, problems

    asyncio.run(run())
