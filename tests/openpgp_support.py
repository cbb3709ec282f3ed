"""Test harness for OpenPGP for XMPP: engines with a real GnuPG runner, a PEP stand-in that also
carries the OpenPGP effects, and :class:`PlainGpg`, the ``gpg`` command line in a home of its own
(an independent OpenPGP peer: neither python-gnupg nor any code of ours is involved).

Nothing here mocks our code: engines, storage and GnuPG are real; the "server" only keeps and
returns the XML items the way PEP does.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from e2ee.client.gpg import GnuPG
from e2ee.engine import NAMESPACES, Engine, parse_device_list
from e2ee.openpgp.xml import NS as OX
from e2ee.openpgp.xml import PUBLIC_KEYS_NODE, build_pubkey
from e2ee.results import Effect, FetchPublicKey, FetchPublicKeys, Publish
from e2ee.storage import MemoryStorage, Storage

from .engine_support import Clock, Net
from .support import seeded_rng

__all__ = ["OxNet", "PlainGpg", "openpgp_element", "signcrypt_xml"]


@dataclass
class OxNet(Net):
    """:class:`~tests.engine_support.Net` plus the OpenPGP nodes: the newest item per node."""

    clock: Clock = field(default_factory=lambda: Clock(datetime.now(UTC).replace(microsecond=0)))
    latest: dict[tuple[str, str], ET.Element] = field(default_factory=dict)
    runners: list[GnuPG] = field(default_factory=list)

    def publish(self, owner: Engine, effect: Publish) -> None:
        self.latest[(owner.jid, effect.node)] = effect.payload
        super().publish(owner, effect)

    def run(self, engine: Engine, effects: tuple[Effect, ...] | list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, FetchPublicKeys):
                self.run(
                    engine, engine.openpgp.on_public_keys(effect.jid, self.latest.get((effect.jid, PUBLIC_KEYS_NODE)))
                )
            elif isinstance(effect, FetchPublicKey):
                node = f"{PUBLIC_KEYS_NODE}:{effect.fingerprint}"
                self.run(
                    engine,
                    engine.openpgp.on_public_key(effect.jid, effect.fingerprint, self.latest.get((effect.jid, node))),
                )
            else:
                self.run_omemo(engine, [effect])

    def run_omemo(self, engine: Engine, effects: list[Effect]) -> None:
        super().run(engine, effects)

    def runner(self) -> GnuPG:
        g = GnuPG()
        self.runners.append(g)
        return g

    def ox_device(
        self, jid: str, seed: str, *, omemo: bool = True, storage: Storage | None = None, gpg: GnuPG | None = None
    ) -> Engine:
        """A device of ``jid`` with the OpenPGP fallback, its key published (and its OMEMO
        device unless ``omemo`` is false: an OpenPGP-only client)."""
        lists = []
        for ns in NAMESPACES:
            elem = self.pep.device_list(jid, ns)
            if elem is not None:
                lists.append(parse_device_list(ns, elem))
        engine = Engine.create(
            storage if storage is not None else MemoryStorage(),
            jid,
            lists,
            rng=seeded_rng(seed),
            clock=self.clock,
            openpgp=gpg or self.runner(),
        )
        self.engines.append(engine)
        if omemo:
            for effect in engine.publish():
                self.publish(engine, effect)
        self.run(engine, [FetchPublicKeys(engine.jid)])
        self.run(engine, engine.openpgp.publish())
        return engine

    def ox_prepare(self, engine: Engine, jids: list[str]) -> None:
        for _ in range(6):
            effects = engine.prepare(jids)
            if not effects:
                return
            self.run(engine, effects)

    def close(self) -> None:
        for g in self.runners:
            g.close()


def openpgp_element(message: bytes) -> ET.Element:
    elem = ET.Element(f"{{{OX}}}openpgp")
    elem.text = base64.b64encode(message).decode()
    return elem


def signcrypt_xml(to: list[str], stamp: str, body: str, *, root: str = "signcrypt", rpad: str = "xyz") -> bytes:
    tos = "".join(f"<to jid='{t}'/>" for t in to)
    return (
        f"<{root} xmlns='{OX}'>{tos}<time stamp='{stamp}'/><rpad>{rpad}</rpad>"
        f"<payload><body xmlns='jabber:client'>{body}</body></payload></{root}>"
    ).encode()


class PlainGpg:
    """The ``gpg`` command line in a home of its own.  Status lines go to stderr (``--status-fd
    2``) and GnuPG's log to a file, so ``stderr`` holds only status lines."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)

    def run(
        self, *args: str, data: bytes = b"", check: bool = True, passphrase: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = [
            "gpg",
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--status-fd",
            "2",
            "--log-file",
            str(self.home / "log"),
            "--trust-model",
            "always",
        ]
        if passphrase is not None:
            cmd += ["--pinentry-mode", "loopback", "--passphrase", passphrase]
        proc = subprocess.run([*cmd, *args], input=data, capture_output=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"gpg {args} failed: {proc.stderr.decode(errors='replace')}")
        return proc

    def generate(self, uid: str, *, expire: str = "0", faked_time: str | None = None, encrypt: bool = True) -> str:
        """A new unprotected key (ed25519 primary, cv25519 subkey) with the one user id ``uid``."""
        fake = ["--faked-system-time", faked_time] if faked_time else []
        proc = self.run(
            *fake,
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
            "--yes",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            expire,
        )
        fpr = next(line.split()[3] for line in proc.stderr.decode().splitlines() if " KEY_CREATED " in line)
        if encrypt:
            self.run(
                *fake,
                "--passphrase",
                "",
                "--pinentry-mode",
                "loopback",
                "--quick-add-key",
                fpr,
                "cv25519",
                "encr",
                expire,
            )
        return fpr

    def export(self, fpr: str) -> bytes:
        return self.run("--export-options", "export-minimal", "--export", fpr).stdout

    def pubkey_item(self, fpr: str) -> ET.Element:
        return build_pubkey(self.export(fpr), None)

    def import_key(self, data: bytes) -> None:
        self.run("--import", data=data)

    def encrypt(
        self, data: bytes, recipients: list[str], *, signers: list[str] = (), extra: tuple[str, ...] = ()
    ) -> bytes:  # type: ignore[assignment]
        args = ["--encrypt"]
        for r in recipients:
            args += ["--recipient", r]
        if signers:
            args.append("--sign")
            for s in signers:
                args += ["--local-user", s]
        return self.run(*extra, *args, data=data).stdout

    def sign(self, data: bytes, signer: str) -> bytes:
        return self.run("--local-user", signer, "--sign", data=data).stdout

    def decrypt(
        self, data: bytes, *, passphrase: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        return self.run("--decrypt", data=data, check=check, passphrase=passphrase)

    def packets(self, data: bytes, *, passphrase: str | None = None) -> str:
        return self.run("--list-packets", data=data, check=False, passphrase=passphrase).stdout.decode(errors="replace")

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True, timeout=15)
        shutil.rmtree(self.home, ignore_errors=True)
