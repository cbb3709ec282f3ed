"""The user's e2ee home: where the keystore lives, how its passphrase is obtained, and the
account record (JID, XMPP password) kept inside the keystore."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

from e2ee.engine import Engine
from e2ee.errors import UsageError
from e2ee.keystore import KdfParams, Keystore

__all__ = ["Account", "default_home", "keystore_path", "new_passphrase", "open_engine", "passphrase"]

PASSPHRASE_ENV = "E2EE_PASSPHRASE"
NEW_PASSPHRASE_ENV = "E2EE_NEW_PASSPHRASE"
XMPP_PASSWORD_ENV = "E2EE_XMPP_PASSWORD"
#: Test and CI knob: use the cheapest KDF parameters the keystore allows ("floor").
KDF_ENV = "E2EE_KDF"


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "e2ee"


def keystore_path(home: Path) -> Path:
    return home / "keystore.db"


def kdf_params() -> KdfParams:
    return KdfParams.floor() if os.environ.get(KDF_ENV) == "floor" else KdfParams()


def ask(prompt: str, env: str) -> str:
    """Ask for a secret on the terminal; with no terminal to ask on (standard input closed or
    not a terminal that answers), a usage error naming the variable that gives it instead."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise UsageError(f"{prompt.rstrip(': ')}: no terminal to ask on; set {env}") from None


def passphrase(prompt: str = "Keystore passphrase: ") -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        value = ask(prompt, PASSPHRASE_ENV)
    if not value:
        raise UsageError("an empty passphrase is not allowed")
    return value


def initial_passphrase() -> str:
    """The passphrase of a new keystore: ``E2EE_PASSPHRASE``, else asked twice."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        if not value:
            raise UsageError("an empty passphrase is not allowed")
        return value
    value = ask("Choose a keystore passphrase: ", PASSPHRASE_ENV)
    if ask("Repeat it: ", PASSPHRASE_ENV) != value:
        raise UsageError("the passphrases do not match")
    if not value:
        raise UsageError("an empty passphrase is not allowed")
    return value


def new_passphrase() -> str:
    value = os.environ.get(NEW_PASSPHRASE_ENV)
    if value is None:
        value = ask("New keystore passphrase: ", NEW_PASSPHRASE_ENV)
        if ask("Repeat it: ", NEW_PASSPHRASE_ENV) != value:
            raise UsageError("the passphrases do not match")
    if not value:
        raise UsageError("an empty passphrase is not allowed")
    return value


def xmpp_password() -> str:
    value = os.environ.get(XMPP_PASSWORD_ENV)
    if value is None:
        value = ask("XMPP account password: ", XMPP_PASSWORD_ENV)
    return value


class Account:
    """The account record in the keystore (table ``own``, key ``account``)."""

    def __init__(self, storage: Keystore) -> None:
        raw = storage.get("own", "account")
        data = json.loads(raw.decode()) if raw else {}
        self.password: str | None = data.get("password")

    @staticmethod
    def store(storage: Keystore, password: str) -> None:
        storage.put("own", "account", json.dumps({"password": password}).encode())


def open_engine(home: Path) -> tuple[Keystore, Engine]:
    """Open the keystore of ``home`` and the engine on it (the caller closes the keystore).  The
    engine has the OpenPGP fallback on GnuPG (:class:`e2ee.client.gpg.GnuPG`); GnuPG only runs, on a
    temporary home that is removed at exit, when an OpenPGP operation is needed."""
    from .gpg import GnuPG

    path = keystore_path(home)
    if not path.exists():
        raise UsageError(f"no keystore in {home}: run 'e2ee init --jid JID' first")
    ks = Keystore.open(path, passphrase())
    try:
        return ks, Engine(ks, openpgp=GnuPG())
    except BaseException:
        ks.close()
        raise
