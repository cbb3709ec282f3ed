"""Converse.js (the web client, npm package pinned in ``tests/converse/``) in headless Chromium,
for tests/test_converse.py.

The page (``tests/converse/index.html``) and Converse's ``dist/`` are served by a small HTTP
server thread on 127.0.0.1; Converse logs in automatically over the private Prosody's WebSocket.
What a person does (typing a message, reading the chat, opening the fingerprint list) goes
through the page; a tiny plugin on the page only lets the test wait for Converse's promises and
open a chat or a room, as a person would by clicking a contact or a room.

On a failure :meth:`Browser.evidence` keeps a screenshot, the page's HTML and the browser's
console log in ``tests/artifacts/`` (ignored by git) and names the folder in the error.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "converse"
DIST = PACKAGE / "node_modules" / "converse.js" / "dist"
ARTIFACTS = HERE / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: What Converse shows in place of a message it could not decrypt, or when it cannot encrypt.
ERROR_TEXTS = ("could not decrypt", "Sorry, no devices found", "Message delivery failed", "Invalid signature")

T = TypeVar("T")


def converse_hex(shown: str) -> str:
    """A key as Converse shows it, to its 64 hex digits: Converse's ``formatFingerprint`` (and
    the text of its QR codes) strips a leading "05" (meant for the legacy type byte, which is
    already gone), so a key whose first byte is 0x05 (1 in 256) is shown with 62 digits."""
    shown = re.sub(r"\s", "", shown).lower()
    return "05" + shown if len(shown) == 62 else shown


def _converse_uri(uri: str) -> str:
    head, sep, key = uri.rpartition("=")
    return f"{head}{sep}{converse_hex(key)}" if sep else uri


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (DIST / "converse.min.js").is_file():
        return f"Converse.js is not installed: run `npm ci` in {PACKAGE} (scripts/_setup.sh does)"
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return "chromium and chromium-driver are missing (scripts/_setup.sh installs them)"
    return None


def until(what: Callable[[], T | None], why: Callable[[], object], timeout: float = 20, step: float = 0.1) -> T:
    """Poll ``what`` until it returns something truthy (bounded); fail with ``why()``."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(why())
        time.sleep(step)


class _PageServer:
    """The page and Converse's dist/ on 127.0.0.1 (a thread; ``close`` stops it)."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(SimpleHTTPRequestHandler):
            extensions_map = {
                **SimpleHTTPRequestHandler.extensions_map,
                ".js": "text/javascript",
                ".wasm": "application/wasm",
                ".json": "application/json",
            }

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(DIST.parent), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path in ("/", "/index.html"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if not self.path.startswith("/dist/"):
                    self.send_error(404)
                    return
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@dataclass
class Message:
    """One message as Converse shows it."""

    text: str
    #: a line of Converse's own (a date, someone's presence), not a message
    info: bool
    encrypted: bool
    padlock: bool
    error: str


class Browser:
    """Converse logged in as ``jid`` in headless Chromium."""

    def __init__(self, jid: str, password: str, websocket_url: str, log_files: list[Path]) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        page = (
            (PACKAGE / "index.html")
            .read_text()
            .replace("@JID@", jid)
            .replace("@PASSWORD@", password)
            .replace("@WEBSOCKET_URL@", websocket_url)
        )
        self.jid = jid
        self._log_files = log_files
        self._console: list[str] = []
        self._server = _PageServer(page)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,900",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except Exception:
            self._server.close()
            raise
        self.driver.set_script_timeout(30)
        self.driver.get(self._server.url)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._server.close()

    # --- evidence -----------------------------------------------------------------------
    def console(self) -> list[str]:
        """Everything the page logged so far (Converse logs at debug level)."""
        for entry in self.driver.get_log("browser"):  # type: ignore[no-untyped-call]
            self._console.append(f"{entry['level']} {entry['message']}")
        return self._console

    def console_errors(self) -> list[str]:
        return [
            line
            for line in self.console()
            if line.startswith("SEVERE") and "favicon" not in line and "ERR_NAME_NOT_RESOLVED" not in line
        ]  # the login page's sponsor logos

    @contextmanager
    def evidence(self, name: str) -> Iterator[None]:
        """On a failure inside, keep a screenshot, the page and the console log."""
        try:
            yield
        except BaseException as exc:
            folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            try:
                self.driver.save_screenshot(str(folder / "screenshot.png"))
                (folder / "page.html").write_text(self.driver.page_source)
                (folder / "console.log").write_text("\n".join(self.console()) + "\n")
            except Exception as inner:  # the browser may be gone: keep what there is
                (folder / "browser-error.txt").write_text(repr(inner))
            for log in self._log_files:
                if log.exists():
                    shutil.copy(log, folder / log.name)
            print(f"\nConverse test evidence (screenshot, page, console log): {folder}")
            if isinstance(exc, AssertionError):
                raise AssertionError(f"{exc}\n(evidence in {folder})") from exc
            raise

    # --- Converse's API, for waiting and opening only -------------------------------------
    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait_async(self, body: str, *args: Any) -> Any:
        """Run ``body`` (JavaScript using ``api`` and ``args``; may ``await``) and return its value."""
        script = (
            "const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);"
            "const api = window.e2eeTest.api;"
            f"(async () => {{ {body} }})().then(v => done({{ok: v === undefined ? null : v}}),"
            " e => done({error: String(e && e.stack || e)}));"
        )
        got = self.driver.execute_async_script(script, *args)
        if "error" in got:
            raise AssertionError(f"in the page: {got['error']}")
        return got["ok"]

    def wait_logged_in(self) -> None:
        until(lambda: self.js("return !!window.e2eeTest"), lambda: "Converse did not load", timeout=30)
        self.wait_async("await api.waitUntil('OMEMOInitialized');")
        # its device lists and bundles in both namespaces are on the server once the server
        # answered its publishes
        nodes = (
            "urn:xmpp:omemo:2:devices",
            "urn:xmpp:omemo:2:bundles",
            "eu.siacs.conversations.axolotl.devicelist",
            "eu.siacs.conversations.axolotl.bundles:",
        )
        until(
            lambda: all(self._published(node) for node in nodes),
            lambda: f"Converse did not publish all of {nodes}",
            timeout=30,
        )

    def _published(self, node: str) -> bool:
        ids = [
            m.group(1)
            for line in self.console()
            if f'node=\\"{node}' in line and "publish" in line
            for m in [re.search(r'id=\\"([^"\\]+)', line)]
            if m
        ]
        return any(f'id=\\"{i}\\"' in line and 'type=\\"result' in line for i in ids for line in self.console())

    def own_device_id(self) -> int:
        return int(self.js("return window.e2eeTest.converse.state.omemo_store.get('device_id')"))

    def wait_chat_started(self, jid: str) -> None:
        """Until a message from ``jid`` has made a chat (shown in the list; in full-screen mode
        a person then clicks it: :meth:`open_chat`)."""
        until(
            lambda: self.js("return !!window.e2eeTest.converse.state.chatboxes.get(arguments[0])", jid),
            lambda: f"no chat with {jid} started; console errors {self.console_errors()[-8:]}",
        )

    def open_chat(self, jid: str) -> None:
        self.wait_async("await api.chats.open(args[0], {}, true);", jid)
        until(
            lambda: self.driver.find_elements("css selector", f'converse-chat[jid="{jid}"] textarea.chat-textarea'),
            lambda: f"no chat with {jid} opened",
        )

    def open_room(self, jid: str, nick: str) -> None:
        self.wait_async("await api.rooms.open(args[0], {nick: args[1]}, true);", jid, nick)
        until(
            lambda: self.driver.find_elements("css selector", f'converse-muc[jid="{jid}"] textarea.chat-textarea'),
            lambda: f"could not enter the room {jid}",
            timeout=30,
        )

    # --- what a person does ---------------------------------------------------------------
    def _view(self, jid: str) -> str:
        return f'converse-chat[jid="{jid}"], converse-muc[jid="{jid}"]'

    def type_message(self, jid: str, text: str) -> None:
        """Type ``text`` into the chat's text area and press Enter, with OMEMO on (its padlock)."""
        from selenium.webdriver.common.keys import Keys

        view = self._view(jid)
        until(
            lambda: self.js(
                """
            const view = document.querySelector(arguments[0]);
            return view && view.model && view.model.get('omemo_active') === true;""",
                view,
            ),
            lambda: f"OMEMO is not switched on in the chat with {jid}",
        )
        area = self.driver.find_element("css selector", view).find_element("css selector", "textarea.chat-textarea")
        area.click()
        area.send_keys(text)
        area.send_keys(Keys.ENTER)

    def messages(self, jid: str) -> list[Message]:
        """The messages shown in the chat with ``jid`` (or the room), with any error shown."""
        rows = self.js(
            """
            const view = document.querySelector(arguments[0]);
            if (!view) return [];
            return Array.from(view.querySelectorAll('.chat-msg, .chat-info, .chat-error')).map(el => ({
                text: (el.querySelector('.chat-msg__text') || el).innerText.trim(),
                info: !el.classList.contains('chat-msg'),
                encrypted: el.getAttribute('data-encrypted') === 'true',
                padlock: !!el.querySelector('converse-icon.fa-lock'),
                error: Array.from(el.querySelectorAll('.chat-msg__error, .chat-error, .reason'))
                    .map(e => e.innerText).join(' ')
                    + (el.classList.contains('chat-error') ? el.innerText : ''),
            }));""",
            self._view(jid),
        )
        return [Message(**row) for row in rows]

    def wait_message(self, jid: str, text: str, timeout: float = 30) -> Message:
        """Until the chat with ``jid`` (or the room) shows ``text``; a 1:1 chat is opened first,
        as a person clicks it in the list (full-screen mode shows one chat at a time)."""
        if not jid.split("@", 1)[1].startswith("rooms."):
            self.wait_chat_started(jid)
            self.open_chat(jid)

        def found() -> Message | None:
            return next((m for m in self.messages(jid) if m.text == text), None)

        return until(
            found,
            lambda: (
                f"Converse does not show {text!r} from {jid}; it shows "
                f"{self.messages(jid)}; console errors {self.console_errors()[-8:]}"
            ),
            timeout=timeout,
        )

    def alerts(self) -> list[str]:
        """Error dialogs shown to the person (``api.alert``), and error toasts."""
        return list(
            self.js("""
            return Array.from(document.querySelectorAll('.modal.show, converse-alert-modal .modal-body, .alert-danger'))
                .map(e => e.innerText.trim()).filter(t => t);""")
        )

    def contact_fingerprints(self, jid: str) -> dict[int, list[str]]:
        """The fingerprints Converse shows for ``jid``'s devices: the chat's heading (contact
        details) → OMEMO tab; device id → the strings shown (hex without spaces), one per
        namespace in which the device has a bundle."""
        self.open_chat(jid)
        self.driver.find_element(
            "css selector", f'converse-chat[jid="{jid}"] converse-chat-heading a.show-msg-author-modal'
        ).click()
        tab = until(
            lambda: self.driver.find_elements("css selector", "converse-user-details-modal #omemo-tab"),
            lambda: "the contact details have no OMEMO tab",
        )
        tab[0].click()

        def shown() -> dict[int, list[str]] | None:
            rows = self.js("""
                const list = document.querySelector('converse-user-details-modal converse-omemo-fingerprints');
                if (!list || list.loading) return null;
                return Array.from(list.querySelectorAll('form.fingerprint-trust')).map(f => ({
                    id: f.querySelector('input[type=radio]').getAttribute('name'),
                    version: f.querySelector('input[type=radio]').getAttribute('data-version'),
                    fp: f.querySelector('code.fingerprint').innerText}));""")
            if not rows:
                return None
            out: dict[int, list[str]] = {}
            for row in rows:
                out.setdefault(int(row["id"]), []).append(converse_hex(row["fp"]))
            return out

        try:
            return until(shown, lambda: f"Converse shows no fingerprints for {jid}")
        finally:
            self.close_modal()

    def own_shown_fingerprints(self) -> tuple[list[str], list[str]]:
        """What Converse shows as its own fingerprints (profile → OMEMO tab): the hex strings
        and the verification URIs of its QR codes."""
        self.wait_async(
            "api.modal.show('converse-profile-modal', {model: window.e2eeTest.converse.state.profile"
            " || window.e2eeTest.converse.state.xmppstatus});"
        )
        tab = until(
            lambda: self.driver.find_elements("css selector", "converse-profile-modal #omemo-tab"),
            lambda: "the profile has no OMEMO tab",
        )
        tab[0].click()

        def shown() -> tuple[list[str], list[str]] | None:
            got = self.js("""
                const p = document.querySelector('converse-profile-modal converse-omemo-profile');
                if (!p) return null;
                const fps = Array.from(p.querySelectorAll('li span.fingerprint')).map(e => e.innerText);
                const uris = Array.from(p.querySelectorAll('converse-qr-code')).map(e => e.getAttribute('text'));
                return fps.length >= 2 && uris.length >= 2 ? [fps, uris] : null;""")
            if not got:
                return None
            return [converse_hex(f) for f in got[0]], [_converse_uri(u) for u in got[1]]

        try:
            return until(shown, lambda: "Converse shows no fingerprint of its own")
        finally:
            self.close_modal()

    def close_modal(self) -> None:
        self.js(
            "document.querySelectorAll('.modal.show .btn-close, .modal.show [data-bs-dismiss=modal]')"
            ".forEach(b => b.click());"
        )
        until(
            lambda: not self.js("return document.querySelectorAll('.modal.show').length"), lambda: "a dialog stays open"
        )


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)
