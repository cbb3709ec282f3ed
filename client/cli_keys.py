"""The ``e2ee`` commands that need no server: ``init``, ``fingerprint`` (and its QR code),
``devices``, ``trust``/``distrust``, ``verify`` and ``passphrase``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from e2ee.errors import PeerError, UsageError

from .cli_common import _ed_fp, _fp, _home, _pgp_fp
from .home import Account, initial_passphrase, kdf_params, keystore_path, new_passphrase, open_engine, xmpp_password
from .safe_text import safe

if TYPE_CHECKING:
    from e2ee.engine import Engine, KeyDecision


def _init(args: argparse.Namespace) -> int:
    from e2ee.engine import Engine
    from e2ee.keystore import Keystore

    home = _home(args)
    path = keystore_path(home)
    if path.exists():
        raise UsageError(f"{home} already holds a keystore")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    passphrase = initial_passphrase()
    password = xmpp_password()
    print(f"creating the keystore in {safe(home)} (deriving the key from the passphrase)...", file=sys.stderr)
    with Keystore.create(path, passphrase, kdf=kdf_params()) as ks:
        engine = Engine.create(ks, args.jid, label=args.device_label)
        Account.store(ks, password)
        print(f"{safe(engine.jid)}: device {engine.device_id}")
        print(f"fingerprint {_fp(engine.identity_key)}  (Curve25519: Conversations, Dino, Gajim, Monal)")
        print(f"ed25519     {_ed_fp(engine.identity_key_ed25519)}  (OMEMO 2: Converse.js, Kaidan)")
    return 0


def _sign_bit_warning(engine: Engine) -> None:
    """Identities made before issue 20 may have the Ed25519 sign bit set; say so, and how out."""
    if engine.identity_sign_bit_set:
        print(
            "e2ee: warning: this device's identity key has its Ed25519 sign bit set, so Converse.js"
            " (and other clients that verify by XEdDSA) refuse its bundle and cannot write to it;"
            " a key cannot change: replace the device (`e2ee --home NEW_DIR init --jid "
            f"{engine.jid}`, then `e2ee --home NEW_DIR publish`) and verify the new one with"
            " your contacts",
            file=sys.stderr,
        )


def _fingerprint(args: argparse.Namespace) -> int:
    ks, engine = open_engine(_home(args))
    with ks:
        _sign_bit_warning(engine)
        uri = engine.own_uri()
        pgp = engine.openpgp.fingerprint
        if args.json:
            out = {
                "jid": engine.jid,
                "device": engine.device_id,
                "fingerprint": engine.identity_key.hex(),
                "fingerprint_ed25519": engine.identity_key_ed25519.hex(),
                "uri": uri,
                "openpgp": pgp,
                "sign_bit_set": engine.identity_sign_bit_set,
            }
            print(json.dumps(out))
        else:
            print(f"{safe(engine.jid)}: device {engine.device_id}")
            # what a person compares: legacy clients show the Curve25519 form, OMEMO 2 ones the Ed25519 form
            print(f"fingerprint {_fp(engine.identity_key)}  (Curve25519: Conversations, Dino, Gajim, Monal)")
            print(f"ed25519     {_ed_fp(engine.identity_key_ed25519)}  (OMEMO 2: Converse.js, Kaidan)")
            if pgp is not None:
                print(f"openpgp     {_pgp_fp(pgp)}")
            print(safe(uri))
        if args.qr:
            from .qr import qr_terminal

            print(qr_terminal(uri))
    return 0


def _devices(args: argparse.Namespace) -> int:
    ks, engine = open_engine(_home(args))
    with ks:
        _sign_bit_warning(engine)
        infos = engine.devices(args.jid)
        rows: list[dict[str, Any]] = [  # JSON rows
            {
                "device": d.device_id,
                "namespaces": list(d.namespaces),
                "active": bool(d.namespaces),
                "fingerprint": d.identity_key.hex() if d.identity_key else None,
                "fingerprint_ed25519": d.ed25519_key.hex() if d.ed25519_key else None,
                "trust": d.trust.value if d.trust else None,
                "label": d.label,
            }
            for d in infos
        ]
        rows += [
            {
                "device": None,
                "namespaces": ["urn:xmpp:openpgp:0"],
                "active": k.announced or k.own,
                "fingerprint": k.fingerprint,
                "fingerprint_ed25519": None,
                "trust": k.trust.value if k.trust else None,
                "label": "this device" if k.own else (None if k.available else "not fetched"),
            }
            for k in engine.openpgp.keys(args.jid)
        ]
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print(f"no device of {safe(args.jid)} is known yet")
        for r in rows if not args.json else ():
            state = "active" if r["active"] else "inactive"
            if r["device"] is None:  # an OpenPGP key
                fp, device = _pgp_fp(r["fingerprint"]), "openpgp"
            else:
                fp = _fp(bytes.fromhex(r["fingerprint"])) if r["fingerprint"] else "(no key yet)"
                device = r["device"]
            label = f" '{safe(r['label'])}'" if r["label"] else ""
            print(f"{device:>10} {state:8} {r['trust'] or '-':10} {fp}{label}")
            if r["fingerprint_ed25519"]:  # an OMEMO 2 device: what Converse.js and Kaidan show for it
                print(f"{'':>10} {'':8} {'ed25519':10} {_ed_fp(bytes.fromhex(r['fingerprint_ed25519']))}")
    return 0


def _set_trust(args: argparse.Namespace, verified: bool) -> int:
    from e2ee.trust import TrustLevel
    from e2ee.verification import parse_fingerprint, parse_openpgp_fingerprint

    try:
        try:
            pgp: str | None = parse_openpgp_fingerprint(args.fingerprint)
        except PeerError:
            pgp = None
        key = bytes.fromhex(pgp) if pgp is not None else parse_fingerprint(args.fingerprint)
    except PeerError as e:
        raise UsageError(f"{e} (or an OpenPGP fingerprint of 40 hex digits)") from None
    ks, engine = open_engine(_home(args))
    with ks:
        level = TrustLevel.VERIFIED if verified else TrustLevel.DISTRUSTED
        if pgp is not None:
            engine.set_trust(args.jid, key, level)
            print(f"{safe(args.jid)}: OpenPGP key {_pgp_fp(pgp)} is now {level.value}")
        else:  # either form of an OMEMO key (Curve25519 or Ed25519), compared canonically
            print(_decision_line(args.jid, engine.decide_fingerprint(args.jid, key, level)))
    return 0


def _decision_line(jid: str, d: KeyDecision) -> str:
    """One line for a :class:`~e2ee.engine.KeyDecision`; "verified" only for a known key."""
    jid = safe(jid)  # from a URI or the command line: may come from a scanned code
    where = f"device {d.device_id} " if d.device_id is not None else ""
    if not d.matched:
        how = "" if d.level.value == "verified" else f" ({d.level.value})"
        return (
            f"{jid}: {where}{_fp(d.given)} matches no key of {jid} seen so far; remembered{how},"
            " applies when that key appears"
        )
    devices = ", ".join(str(x) for x in d.devices)
    form = " (given in its Ed25519 form)" if d.given != d.identity_key else ""
    owner = f"device {devices} " if devices else where
    key = d.identity_key if d.identity_key is not None else d.given  # (a matched decision has its key)
    return f"{jid}: {owner}{_fp(key)}{form} is now {d.level.value}"


def _verify(args: argparse.Namespace) -> int:
    from e2ee.verification import parse_uri

    try:
        parse_uri(args.uri)
    except PeerError as e:
        raise UsageError(f"not a verification URI: {e}") from None
    ks, engine = open_engine(_home(args))
    with ks:
        jid, decisions = engine.apply_uri(args.uri)
        for d in decisions:
            print(_decision_line(jid, d))
    return 0


def _passphrase(args: argparse.Namespace) -> int:
    ks, _engine = open_engine(_home(args))
    with ks:
        new = new_passphrase()
        ks.change_passphrase(new)
        print("passphrase changed")
    return 0
