"""``python -m bench.cli_peer --jid JID --password PW --server HOST:PORT --ca-file CERT --storage FILE
send TO TEXT | recv [--count 1] [--timeout S]``: the minimal slixmpp-omemo program that
:mod:`bench.cli_bench` measures against ``e2ee send`` / ``e2ee recv --count 1``.

It is what a person would write with slixmpp-omemo 2.2.0 and python-omemo 2.1.0 (OMEMO 2 only,
through :class:`tests.peers.slixmpp_omemo2_peer.Omemo2Peer`, which adds the SCE envelope that
slixmpp-omemo lacks): log in, let the plugin load its state and publish what is missing, encrypt
and send one message (or wait for one and decrypt it), disconnect.  Its state lives in a JSON
file (no passphrase), written on every change, as slixmpp-omemo's own example stores it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import JSONType

__all__ = ["JsonFileStorage", "main"]


class JsonFileStorage(Storage):
    """python-omemo's storage in one JSON file, rewritten on every store and delete."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self._data: dict[str, JSONType] = {}
        if path.exists():
            self._data = json.loads(path.read_text(encoding="utf-8"))

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data), encoding="utf-8")
        tmp.replace(self._path)

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self._data[key]) if key in self._data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self._data[key] = value
        self._save()

    async def _delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._save()


async def _run(args: argparse.Namespace) -> int:
    from tests.peers.slixmpp_omemo2_peer import Omemo2Peer

    client = Omemo2Peer(args.jid, args.password, ca_file=args.ca_file)
    client.omemo._storage = JsonFileStorage(args.storage)
    host, _, port = args.server.rpartition(":")
    try:
        await client.start(host, int(port))
        if args.command == "send":
            await client.send_text(args.to, args.text)
        else:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + args.timeout
            while loop.time() < deadline:
                done = [m for m in client.inbox if m.body is not None]
                if len(done) >= args.count:
                    for m in done:
                        print(json.dumps({"body": m.body}))
                    break
                await asyncio.sleep(0.005)
            else:
                print("cli_peer: no message", file=sys.stderr)
                return 1
    finally:
        await _close(client)
    return 0


async def _close(client: Any) -> None:
    if client.transport is not None:
        try:
            await asyncio.wait_for(asyncio.shield(client.disconnect(wait=2.0)), 3)
        except Exception:  # noqa: BLE001 (closing: nothing left to do)
            pass
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_peer", description=__doc__)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca-file", type=Path, required=True)
    parser.add_argument("--storage", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send")
    send.add_argument("to")
    send.add_argument("text")
    recv = sub.add_parser("recv")
    recv.add_argument("--count", type=int, default=1)
    recv.add_argument("--timeout", type=float, default=20)
    args = parser.parse_args(argv)
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
