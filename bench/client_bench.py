"""Our client against slixmpp-omemo through a real Prosody on 127.0.0.1, in one process and one
event loop, interleaved round by round.

Ours: two :class:`e2ee.client.session.E2EESession` (the engine on a keystore, as the ``e2ee`` command
runs it) talking OMEMO 2.  Theirs: two slixmpp-omemo 2.2.0 clients with python-omemo 2.1.0's
session manager and the twomemo backend (``tests/peers/slixmpp_omemo2_peer.py``: slixmpp-omemo's
plugin machinery for PEP, device lists, bundles, trust and empty messages, with the SCE envelope
OMEMO 2 needs built by the peer), so both sides do the same protocol.  Each pair has fresh
accounts every round, in each other's roster (mutual presence subscription, as contacts are), and
has been online once before: both devices exist and are published.

* ``client_connect``: one client starts again (connect, STARTTLS, authenticate, bind, then what it
  does before it is ready: ours enables carbons, reads its two device lists, publishes both
  device lists and both bundles, reads the newest page of its archive (MAM), sends presence;
  theirs sends presence and loads its session manager, which reads its device list and bundle
  and publishes what is missing).  Then the roster is fetched (untimed, the same for both).
* ``client_first_message``: alice's first message to bob, from the call that sends it until
  bob's handler has the decrypted text: device-list and bundle fetches, X3DH, the key exchange,
  bob's passive X3DH (and his bundle republication, which both do before handing out the text).
* ``client_latency_median`` / ``client_latency_p99``: later messages, one at a time, from the
  send call until the other side has the text; the direction changes every 5 messages, ours and
  theirs alternate message by message.  Per round the median and the 99th percentile of that
  round's messages; the rows show the median over rounds of those.

Requires Prosody (``tests/xmpp_server.py`` starts a private instance).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .timing import Sample

__all__ = ["run", "ClientResults"]

STEADY_BLOCK = 5


@dataclass
class ClientResults:
    connect: dict[str, Sample] = field(default_factory=lambda: {"ours": Sample(), "peer": Sample()})
    first: dict[str, Sample] = field(default_factory=lambda: {"ours": Sample(), "peer": Sample()})
    median: dict[str, Sample] = field(default_factory=lambda: {"ours": Sample(), "peer": Sample()})
    p99: dict[str, Sample] = field(default_factory=lambda: {"ours": Sample(), "peer": Sample()})
    messages: int = 0


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


class _Side:
    """One pair of clients of one implementation: start/stop, send and wait for the text.
    Subclasses make a client (:meth:`_client`) and send one message (:meth:`_send`)."""

    name = ""

    def __init__(self, server: Any, users: dict[str, str]) -> None:
        self.server = server
        self.users = users  # role -> jid
        self.clients: dict[str, Any] = {}
        self.inbox: dict[str, asyncio.Queue[str]] = {role: asyncio.Queue() for role in users}

    def _client(self, role: str) -> Any:
        raise NotImplementedError

    async def _send(self, frm: str, to: str, body: str) -> None:
        raise NotImplementedError

    async def start(self, role: str) -> float:
        c = self._client(role)
        t0 = time.perf_counter()
        await c.start("127.0.0.1", self.server.port)
        elapsed = time.perf_counter() - t0
        await c.get_roster()
        self.clients[role] = c
        return elapsed

    async def send_and_wait(self, frm: str, to: str, body: str) -> float:
        t0 = time.perf_counter()
        await self._send(frm, to, body)
        await _wait_for(self.inbox[to], body)
        return time.perf_counter() - t0

    async def stop(self) -> None:
        raise NotImplementedError


async def _wait_for(queue: asyncio.Queue[str], body: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.wait_for(queue.get(), max(0.01, deadline - time.monotonic()))
        if got == body:
            return


class _Ours(_Side):
    name = "ours"

    def __init__(self, server: Any, users: dict[str, str], directory: Path) -> None:
        from e2ee.keystore import KdfParams, Keystore

        super().__init__(server, users)
        self.stores = {role: Keystore.create(directory / f"{role}.db", "pw", kdf=KdfParams.floor()) for role in users}
        self.engines: dict[str, Any] = {}

    def _client(self, role: str) -> Any:
        from e2ee.client.session import E2EESession, Received
        from e2ee.engine import Engine
        from e2ee.results import Decrypted

        if role not in self.engines:
            self.engines[role] = Engine.create(self.stores[role], self.users[role])
        queue = self.inbox[role]

        def received(r: Received) -> None:
            if isinstance(r.result, Decrypted) and r.result.body is not None:
                queue.put_nowait(r.result.body)

        user = self.users[role].split("@")[0]
        return E2EESession(self.engines[role], f"{user}-pw", ca_file=self.server.cert, on_received=received)

    async def _send(self, frm: str, to: str, body: str) -> None:
        result = await self.clients[frm].send_text(self.users[to], body)
        if not result.ready:
            raise RuntimeError(f"ours: nothing sent to {to}: {result.devices}")

    async def stop(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()))
        self.clients.clear()

    def close(self) -> None:
        for ks in self.stores.values():
            ks.close()


class _Theirs(_Side):
    name = "peer"

    def __init__(self, server: Any, users: dict[str, str]) -> None:
        super().__init__(server, users)
        self.storages: dict[str, Any] = {}
        self.talked: set[tuple[str, str]] = set()

    def _client(self, role: str) -> Any:
        from tests.peers.slixmpp_omemo2_peer import Omemo2Peer

        queue = self.inbox[role]

        class Peer(Omemo2Peer):
            async def _on_message(self, msg: Any) -> None:
                before = len(self.inbox)
                await super()._on_message(msg)
                for m in self.inbox[before:]:
                    if m.error is not None:
                        raise RuntimeError(f"peer: decryption failed: {m.error!r}")
                    if m.body is not None:
                        queue.put_nowait(m.body)

        user = self.users[role].split("@")[0]
        c = Peer(self.users[role], f"{user}-pw", ca_file=self.server.cert)
        if role in self.storages:
            c.omemo._storage = self.storages[role]  # the same device again
        else:
            self.storages[role] = c.omemo._storage
        return c

    async def _send(self, frm: str, to: str, body: str) -> None:
        from slixmpp.jid import JID

        client = self.clients[frm]
        if (frm, to) not in self.talked:
            # the device list: a contact's PEP notification need not have arrived yet (ours
            # fetches what it lacks, see Engine.prepare): download it, as ours does
            await client.omemo.refresh_device_lists({JID(self.users[to])}, force_download=True)
            self.talked.add((frm, to))
        await client.send_text(self.users[to], body)

    async def stop(self) -> None:
        for c in self.clients.values():
            c.disconnect()
        await asyncio.sleep(0.1)
        self.clients.clear()


async def _befriend(side: _Side) -> None:
    """First time online for both, and mutual presence subscription (auto-accepted)."""
    await side.start("a")
    await side.start("b")
    a, b = side.clients["a"], side.clients["b"]
    a.send_presence_subscription(pto=side.users["b"])
    for _ in range(400):
        await asyncio.sleep(0.01)
        await a.get_roster()
        await b.get_roster()
        ra, rb = a.client_roster, b.client_roster
        jb, ja = side.users["b"], side.users["a"]
        if jb in ra and ra[jb]["subscription"] == "both" and ja in rb and rb[ja]["subscription"] == "both":
            break
    else:
        raise RuntimeError(f"{side.name}: presence subscription did not complete")
    await side.stop()


async def _round(server: Any, r: int, steady: int, res: ClientResults, tmp: Path) -> None:
    ours = _Ours(server, {"a": f"oa{r}@{server.domain}", "b": f"ob{r}@{server.domain}"}, tmp)
    theirs = _Theirs(server, {"a": f"ta{r}@{server.domain}", "b": f"tb{r}@{server.domain}"})
    try:
        await _befriend(ours)
        await _befriend(theirs)
        for role in ("a", "b"):  # connect again, interleaved
            for side in (ours, theirs):
                res.connect[side.name].rounds.append(await side.start(role) * 1e6)
        for side in (ours, theirs):
            res.first[side.name].rounds.append(await side.send_and_wait("a", "b", "the first message") * 1e6)
            await side.send_and_wait("b", "a", "the answer")
        lat: dict[str, list[float]] = {"ours": [], "peer": []}
        for i in range(steady):
            frm, to = ("a", "b") if (i // STEADY_BLOCK) % 2 == 0 else ("b", "a")
            for side in (ours, theirs) if i % 2 == 0 else (theirs, ours):
                lat[side.name].append(await side.send_and_wait(frm, to, f"message {i} from {frm}") * 1e6)
        for name, values in lat.items():
            res.median[name].rounds.append(statistics.median(values))
            res.p99[name].rounds.append(_p99(values))
        res.messages += steady
    finally:
        await ours.stop()
        await theirs.stop()
        ours.close()


def run(rounds: int, steady: int, progress: Callable[[str], None] = lambda s: None) -> ClientResults:
    """Start a private Prosody, run ``rounds`` rounds with ``steady`` steady-state messages per
    side each, stop it."""
    from tests.xmpp_server import running

    res = ClientResults()
    users = [f"{p}{r}" for r in range(rounds) for p in ("oa", "ob", "ta", "tb")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # slixmpp-omemo uses deprecated slixmpp plugin access
        with tempfile.TemporaryDirectory(prefix="e2ee-bench-prosody-") as d:
            with running(Path(d) / "server", users) as server:
                for r in range(rounds):
                    progress(f"client round {r + 1}/{rounds}")
                    tmp = Path(d) / f"round{r}"
                    tmp.mkdir()
                    asyncio.run(_round_main(server, r, steady, res, tmp))
    return res


async def _round_main(server: Any, r: int, steady: int, res: ClientResults, tmp: Path) -> None:
    from e2ee.client.session import cancel_pending_tasks

    try:
        await _round(server, r, steady, res, tmp)
    finally:
        await cancel_pending_tasks()
