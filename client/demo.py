"""``e2ee demo`` (no server): alice's two devices and bob's two devices exchange encrypted
messages through the engine in one process.

A dictionary stands in for the PEP service (device lists and bundles) and a list for the
message stream; everything else is the real engine: device ids, bundles, both namespaces (bob's
phone speaks only legacy OMEMO, as Conversations does), key exchanges and their empty answers,
copies for our own other devices, Blind Trust Before Verification and what changes once a
fingerprint is verified.  It ends with what to try next (:data:`NEXT`): the README's tour with
the real keystore and a real server.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TextIO

from e2ee.engine import NAMESPACES, Engine, parse_device_list
from e2ee.nodes import DEVICE_LIST_NODES
from e2ee.results import (
    Decrypted,
    Effect,
    EmptyMessage,
    FetchBundle,
    FetchDeviceList,
    NotForThisDevice,
    Publish,
    SendMessage,
)
from e2ee.storage import MemoryStorage
from e2ee.trust import TrustLevel, fingerprint

O2, LEGACY = NAMESPACES
_LIST_NODES = {node: ns for ns, node in DEVICE_LIST_NODES.items()}
_SHORT = {O2: "omemo:2", LEGACY: "legacy"}


class World:
    """The PEP items of every account, and the engines that watch them."""

    def __init__(self, out: TextIO) -> None:
        self.items: dict[tuple[str, str], dict[str, ET.Element]] = {}  # (jid, node) -> items, newest last
        self.engines: dict[str, Engine] = {}
        self.speaks: dict[int, tuple[str, ...]] = {}  # device id -> namespaces it publishes in
        self.out = out

    def device(self, name: str, jid: str, namespaces: tuple[str, ...] = NAMESPACES) -> Engine:
        lists = [
            parse_device_list(ns, elem)
            for ns in NAMESPACES
            if (elem := self.item(jid, DEVICE_LIST_NODES[ns], None)) is not None
        ]
        engine = Engine.create(MemoryStorage(), jid, lists, label=name)
        self.engines[name] = engine
        self.speaks[engine.device_id] = namespaces
        self.run(engine, engine.publish())
        spoken = " + ".join(_SHORT[ns] for ns in namespaces)
        print(f"  {name:13} {jid}/{engine.device_id:<10} ({spoken})", file=self.out)
        print(f"  {'':13} fingerprint {fingerprint(engine.identity_key)}", file=self.out)
        return engine

    def item(self, jid: str, node: str, item_id: str | None) -> ET.Element | None:
        """Item ``item_id`` of ``jid``'s ``node``, or its newest item when ``item_id`` is None."""
        node_items = self.items.get((jid, node), {})
        if item_id is not None:
            return node_items.get(item_id)
        return next(reversed(node_items.values()), None)

    def run(self, engine: Engine, effects: list[Effect] | tuple[Effect, ...]) -> None:
        for e in effects:
            if isinstance(e, Publish):
                if _namespace(e.node) not in self.speaks[engine.device_id]:
                    continue  # a legacy-only client publishes nothing in the OMEMO 2 nodes
                node_items = self.items.setdefault((engine.jid, e.node), {})
                node_items.pop(e.item_id, None)
                node_items[e.item_id] = e.payload
                ns = _LIST_NODES.get(e.node)
                if ns is not None:  # PEP +notify: every engine hears about the new list
                    for other in self.engines.values():
                        self.run(other, other.on_device_list(engine.jid, ns, e.payload))
            elif isinstance(e, FetchDeviceList):
                elem = self.item(e.jid, e.node, None)
                self.run(engine, engine.on_device_list(e.jid, e.namespace, elem))
            elif isinstance(e, FetchBundle):
                elem = self.item(e.jid, e.node, e.item_id)
                if elem is not None:
                    self.run(engine, engine.on_bundle(e.jid, e.device_id, e.namespace, elem))
            elif isinstance(e, SendMessage):
                self.deliver(engine, e.jid, [e.encrypted], quiet=True)

    def send(self, name: str, to: str, text: str) -> None:
        engine = self.engines[name]
        print(f"\n  {name} -> {to}: {text!r}", file=self.out)
        for _ in range(3):  # fetch device lists and bundles first, as a client would
            fetches = engine.prepare([to])
            if not fetches:
                break
            self.run(engine, fetches)
        result = engine.encrypt_omemo([to], text)
        for d in result.devices:
            label = _name_of(self, d.jid, d.device_id)
            print(f"    {label:13} {_SHORT.get(d.namespace, ''):8} {d.outcome.value}", file=self.out)
        if not result.ready:
            print(f"    not sent: no trusted device for {', '.join(result.unreachable)}", file=self.out)
            return
        self.deliver(engine, to, list(result.elements.values()))
        if result.own_copy:  # what only our own devices read goes to our own bare JID
            self.deliver(engine, engine.jid, list(result.own_copy.values()))

    def deliver(self, sender: Engine, to: str, elements: list[ET.Element], quiet: bool = False) -> None:
        for other_name, other in self.engines.items():
            if other is sender or other.jid not in (to, sender.jid):
                continue
            for elem in elements:
                res = other.decrypt(elem, sender.jid, to=to)
                if isinstance(res, Decrypted):
                    print(
                        f"    {other_name:13} decrypted ({_SHORT[res.namespace]}, sender {res.trust.value}): {res.body!r}",
                        file=self.out,
                    )
                elif isinstance(res, EmptyMessage) and not quiet:
                    print(f"    {other_name:13} got an empty message", file=self.out)
                elif not isinstance(res, (EmptyMessage, NotForThisDevice)):
                    print(f"    {other_name:13} {type(res).__name__}", file=self.out)
                self.run(other, res.effects)


def _namespace(node: str) -> str:
    return O2 if node.startswith("urn:xmpp:omemo:2") else LEGACY


def _name_of(world: World, jid: str, device_id: int) -> str:
    for name, e in world.engines.items():
        if e.jid == jid and e.device_id == device_id:
            return name
    return f"{jid}/{device_id}"


def run(out: TextIO) -> int:
    w = World(out)
    print("Devices (a dictionary plays the PEP service):", file=out)
    w.device("alice-laptop", "alice@example.org")
    w.device("alice-phone", "alice@example.org")
    w.device("bob-desktop", "bob@example.net")
    w.device("bob-phone", "bob@example.net", namespaces=(LEGACY,))

    w.send("alice-laptop", "bob@example.net", "Hi Bob! Encrypted for both of your devices and my phone.")
    w.send("bob-phone", "alice@example.org", "Hello Alice, from my phone.")
    w.send("alice-phone", "bob@example.net", "And this is my phone.")

    alice = w.engines["alice-laptop"]
    desktop = w.engines["bob-desktop"]
    print(f"\n  alice-laptop verifies bob-desktop's fingerprint {fingerprint(desktop.identity_key)}", file=out)
    alice.set_trust("bob@example.net", desktop.identity_key, TrustLevel.VERIFIED)
    print("  bob adds a tablet: after a verification, new devices are no longer trusted blindly", file=out)
    tablet = w.device("bob-tablet", "bob@example.net")
    w.send("alice-laptop", "bob@example.net", "Who is this new device?")
    print("\n  alice-laptop verifies bob-tablet too", file=out)
    alice.set_trust("bob@example.net", tablet.identity_key, TrustLevel.VERIFIED)
    w.send("alice-laptop", "bob@example.net", "Now your tablet can read this as well.")
    print("\ndemo finished: every trusted device decrypted every message meant for it", file=out)
    print(NEXT, file=out)
    return 0


#: The demo's last words: the README's five-minute tour, in short, and where the rest is.
NEXT = """
What to try next: the five-minute tour in README.md does this for real, over an XMPP server,
with keystores: two accounts, a message read on a second device, a fingerprint verified by QR.
  No accounts at hand? A private server for the tour, in a second terminal:
      .venv/bin/python -m tests.tour_server
  Then, in the tour's terminal, from the repository root (each command asks for passphrases):
      . .venv/bin/activate
      ALICE=alice@example.org BOB=bob@example.net    # or paste what the tour server printed
      e2ee --home ~/e2ee-tour/alice init --jid $ALICE
      e2ee --home ~/e2ee-tour/bob init --jid $BOB
      e2ee --home ~/e2ee-tour/alice publish
      e2ee --home ~/e2ee-tour/bob publish
      e2ee --home ~/e2ee-tour/alice send $BOB 'Hello Bob'
      e2ee --home ~/e2ee-tour/bob recv --count 1
      e2ee --home ~/e2ee-tour/bob fingerprint --qr
  A conversation that stays connected: e2ee --home ~/e2ee-tour/alice chat $BOB
  (docs/cli-chat.md: the chat's commands, send from scripts, recv --follow).
  This demo over a server that allows in-band registration: e2ee --server HOST:PORT demo
  Every command: e2ee --help and docs/reference.md. Embedding the engine or the slixmpp
  plugin in an application: README.md, "Embedding"."""
