"""``e2ee demo`` (no server): alice's two devices and bob exchange encrypted messages through
the engine in one process.

At this stage of the project the demo runs the crypto layer only: X3DH session set-up and the
Double Ratchet in both OMEMO 2 and legacy OMEMO, with fingerprints.  Device lists, bundles,
trust and the keystore join it as they are built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TextIO

from e2ee.flavour import Flavour
from e2ee.identity import IdentityKeyPair
from e2ee.legacy.wire import LEGACY
from e2ee.omemo2.wire import OMEMO2
from e2ee.primitives import x25519_public
from e2ee.session import PeerBundle, Session, accept, initiate


def fingerprint(ik: IdentityKeyPair) -> str:
    """The X25519 identity key in hex groups of 8, the form Conversations and Dino show."""
    h = ik.x25519_public.hex()
    return " ".join(h[i:i + 8] for i in range(0, 64, 8))


@dataclass
class Device:
    jid: str
    device_id: int
    flavour: Flavour
    ik: IdentityKeyPair = field(default_factory=IdentityKeyPair.generate)
    spk: bytes = field(default_factory=lambda: os.urandom(32))
    prekeys: dict[int, bytes] = field(default_factory=lambda: {i: os.urandom(32) for i in range(1, 11)})
    sessions: dict[tuple[str, int], Session] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.jid}/{self.device_id}"

    def bundle(self, pk_id: int) -> PeerBundle:
        f, spk_pub = self.flavour, x25519_public(self.spk)
        return PeerBundle(
            f.own_identity(self.ik), 1, f.encode_public(spk_pub),
            f.sign_prekey(self.ik, spk_pub), pk_id,
            f.encode_public(x25519_public(self.prekeys[pk_id])),
        )

    def send(self, to: Device, text: str) -> tuple[bytes, bool]:
        key = (to.jid, to.device_id)
        if key not in self.sessions:
            self.sessions[key] = initiate(self.flavour, self.ik, to.bundle(min(to.prekeys)))
        return self.sessions[key].encrypt(text.encode())

    def receive(self, frm: Device, data: bytes, is_kex: bool) -> str:
        key = (frm.jid, frm.device_id)
        if is_kex:
            kex = self.flavour.parse_key_exchange(data)
            existing = self.sessions.get(key)
            if existing is not None and existing.same_key_exchange(kex):
                return existing.decrypt(kex.message).decode()
            session, plain = accept(self.flavour, self.ik, kex, lambda i: self.spk, self.prekeys.get)
            del self.prekeys[kex.pk_id]
            self.sessions[key] = session
            return plain.decode()
        return self.sessions[key].decrypt(data).decode()


def run(out: TextIO) -> int:
    for flavour in (OMEMO2, LEGACY):
        print(f"== {flavour.namespace} ({flavour.name})", file=out)
        alice_phone = Device("alice@example.org", 1001, flavour)
        alice_laptop = Device("alice@example.org", 1002, flavour)
        bob = Device("bob@example.net", 2001, flavour)
        for d in (alice_phone, alice_laptop, bob):
            print(f"  {d.name:26} fingerprint {fingerprint(d.ik)}", file=out)
        script = [
            (alice_phone, "Hi Bob, this is my phone."),
            (bob, "Hello Alice! Got it."),
            (alice_laptop, "And this is my laptop."),
            (bob, "Both of your devices can read this."),
        ]
        everyone = (alice_phone, alice_laptop, bob)
        for sender, text in script:
            print(f"  {sender.name} sends: {text!r}", file=out)
            for rcpt in everyone:
                if rcpt is sender:
                    continue
                data, is_kex = sender.send(rcpt, text)
                got = rcpt.receive(sender, data, is_kex)
                assert got == text
                kind = "key exchange" if is_kex else "message"
                print(f"    -> {rcpt.name:26} decrypted ({kind}, {len(data)} bytes): {got!r}", file=out)
    print("demo finished: every device decrypted every message meant for it", file=out)
    return 0
