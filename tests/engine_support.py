"""Test harness for the engine: a fake PEP service that runs the engine's effects, deterministic
clocks and randomness, and snapshots of the stored bytes.

Nothing here is a mock of our own code: engines are real, storage is the real
:class:`~e2ee.storage.MemoryStorage`, and the "server" only stores and returns XML items the way
PEP does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from e2ee.engine import NAMESPACES, Engine, parse_device_list
from e2ee.nodes import DEVICE_LIST_NODES, bundle_node, bundle_publish_item
from e2ee.results import Effect, EncryptResult, FetchBundle, FetchDeviceList, Publish, SendMessage
from e2ee.rng import Random
from e2ee.storage import MemoryStorage, Storage
from e2ee.trust import TrustPolicy

from .support import seeded_rng

O2 = "urn:xmpp:omemo:2"
LEGACY = "eu.siacs.conversations.axolotl"

#: PEP node names come from the engine (written once, in e2ee/nodes.py); the wire tests
#: (tests/test_engine.py, the interop tests) spell them out literally.
DEVICE_LIST_NODE = DEVICE_LIST_NODES


def bundle_item(namespace: str, device_id: int) -> tuple[str, str]:
    """(node, item id) under which a device's bundle is published."""
    return bundle_node(namespace, device_id), bundle_publish_item(namespace, device_id)


class Clock:
    """A settable clock."""

    def __init__(self, start: datetime = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Pep:
    """Items per (bare JID, node, item id), as a PEP service keeps them."""

    items: dict[tuple[str, str, str], ET.Element] = field(default_factory=dict)

    def publish(self, jid: str, effect: Publish) -> None:
        self.items[(jid, effect.node, effect.item_id)] = effect.payload

    def get(self, jid: str, node: str, item_id: str) -> ET.Element | None:
        return self.items.get((jid, node, item_id))

    def device_list(self, jid: str, namespace: str) -> ET.Element | None:
        return self.get(jid, DEVICE_LIST_NODE[namespace], "current")

    def bundle(self, jid: str, namespace: str, device_id: int) -> ET.Element | None:
        return self.get(jid, *bundle_item(namespace, device_id))


@dataclass
class Net:
    """Runs effects against the fake PEP service; collects the empty messages engines send."""

    pep: Pep = field(default_factory=Pep)
    clock: Clock = field(default_factory=Clock)
    #: (from engine, SendMessage) in order
    outbox: list[tuple[Engine, SendMessage]] = field(default_factory=list)
    #: every engine made by :meth:`device`; device-list publications are pushed to all of them
    #: (they all advertise ``+notify``)
    engines: list[Engine] = field(default_factory=list)

    def publish(self, owner: Engine, effect: Publish) -> None:
        self.pep.publish(owner.jid, effect)
        ns = next((n for n, node in DEVICE_LIST_NODE.items() if node == effect.node), None)
        if ns is not None:
            for engine in self.engines:
                self.run(engine, engine.on_device_list(owner.jid, ns, effect.payload))

    def device(
        self,
        jid: str,
        seed: str,
        *,
        namespaces: tuple[str, ...] = NAMESPACES,
        policy: TrustPolicy = TrustPolicy.BTBV,
        label: str | None = None,
        rng: Random | None = None,
        storage: Storage | None = None,
    ) -> Engine:
        """A new device of ``jid``, created after fetching the account's lists, published.
        ``namespaces`` limits what it announces (a legacy-only device, say).  Randomness is
        seeded from ``seed`` unless ``rng`` is given."""
        lists = []
        for ns in NAMESPACES:
            elem = self.pep.device_list(jid, ns)
            if elem is not None:
                lists.append(parse_device_list(ns, elem))
        engine = Engine.create(
            storage if storage is not None else MemoryStorage(),
            jid,
            lists,
            label=label,
            rng=rng or seeded_rng(seed),
            clock=self.clock,
            policy=policy,
        )
        self.engines.append(engine)
        for effect in engine.publish():
            if isinstance(effect, Publish) and self._namespace_of(effect.node) in namespaces:
                self.publish(engine, effect)
        return engine

    @staticmethod
    def _namespace_of(node: str) -> str:
        return O2 if node.startswith("urn:xmpp:omemo:2") else LEGACY

    def run(self, engine: Engine, effects: tuple[Effect, ...] | list[Effect]) -> None:
        """Carry out effects for ``engine``: publish, fetch (feeding results back), queue sends."""
        for effect in effects:
            if isinstance(effect, Publish):
                self.publish(engine, effect)
            elif isinstance(effect, FetchDeviceList):
                more = engine.on_device_list(
                    effect.jid, effect.namespace, self.pep.device_list(effect.jid, effect.namespace)
                )
                self.run(engine, more)
            elif isinstance(effect, FetchBundle):
                elem = self.pep.bundle(effect.jid, effect.namespace, effect.device_id)
                if elem is not None:
                    self.run(engine, engine.on_bundle(effect.jid, effect.device_id, effect.namespace, elem))
            elif isinstance(effect, SendMessage):
                self.outbox.append((engine, effect))

    def prepare(self, engine: Engine, recipients: list[str]) -> None:
        """Fetch what the engine asks for before encrypting (as a client would)."""
        for _ in range(4):
            fetches = engine.prepare(recipients, use_openpgp=False)
            if not fetches:
                break
            self.run(engine, fetches)

    def encrypt(self, engine: Engine, recipients: list[str], body: str, **kw: object) -> EncryptResult:
        """Fetch what the engine asks for, then encrypt."""
        self.prepare(engine, recipients)
        return engine.encrypt_omemo(recipients, body, **kw)  # type: ignore[arg-type]

    def take_outbox(self) -> list[tuple[Engine, SendMessage]]:
        out, self.outbox = self.outbox, []
        return out


def snapshot(engine: Engine) -> dict[str, dict[str, bytes]]:
    storage = engine.storage
    assert isinstance(storage, MemoryStorage)
    return storage.snapshot()
