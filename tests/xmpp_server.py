"""A private Prosody on 127.0.0.1 for the tests (``../shared/xmpp-server.md``).

Each instance gets a fresh directory: configuration, self-signed certificate for its domain,
data, log and pid file.  Accounts are registered with ``prosodyctl`` before start (file
storage).  Started with ``prosody --config CFG -D``, stopped with SIGTERM to the pid in its pid
file; never looked up by process name.

HTTP File Upload (XEP-0363, for XEP-0454 media sharing): the component ``upload.<domain>``
(``mod_http_file_share``) serves HTTPS on 127.0.0.1 at ``https_port``, under the domain's own
name and certificate (``upload.localhost`` would not resolve).

WebSocket (RFC 7395, for browser clients such as Converse.js): with ``websocket_port`` set,
``mod_websocket`` serves plain HTTP on 127.0.0.1 at that port (``websocket_url``), considered
secure since it never leaves loopback; ``mod_blocklist`` comes with it, which Converse needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Prosody", "available", "process_running", "running"]

DOMAIN = "localhost"
#: Largest file the test upload service accepts (room for a 50 MB file and its tag).
UPLOAD_LIMIT = 64 * 1024 * 1024

CONFIG = """
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
c2s_direct_tls_ports = {{ }}
http_ports = {{ {http_ports} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ {https_port} }}
https_interfaces = {{ "127.0.0.1" }}
component_ports = {{ }}
-- min_wait: with the default 1 ms, a TLS upload to http_file_share crawls at ~6 MB/s (one read
-- per loop turn); idle cost is unchanged
network_settings = {{ nagle = false; min_wait = 0.00001 }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "pep"; "carbons"; "mam"; "ping"; "register";{web_modules}
}}
modules_disabled = {{ "s2s" }}
allow_registration = true
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
pep_max_items = 256
default_archive_policy = true
archive_expires_after = "1w"
certificates = "{dir}/certs"
{websocket_config}
VirtualHost "{domain}"
    ssl = {{ key = "{dir}/certs/{domain}.key", certificate = "{dir}/certs/{domain}.crt" }}
-- group chats (XEP-0045): an internal component, no port of its own
Component "rooms.{domain}" "muc"
    restrict_room_creation = false
-- XEP-0363 upload service (XEP-0454 media sharing): HTTPS on loopback, served under the
-- domain's name and certificate (http_host) since "upload.{domain}" does not resolve
Component "upload.{domain}" "http_file_share"
    http_host = "{domain}"
    http_file_share_size_limit = {upload_limit}
    http_file_share_daily_quota = {upload_quota}
"""

# Converse.js waits for a blocklist (XEP-0191) before it handles a chat: Prosody's default
# configuration has mod_blocklist
WEB_MODULES = ' "websocket"; "blocklist";'
# loopback only, so the plain ws:// is "secure" (c2s_require_encryption); a page from another
# port (another origin) is accepted by Prosody 0.12's default
WEBSOCKET_CONFIG = """
consider_websocket_secure = true
http_default_host = "{domain}"
"""


def process_running(pid: int) -> bool:
    """Alive and not a zombie (reaping can be slow in containers)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def available() -> bool:
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prosody:
    """One private server; use as a context manager."""

    directory: Path
    domain: str = DOMAIN
    port: int = field(default_factory=_free_port)
    https_port: int = field(default_factory=_free_port)
    #: Plain-HTTP port of ``mod_websocket`` on 127.0.0.1; None: no WebSocket.
    websocket_port: int | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def muc(self) -> str:
        """The domain of the group-chat service (XEP-0045) on this server."""
        return f"rooms.{self.domain}"

    @property
    def cert(self) -> Path:
        return self.directory / "certs" / f"{self.domain}.crt"

    @property
    def upload_service(self) -> str:
        """The XEP-0363 component's JID; its URLs are ``https://{domain}:{https_port}/...``."""
        return f"upload.{self.domain}"

    @property
    def websocket_url(self) -> str:
        assert self.websocket_port is not None, "started without websocket_port"
        return f"ws://127.0.0.1:{self.websocket_port}/xmpp-websocket"

    def _write(self) -> None:
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        certs = self.directory / "certs"
        certs.mkdir(exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", f"/CN={self.domain}", "-addext", f"subjectAltName=DNS:{self.domain}",
             "-keyout", str(certs / f"{self.domain}.key"), "-out", str(self.cert)],
            check=True, capture_output=True,
        )
        self.config.write_text(CONFIG.format(
            dir=self.directory, port=self.port, domain=self.domain, https_port=self.https_port,
            upload_limit=UPLOAD_LIMIT, upload_quota=8 * UPLOAD_LIMIT,
            http_ports=self.websocket_port or "", web_modules=WEB_MODULES if self.websocket_port else "",
            websocket_config=WEBSOCKET_CONFIG.format(domain=self.domain) if self.websocket_port else "",
        ))

    def register(self, user: str, password: str) -> str:
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, self.domain, password],
            check=True, capture_output=True, timeout=30,
        )
        return f"{user}@{self.domain}"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-D"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        pid_file = self.directory / "prosody.pid"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            code = self._proc.poll()  # -D: the launcher exits once the daemon is detached
            if code not in (None, 0):
                raise RuntimeError(f"prosody failed to start ({code}): see {self.directory / 'prosody.log'}")
            if pid_file.exists():
                try:
                    for port in (self.port, self.https_port, *([self.websocket_port] if self.websocket_port else [])):
                        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                            pass
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("prosody did not start in time")

    def stop(self) -> None:
        pid_file = self.directory / "prosody.pid"
        pid = None
        if pid_file.exists():
            try:
                pid = int(pid_file.read_text().strip())
            except ValueError:
                pid = None
        proc = self._proc
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and process_running(pid):
                time.sleep(0.01)
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> Prosody:
        self._write()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(directory: Path, users: Iterable[str] = ("alice", "bob")) -> Iterator[Prosody]:
    """A started server in ``directory`` with each user registered (password ``<user>-pw``)."""
    assert available(), "Prosody is missing: scripts/test.sh installs it (apt-get install prosody)"
    with Prosody(directory) as server:
        for user in users:
            server.register(user, f"{user}-pw")
        server.start()
        yield server
