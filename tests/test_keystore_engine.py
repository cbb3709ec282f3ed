"""The engine on the encrypted keystore: a realistic session (several contacts and devices, both
namespaces, skipped keys, a catch-up) works the same as on the in-memory store, and afterwards no
secret, plaintext, JID or device id appears in the database, its WAL or its other files in any
encoding."""

from __future__ import annotations

import base64
import random
from pathlib import Path

from e2ee.engine import Engine
from e2ee.keystore import KdfParams, Keystore
from e2ee.results import Decrypted, SendMessage

from .engine_support import LEGACY, O2, Net
from .support import seeded_rng

PW = "a passphrase for the scan test"


def _encodings(secret: bytes) -> list[bytes]:
    out = [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]
    if len(secret) >= 12:  # base64 of the secret at another alignment: search a middle chunk
        out += [base64.b64encode(secret[1:])[4:-4], base64.b64encode(secret[2:])[4:-4]]
    return out


def _needles(engines: list[Engine], bodies: list[str]) -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    for e in engines:
        needles[f"{e.jid} identity seed"] = e.context.own.identity.seed
        needles[f"{e.jid} identity x25519 private"] = e.context.own.identity.x25519_private
        needles[f"jid {e.jid}"] = e.jid.encode()
        needles[f"device id {e.device_id} (text)"] = str(e.device_id).encode()
        needles[f"device id {e.device_id} (4 bytes)"] = e.device_id.to_bytes(4, "big")
        needles[f"device id {e.device_id} (4 bytes le)"] = e.device_id.to_bytes(4, "little")
        storage = e.storage
        for table in ("own", "session", "skipped", "device", "bundle", "trust"):
            for key in storage.keys(table):
                value = storage.get(table, key)
                assert value is not None
                if len(value) >= 16:
                    needles[f"{e.jid} record {table}/{key}"] = value
                if len(key) >= 6:  # a 3-byte name ("spk") turns up by chance in some MB of ciphertext
                    needles[f"{e.jid} key {table}/{key}"] = key.encode()
        rec = e.context.own._prekeys()["keys"]
        for pk_id, entry in rec.items():
            needles[f"{e.jid} prekey {pk_id}"] = bytes.fromhex(entry["priv"])
        spk = e.context.own._spk()
        needles[f"{e.jid} spk"] = bytes.fromhex(spk["current"]["priv"])
        for sset_key in storage.keys("session"):
            for entry in e.context.sessions.load(sset_key).entries:
                r = entry.session.ratchet
                for name in ("root_key", "dhs_priv", "cks", "ckr"):
                    v = getattr(r, name)
                    if v:
                        needles[f"{e.jid} {sset_key} {name}"] = v
    for b in bodies:
        needles[f"body {b}"] = b.encode()
    return needles


def _scan(files: list[Path], needles: dict[str, bytes]) -> list[str]:
    found = []
    blobs = {p.name: p.read_bytes() for p in files if p.exists()}
    for what, secret in needles.items():
        for enc in _encodings(secret):
            for name, blob in blobs.items():
                if enc in blob:
                    found.append(f"{what} in {name}")
    return found


def test_realistic_session_on_keystores_leaves_nothing_readable(tmp_path: Path) -> None:
    net = Net()
    stores: list[Keystore] = []

    def device(jid: str, seed: str, namespaces: tuple[str, ...] = (O2, LEGACY)) -> Engine:
        ks = Keystore.create(tmp_path / f"{seed}.db", PW, kdf=KdfParams.floor())
        stores.append(ks)
        from e2ee.engine import parse_device_list

        lists = [parse_device_list(ns, el) for ns in (O2, LEGACY) if (el := net.pep.device_list(jid, ns)) is not None]
        engine = Engine.create(ks, jid, lists, rng=seeded_rng(seed), clock=net.clock)
        net.engines.append(engine)
        from e2ee.results import Publish

        for effect in engine.publish():
            if isinstance(effect, Publish) and net._namespace_of(effect.node) in namespaces:
                net.publish(engine, effect)
        return engine

    alice1 = device("alice@example.org", "ks-a1")
    alice2 = device("alice@example.org", "ks-a2", namespaces=(LEGACY,))
    bob = device("bob@example.net", "ks-b")
    carol1 = device("carol@example.com", "ks-c1")
    carol2 = device("carol@example.com", "ks-c2")
    everyone = [alice1, alice2, bob, carol1, carol2]
    rnd = random.Random(5)  # some seeds make two senders pick the same one-time prekey of a device
    # (catalogue X7: the second key exchange then fails); this scenario is about what is stored
    bodies = [f"secret message number {i} {rnd.random()}" for i in range(60)]
    pending = []
    for i, body in enumerate(bodies):
        sender = rnd.choice(everyone)
        to = rnd.choice([j for j in ("alice@example.org", "bob@example.net", "carol@example.com") if j != sender.jid])
        res = net.encrypt(sender, [to], body)
        assert res.ready
        pending += [(sender, to, el, body) for el in res.elements.values()]
        if rnd.random() < 0.6:  # deliver some now, some later (skipped keys)
            rnd.shuffle(pending)
            keep = pending[len(pending) // 3 :]
            for s, t, el, b in pending[: len(pending) // 3]:
                _deliver(everyone, s, t, el, b)
            pending = keep
    for s, t, el, b in pending:
        _deliver(everyone, s, t, el, b)

    needles = _needles(everyone, bodies)
    assert len(needles) > 500
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files)
    assert not _scan(files, needles)  # while open (the WAL holds recent pages)
    for ks in stores:
        ks.close()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert not _scan(files, needles)


def _deliver(everyone: list[Engine], sender: Engine, to: str, el: object, body: str) -> None:
    for d in everyone:
        if d is sender or d.jid not in (to, sender.jid):
            continue
        out = d.decrypt(el, sender.jid, to=to)  # type: ignore[arg-type]
        if isinstance(out, Decrypted):
            assert out.body == body
        for e in out.effects:
            if isinstance(e, SendMessage):  # answers to key exchanges
                target = next(x for x in everyone if x.jid == e.jid and x.device_id == e.device_id)
                target.decrypt(e.encrypted, d.jid, to=e.jid)


def test_restored_copy_is_detected_and_no_ratchet_key_is_reused(tmp_path: Path) -> None:
    """Catalogue R13/K4: the restore is detected; after accepting it, the restored sessions never
    send again and trust must be re-confirmed; replacing the session restores communication,
    and no (ratchet key, counter) pair is ever sent twice."""
    import shutil

    import pytest

    from e2ee.errors import UsageError
    from e2ee.keystore.errors import RollbackDetected
    from e2ee.omemo2.wire import OMEMO2
    from e2ee.results import Outcome
    from e2ee.trust import TrustLevel

    net = Net()
    bob = net.device("bob@example.net", "rb-b", namespaces=(O2,))
    path = tmp_path / "alice.db"
    ks = Keystore.create(path, PW, kdf=KdfParams.floor())
    alice = Engine.create(ks, "alice@example.org", rng=seeded_rng("rb-a"), clock=net.clock)
    net.engines.append(alice)
    net.run(alice, alice.publish())
    sent: set[tuple[bytes, int]] = set()

    def send(body: str) -> None:
        res = net.encrypt(alice, [bob.jid], body)
        assert res.ready
        for key in res.elements[O2].iter("{urn:xmpp:omemo:2}key"):
            data = base64.b64decode(key.text or "")
            if key.get("kex") == "true":
                data = OMEMO2.parse_key_exchange(data).message
            msg = OMEMO2.parse_message(data)
            assert (msg.dh_pub, msg.n) not in sent
            sent.add((msg.dh_pub, msg.n))
        out = bob.decrypt(res.elements[O2], alice.jid, to=bob.jid)
        assert isinstance(out, Decrypted) and out.body == body
        for e in out.effects:
            if isinstance(e, SendMessage):
                alice.decrypt(e.encrypted, bob.jid, to=alice.jid)

    for i in range(3):
        send(f"before the backup {i}")
    ks.close()
    shutil.copy(path, tmp_path / "backup.db")
    ks = Keystore.open(path, PW)
    alice = Engine(ks, rng=seeded_rng("rb-a2"), clock=net.clock)
    for i in range(3):
        send(f"after the backup {i}")
    ks.close()
    shutil.copy(tmp_path / "backup.db", path)  # the restore
    with pytest.raises(RollbackDetected):
        Keystore.open(path, PW)
    ks = Keystore.open(path, PW, accept_rollback=True)
    alice = Engine(ks, rng=seeded_rng("rb-a3"), clock=net.clock)
    assert alice.after_rollback() == 1
    res = alice.encrypt_omemo([bob.jid], "must not go out on the old ratchet")
    assert not res.ready and [d.outcome for d in res.devices if d.jid == bob.jid] == [Outcome.FAILED]
    with pytest.raises(UsageError):
        alice.empty_message(bob.jid, bob.device_id, O2)
    # the user replaces the session and re-confirms bob's key
    net.run(alice, alice.replace_session(bob.jid, bob.device_id, O2))
    res = net.encrypt(alice, [bob.jid], "x")
    assert [d.outcome for d in res.devices if d.jid == bob.jid] == [Outcome.UNDECIDED]
    alice.set_trust(bob.jid, bob.identity_key, TrustLevel.VERIFIED)
    for i in range(3):
        send(f"on the new session {i}")
    ks.close()
