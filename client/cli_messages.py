"""The ``e2ee`` commands that send and receive: ``send``, ``send-file`` and ``recv`` (with the
download of received files)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from e2ee.errors import E2EEError, UsageError

from .cli_common import _device_rows, _explain, _online, _pgp_fp, _print_rows, _report
from .safe_text import message_header, message_line, safe

if TYPE_CHECKING:
    from e2ee.media import MediaLink

    from .session import E2EESession
    from .types import Received


def _message_from_stdin() -> str:
    """The message of ``send JID -``: all of standard input as UTF-8, without the line feed that
    ends it (``echo``, a here-document); an empty message or one that is not text is refused."""
    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("standard input is not UTF-8 text: nothing sent") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise UsageError("the message on standard input is empty: nothing sent")
    return text


def _send(args: argparse.Namespace) -> int:
    from e2ee.fallback import Route

    if args.text == "-":  # read before connecting: a script that pipes nothing fails at once
        args.text = _message_from_stdin()

    async def work(session: E2EESession, _received: list[Received]) -> int:
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


def _send_file(args: argparse.Namespace) -> int:
    from .progress import ProgressReport

    if not args.path.is_file():
        raise UsageError(f"not a file: {args.path}")

    async def work(session: E2EESession, _received: list[Received]) -> int:
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


async def _fetch_file(
    session: E2EESession, media: MediaLink, directory: Path | None
) -> tuple[dict[str, object], str | None]:
    """Download a received file into ``directory``: its ``file`` row and an error, if any."""
    from .progress import ProgressReport

    row: dict[str, object] = {"name": media.filename, "url": media.url, "path": None, "size": None}
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
    from .signals import StopSignals, stop_on_sigterm

    if args.follow:
        stop_on_sigterm()

    async def work(session: E2EESession, received: list[Received]) -> int:
        with StopSignals() as stop:
            return await _show(session, received, stop)

    async def _show(session: E2EESession, received: list[Received], stop: StopSignals) -> int:
        shown = 0
        failed = False
        loop = asyncio.get_running_loop()
        # --follow: until a signal (or --count, or a --timeout given with it); else 10 s by default
        timeout = args.timeout if args.timeout is not None or args.follow else 10.0
        deadline = None if timeout is None else loop.time() + timeout
        lost = asyncio.Event()
        session.add_event_handler("disconnected", lambda _e: lost.set())
        for room in args.room:
            state = await session.rooms.join(room, args.nick)
            print(f"joined {safe(state.jid)} as {safe(state.nick)}", file=sys.stderr, flush=True)
        if args.follow:
            print("following: stop with Ctrl-C (or SIGTERM)", file=sys.stderr, flush=True)
        while (deadline is None or loop.time() < deadline) and (args.count is None or shown < args.count):
            if stop.stopped.is_set():
                break
            if lost.is_set() and not received:
                print("e2ee: error: the connection to the server was lost", file=sys.stderr)
                return 1
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
                    fetched, error = await _fetch_file(session, media, args.download_dir)
                    row["file"] = fetched
                    if error is not None:
                        print(
                            f"e2ee: a file from {safe(d.jid)} could not be downloaded: {safe(error)}", file=sys.stderr
                        )
                        failed = True
                    where = fetched["path"] or ("not downloaded" if error else "not downloaded, see --download-dir")
                    text = f"file {safe(fetched['name'])} ({safe(where)})"
                header = message_header(d.jid, d.device_id, d.trust.value, r.room)
                print(json.dumps(row) if args.json else message_line(header, text or ""), flush=True)
                shown += 1
            await stop.wait(0.05)
        return 1 if failed else 0

    return _online(args, work)
