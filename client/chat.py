"""``e2ee chat [JID | ROOM]``: an interactive conversation that stays connected.

The screen follows Profanity's: messages scroll above an input line, a status bar under it
names the account, the conversation and the connection state.  Incoming messages appear as
they arrive (:mod:`e2ee.client.chat_format` draws them: time, sender, device, encryption,
trust marker); the archive catch-up at start is shown as it goes (messages marked
``(archive)``, a count in the status bar).  A typed line goes to the conversation by the same
policy as ``e2ee send`` (OMEMO, else OpenPGP, never clear text); what a send could not reach is
told once per device, in words.  Slash commands (:mod:`e2ee.client.chat_commands`) cover what a
person needs mid-conversation; ``/help`` lists them.

Leaving: ``/quit``, Ctrl-D, Ctrl-C or SIGTERM; lines already typed are sent first, the session
is closed (the archive position stays where the last message was read) and the keystore closed
by the caller.  Exit status 0 then; 1 when the server cannot be reached or the connection is
lost.  Terminal handling is prompt_toolkit's; everything untrusted is made safe before it is
drawn, and log records of the session are shown as lines too (never raw on stderr).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style
from slixmpp.exceptions import IqError, IqTimeout, XMPPError

from e2ee.errors import E2EEError, UsageError

from .chat_commands import Commands
from .chat_format import STYLE, FailureLog, Line, error_line, incoming, info
from .cli_common import _explain
from .errors import RoomUnavailable
from .safe_text import safe
from .session import E2EESession, cancel_pending_tasks
from .signals import StopSignals
from .stanza_errors import describe
from .types import Received

__all__ = ["Chat", "MUC_FEATURE"]

#: the disco#info feature of a group chat (XEP-0045): a conversation with it is a room
MUC_FEATURE = "http://jabber.org/protocol/muc"


class _ShowLog(logging.Handler):
    """Warnings of the session (a refused message, an unusable bundle) as chat lines, each text
    once (a log line may hold a peer's text: made safe)."""

    def __init__(self, chat: Chat) -> None:
        super().__init__(logging.WARNING)
        self.chat = chat
        self.told: set[str] = set()

    #: log lines of a refused message: the chat shows the refusal itself (:meth:`Chat.on_received`)
    SHOWN_ELSEWHERE = ("message from ", "OpenPGP message from ")

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith(self.SHOWN_ELSEWHERE):
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break the chat
            text = str(record.msg)
        if text not in self.told:
            self.told.add(text)
            self.chat.show(info(f"({safe(text)})"))


class Chat:
    """One chat: the session, the screen and the conversation.  :meth:`run` until the person leaves."""

    def __init__(
        self,
        engine: Any,
        password: str,
        host: str,
        port: int,
        *,
        target: str | None,
        ca_file: Path | None = None,
        nick: str | None = None,
        download_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.host, self.port = host, port
        self.wanted = target
        self.nick = nick
        self.download_dir = download_dir
        self.session = E2EESession(engine, password, ca_file=ca_file, on_received=self.on_received)
        #: the conversation: a contact's bare JID or a room's (``room`` tells which)
        self.target: str | None = None
        self.room = False
        self.status = "connecting"
        self.archived = 0
        self.failures = FailureLog()
        self.exit_code = 0
        self.connected = asyncio.Event()
        self.leaving = asyncio.Event()
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.style = Style.from_dict(STYLE)
        # the typed line is erased when sent: what was sent is shown as a message line instead
        self.prompt: PromptSession[str] = PromptSession(erase_when_done=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self.commands = Commands(self)

    # ------------------------------------------------------------------ the screen

    def show(self, line: Line) -> None:
        """Draw a line above the input line (made of safe text: :mod:`e2ee.client.chat_format`)."""
        print_formatted_text(FormattedText(line), style=self.style)

    def set_status(self, status: str) -> None:
        self.status = status
        self.prompt.app.invalidate()

    def _toolbar(self) -> FormattedText:
        where = safe(self.target) if self.target else "no conversation (/msg JID)"
        kind = "room " if self.room else ""
        return FormattedText(
            [("class:bottom-toolbar", f" {safe(self.engine.jid)} | {kind}{where} | {self.status} | /help ")]
        )

    def _message(self) -> FormattedText:
        return FormattedText([("class:me", f"{safe(self.target) if self.target else 'e2ee'}> ")])

    # ------------------------------------------------------------------ incoming

    def on_received(self, r: Received) -> None:
        """The session's callback: each decrypted message (or refusal) drawn as it arrives."""
        if r.archived:
            self.archived += 1
            if not self.connected.is_set():
                self.set_status(f"reading the archive: {self.archived} messages")
        if r.error is not None:
            self.show(
                error_line(f"a message from {safe(r.stanza_from)} could not be decrypted: {safe(_explain(r.error))}")
            )
            return
        media = r.media
        text = None
        if media is not None:  # an aesgcm:// link (XEP-0454): never shown as a link
            later = (
                f", saving it in {safe(self.download_dir)}"
                if self.download_dir
                else " (start with --download-dir DIR to save files)"
            )
            text = f"shared a file: {safe(media.filename)}{later}"
        line = incoming(r, self.engine.jid, datetime.now(UTC), text)
        if line is None:
            return
        self.show(line)
        if media is not None and self.download_dir is not None:
            self.spawn(self._download(media))

    async def _download(self, media: Any) -> None:
        assert self.download_dir is not None
        try:
            path = await self.session.download(media, self.download_dir)
        except (E2EEError, OSError) as e:
            why = _explain(e) if isinstance(e, E2EEError) else (e.strerror or str(e))
            self.show(error_line(f"the file {safe(media.filename)} could not be downloaded: {safe(why)}"))
            return
        self.show(info(f"saved {safe(media.filename)} as {safe(path)}"))

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ connecting

    async def _connect(self) -> None:
        try:
            await self._start()
        except Exception as e:  # a bug must not leave the chat "connecting" for ever
            logging.getLogger(__name__).debug("connecting failed", exc_info=True)
            self._fail(f"unexpected {type(e).__name__} while connecting: {e}")

    async def _start(self) -> None:
        try:
            await self.session.start(self.host, self.port)
        except (ConnectionError, TimeoutError) as e:
            return self._fail(f"could not connect to {self.host}:{self.port}: {e or 'timed out'}")
        except XMPPError as e:
            return self._fail(f"the server refused: {describe(e)}")
        n = self.session.e2ee.caught_up
        self.show(info(f"connected as {safe(self.engine.jid)}; {n} archived message{'s' if n != 1 else ''} read"))
        self.session.add_event_handler("disconnected", self._lost)
        if self.wanted:
            try:
                await self.open(self.wanted)
            except (E2EEError, IqError, IqTimeout) as e:
                self.show(
                    error_line(
                        f"could not open {safe(self.wanted)}: {safe(_explain(e) if isinstance(e, E2EEError) else describe(e))}"
                    )
                )
        self.set_status("online")
        self.connected.set()

    async def open(self, target: str) -> None:
        """Make ``target`` the conversation: a room (joined) when it is one, else a contact."""
        import slixmpp

        try:
            bare = slixmpp.JID(target).bare
        except slixmpp.InvalidJID:
            raise UsageError(f"not a JID: {target}") from None
        if not bare or "@" not in bare:
            raise UsageError(f"not a JID: {target}")
        try:
            is_room = MUC_FEATURE in await self.session.rooms.features(bare)
        except RoomUnavailable:  # no answer of a room: a contact
            is_room = False
        if is_room:
            state = await self.session.rooms.join(bare, self.nick)
            self.show(
                info(
                    f"joined {safe(state.jid)} as {safe(state.nick)}; members: {safe(', '.join(sorted(state.members)))}"
                )
            )
        else:
            self.show(info(f"conversation with {safe(bare)}"))
        self.target, self.room = bare, is_room
        self.prompt.app.invalidate()

    def _fail(self, why: str) -> None:
        self.show(error_line(f"e2ee: error: {safe(why)}"))
        self.exit_code = 1
        self.leave()

    def _lost(self, _event: object) -> None:
        if not self.leaving.is_set():
            self._fail("the connection to the server was lost")

    # ------------------------------------------------------------------ input

    def leave(self) -> None:
        """End the chat (from a signal, /quit, a lost connection)."""
        self.leaving.set()
        app = self.prompt.app
        if app.is_running and not app.is_done:
            app.exit(exception=EOFError())

    async def _work(self) -> None:
        """Handle typed lines in order, once connected (lines typed while connecting wait)."""
        await self.connected.wait()
        while True:
            line = await self.lines.get()
            try:
                await self.commands.handle(line)
            except UsageError as e:
                self.show(error_line(safe(e)))
            except E2EEError as e:
                self.show(error_line(safe(_explain(e))))
            except (IqError, IqTimeout) as e:
                self.show(error_line(f"the server refused: {safe(describe(e))}"))
            except OSError as e:
                self.show(error_line(safe(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))))
            except Exception as e:  # a bug must not stop the lines after it (nor the wait for them at /quit)
                logging.getLogger(__name__).debug("a typed line failed", exc_info=True)
                self.show(error_line(f"unexpected {type(e).__name__}: {safe(e)}"))
            finally:
                self.lines.task_done()

    async def _read_lines(self) -> None:
        while not self.leaving.is_set():
            try:
                line = await self.prompt.prompt_async(self._message, bottom_toolbar=self._toolbar, style=self.style)
            except (KeyboardInterrupt, EOFError):  # Ctrl-C, Ctrl-D, a signal
                break
            if line.strip() in ("/quit", "/exit"):
                break
            if line.startswith("/"):
                self.show(info(safe(line)))  # a command stays on the screen above its answer
            if line.strip():
                self.lines.put_nowait(line)
        self.leaving.set()

    async def run(self) -> int:
        """Connect, converse, leave: the exit status (0, or 1 when the connection failed or was lost)."""
        handler = _ShowLog(self)
        logger = logging.getLogger("e2ee")
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        try:
            with StopSignals(on_stop=self.leave), patch_stdout(raw=False):
                self.show(
                    info(
                        f"e2ee chat: connecting to {safe(self.host)}:{self.port} as {safe(self.engine.jid)}... (/help, /quit)"
                    )
                )
                self.spawn(self._connect())
                worker = asyncio.ensure_future(self._work())
                await self._read_lines()
                if self.connected.is_set() and self.exit_code == 0:
                    await self.lines.join()  # what was typed is sent before leaving
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
        finally:
            self.leaving.set()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.session.close()
            await cancel_pending_tasks()
            logger.removeHandler(handler)
            logger.propagate = propagate
        return self.exit_code
