"""Test-side device built on our engine, with the same API as tests/peers/omemo_peer.PeerDevice,
so that tests can pair any two implementations.  Prekey bookkeeping here is deliberately
minimal; the engine's own device and bundle management is tested elsewhere."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from e2ee.flavour import Flavour
from e2ee.identity import IdentityKeyPair
from e2ee.legacy.wire import LEGACY
from e2ee.omemo2.wire import OMEMO2
from e2ee.primitives import x25519_public
from e2ee.rng import Random, system_random
from e2ee.session import PeerBundle, Session, accept, initiate
from tests.peers.omemo_peer import WireBundle

FLAVOURS: dict[str, Flavour] = {"omemo2": OMEMO2, "legacy": LEGACY}


def seeded_rng(label: str) -> Random:
    """Deterministic randomness for tests: SHA-256 in counter mode over a label."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
            counter += 1
        return out[:n]

    return rng


class OurDevice:
    def __init__(
        self,
        flavour: Literal["omemo2", "legacy"],
        bare_jid: str,
        device_id: int,
        ik_seed: bytes | None = None,
        rng: Random = system_random,
        num_prekeys: int = 100,
    ) -> None:
        self.flavour = FLAVOURS[flavour]
        self.bare_jid = bare_jid
        self.device_id = device_id
        self.rng = rng
        self.ik = IdentityKeyPair.from_seed(ik_seed if ik_seed is not None else rng(32))
        self.spk_id = 1
        self.spk_priv = rng(32)
        self.prekeys: dict[int, bytes] = {i: rng(32) for i in range(1, num_prekeys + 1)}
        self.sessions: dict[tuple[str, int], Session] = {}

    def identity_key(self) -> bytes:
        return self.flavour.own_identity(self.ik)

    def bundle(self) -> WireBundle:
        f = self.flavour
        spk = x25519_public(self.spk_priv)
        return WireBundle(
            ik=self.identity_key(),
            spk_id=self.spk_id,
            spk=f.encode_public(spk),
            spk_sig=f.sign_prekey(self.ik, spk),
            prekeys={i: f.encode_public(x25519_public(k)) for i, k in self.prekeys.items()},
        )

    def initiate(self, jid: str, device_id: int, bundle: WireBundle, key_material: bytes) -> bytes:
        ids = sorted(bundle.prekeys)
        pk_id = ids[self.rng(1)[0] % len(ids)]
        peer = PeerBundle(bundle.ik, bundle.spk_id, bundle.spk, bundle.spk_sig, pk_id, bundle.prekeys[pk_id])
        session = initiate(self.flavour, self.ik, peer, self.rng)
        self.sessions[(jid, device_id)] = session
        data, is_kex = session.encrypt(key_material)
        assert is_kex
        return data

    def encrypt(self, jid: str, device_id: int, key_material: bytes) -> tuple[bytes, bool]:
        return self.sessions[(jid, device_id)].encrypt(key_material)

    def decrypt(self, jid: str, device_id: int, wire: bytes, is_key_exchange: bool) -> bytes:
        key = (jid, device_id)
        session = self.sessions.get(key)
        if not is_key_exchange:
            if session is None:
                raise LookupError("no session")
            return session.decrypt(wire, self.rng)
        kex = self.flavour.parse_key_exchange(wire)
        if session is not None and session.same_key_exchange(kex):
            return session.decrypt(kex.message, self.rng)
        new, plaintext = accept(
            self.flavour,
            self.ik,
            kex,
            lambda i: self.spk_priv if i == self.spk_id else None,
            self.prekeys.get,
            self.rng,
        )
        del self.prekeys[kex.pk_id]
        self.sessions[key] = new
        return plaintext

    def state(self, jid: str, device_id: int) -> bytes:
        return self.sessions[(jid, device_id)].to_bytes()


def sql(path: Path, query: str, *args: object) -> list[tuple[Any, ...]]:
    """Run one SQL statement on a keystore file behind its back (to damage it in tests)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(query, args).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


ROOT = Path(__file__).resolve().parent.parent


def cli_command(server: Any, home: Path, *args: str) -> list[str]:
    """``e2ee --home HOME --server 127.0.0.1:PORT --ca-file CERT ARGS`` on a test server (an
    :class:`~tests.xmpp_server.XmppServer` or a module's ``Accounts``)."""
    return [
        sys.executable,
        "-m",
        "e2ee.client.cli",
        "--home",
        str(home),
        "--server",
        f"127.0.0.1:{server.port}",
        "--ca-file",
        str(server.cert),
        *args,
    ]


def cli_env(xmpp_password: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: the cheapest KDF, a keystore passphrase and the XMPP password."""
    return {**os.environ, "E2EE_PASSPHRASE": "pw", "E2EE_KDF": "floor", "E2EE_XMPP_PASSWORD": xmpp_password, **extra}


def run_cli(
    server: Any, home: Path, xmpp_password: str, *args: str, timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """The CLI as a person runs it (:func:`cli_command` in :func:`cli_env`), to completion."""
    return subprocess.run(
        cli_command(server, home, *args),
        cwd=ROOT,
        env=cli_env(xmpp_password, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
