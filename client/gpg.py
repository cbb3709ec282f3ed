"""OpenPGP through GnuPG (python-gnupg): the :class:`~e2ee.openpgp.crypto.OpenPgpCrypto` the client
gives the engine (``Engine(storage, openpgp=GnuPG())``).

Why here and not in ``e2ee/``: GnuPG is a subprocess, and the engine is sans-I/O.  The engine
keeps every decision (which keys, which signer, trust, affixes, replays) and its records; this
runner only executes OpenPGP operations, and its verdicts on GnuPG's output come from the pure
:mod:`e2ee.openpgp.status`.

Secrets at rest (issue 5; the choice):

* The secret key lives in the encrypted keystore, protected with a random 256-bit passphrase
  stored beside it (:mod:`e2ee.openpgp.backend`).
* GnuPG runs on a **temporary** home: a fresh directory (mode 0700) created on first use, on a
  tmpfs when there is one (``/dev/shm``, else ``$XDG_RUNTIME_DIR``, else the system temp
  directory), removed by :meth:`GnuPG.close` after stopping the gpg-agent GnuPG started for it
  (``gpgconf --homedir H --kill gpg-agent``), and at interpreter exit at the latest.
* Only *protected* secret keys ever enter that home: keys are generated with the passphrase
  (``Passphrase:`` in the parameter block, sent on a pipe), imported protected, and GnuPG's
  agent keeps them protected.  Passphrases travel on GnuPG's passphrase pipe
  (``--pinentry-mode loopback``), never on the command line.  A key restored from a backup is
  protected in memory before import (GnuPG would store an unprotected import as it is).

Hardening (catalogue P5): its own home (no user ``gpg.conf``, and ``--no-options``), a clean
environment, ``--batch --no-tty --no-verbose`` (python-gnupg), no key retrieval of any kind
(``--no-auto-key-retrieve --no-auto-key-import --auto-key-locate local --disable-dirmngr``),
no symmetric passphrase cache, GnuPG's log written to a file in its home so that the status
channel carries nothing but status lines, passphrases checked for line breaks and NUL first, and
nothing from a peer ever passed as an argument (only validated fingerprints are).

Each operation is one GnuPG process (milliseconds); the session calls them on its event loop,
which is acceptable for a fallback path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gnupg

from e2ee.errors import DecryptionFailed, InvalidPassphrase, InvalidPublicKey, OpenPgpFailure, UsageError
from e2ee.openpgp.crypto import KeyInfo, PublicKey, SecretKey, Verified
from e2ee.openpgp.status import (
    Status,
    check_decryption,
    check_encryption,
    check_symmetric_decryption,
    parse_status,
)

__all__ = ["GnuPG"]

_FPR = re.compile(r"[0-9A-F]{40}", re.ASCII)
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")

#: The key generation parameters (XEP-0373 via the spec digest: no e-mail part in the user id).
_KEY_PARAMS = (
    "Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
    "Subkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
    "Name-Real: {uid}\nExpire-Date: 0\nPassphrase: {passphrase}\n%commit\n"
)


def _tmp_root() -> str | None:
    for candidate in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR")):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def _agent_pid(home: str, env: dict[str, str]) -> int | None:
    """The pid of the agent serving ``home``, if one runs (never starts one)."""
    tool = shutil.which("gpg-connect-agent", path=env["PATH"])
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "--homedir", home, "--no-autostart", "getinfo pid", "/bye"],
            env=env,
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("D ") and line[2:].strip().isdigit():
            return int(line[2:].strip())
    return None


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _cleanup(home: str, gpgconf: str | None, env: dict[str, str]) -> None:
    """Stop the agent GnuPG started for ``home`` (that one only: it is addressed through the
    home's socket) and wait until it is gone, then delete the directory."""
    if gpgconf is not None:
        pid = _agent_pid(home, env)
        try:
            subprocess.run(
                [gpgconf, "--homedir", home, "--kill", "gpg-agent"],
                env=env,
                capture_output=True,
                timeout=15,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            pid = None
        deadline = time.monotonic() + 5
        while pid is not None and _running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    shutil.rmtree(home, ignore_errors=True)


def _check_passphrase(passphrase: str) -> None:
    if not isinstance(passphrase, str) or not passphrase or any(c in passphrase for c in "\r\n\x00"):
        raise InvalidPassphrase("a passphrase for GnuPG must be non-empty and hold no line break or NUL")


def _check_fingerprint(fpr: str) -> str:
    if not isinstance(fpr, str) or not _FPR.fullmatch(fpr):
        raise UsageError("OpenPGP fingerprints are 40 upper-case hex digits")
    return fpr


def _status(result: Any) -> list[Status]:
    return parse_status(getattr(result, "stderr", "") or "")


class _Bounded:
    """python-gnupg ``on_data`` hook: keep at most ``limit`` bytes of output."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.overflow = False

    def __call__(self, chunk: bytes) -> bool:
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflow = True
            return False
        return True


class GnuPG:
    """OpenPGP operations on a private, temporary GnuPG home (see the module docstring).  Use as
    a context manager or call :meth:`close`."""

    def __init__(self, binary: str = "gpg", *, tmp_dir: str | os.PathLike[str] | None = None) -> None:
        self._binary = binary
        self._tmp_dir = None if tmp_dir is None else str(tmp_dir)
        self._gpg: Any = None
        self._home: Path | None = None
        self._finalizer: weakref.finalize[Any, GnuPG] | None = None
        self._public: set[str] = set()
        self._secret: set[str] = set()
        #: how many GnuPG processes this object ran (tests check that refused input ran none)
        self.runs = 0

    def __enter__(self) -> GnuPG:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def home(self) -> Path | None:
        """The temporary GnuPG home, once created."""
        return self._home

    def close(self) -> None:
        """Stop the agent and delete the temporary home (its protected keys included)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._gpg = None
        self._home = None
        self._public.clear()
        self._secret.clear()

    def _g(self) -> Any:
        if self._gpg is not None:
            return self._gpg
        home = Path(tempfile.mkdtemp(prefix="e2ee-gpg-", dir=self._tmp_dir or _tmp_root()))
        os.chmod(home, 0o700)
        # The agent's own protection of stored keys: our passphrases are 256-bit random strings,
        # so key stretching adds nothing; a fixed count also skips the agent's seconds-long
        # calibration at start.
        (home / "gpg-agent.conf").write_text("s2k-count 65536\n")
        env = {"PATH": os.environ.get("PATH", os.defpath), "GNUPGHOME": str(home), "HOME": str(home), "LC_ALL": "C"}
        gpgconf = shutil.which("gpgconf", path=env["PATH"])
        self._finalizer = weakref.finalize(self, _cleanup, str(home), gpgconf, env)
        options = [
            "--no-options",
            "--log-file",
            str(home / "gpg.log"),
            "--no-auto-key-retrieve",
            "--no-auto-key-import",
            "--auto-key-locate",
            "local",
            "--disable-dirmngr",
            "--no-symkey-cache",
            "--no-include-key-block",
            "--no-emit-version",
            "--no-comments",
            "--keyid-format",
            "long",
            "--compress-algo",
            "none",
            "--trust-model",
            "always",
        ]
        try:
            self._gpg = gnupg.GPG(gpgbinary=self._binary, gnupghome=str(home), options=options, env=env)
        except (OSError, ValueError) as e:
            self.close()
            raise OpenPgpFailure(f"GnuPG cannot run: {e}") from None
        self._home = home
        return self._gpg

    def _run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        g = self._g()
        self.runs += 1
        return getattr(g, name)(*args, **kwargs)

    # ------------------------------------------------------------------ keys

    def _import_public(self, keys: Sequence[PublicKey]) -> None:
        for key in keys:
            fpr = _check_fingerprint(key.fingerprint)
            if fpr in self._public:
                continue
            result = self._run("import_keys", key.data)
            if fpr not in {s.args[1] for s in _status(result) if s.keyword == "IMPORT_OK" and len(s.args) > 1}:
                raise OpenPgpFailure(f"GnuPG did not import key {fpr}")
            self._public.add(fpr)

    def _import_secret(self, key: SecretKey) -> None:
        fpr = _check_fingerprint(key.fingerprint)
        if fpr in self._secret:
            return
        _check_passphrase(key.passphrase)
        result = self._run("import_keys", key.data, passphrase=key.passphrase)
        ok = [s.args for s in _status(result) if s.keyword == "IMPORT_OK" and len(s.args) > 1 and s.args[1] == fpr]
        if not any(int(a[0]) & 16 for a in ok if a[0].isdigit()):
            raise OpenPgpFailure(f"GnuPG did not import our secret key {fpr}")
        self._secret.add(fpr)
        self._public.add(fpr)

    def generate_key(self, user_id: str, passphrase: str) -> bytes:
        _check_passphrase(passphrase)
        if not user_id.startswith("xmpp:") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in user_id):
            raise UsageError("an OpenPGP user id for XMPP is xmpp:<bare JID>, without control characters")
        result = self._run("gen_key", _KEY_PARAMS.format(uid=user_id, passphrase=passphrase))
        created = [s.args for s in _status(result) if s.keyword == "KEY_CREATED"]
        if result.returncode != 0 or len(created) != 1 or len(created[0]) < 2 or not _FPR.fullmatch(created[0][1]):
            raise OpenPgpFailure("GnuPG could not generate a key")
        fpr = created[0][1]
        secret = self._run("export_keys", fpr, secret=True, armor=False, passphrase=passphrase)
        if not isinstance(secret, bytes) or not secret:
            raise OpenPgpFailure("GnuPG did not export the new key")
        self._secret.add(fpr)
        self._public.add(fpr)
        return secret

    def inspect_public_key(self, data: bytes) -> KeyInfo:
        result = self._run("import_keys", data)
        fprs = {s.args[1] for s in _status(result) if s.keyword == "IMPORT_OK" and len(s.args) > 1}
        if len(fprs) != 1 or not _FPR.fullmatch(next(iter(fprs))):
            raise InvalidPublicKey("GnuPG did not import exactly one key")
        fpr = fprs.pop()
        self._public.add(fpr)
        listing = self._run("list_keys", keys=[fpr])
        return _key_info(fpr, bytes(getattr(listing, "data", b"") or b""))

    # ------------------------------------------------------------------ messages

    def encrypt_and_sign(self, plaintext: bytes, recipients: Sequence[PublicKey], signer: SecretKey) -> bytes:
        self._import_public(recipients)
        self._import_secret(signer)
        fprs = [_check_fingerprint(k.fingerprint) for k in recipients]
        result = self._run(
            "encrypt",
            plaintext,
            fprs,
            sign=signer.fingerprint,
            passphrase=signer.passphrase,
            armor=False,
            always_trust=True,
        )
        check_encryption(_status(result), result.returncode, signed=True)
        return bytes(result.data)

    def decrypt_and_verify(
        self, message: bytes, senders: Sequence[PublicKey], recipient: SecretKey, max_size: int
    ) -> Verified:
        self._import_public(senders)
        self._import_secret(recipient)
        result, overflow = self._decrypt_bounded(message, max_size, passphrase=recipient.passphrase, always_trust=True)
        primary, signing = check_decryption(_status(result), result.returncode)
        if overflow:
            raise DecryptionFailed("decrypted content too large")
        return Verified(bytes(result.data), primary, signing)

    def encrypt_symmetric(self, plaintext: bytes, passphrase: str) -> bytes:
        _check_passphrase(passphrase)
        result = self._run("encrypt", plaintext, None, symmetric="AES128", passphrase=passphrase, armor=False)
        check_encryption(_status(result), result.returncode, signed=False)
        return bytes(result.data)

    def decrypt_symmetric(self, message: bytes, passphrase: str, max_size: int) -> bytes:
        _check_passphrase(passphrase)
        result, overflow = self._decrypt_bounded(message, max_size, passphrase=passphrase)
        check_symmetric_decryption(_status(result), result.returncode)
        if overflow:
            raise DecryptionFailed("decrypted content too large")
        return bytes(result.data)

    def _decrypt_bounded(self, message: bytes, max_size: int, **options: Any) -> tuple[Any, bool]:
        """Run ``gpg --decrypt`` keeping at most ``max_size`` bytes of output: the result (its
        status still to be judged by the caller) and whether the output was cut."""
        bound = _Bounded(max_size)
        g = self._g()
        g.on_data = bound
        try:
            result = self._run("decrypt", message, **options)
        finally:
            g.on_data = None
        return result, bound.overflow


def _unescape(field: bytes) -> str:
    return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), field).decode("utf-8", "replace")


def _key_info(fpr: str, listing: bytes) -> KeyInfo:
    """Read ``gpg --with-colons --list-keys FPR`` output (GnuPG ``doc/DETAILS``)."""
    revoked = expired = can_encrypt = False
    uids: list[str] = []
    found = False
    in_primary = False
    for line in listing.split(b"\n"):
        f = line.rstrip(b"\r").split(b":")
        kind = f[0]
        if kind == b"pub":
            in_primary = True
            validity = f[1] if len(f) > 1 else b""
            revoked, expired = validity == b"r", validity == b"e"
            can_encrypt = len(f) > 11 and b"E" in f[11]
        elif kind == b"fpr" and in_primary:
            found = len(f) > 9 and f[9].decode("ascii", "replace") == fpr
            in_primary = False
        elif kind == b"uid" and len(f) > 9 and f[1] not in (b"r", b"e", b"i"):
            uids.append(_unescape(f[9]))
        elif kind == b"sub":
            in_primary = False
    if not found:
        raise InvalidPublicKey("GnuPG does not list the imported key")
    return KeyInfo(fpr, tuple(uids), revoked, expired, can_encrypt)
