"""Private XMPP servers on 127.0.0.1 for the tests.

:class:`XmppServer` is what a test may rely on; two implementations:

* :class:`Prosody` (Debian ``prosody``, 0.12): a fresh directory with configuration,
  self-signed certificate for its domain, data, log and pid file.  Accounts are registered
  with ``prosodyctl`` (file storage, before or after start).  Started with
  ``prosody --config CFG -D``, stopped with SIGTERM to the pid in its pid file.
* :class:`Ejabberd` (Debian ``ejabberd``, 23.01): ``ejabberdctl`` with its own config dir,
  spool, logs, node name and Erlang distribution port (no epmd), in a directory the
  ``ejabberd`` user can enter (``ejabberdctl`` run as root re-runs itself as that user).
  Accounts are registered after start through its HTTP API on loopback (what
  ``ejabberdctl register`` does, in 10 ms instead of a second).  Stopped with its ``stop``
  command (``ejabberdctl stop`` if the API does not answer), then the process group it was
  started in is killed.

Neither is ever looked up by process name, and the system services are never used.

HTTP File Upload (XEP-0363, for XEP-0454 media sharing): the service ``upload.<domain>`` serves
HTTPS on 127.0.0.1 at ``https_port``, under the domain's own name and certificate
(``upload.localhost`` would not resolve).

WebSocket (RFC 7395, for browser clients such as Converse.js): with ``websocket_port`` set,
``mod_websocket`` serves plain HTTP on 127.0.0.1 at that port (``websocket_url``), considered
secure since it never leaves loopback; ``mod_blocklist`` comes with it, which Converse needs
(Prosody only: the browser tests run on Prosody).

:class:`Accounts` is one test module's (or test's) view of a shared server: the same facts,
with its own account and room names (a prefix), so that one server per kind can serve the
whole test session without state leaking between modules.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "KINDS",
    "Accounts",
    "Ejabberd",
    "Prosody",
    "XmppServer",
    "available",
    "make_server",
    "process_running",
    "running",
    "running_server",
]

DOMAIN = "localhost"
#: Largest file the test upload service accepts (room for a 50 MB file and its tag).
UPLOAD_LIMIT = 64 * 1024 * 1024
#: The server kinds every server-backed test runs on.
KINDS = ("prosody", "ejabberd")


class XmppServer(Protocol):
    """What the tests use of a private server."""

    kind: str
    directory: Path
    domain: str
    port: int  # c2s, STARTTLS required
    https_port: int  # the upload service's HTTPS listener

    @property
    def cert(self) -> Path: ...
    @property
    def muc(self) -> str: ...
    @property
    def upload_service(self) -> str: ...
    @property
    def upload_url(self) -> str: ...
    def register(self, user: str, password: str) -> str: ...
    def stored_upload(self, url: str) -> Path: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def __enter__(self) -> XmppServer: ...
    def __exit__(self, *exc: object) -> None: ...


def _self_signed(certs: Path, domain: str) -> tuple[Path, Path]:
    certs.mkdir(parents=True, exist_ok=True)
    key, crt = certs / f"{domain}.key", certs / f"{domain}.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={domain}",
            "-addext",
            f"subjectAltName=DNS:{domain}",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return key, crt


def _ports_open(*ports: int) -> bool:
    try:
        for port in ports:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
    except OSError:
        return False
    return True


# Prosody's configuration
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


def available(kind: str = "prosody") -> bool:
    tools = {"prosody": ("prosody", "prosodyctl"), "ejabberd": ("ejabberdctl", "erl")}[kind]
    return all(shutil.which(t) is not None for t in tools)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prosody:
    """One private Prosody; use as a context manager."""

    directory: Path
    domain: str = DOMAIN
    port: int = field(default_factory=_free_port)
    https_port: int = field(default_factory=_free_port)
    #: Plain-HTTP port of ``mod_websocket`` on 127.0.0.1; None: no WebSocket.
    websocket_port: int | None = None
    _proc: subprocess.Popen[bytes] | None = None
    kind: str = "prosody"

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def upload_url(self) -> str:
        """Where upload slots point: the domain's name, the loopback HTTPS port."""
        return f"https://{self.domain}:{self.https_port}/"

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
        _self_signed(self.directory / "certs", self.domain)
        self.config.write_text(
            CONFIG.format(
                dir=self.directory,
                port=self.port,
                domain=self.domain,
                https_port=self.https_port,
                upload_limit=UPLOAD_LIMIT,
                upload_quota=8 * UPLOAD_LIMIT,
                http_ports=self.websocket_port or "",
                web_modules=WEB_MODULES if self.websocket_port else "",
                websocket_config=WEBSOCKET_CONFIG.format(domain=self.domain) if self.websocket_port else "",
            )
        )

    def stored_upload(self, url: str) -> Path:
        """The file ``mod_http_file_share`` keeps for the slot of ``url`` (its data store
        encodes the slot id)."""
        slot = url.split("/")[-2]
        store = self.directory / "data" / f"{self.upload_service.replace('.', '%2e')}" / "http_file_share"
        (path,) = [p for p in store.glob("*.bin") if urllib.parse.unquote(p.name[:-4]) == slot]
        return path

    def register(self, user: str, password: str) -> str:
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, self.domain, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return f"{user}@{self.domain}"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-D"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        pid_file = self.directory / "prosody.pid"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            code = self._proc.poll()  # -D: the launcher exits once the daemon is detached
            if code not in (None, 0):
                raise RuntimeError(f"prosody failed to start ({code}): see {self.directory / 'prosody.log'}")
            if pid_file.exists() and _ports_open(
                self.port, self.https_port, *([self.websocket_port] if self.websocket_port else [])
            ):
                return
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


EJABBERD_CONFIG = """\
loglevel: info
log_rotate_count: 0
hosts: ["{domain}"]
certfiles: ["{dir}/certs/{domain}.pem"]
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    access: c2s
    shaper: c2s_shaper
    starttls_required: true
  - port: {https_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    tls: true
    request_handlers:
      /upload: mod_http_upload
  - port: {api_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
auth_password_format: scram
# in-band registration (the demo registers two accounts): not one per address per 10 minutes
registration_timeout: infinity
acl:
  local:
    user_regexp: ""
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  muc_create:
    allow: local
  pubsub_createnode:
    allow: local
  register:
    allow: all
  trusted_network:
    allow: loopback
api_permissions:
  "test harness on loopback":
    from: [mod_http_api]
    who:
      ip: "127.0.0.1/8"
    what: ["register", "status", "stop"]
shaper_rules:
  max_user_sessions: 20
  max_user_offline_messages: 5000
  c2s_shaper: none
modules:
  mod_adhoc: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_disco: {{}}
  mod_http_api: {{}}
  mod_http_upload:
    host: "upload.@HOST@"
    put_url: "https://@HOST@:{https_port}/upload"
    docroot: "{dir}/upload"
    max_size: {upload_limit}
  mod_mam:
    default: always
  mod_muc:
    host: "rooms.@HOST@"
    access: [allow]
    access_create: muc_create
    access_persistent: muc_create
    access_mam: [allow]
    default_room_options:
      mam: true
  mod_muc_admin: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins: [flat, pep]
    force_node_config:
      "eu.siacs.conversations.axolotl.*":
        access_model: open
  mod_register:
    ip_access: trusted_network
    access: register
  mod_roster:
    versioning: true
  mod_stream_mgmt:
    resend_on_timeout: if_offline
"""
# the Debian package's settings, with a pid file, node and distribution port of our own
EJABBERDCTL_CONFIG = """\
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH={dir}/ejabberd.pid
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT={dist_port}
"""


@dataclass
class Ejabberd:
    """One private ejabberd 23.01; use as a context manager.

    Its files live in a directory of its own under the system temporary directory (not
    pytest's, which the ``ejabberd`` user cannot enter), handed to that user, removed at stop;
    ``directory`` is only where the tests keep their own things next to it.
    """

    directory: Path
    domain: str = DOMAIN
    port: int = field(default_factory=_free_port)
    https_port: int = field(default_factory=_free_port)
    api_port: int = field(default_factory=_free_port)
    dist_port: int = field(default_factory=_free_port)
    kind: str = "ejabberd"
    home: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"e2ee-test-{self.dist_port}@localhost"

    @property
    def muc(self) -> str:
        return f"rooms.{self.domain}"

    @property
    def cert(self) -> Path:
        assert self.home is not None
        return self.home / "certs" / f"{self.domain}.crt"

    @property
    def upload_service(self) -> str:
        return f"upload.{self.domain}"

    @property
    def upload_url(self) -> str:
        return f"https://{self.domain}:{self.https_port}/upload/"

    def stored_upload(self, url: str) -> Path:
        """The file ``mod_http_upload`` keeps for ``url``: its docroot mirrors the URL's path."""
        assert self.home is not None
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).removeprefix("/upload/")
        return self.home / "upload" / path

    def _ctl_argv(self, *args: str) -> list[str]:
        """``ejabberdctl`` on this private instance: its own config, spool, logs and node."""
        assert self.home is not None
        home = self.home
        return ["ejabberdctl", "--config-dir", str(home), "--config", str(home / "ejabberd.yml"),
                "--ctl-config", str(home / "ejabberdctl.cfg"), "--spool", str(home / "spool"),
                "--logs", str(home / "logs"), "--node", self.node, *args]  # fmt: skip

    def _ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self._ctl_argv(*args),
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def _write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        home = self.home = Path(tempfile.mkdtemp(prefix="e2ee-ejabberd-"))
        key, crt = _self_signed(home / "certs", self.domain)
        (home / "certs" / f"{self.domain}.pem").write_bytes(key.read_bytes() + crt.read_bytes())
        for sub in ("spool", "logs", "upload"):
            (home / sub).mkdir()
        (home / "ejabberd.yml").write_text(
            EJABBERD_CONFIG.format(
                dir=home,
                domain=self.domain,
                port=self.port,
                https_port=self.https_port,
                api_port=self.api_port,
                upload_limit=UPLOAD_LIMIT,
            )
        )
        (home / "ejabberdctl.cfg").write_text(EJABBERDCTL_CONFIG.format(dir=home, dist_port=self.dist_port))
        (home / "inetrc").write_text('{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n')
        home.chmod(0o755)
        if os.geteuid() == 0:  # ejabberdctl re-runs itself as the ejabberd user
            user = pwd.getpwnam("ejabberd")
            for path in (home, *home.rglob("*")):
                os.chown(path, user.pw_uid, user.pw_gid)

    def _api(self, command: str, args: dict[str, str] | None = None, timeout: float = 10) -> object:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/{command}",
            data=json.dumps(args or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (loopback)
            return json.loads(answer.read() or b"null")

    def register(self, user: str, password: str) -> str:
        try:
            self._api("register", {"user": user, "host": self.domain, "password": password})
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"ejabberd refused to register {user}: {e.read()!r}") from e
        return f"{user}@{self.domain}"

    def start(self) -> None:
        assert self.home is not None, "use the server as a context manager"
        self._proc = subprocess.Popen(
            self._ctl_argv("foreground"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                log = self.home / "logs" / "ejabberd.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"ejabberd failed to start ({code}): {tail}")
            if _ports_open(self.port, self.https_port, self.api_port):
                try:
                    self._api("status", timeout=2)
                    return
                except (OSError, ValueError):
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ejabberd did not start in time: see {self.home}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:  # what `ejabberdctl stop` does, without starting a second Erlang VM for it
                self._api("stop", timeout=5)
            except (OSError, ValueError):
                self._ctl("stop", timeout=30)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the node (the shell, su, beam and its helpers): the process group
        # it was started in, by the id recorded at start, and the pid the node wrote
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        pid_file = self.home / "ejabberd.pid" if self.home is not None else None
        if pid_file is not None and pid_file.exists():
            try:
                pid = int(pid_file.read_text().strip())
            except ValueError:
                pid = 0
            if pid > 0 and process_running(pid):
                os.kill(pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> Ejabberd:
        self._write()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.home is not None and not os.environ.get("E2EE_KEEP_SERVER"):
            shutil.rmtree(self.home, ignore_errors=True)


def make_server(kind: str, directory: Path) -> XmppServer:
    """A server of ``kind`` (one of :data:`KINDS`), not yet written nor started."""
    assert available(kind), f"{kind} is missing: scripts/test.sh installs it (apt-get install {kind})"
    if kind == "prosody":
        return Prosody(directory)
    if kind == "ejabberd":
        return Ejabberd(directory)
    raise ValueError(f"unknown server kind {kind!r}")


_namespaces = itertools.count(1)


@dataclass
class Accounts:
    """One test module's (or test's) share of a running server: the server's facts, with
    account and room names of its own (``<prefix><name>``), so tests sharing the server do not
    see each other's accounts, device lists, archives or rooms."""

    server: XmppServer
    prefix: str

    @classmethod
    def fresh(cls, server: XmppServer, hint: str, users: Iterable[str] = ()) -> Accounts:
        """A new share with each of ``users`` registered (password ``<user>-pw``)."""
        tag = "".join(c if c.isalnum() else "-" for c in hint.removeprefix("test_"))[:24].strip("-")
        accounts = cls(server, f"{tag}{next(_namespaces)}-")
        for user in users:
            accounts.register(user, f"{user}-pw")
        return accounts

    @classmethod
    def unprefixed(cls, server: XmppServer, users: Iterable[str]) -> Accounts:
        """The share for the README's examples, which name their accounts and rooms themselves
        (alice, bob; ann, ben, team): nothing else uses unprefixed names."""
        accounts = cls(server, "")
        for user in users:
            accounts.register(user, f"{user}-pw")
        return accounts

    kind = property(lambda self: self.server.kind)
    domain = property(lambda self: self.server.domain)
    port = property(lambda self: self.server.port)
    https_port = property(lambda self: self.server.https_port)
    cert = property(lambda self: self.server.cert)
    muc = property(lambda self: self.server.muc)
    upload_service = property(lambda self: self.server.upload_service)
    upload_url = property(lambda self: self.server.upload_url)
    directory = property(lambda self: self.server.directory)

    def user(self, name: str) -> str:
        """The account's local part."""
        return f"{self.prefix}{name}"

    def jid(self, name: str) -> str:
        return f"{self.prefix}{name}@{self.server.domain}"

    def room(self, name: str) -> str:
        return f"{self.prefix}{name}@{self.server.muc}"

    def register(self, name: str, password: str) -> str:
        return self.server.register(self.user(name), password)

    def stored_upload(self, url: str) -> Path:
        """The file the server keeps for the upload slot of ``url`` (tests tamper with it)."""
        return self.server.stored_upload(url)


@contextmanager
def running_server(kind: str, directory: Path, users: Iterable[str] = ()) -> Iterator[XmppServer]:
    """A started server of ``kind`` in ``directory``, each user registered (password ``<user>-pw``)."""
    with make_server(kind, directory) as server:
        if kind == "prosody":  # file storage: before start is as good as after
            for user in users:
                server.register(user, f"{user}-pw")
        server.start()
        if kind != "prosody":
            for user in users:
                server.register(user, f"{user}-pw")
        yield server


@contextmanager
def running(directory: Path, users: Iterable[str] = ("alice", "bob")) -> Iterator[Prosody]:
    """A started Prosody in ``directory`` with each user registered (password ``<user>-pw``): a
    server of one's own (bench/, a test that needs a fresh one); tests on both server kinds use
    the ``server`` fixture or :func:`running_server`."""
    assert available(), "Prosody is missing: scripts/test.sh installs it (apt-get install prosody)"
    with Prosody(directory) as server:
        for user in users:
            server.register(user, f"{user}-pw")
        server.start()
        yield server
