"""The ``e2ee chat`` command: the interactive conversation of :mod:`e2ee.client.chat` in a
terminal (scripts use ``e2ee send JID -`` and ``e2ee recv --follow`` instead)."""

from __future__ import annotations

import argparse
import sys

from e2ee.errors import UsageError

from .cli_common import _home, _password, _server
from .home import open_engine
from .safe_text import safe
from .signals import stop_on_sigterm


def _chat(args: argparse.Namespace) -> int:
    import asyncio

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("chat needs a terminal; in a script use 'e2ee send JID -' and 'e2ee recv --follow'")
    if args.download_dir is not None and not args.download_dir.is_dir():
        raise UsageError(f"--download-dir: not a directory: {args.download_dir}")
    from .chat import Chat

    stop_on_sigterm()
    ks, engine = open_engine(_home(args))
    with ks:
        password = _password(ks)
        host, port = _server(args, engine.jid)

        async def run() -> int:
            chat = Chat(
                engine,
                password,
                host,
                port,
                target=args.target,
                ca_file=args.ca_file,
                nick=args.nick,
                download_dir=args.download_dir,
            )
            return await chat.run()

        code = asyncio.run(run())
    print(f"e2ee chat: left; the keystore of {safe(engine.jid)} is closed", file=sys.stderr)
    return code
