"""A private XMPP server for the README's five-minute tour, for someone with no accounts at hand:

    .venv/bin/python -m tests.tour_server [--kind prosody|ejabberd] [--dir DIR]

starts a private server on 127.0.0.1 (the same as the tests use, :mod:`tests.xmpp_server`; the
system services are never touched), registers the tour's two accounts and prints the lines to
paste into the tour's terminal: the two JIDs and an ``e2ee`` shell function that adds
``--server`` and ``--ca-file``.  It runs until Ctrl-C (or SIGTERM), then stops the server and
removes its directory (unless ``--dir`` was given).  ``tests/test_readme.py`` runs the tour
against it as written.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from .xmpp_server import KINDS, XmppServer, available, running_server

#: The XMPP password of both tour accounts (``e2ee init`` asks for it).
PASSWORD = "tour-pw"
USERS = ("alice", "bob")


def paste_lines(server: XmppServer, alice: str, bob: str) -> list[str]:
    """What the tour's terminal needs to use ``server``: the tour's JIDs, and ``e2ee`` with the
    server's loopback address and CA certificate added to every command."""
    options = f"--server 127.0.0.1:{server.port} --ca-file {shlex.quote(str(server.cert))}"
    return [f"ALICE={alice} BOB={bob}", f'e2ee() {{ command e2ee {options} "$@"; }}']


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.tour_server", description="A private XMPP server for the README's tour."
    )
    p.add_argument("--kind", choices=KINDS, default="prosody", help="which server (default: prosody)")
    p.add_argument("--dir", type=Path, help="keep the server's files here (default: a temporary directory)")
    args = p.parse_args(argv)
    if not available(args.kind):
        print(f"tour server: {args.kind} is not installed (bash scripts/demo.sh installs it)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    with tempfile.TemporaryDirectory(prefix="e2ee-tour-") as scratch:
        directory = args.dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            with running_server(args.kind, directory) as server:
                alice, bob = (server.register(user, PASSWORD) for user in USERS)
                print(f"A private {args.kind} for the tour runs on 127.0.0.1:{server.port} (Ctrl-C stops it).")
                print(f"Accounts {alice} and {bob}, both with the XMPP password {PASSWORD!r}.")
                print("Paste these two lines into the tour's terminal:")
                print()
                for line in paste_lines(server, alice, bob):
                    print(f"    {line}")
                print(flush=True)
                signal.pause()  # until Ctrl-C or SIGTERM
        except KeyboardInterrupt:
            print("tour server stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
