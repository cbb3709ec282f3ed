"""The ``e2ee`` command line.  Exit status: 0 success, 2 usage error, 1 anything else, with one
clear line on stderr (never a traceback, unless ``--debug`` or ``E2EE_DEBUG=1``).  Untrusted text
(bodies, labels, JIDs, names, error lines) is printed through :mod:`e2ee.client.safe_text`.

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
import json
import os
import sys
from pathlib import Path
from typing import Any

from e2ee.errors import (
    E2EEError,
    KeystoreCorrupt,
    KeystoreDowngrade,
    KeystoreLocked,
    NoEligibleDevices,
    PeerError,
    RollbackDetected,
    UnsupportedKeystoreVersion,
    UsageError,
    WrongPassphrase,
)

from .home import (
    Account,
    default_home,
    initial_passphrase,
    kdf_params,
    keystore_path,
    new_passphrase,
    open_engine,
    xmpp_password,
)
from .safe_text import message_header, message_line, safe


def _global_options(p: argparse.ArgumentParser, default: Any) -> None:
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
    p = argparse.ArgumentParser(prog="e2ee", description="End-to-end encryption for XMPP (OMEMO 2, legacy OMEMO).")
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
    send.add_argument("text")
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
    recv = sub.add_parser("recv", help="connect and print decrypted messages")
    recv.add_argument("--count", type=int, default=None, help="stop after N messages")
    recv.add_argument("--timeout", type=float, default=10.0, help="stop after this many seconds (default 10)")
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


def _room_parsers(sub: Any) -> None:
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


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home) if args.home is not None else default_home()


def _init(args: argparse.Namespace) -> int:
    from e2ee.engine import Engine
    from e2ee.keystore import Keystore

    home = _home(args)
    path = keystore_path(home)
    if path.exists():
        raise UsageError(f"{home} already holds a keystore")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    passphrase = initial_passphrase()
    password = xmpp_password()
    print(f"creating the keystore in {safe(home)} (deriving the key from the passphrase)...", file=sys.stderr)
    with Keystore.create(path, passphrase, kdf=kdf_params()) as ks:
        engine = Engine.create(ks, args.jid, label=args.device_label)
        Account.store(ks, password)
        print(f"{safe(engine.jid)}: device {engine.device_id}")
        print(f"fingerprint {_fp(engine.identity_key)}  (Curve25519: Conversations, Dino, Gajim, Monal)")
        print(f"ed25519     {_ed_fp(engine.identity_key_ed25519)}  (OMEMO 2: Converse.js, Kaidan)")
    return 0


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


def _sign_bit_warning(engine: Any) -> None:
    """Identities made before issue 20 may have the Ed25519 sign bit set; say so, and how out."""
    if engine.identity_sign_bit_set:
        print(
            "e2ee: warning: this device's identity key has its Ed25519 sign bit set, so Converse.js"
            " (and other clients that verify by XEdDSA) refuse its bundle and cannot write to it;"
            " a key cannot change: replace the device (`e2ee --home NEW_DIR init --jid "
            f"{engine.jid}`, then `e2ee --home NEW_DIR publish`) and verify the new one with"
            " your contacts",
            file=sys.stderr,
        )


def _fingerprint(args: argparse.Namespace) -> int:
    ks, engine = open_engine(_home(args))
    with ks:
        _sign_bit_warning(engine)
        uri = engine.own_uri()
        pgp = engine.openpgp.fingerprint
        if args.json:
            out = {
                "jid": engine.jid,
                "device": engine.device_id,
                "fingerprint": engine.identity_key.hex(),
                "fingerprint_ed25519": engine.identity_key_ed25519.hex(),
                "uri": uri,
                "openpgp": pgp,
                "sign_bit_set": engine.identity_sign_bit_set,
            }
            print(json.dumps(out))
        else:
            print(f"{safe(engine.jid)}: device {engine.device_id}")
            # what a person compares: legacy clients show the Curve25519 form, OMEMO 2 ones the Ed25519 form
            print(f"fingerprint {_fp(engine.identity_key)}  (Curve25519: Conversations, Dino, Gajim, Monal)")
            print(f"ed25519     {_ed_fp(engine.identity_key_ed25519)}  (OMEMO 2: Converse.js, Kaidan)")
            if pgp is not None:
                print(f"openpgp     {_pgp_fp(pgp)}")
            print(safe(uri))
        if args.qr:
            from .qr import qr_terminal

            print(qr_terminal(uri))
    return 0


def _devices(args: argparse.Namespace) -> int:
    ks, engine = open_engine(_home(args))
    with ks:
        _sign_bit_warning(engine)
        infos = engine.devices(args.jid)
        rows: list[dict[str, Any]] = [
            {
                "device": d.device_id,
                "namespaces": list(d.namespaces),
                "active": bool(d.namespaces),
                "fingerprint": d.identity_key.hex() if d.identity_key else None,
                "fingerprint_ed25519": d.ed25519_key.hex() if d.ed25519_key else None,
                "trust": d.trust.value if d.trust else None,
                "label": d.label,
            }
            for d in infos
        ]
        rows += [
            {
                "device": None,
                "namespaces": ["urn:xmpp:openpgp:0"],
                "active": k.announced or k.own,
                "fingerprint": k.fingerprint,
                "fingerprint_ed25519": None,
                "trust": k.trust.value if k.trust else None,
                "label": "this device" if k.own else (None if k.available else "not fetched"),
            }
            for k in engine.openpgp.keys(args.jid)
        ]
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print(f"no device of {safe(args.jid)} is known yet")
        for r in rows if not args.json else ():
            state = "active" if r["active"] else "inactive"
            if r["device"] is None:  # an OpenPGP key
                fp, device = _pgp_fp(r["fingerprint"]), "openpgp"
            else:
                fp = _fp(bytes.fromhex(r["fingerprint"])) if r["fingerprint"] else "(no key yet)"
                device = r["device"]
            label = f" '{safe(r['label'])}'" if r["label"] else ""
            print(f"{device:>10} {state:8} {r['trust'] or '-':10} {fp}{label}")
            if r["fingerprint_ed25519"]:  # an OMEMO 2 device: what Converse.js and Kaidan show for it
                print(f"{'':>10} {'':8} {'ed25519':10} {_ed_fp(bytes.fromhex(r['fingerprint_ed25519']))}")
    return 0


def _set_trust(args: argparse.Namespace, verified: bool) -> int:
    from e2ee.trust import TrustLevel
    from e2ee.verification import parse_fingerprint, parse_openpgp_fingerprint

    try:
        try:
            pgp: str | None = parse_openpgp_fingerprint(args.fingerprint)
        except PeerError:
            pgp = None
        key = bytes.fromhex(pgp) if pgp is not None else parse_fingerprint(args.fingerprint)
    except PeerError as e:
        raise UsageError(f"{e} (or an OpenPGP fingerprint of 40 hex digits)") from None
    ks, engine = open_engine(_home(args))
    with ks:
        level = TrustLevel.VERIFIED if verified else TrustLevel.DISTRUSTED
        if pgp is not None:
            engine.set_trust(args.jid, key, level)
            print(f"{safe(args.jid)}: OpenPGP key {_pgp_fp(pgp)} is now {level.value}")
        else:  # either form of an OMEMO key (Curve25519 or Ed25519), compared canonically
            print(_decision_line(args.jid, engine.decide_fingerprint(args.jid, key, level)))
    return 0


def _decision_line(jid: str, d: Any) -> str:
    """One line for a :class:`~e2ee.engine.KeyDecision`; "verified" only for a known key."""
    jid = safe(jid)  # from a URI or the command line: may come from a scanned code
    where = f"device {d.device_id} " if d.device_id is not None else ""
    if not d.matched:
        how = "" if d.level.value == "verified" else f" ({d.level.value})"
        return (
            f"{jid}: {where}{_fp(d.given)} matches no key of {jid} seen so far; remembered{how},"
            " applies when that key appears"
        )
    devices = ", ".join(str(x) for x in d.devices)
    form = " (given in its Ed25519 form)" if d.given != d.identity_key else ""
    owner = f"device {devices} " if devices else where
    return f"{jid}: {owner}{_fp(d.identity_key)}{form} is now {d.level.value}"


def _verify(args: argparse.Namespace) -> int:
    from e2ee.verification import parse_uri

    try:
        parse_uri(args.uri)
    except PeerError as e:
        raise UsageError(f"not a verification URI: {e}") from None
    ks, engine = open_engine(_home(args))
    with ks:
        jid, decisions = engine.apply_uri(args.uri)
        for d in decisions:
            print(_decision_line(jid, d))
    return 0


def _passphrase(args: argparse.Namespace) -> int:
    ks, _engine = open_engine(_home(args))
    with ks:
        new = new_passphrase()
        ks.change_passphrase(new)
        print("passphrase changed")
    return 0


def _server(args: argparse.Namespace, jid: str) -> tuple[str, int]:
    if not args.server:
        return jid.partition("@")[2] or jid, 5222
    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--server wants HOST:PORT, not {args.server!r}")
    return host, int(port)


def _online(args: argparse.Namespace, work: Any, *, openpgp_generate: bool = False) -> int:
    """Open the keystore, connect, run ``work(session)``, disconnect.  An existing OpenPGP key is
    re-announced at connect; ``openpgp_generate`` creates one first when there is none."""
    import asyncio

    from slixmpp.exceptions import XMPPError

    from .session import E2EESession, cancel_pending_tasks
    from .stanza_errors import describe

    ks, engine = open_engine(_home(args))
    with ks:
        password = Account(ks).password
        if password is None:
            raise UsageError("no XMPP password in the keystore: run 'e2ee init' again")
        host, port = _server(args, engine.jid)

        async def run() -> int:
            received: list[Any] = []
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


def _publish(args: argparse.Namespace) -> int:
    async def work(session: Any, _received: list[Any]) -> int:
        print(f"published device {session.engine.device_id} (both namespaces)")
        print(f"published OpenPGP key {_pgp_fp(session.engine.openpgp.fingerprint)}")
        return 0

    return _online(args, work, openpgp_generate=True)


def _send(args: argparse.Namespace) -> int:
    from e2ee.fallback import Route

    async def work(session: Any, _received: list[Any]) -> int:
        sent = await session.send_chat(args.jid, args.text, allow_plaintext=args.plaintext)
        routed = sent.recipients[0]
        rows = _device_rows(routed.omemo) if routed.omemo is not None else []
        if args.json:
            print(
                json.dumps(
                    {
                        "id": None,
                        "to": args.jid,
                        "route": routed.route.value,
                        "recipients": rows,
                        "openpgp": list(routed.fingerprints),
                    }
                )
            )
        else:
            _print_rows(rows)
            for fpr in routed.fingerprints:
                print(f"openpgp {_pgp_fp(fpr)}: encrypted")
            if routed.route is Route.PLAINTEXT:
                print(f"{safe(routed.jid)}: sent in clear text (--plaintext)")
        if routed.route is Route.OMEMO and (routed.omemo is None or not routed.omemo.ready):
            print(f"e2ee: error: not sent: no trusted device for {safe(args.jid)}", file=sys.stderr)
            return 1
        return 0

    return _online(args, work)


def _backup(args: argparse.Namespace) -> int:
    async def work(session: Any, _received: list[Any]) -> int:
        backup = session.engine.openpgp.backup()
        await session.run_effects(list(backup.effects))
        print(backup.code)
        print("published the encrypted OpenPGP secret key; keep this backup code to restore it", file=sys.stderr)
        return 0

    return _online(args, work)


def _restore(args: argparse.Namespace) -> int:
    from e2ee.openpgp import SECRET_KEY_NODE, parse_backup_code

    from .home import ask

    code = os.environ.get("E2EE_BACKUP_CODE")
    if code is None:
        code = ask("Backup code: ", "E2EE_BACKUP_CODE")
    code = parse_backup_code(code)  # a malformed code is refused before connecting

    async def work(session: Any, _received: list[Any]) -> int:
        own = session.boundjid.bare
        elem = await session.e2ee._first_item(own, SECRET_KEY_NODE, None)
        if elem is None:
            raise UsageError(f"no OpenPGP secret-key backup on {own}'s server (make one with 'e2ee backup')")
        fpr = session.engine.openpgp.restore(elem, code, replace=args.replace)
        await session.run_effects(session.engine.openpgp.publish())
        print(f"restored OpenPGP key {_pgp_fp(fpr)}")
        return 0

    return _online(args, work)


def _device_rows(result: Any) -> list[dict[str, Any]]:
    """The per-device outcome of an OMEMO send (an ``EncryptResult``) as JSON rows."""
    return [
        {"jid": d.jid, "device": d.device_id, "namespace": d.namespace, "status": d.outcome.value}
        for d in result.devices
    ]


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"{safe(r['jid'])}/{r['device']}: {r['status']} ({r['namespace'] or '-'})")


def _report(result: Any, args: argparse.Namespace, head: dict[str, Any]) -> int:
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


def _room_create(args: argparse.Namespace) -> int:
    async def work(session: Any, _received: list[Any]) -> int:
        state = await session.rooms.create(args.room, args.nick, args.member)
        members = safe(", ".join(sorted(state.members)))
        print(f"created {safe(state.jid)} (members-only, real JIDs visible); members: {members}")
        session.rooms.leave(state.jid)
        return 0

    return _online(args, work)


def _room_affiliation(args: argparse.Namespace) -> int:
    async def work(session: Any, _received: list[Any]) -> int:
        state = await session.rooms.join(args.room, args.nick)
        await session.rooms.set_affiliation(state.jid, args.jid, args.affiliation)
        print(f"{safe(args.jid)} is now {args.affiliation} in {safe(state.jid)}")
        session.rooms.leave(state.jid)
        return 0

    return _online(args, work)


def _room_members(args: argparse.Namespace) -> int:
    async def work(session: Any, _received: list[Any]) -> int:
        state = await session.rooms.join(args.room, args.nick)
        present = set(state.occupants.values())
        rows = [{"jid": j, "affiliation": a, "present": j in present} for j, a in sorted(state.members.items())]
        if args.json:
            print(json.dumps({"room": state.jid, "members": rows}))
        else:
            for r in rows:
                print(f"{safe(r['jid'])} {safe(r['affiliation'])}{' (present)' if r['present'] else ''}")
        session.rooms.leave(state.jid)
        return 0

    return _online(args, work)


def _send_file(args: argparse.Namespace) -> int:
    from .progress import ProgressReport

    if not args.path.is_file():
        raise UsageError(f"not a file: {args.path}")

    async def work(session: Any, _received: list[Any]) -> int:
        report = ProgressReport(f"sending {safe(args.path.name)}")
        try:
            sent = await session.send_file(args.jid, args.path, progress=report)
        finally:
            report.close()
        if not args.json:
            print(f"uploaded {safe(args.path.name)} ({sent.size} bytes) to {safe(sent.link.url)}")
        file = {"name": args.path.name, "size": sent.size, "url": sent.link.url}
        return _report(sent.result, args, {"id": None, "to": args.jid, "file": file})

    return _online(args, work)


def _room_send(args: argparse.Namespace) -> int:
    async def work(session: Any, _received: list[Any]) -> int:
        state = await session.rooms.join(args.room, args.nick)
        result = await session.rooms.send_text(state.jid, args.text)
        # stay until the room echoes the message back: it was delivered (and the echo is not
        # taken for a message from a room we are not in)
        reflected = await session.rooms.reflected(state.jid) if result.ready else False
        session.rooms.leave(state.jid)
        if result.ready and not reflected:
            print(f"e2ee: warning: {state.jid} did not echo the message back (delivery not confirmed)", file=sys.stderr)
        return _report(result, args, {"id": None, "room": state.jid, "reflected": reflected})

    return _online(args, work)


async def _fetch_file(session: Any, media: Any, directory: Path | None) -> tuple[dict[str, Any], str | None]:
    """Download a received file into ``directory``: its ``file`` row and an error, if any."""
    from .progress import ProgressReport

    row: dict[str, Any] = {"name": media.filename, "url": media.url, "path": None, "size": None}
    if directory is None:
        return row, None
    report = ProgressReport(f"receiving {safe(media.filename)}")
    try:
        path = await session.download(media, directory, progress=report)
    except (E2EEError, OSError) as e:
        why = _explain(e) if isinstance(e, E2EEError) else (e.strerror or str(e))
        row["error"] = why
        return row, why
    finally:
        report.close()
    row["path"], row["size"] = str(path), path.stat().st_size
    return row, None


def _recv(args: argparse.Namespace) -> int:
    import asyncio

    from e2ee.results import Decrypted

    if args.download_dir is not None and not args.download_dir.is_dir():
        raise UsageError(f"--download-dir: not a directory: {args.download_dir}")

    async def work(session: Any, received: list[Any]) -> int:
        shown = 0
        failed = False
        deadline = asyncio.get_running_loop().time() + args.timeout
        for room in args.room:
            state = await session.rooms.join(room, args.nick)
            print(f"joined {safe(state.jid)} as {safe(state.nick)}", file=sys.stderr, flush=True)
        while asyncio.get_running_loop().time() < deadline and (args.count is None or shown < args.count):
            while received:  # all that was decrypted is shown, even past --count
                r = received.pop(0)
                if r.error is not None:
                    print(
                        f"e2ee: a message from {safe(r.stanza_from)} could not be decrypted: {safe(r.error)}",
                        file=sys.stderr,
                    )
                    continue
                if not isinstance(r.result, Decrypted):
                    continue
                d = r.result
                if d.body is None:
                    # no text: chat states (Converse.js encrypts "composing", "paused"...) or
                    # other content a person does not see as a message; neither shown nor counted
                    continue
                row = {
                    "from": d.jid,
                    "device": d.device_id,
                    "namespace": d.namespace,
                    "trust": d.trust.value,
                    "body": d.body,
                    "carbon": r.carbon,
                    "archived": r.archived,
                    "room": r.room,
                    "file": None,
                }
                text = d.body
                media = r.media  # (parses the body)
                if media is not None:  # an aesgcm:// link (XEP-0454): never shown as a link
                    row["file"], error = await _fetch_file(session, media, args.download_dir)
                    if error is not None:
                        print(
                            f"e2ee: a file from {safe(d.jid)} could not be downloaded: {safe(error)}", file=sys.stderr
                        )
                        failed = True
                    where = row["file"]["path"] or ("not downloaded" if error else "not downloaded, see --download-dir")
                    text = f"file {safe(row['file']['name'])} ({safe(where)})"
                header = message_header(d.jid, d.device_id, d.trust.value, r.room)
                print(json.dumps(row) if args.json else message_line(header, text or ""), flush=True)
                shown += 1
            await asyncio.sleep(0.05)
        return 1 if failed else 0

    return _online(args, work)


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
