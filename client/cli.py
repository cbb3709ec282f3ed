"""The ``e2ee`` command line.  Exit status: 0 success, 2 usage error, 1 anything else, with one
clear line on stderr (never a traceback, unless ``--debug`` or ``E2EE_DEBUG=1``).  Untrusted text
(bodies, labels, JIDs, names, error lines) is printed through :mod:`e2ee.client.safe_text`.

Staying connected: ``chat [JID | ROOM]`` is an interactive conversation (docs/cli-chat.md);
``recv --follow`` prints messages until SIGINT or SIGTERM; ``send JID -`` reads the message from
standard input.  The exit statuses are :data:`EXIT_STATUS` (``e2ee --help`` shows them).

Commands that need no server: ``init``, ``fingerprint``, ``devices``, ``trust``, ``distrust``,
``verify``, ``passphrase`` and ``demo``.  The keystore passphrase comes from ``E2EE_PASSPHRASE``
or a prompt; a new one (``init``, ``passphrase``) from ``E2EE_NEW_PASSPHRASE`` or a prompt.

OpenPGP for XMPP (the fallback): ``publish`` creates and announces our OpenPGP key too; ``send``
uses OMEMO when the contact has a trusted OMEMO device, else OpenPGP when it has a trusted OpenPGP
key, else refuses (``--plaintext`` allows clear text explicitly); ``devices`` lists OpenPGP keys;
``trust``/``distrust`` take 40-digit OpenPGP fingerprints too; ``backup`` publishes the secret key
encrypted under a new backup code (printed once) and ``restore`` reads it back on another device
(code from ``E2EE_BACKUP_CODE`` or a prompt).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from e2ee.errors import E2EEError, UsageError

from .cli_chat import _chat
from .cli_common import _explain, _server
from .cli_keys import _devices, _fingerprint, _init, _passphrase, _set_trust, _verify
from .cli_messages import _recv, _send, _send_file
from .cli_openpgp import _backup, _publish, _restore
from .cli_rooms import _room_affiliation, _room_create, _room_members, _room_send
from .home import default_home
from .safe_text import safe

#: the exit statuses, for ``e2ee --help`` (docs/cli-chat.md says the same)
EXIT_STATUS = """exit status:
  0  done: sent, received, or a long-running command (chat, recv --follow) ended by
     /quit, Ctrl-D, Ctrl-C (SIGINT) or SIGTERM after closing its session and the keystore
  1  failed: not sent (no trusted device or key), a file not downloaded, the server
     unreachable or refusing, the connection lost, a damaged or locked keystore
  2  usage error: a bad argument, a wrong fingerprint, an empty message on stdin
one line on stderr says why for 1 and 2 (see docs/cli-chat.md)"""


def _global_options(p: argparse.ArgumentParser, default: str | None) -> None:
    """The options every command takes.  Given before the command they set the defaults; each
    command accepts them too (``default`` is then :data:`argparse.SUPPRESS`, so an option not
    repeated after the command keeps the value given before it)."""
    p.add_argument("--home", type=Path, default=default, help=f"data directory (default: {default_home()})")
    p.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default,
        help="XMPP server to connect to (default: the JID's domain, 5222)",
    )
    p.add_argument(
        "--ca-file", type=Path, metavar="PATH", default=default, help="trust this CA certificate for the server"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e2ee",
        description="End-to-end encryption for XMPP (OMEMO 2, legacy OMEMO).",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(p, None)
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error (or E2EE_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the demo: in one process, or over --server (registers two accounts)")
    demo.add_argument("--domain", help="XMPP domain for the demo accounts (default: the --server host)")
    init = sub.add_parser("init", help="create the keystore and this device's identity")
    init.add_argument("--jid", required=True, help="your XMPP address (bare JID)")
    init.add_argument("--device-label", help="a label for this device (shown to your contacts)")
    fp = sub.add_parser("fingerprint", help="show this device's fingerprint and verification URI")
    fp.add_argument("--qr", action="store_true", help="also draw the URI as a QR code")
    fp.add_argument("--json", action="store_true", help="machine-readable output")
    dev = sub.add_parser("devices", help="list what is known of an account's devices")
    dev.add_argument("jid")
    dev.add_argument("--json", action="store_true")
    for name, what in (("trust", "mark a contact's key as verified"), ("distrust", "refuse a contact's key")):
        t = sub.add_parser(name, help=what)
        t.add_argument("jid")
        t.add_argument("fingerprint", help="64 hex digits (OMEMO) or 40 (OpenPGP); spaces and colons allowed")
    v = sub.add_parser("verify", help="apply a scanned verification URI (xmpp:...?omemo-sid-...)")
    v.add_argument("uri")
    sub.add_parser("passphrase", help="change the keystore passphrase")
    sub.add_parser("publish", help="connect and publish device lists, bundles and the OpenPGP key")
    send = sub.add_parser("send", help="encrypt and send a message (OMEMO, else OpenPGP)")
    send.add_argument("jid")
    send.add_argument("text", help="the message; - reads it from standard input (UTF-8, up to its end)")
    send.add_argument("--json", action="store_true")
    send_file = sub.add_parser("send-file", help="encrypt a file, upload it (HTTP File Upload) and send the link")
    send_file.add_argument("jid")
    send_file.add_argument("path", type=Path)
    send_file.add_argument("--json", action="store_true")
    send.add_argument(
        "--plaintext",
        action="store_true",
        help="send in clear text when the contact has no trusted OMEMO device or OpenPGP key",
    )
    sub.add_parser("backup", help="publish an encrypted backup of the OpenPGP secret key; prints its code")
    restore = sub.add_parser(
        "restore", help="restore the OpenPGP secret key from the backup (E2EE_BACKUP_CODE or prompt)"
    )
    restore.add_argument("--replace", action="store_true", help="replace this device's own OpenPGP key")
    chat = sub.add_parser(
        "chat",
        help="stay connected and converse with JID (or in ROOM); /help inside lists the commands",
        epilog="Leave with /quit, Ctrl-D, Ctrl-C or SIGTERM: exit 0; 1 when the server cannot be reached or the"
        " connection is lost.  See docs/cli-chat.md.",
    )
    chat.add_argument("target", nargs="?", metavar="JID|ROOM", help="the contact or room (later: /msg JID)")
    chat.add_argument("--nick", help="nickname in a room (default: your JID's localpart)")
    chat.add_argument("--download-dir", type=Path, metavar="DIR", help="download, decrypt and save shared files here")
    recv = sub.add_parser("recv", help="connect and print decrypted messages")
    recv.add_argument("--count", type=int, default=None, help="stop after N messages")
    recv.add_argument(
        "--timeout", type=float, default=None, help="stop after this many seconds (default 10; none with --follow)"
    )
    recv.add_argument(
        "--follow",
        action="store_true",
        help="stay connected and print messages as they arrive until SIGINT (Ctrl-C) or SIGTERM (exit 0)",
    )
    recv.add_argument("--json", action="store_true", help="one JSON object per line")
    recv.add_argument("--download-dir", type=Path, metavar="DIR", help="download, decrypt and save shared files here")
    recv.add_argument(
        "--room",
        action="append",
        default=[],
        metavar="ROOM",
        help="also join this group chat and print its messages (repeatable)",
    )
    recv.add_argument("--nick", help="nickname in the rooms (default: your JID's localpart)")
    _room_parsers(sub)
    for command in sub.choices.values():  # global options also where people type them: after the command
        _global_options(command, argparse.SUPPRESS)
    return p


def _room_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Group chats (XEP-0045): members-only rooms that show real JIDs."""
    create = sub.add_parser("room-create", help="create a members-only, non-anonymous room for OMEMO")
    create.add_argument("room", help="room@service")
    create.add_argument("--member", action="append", default=[], metavar="JID", help="make JID a member (repeatable)")
    create.add_argument("--nick")
    aff = sub.add_parser(
        "room-affiliation", help="change someone's affiliation in a room (owner, admin, member, none, outcast)"
    )
    aff.add_argument("room")
    aff.add_argument("jid")
    aff.add_argument("affiliation", choices=("owner", "admin", "member", "none", "outcast"))
    aff.add_argument("--nick")
    members = sub.add_parser("room-members", help="join a room, check it and list who receives its messages")
    members.add_argument("room")
    members.add_argument("--nick")
    members.add_argument("--json", action="store_true")
    rsend = sub.add_parser("room-send", help="encrypt a message for every member of a room and send it there")
    rsend.add_argument("room")
    rsend.add_argument("text")
    rsend.add_argument("--nick")
    rsend.add_argument("--json", action="store_true")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import logging

    # slixmpp logs connection trouble with tracebacks: the CLI says one line itself
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    debug = args.debug or os.environ.get("E2EE_DEBUG") == "1"
    if not debug:  # nor do background tasks' tracebacks ("Task exception was never retrieved")
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        if args.command == "demo" and not args.server:
            from .demo import run

            return run(sys.stdout)
        if args.command == "demo":
            import asyncio

            from .demo_server import run_over_server

            host, port = _server(args, "")
            try:
                return asyncio.run(run_over_server(sys.stdout, host, port, args.domain or host, args.ca_file))
            except (ConnectionError, TimeoutError) as e:
                raise ConnectionError(f"demo over {host}:{port} failed: {e or 'timed out'}") from None
        handlers = {
            "init": _init,
            "fingerprint": _fingerprint,
            "devices": _devices,
            "trust": lambda a: _set_trust(a, True),
            "distrust": lambda a: _set_trust(a, False),
            "verify": _verify,
            "passphrase": _passphrase,
            "publish": _publish,
            "send": _send,
            "send-file": _send_file,
            "recv": _recv,
            "chat": _chat,
            "room-create": _room_create,
            "room-affiliation": _room_affiliation,
            "room-members": _room_members,
            "room-send": _room_send,
            "backup": _backup,
            "restore": _restore,
        }
        return int(handlers[args.command](args))
    except UsageError as exc:
        print(f"e2ee: {safe(exc)}", file=sys.stderr)
        return 2
    except E2EEError as exc:
        print(f"e2ee: error: {safe(_explain(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output closed early (e.g. piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConnectionError as exc:  # the server could not be reached, or refused us
        print(f"e2ee: error: {safe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("e2ee: interrupted", file=sys.stderr)
        return 1
    except OSError as exc:
        print(safe(f"e2ee: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")), file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback on request
        if debug:
            raise
        print(
            f"e2ee: error: unexpected {type(exc).__name__}: {safe(exc)} (run with --debug for details)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
