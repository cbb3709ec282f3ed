"""``python -m bench.cli_probe OUT ours|peer ARGS...``: run ``e2ee ARGS`` (ours) or
``python -m bench.cli_peer ARGS`` (the slixmpp-omemo script) in this process, as they run on
their own, with timestamps taken on the way; at exit, write them to the JSON file ``OUT``.

Nothing of the programs is changed: the probe wraps a few functions from the outside (the
keystore's opening, the session's start, send and close, slixmpp's stream events) and adds
slixmpp stanza filters that note every stanza in and out (kind, type, id, the first child's
name and the PEP node, no content).  ``E2EE_BENCH_T0`` (set by :mod:`bench.cli_bench`) is the
wall-clock time at which the parent started the process, so the interpreter's start counts.

Times are ``time.time()`` seconds (the parent's clock is the same clock).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

T_MAIN = time.time()
EVENTS: dict[str, float] = {}
MARKS: list[tuple[str, float]] = []
STANZAS: list[dict[str, object]] = []


def mark(name: str) -> None:
    MARKS.append((name, time.time()))


def _summary(direction: str, stanza: Any) -> dict[str, object]:
    xml = getattr(stanza, "xml", None)
    out: dict[str, object] = {"t": time.time(), "dir": direction}
    if xml is None:
        return out
    tag = xml.tag.rpartition("}")[2]
    out.update(kind=tag, type=xml.get("type"), id=xml.get("id"))
    child = next(iter(xml), None)
    if child is not None:
        out["child"] = child.tag
        for sub in child.iter():
            node = sub.get("node")
            if node is not None:
                out["node"] = node
                op = sub.tag.rpartition("}")[2]
                out["op"] = op
                break
    return out


def _install_slixmpp_hooks() -> None:
    from slixmpp.xmlstream import XMLStream

    init = XMLStream.__init__

    def patched_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)

        def incoming(stanza: Any) -> Any:
            STANZAS.append(_summary("in", stanza))
            return stanza

        def outgoing(stanza: Any) -> Any:
            STANZAS.append(_summary("out", stanza))
            return stanza

        self.add_filter("in", incoming)
        self.add_filter("out", outgoing)

    XMLStream.__init__ = patched_init  # type: ignore[method-assign]
    event = XMLStream.event

    def patched_event(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in EVENTS:
            EVENTS[name] = time.time()
        return event(self, name, *args, **kwargs)

    XMLStream.event = patched_event  # type: ignore[method-assign]


def _timed_sync(owner: Any, attr: str, name: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name}:begin")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(f"{name}:end")

    setattr(owner, attr, wrapper)


def _timed_async(owner: Any, attr: str, name: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is None:
        return

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name}:begin")
        try:
            return await fn(*args, **kwargs)
        finally:
            mark(f"{name}:end")

    setattr(owner, attr, wrapper)


def _install_ours() -> Callable[[list[str]], int]:
    from e2ee.client import cli, cli_common, session

    _timed_sync(cli_common, "open_engine", "keystore_open")
    cls = session.E2EESession
    _timed_async(cls, "start", "start")
    _timed_async(cls, "send_chat", "send")
    _timed_async(cls, "close", "close")
    init = cls.__init__

    def patched_init(self: Any, *args: Any, on_received: Any = None, **kwargs: Any) -> None:
        def received(r: Any) -> None:
            mark("received")
            if on_received is not None:
                on_received(r)

        init(self, *args, on_received=received, **kwargs)

    cls.__init__ = patched_init  # type: ignore[method-assign]
    main: Callable[[list[str]], int] = cli.main
    return main


def _install_peer() -> Callable[[list[str]], int]:
    from tests.peers.slixmpp_omemo2_peer import Omemo2Peer
    from tests.peers.slixmpp_peer_base import PeerClient

    from . import cli_peer

    _timed_async(PeerClient, "start", "start")
    _timed_async(Omemo2Peer, "send_text", "send")
    _timed_async(cli_peer, "_close", "close")
    on_message = Omemo2Peer._on_message

    async def received(self: Any, msg: Any) -> None:
        await on_message(self, msg)
        if self.inbox and self.inbox[-1].body is not None:
            mark("received")

    Omemo2Peer._on_message = received  # type: ignore[method-assign]
    init = cli_peer.JsonFileStorage.__init__

    def storage_init(self: Any, path: Any) -> None:
        mark("keystore_open:begin")
        init(self, path)
        mark("keystore_open:end")

    cli_peer.JsonFileStorage.__init__ = storage_init  # type: ignore[method-assign]
    main: Callable[[list[str]], int] = cli_peer.main
    return main


def _write(out: str) -> None:
    mark("exit")
    data = {
        "t0": float(os.environ.get("E2EE_BENCH_T0", T_MAIN)),
        "main": T_MAIN,
        "events": EVENTS,
        "marks": MARKS,
        "stanzas": STANZAS,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f)


def run(argv: list[str]) -> int:
    out, side, *args = argv
    _install_slixmpp_hooks()
    main = _install_ours() if side == "ours" else _install_peer()
    mark("imported")
    atexit.register(_write, out)
    try:
        return main(args)
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
