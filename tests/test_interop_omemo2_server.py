"""OMEMO 2 interop over a real server (Prosody and ejabberd) with an independent client: python-omemo 2.1.0's
``SessionManager`` with the twomemo backend, driven through slixmpp 1.17 + slixmpp-omemo 2.2.0's
plugin machinery, with XEP-0420 (SCE) envelopes built and parsed on the peer side.

Our client session (``e2ee.client.session.E2EESession`` around the engine) is alice; bob is
``tests/peers/slixmpp_omemo2_peer.py`` (it explains how and why: slixmpp-omemo itself has no SCE,
so the peer builds ``<envelope xmlns='urn:xmpp:sce:1'>`` bytes as the ``urn:xmpp:omemo:2``
plaintext and calls ``SessionManager.encrypt``/``decrypt`` directly).  Bob announces only an
OMEMO 2 device, so everything between the two is ``urn:xmpp:omemo:2``.  Both ends use their own
code for everything else: PEP publication and fetches, X3DH, the double ratchet, XML.

Bob's python-omemo runs with ``STALENESS_MAGIC_NUMBER`` lowered to 1, so that besides the
key-exchange answer it sends heartbeats (empty messages) whenever it has received two messages
in a row on one chain; all its empty messages go over the wire and must reach alice's engine as
``EmptyMessage`` results.

1. alice → bob: 5 messages, the first a key exchange (``kex='true'`` on bob's ``<key>``); bob
   decrypts all 5, the envelopes carry ``<from jid=alice>``/``<to jid=bob>``.
2. bob → alice: 5 messages; alice decrypts all 5 (OMEMO 2, trust ``blind``, SCE time stamp).
3. 10 more each way, sent alternately without waiting in between (messages cross on the wire);
   all decrypt on both sides, in order, and none of alice's is still a key exchange.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from e2ee.client.session import E2EESession, Received
from e2ee.engine import NAMESPACES, Engine
from e2ee.results import Decrypted, EmptyMessage
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel

from .peers.slixmpp_omemo2_peer import Omemo2Message, Omemo2Peer
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


def test_omemo2_both_ways_with_python_omemo_over_the_server(server: Accounts) -> None:
    timings: dict[str, float | int] = {}

    async def run() -> None:
        alice_jid, bob_jid = server.jid("alice"), server.jid("bob")
        got: list[Received] = []

        def alice_msgs() -> list[Decrypted]:
            return [r.result for r in got if isinstance(r.result, Decrypted)]

        def alice_empty() -> list[EmptyMessage]:
            return [r.result for r in got if isinstance(r.result, EmptyMessage)]

        def alice_errors() -> list[str]:
            return [repr(r.error) for r in got if r.error is not None]

        def bob_texts() -> list[Omemo2Message]:
            return [m for m in bob.inbox if m.body is not None and m.error is None]

        def bob_errors() -> list[Omemo2Message]:
            return [m for m in bob.inbox if m.error is not None]

        t0 = time.perf_counter()
        bob = Omemo2Peer(bob_jid, "bob-pw", ca_file=server.cert, staleness_threshold=1)
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

            # the peer announces an OMEMO 2 device and nothing under the legacy namespace
            bob_pubsub: Any = bob.plugin["xep_0060"]
            alice_pubsub: Any = alice.plugin["xep_0060"]
            with pytest.raises(IqError) as no_legacy:
                await bob_pubsub.get_items(bob_jid, "eu.siacs.conversations.axolotl.devicelist")
            assert no_legacy.value.condition == "item-not-found"
            o2_list = await alice_pubsub.get_items(bob_jid, "urn:xmpp:omemo:2:devices")
            assert f'id="{bob_device}"' in str(o2_list)

            # 1. alice -> bob
            t0 = time.perf_counter()
            sent1 = [f"alice to bob #{i}: Grüße ✓ <&> ]]>" for i in range(5)]
            for i, body in enumerate(sent1):
                result = await alice.send_text(bob_jid, body)
                assert result.ready, result.devices
                assert set(result.elements) == {O2}
                reached = {(d.jid, d.device_id, d.namespace) for d in result.devices if d.outcome.value == "encrypted"}
                assert reached == {(bob_jid, bob_device, O2)}, result.devices
                if i == 0:
                    timings["first send (fetch + X3DH)"] = time.perf_counter() - t0
            await _until(lambda: len(bob_texts()) >= 5 or bool(bob_errors()), lambda: f"bob got {bob.inbox}")
            timings["phase 1: 5 alice->bob, all decrypted"] = time.perf_counter() - t0
            assert not bob_errors(), [(m, m.raw) for m in bob_errors()]
            assert [m.body for m in bob_texts()] == sent1
            assert bob.inbox[0].key_exchange, "the first message must be a key exchange"
            for m in bob_texts():
                assert m.device is not None
                assert (m.device.bare_jid, m.device.device_id, m.device.namespaces) == (
                    alice_jid,
                    alice.engine.device_id,
                    frozenset({O2}),
                )
                assert (m.envelope_from, m.envelope_to, m.stanza_type) == (alice_jid, bob_jid, "chat")
                assert m.stamp and m.stamp.endswith("Z"), m.stamp
            timings["phase 1: key-exchange-wrapped messages"] = sum(m.key_exchange for m in bob.inbox)
            # bob's key-exchange answer (an empty message) reaches alice's engine
            assert bob.omemo.sent_empty, "python-omemo sent no key-exchange answer"
            assert {e.bare_jid for e in bob.omemo.sent_empty} == {alice_jid}
            await _until(lambda: len(alice_empty()) >= 1 or bool(alice_errors()), lambda: f"alice got {got}")
            assert not alice_errors(), alice_errors()

            # 2. bob -> alice
            t0 = time.perf_counter()
            sent2 = [f"bob to alice #{i}: ça va? 🙂 <&>" for i in range(5)]
            for body in sent2:
                _stanza, errors = await bob.send_text(alice_jid, body)
                assert not errors, errors
            await _until(lambda: len(alice_msgs()) >= 5 or bool(alice_errors()), lambda: f"alice got {got}")
            timings["phase 2: 5 bob->alice, all decrypted"] = time.perf_counter() - t0
            assert not alice_errors(), alice_errors()
            assert [m.body for m in alice_msgs()] == sent2
            for d in alice_msgs():
                assert (d.jid, d.device_id, d.namespace, d.trust) == (bob_jid, bob_device, O2, TrustLevel.BLIND)
                assert d.timestamp is not None and not d.time_suspicious
                assert [c.tag for c in d.content] == ["{jabber:client}body"]
            assert all(not r.carbon and r.stanza_from == bob_jid for r in got)

            # 3. interleaved: alternate sends without waiting for delivery in between
            t0 = time.perf_counter()
            n_before = len(bob.inbox)
            to_bob = [f"interleaved a->b #{i}" for i in range(10)]
            to_alice = [f"interleaved b->a #{i}" for i in range(10)]
            for a_body, b_body in zip(to_bob, to_alice, strict=True):
                result = await alice.send_text(bob_jid, a_body)
                assert result.ready and set(result.elements) == {O2}, result.devices
                _stanza, errors = await bob.send_text(alice_jid, b_body)
                assert not errors, errors
            await _until(
                lambda: (len(bob_texts()) >= 15 and len(alice_msgs()) >= 15) or bool(bob_errors() or alice_errors()),
                lambda: f"bob got {bob.inbox}; alice got {got}",
            )
            timings["phase 3: 10+10 interleaved, all decrypted"] = time.perf_counter() - t0
            assert not bob_errors(), [(m, m.raw) for m in bob_errors()]
            assert not alice_errors(), alice_errors()
            assert [m.body for m in bob_texts()] == sent1 + to_bob
            assert [m.body for m in alice_msgs()] == sent2 + to_alice
            assert {(m.namespace, m.trust) for m in alice_msgs()} == {(O2, TrustLevel.BLIND)}
            phase3 = [m for m in bob.inbox[n_before:] if m.body is not None]
            assert not any(m.key_exchange for m in phase3), (
                "alice still sends key exchanges after the session was answered"
            )
            kex_flags = [m.key_exchange for m in bob_texts()]
            assert kex_flags == sorted(kex_flags, reverse=True), (
                f"key exchange again after a normal message: {kex_flags}"
            )

            # every empty message bob's library sent (key-exchange answer, heartbeats) reached alice's
            # engine as an EmptyMessage from bob's device, and nothing else arrives late
            await _until(
                lambda: len(alice_empty()) >= len(bob.omemo.sent_empty) or bool(alice_errors()),
                lambda: f"bob sent {bob.omemo.sent_empty}; alice got {[type(r.result).__name__ for r in got]}",
            )
            await asyncio.sleep(0.05)
            assert not bob_errors() and not alice_errors(), (bob_errors(), alice_errors())
            assert len(alice_empty()) == len(bob.omemo.sent_empty)
            assert {(e.jid, e.device_id, e.namespace) for e in alice_empty()} == {(bob_jid, bob_device, O2)}
            assert not any(e.key_exchange for e in bob.omemo.sent_empty)  # bob answered, he did not initiate
            assert len(bob_texts()) == 15 and len(alice_msgs()) == 15
            timings["alice's empty messages bob decrypted"] = sum(m.body is None for m in bob.inbox)
            timings["bob's empty messages (kex answer + heartbeats)"] = len(bob.omemo.sent_empty)
            timings["alice's key-exchange-wrapped messages in total"] = sum(kex_flags)
        finally:
            alice.disconnect()
            bob.disconnect()
            await asyncio.sleep(0.1)

    t = time.perf_counter()
    asyncio.run(run())
    timings["total"] = time.perf_counter() - t
    print("\n" + "\n".join(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}" for k, v in timings.items()))
