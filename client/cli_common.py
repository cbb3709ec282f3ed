"""Helpers the ``e2ee`` commands share: the data directory, fingerprint forms, the
connect-run-disconnect frame of the online commands, per-device send reports and the one-line
explanation of an error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from e2ee.errors import E2EEError, NoEligibleDevices, UsageError
from e2ee.keystore.errors import (
    KeystoreCorrupt,
    KeystoreDowngrade,
    KeystoreLocked,
    RollbackDetected,
    UnsupportedKeystoreVersion,
    WrongPassphrase,
)

from .home import Account, default_home, open_engine
from .safe_text import safe

if TYPE_CHECKING:
    from e2ee.keystore import Keystore
    from e2ee.results import EncryptResult

    from .session import E2EESession
    from .types import Received

    #: What an online command runs once connected: ``work(session, received)``, its exit status.
    Work = Callable[[E2EESession, list[Received]], Awaitable[int]]


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home) if args.home is not None else default_home()


def _fp(ik: bytes) -> str:
    from e2ee.verification import fingerprint_omemo

    return fingerprint_omemo(ik)


def _ed_fp(ed25519: bytes) -> str:
    """The Ed25519 form of an identity key, grouped as OMEMO 2 clients (Converse.js, Kaidan) show it."""
    h = ed25519.hex()
    return " ".join(h[i : i + 8] for i in range(0, 64, 8))


def _pgp_fp(fpr: str) -> str:
    from e2ee.verification import fingerprint_openpgp

    return fingerprint_openpgp(fpr)


def _server(args: argparse.Namespace, jid: str) -> tuple[str, int]:
    if not args.server:
        return jid.partition("@")[2] or jid, 5222
    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--server wants HOST:PORT, not {args.server!r}")
    return host, int(port)


def _password(ks: Keystore) -> str:
    """The XMPP password ``init`` kept in the keystore; :class:`UsageError` when there is none."""
    password = Account(ks).password
    if password is None:
        raise UsageError("no XMPP password in the keystore: run 'e2ee init' again")
    return password


def _online(args: argparse.Namespace, work: Work, *, openpgp_generate: bool = False) -> int:
    """Open the keystore, connect, run ``work(session)``, disconnect.  An existing OpenPGP key is
    re-announced at connect; ``openpgp_generate`` creates one first when there is none."""
    import asyncio

    from slixmpp.exceptions import XMPPError

    from .session import E2EESession, cancel_pending_tasks
    from .stanza_errors import describe

    ks, engine = open_engine(_home(args))
    with ks:
        password = _password(ks)
        host, port = _server(args, engine.jid)

        async def run() -> int:
            received: list[Received] = []
            session = E2EESession(
                engine, password, ca_file=args.ca_file, on_received=received.append, openpgp_generate=openpgp_generate
            )
            try:
                print(f"connecting to {safe(host)}:{port} as {safe(engine.jid)}...", file=sys.stderr)
                await session.start(host, port)
                return int(await work(session, received))
            finally:
                await session.close()
                await cancel_pending_tasks()

        try:
            return asyncio.run(run())
        except (ConnectionError, TimeoutError) as e:
            raise ConnectionError(f"could not connect to {host}:{port}: {e or 'timed out'}") from None
        except XMPPError as e:  # str(e) would be the whole error stanza
            raise ConnectionError(f"the server refused: {describe(e)}") from None


def _device_rows(result: EncryptResult) -> list[dict[str, object]]:
    """The per-device outcome of an OMEMO send (an ``EncryptResult``) as JSON rows."""
    return [
        {"jid": d.jid, "device": d.device_id, "namespace": d.namespace, "status": d.outcome.value}
        for d in result.devices
    ]


def _print_rows(rows: list[dict[str, object]]) -> None:
    for r in rows:
        print(f"{safe(r['jid'])}/{r['device']}: {r['status']} ({r['namespace'] or '-'})")


def _report(result: EncryptResult, args: argparse.Namespace, head: dict[str, object]) -> int:
    """Per-device status of an OMEMO send (a file or a group message), like ``send``'s, after
    ``head`` in JSON; exit status 1 when nothing was sent."""
    rows = _device_rows(result)
    if args.json:
        print(json.dumps({**head, "recipients": rows}))
    else:
        _print_rows(rows)
    if not result.ready:
        why = (
            f"no trusted device for {safe(', '.join(result.unreachable))}"
            if result.unreachable
            else "no device to encrypt for"
        )
        print(f"e2ee: error: not sent: {why}", file=sys.stderr)
        return 1
    return 0


def _explain(exc: E2EEError) -> str:
    """One line for the user."""
    if isinstance(exc, WrongPassphrase):
        return "wrong passphrase"
    if isinstance(exc, KeystoreLocked):
        return "the keystore is in use by another e2ee process"
    if isinstance(exc, RollbackDetected):
        return f"{exc} (refusing to continue: sessions would reuse keys)"
    if isinstance(exc, KeystoreDowngrade):
        return f"refusing a weakened keystore: {exc}"
    if isinstance(exc, UnsupportedKeystoreVersion):
        return f"this keystore needs a newer e2ee: {exc}"
    if isinstance(exc, KeystoreCorrupt):
        return f"the keystore is damaged: {exc}"
    if isinstance(exc, NoEligibleDevices):
        return f"not sent: {exc}"
    return str(exc)
