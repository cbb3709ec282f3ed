"""What a line typed in ``e2ee chat`` does: a slash command, or a message for the conversation.

The commands share their work and their wording with the one-shot CLI commands
(:mod:`e2ee.client.cli_keys`): ``/devices`` prints what ``e2ee devices`` prints, ``/trust``
what ``e2ee trust`` does, and so on, but on the open keystore of the running chat.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from e2ee.errors import NoEligibleDevices, UsageError
from e2ee.fallback import Route
from e2ee.results import EncryptResult

from .chat_format import FailureLog, Line, encryption_name, error_line, info, outgoing, summary
from .cli_common import _pgp_fp
from .cli_keys import _apply_trust, _apply_uri, _device_lines, _device_rows, _fingerprint_lines
from .safe_text import safe
from .session import E2EESession

__all__ = ["HELP", "Commands", "Conversation"]


class Conversation(Protocol):
    """What the commands use of the running chat (:class:`e2ee.client.chat.Chat`)."""

    engine: Any
    session: E2EESession
    #: the contact's or the room's bare JID (None: no conversation yet)
    target: str | None
    room: bool
    failures: FailureLog

    def show(self, line: Line) -> None: ...

    def set_status(self, status: str) -> None: ...

    async def open(self, target: str) -> None: ...


#: ``/help``: each command with what it does
HELP = (
    ("/msg JID|ROOM", "talk to someone else, or join a room and talk there"),
    ("/devices [JID]", "the devices and keys known of JID (default: the conversation), with their trust"),
    ("/trust [JID] FINGERPRINT", "mark a key you compared as verified (64 or 40 hex digits; spaces allowed)"),
    ("/distrust [JID] FINGERPRINT", "refuse a key: nothing is encrypted for it any more"),
    ("/verify URI", "apply a scanned verification URI (xmpp:...?omemo2-sid-...)"),
    ("/fingerprint", "this device's fingerprints, its verification URI and the URI's QR code"),
    ("/file PATH", "encrypt a file, upload it and send it to the conversation"),
    ("/help", "this list"),
    ("/quit", "leave (also Ctrl-D or Ctrl-C)"),
)


class Commands:
    """Runs the typed lines of one :class:`~e2ee.client.chat.Chat`."""

    def __init__(self, chat: Conversation) -> None:
        self.chat = chat

    def _target(self) -> str:
        if self.chat.target is None:
            raise UsageError("no conversation open: /msg JID first")
        return self.chat.target

    async def handle(self, line: str) -> None:
        """One typed line: a command (``/name args``) or a message to the conversation."""
        if not line.startswith("/"):
            await self.say(line)
            return
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        show = self.chat.show
        if name == "help":
            width = max(len(c) for c, _ in HELP)
            for command, what in HELP:
                show(info(f"{command:<{width}}  {what}"))
        elif name == "msg":
            if not rest:
                raise UsageError("/msg JID|ROOM")
            await self.chat.open(rest)
        elif name == "devices":
            jid = rest or self.chat.target or self.chat.engine.jid
            if self.chat.room and not rest:
                raise UsageError("/devices JID (in a room, name the member)")
            for text in _device_lines(jid, _device_rows(self.chat.engine, jid)):
                show(info(text))
        elif name in ("trust", "distrust"):
            jid, fingerprint = self._jid_and_rest(rest, f"/{name} [JID] FINGERPRINT")
            show(info(_apply_trust(self.chat.engine, jid, fingerprint, name == "trust")))
        elif name == "verify":
            if not rest:
                raise UsageError("/verify URI")
            for text in _apply_uri(self.chat.engine, rest):
                show(info(text))
        elif name == "fingerprint":
            from .qr import qr_terminal

            for text in _fingerprint_lines(self.chat.engine):
                show(info(text))
            for row in qr_terminal(self.chat.engine.own_uri()).split("\n"):
                show([("", row)])
        elif name == "file":
            await self.send_file(rest)
        else:
            raise UsageError(f"unknown command /{safe(name)}: /help lists the commands")

    def _jid_and_rest(self, rest: str, usage: str) -> tuple[str, str]:
        """``[JID] FINGERPRINT``: the first word is the JID when it has an ``@``, else the
        conversation's contact is meant."""
        first, _, more = rest.partition(" ")
        if "@" in first:
            if not more.strip():
                raise UsageError(usage)
            return first, more.strip()
        if not rest:
            raise UsageError(usage)
        if self.chat.room:
            raise UsageError(f"{usage} (in a room, name the member)")
        return self._target(), rest

    # ------------------------------------------------------------------ sending

    def _told(self, result: EncryptResult) -> None:
        for words in self.chat.failures.new(result.devices):
            self.chat.show(error_line(words))

    async def say(self, text: str) -> None:
        """Send a typed line to the conversation: to a contact by the policy of ``e2ee send``
        (OMEMO, else OpenPGP, refused otherwise), to a room for every member's devices."""
        target = self._target()
        chat = self.chat
        if chat.room:
            result = await chat.session.rooms.send_text(target, text)
            self._omemo_sent(target, text, result)
            return
        try:
            sent = await chat.session.send_chat(target, text)
        except NoEligibleDevices as e:
            chat.show(error_line(f"not sent: {safe(e)}"))
            return
        routed = sent.recipients[0]
        if routed.route is Route.OPENPGP:
            keys = ", ".join(_pgp_fp(f) for f in routed.fingerprints)
            chat.show(outgoing(target, text, datetime.now(UTC), "OpenPGP"))
            chat.show(info(f"encrypted to OpenPGP key {keys}"))
        elif routed.omemo is not None:
            self._omemo_sent(target, text, routed.omemo)

    def _omemo_sent(self, target: str, text: str, result: EncryptResult) -> None:
        chat = self.chat
        if not result.ready:
            who = ", ".join(result.unreachable) or target
            chat.show(error_line(f"not sent: no trusted device for {safe(who)}"))
            self._told(result)
            return
        how = " + ".join(encryption_name(ns) for ns in result.elements) or "OMEMO"
        chat.show(outgoing(target, text, datetime.now(UTC), how))
        self._told(result)

    async def send_file(self, rest: str) -> None:
        if not rest:
            raise UsageError("/file PATH")
        try:
            (name,) = shlex.split(rest)
        except ValueError:
            raise UsageError("/file PATH (quote a path with spaces)") from None
        path = Path(name).expanduser()
        if not path.is_file():
            raise UsageError(f"not a file: {name}")
        target = self._target()
        chat = self.chat

        def progress(done: int, total: int) -> None:
            chat.set_status(f"sending {safe(path.name)}: {100 if total <= 0 else done * 100 // total}%")

        try:
            if chat.room:
                from .media import upload

                link = await upload(chat.session, path, progress=progress)
                result = await chat.session.rooms.send_text(target, link.uri)
            else:
                sent = await chat.session.send_file(target, path, progress=progress)
                result = sent.result
        finally:
            chat.set_status("online")
        if not result.ready:
            self._omemo_sent(target, f"[file {path.name}]", result)  # says why it was not sent
            return
        chat.show(info(f"sent the file {safe(path.name)} ({path.stat().st_size} bytes), {summary(result)}"))
        self._told(result)
