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


def _fingerprint_lines(engine: Any) -> list[str]:
    """This device's fingerprints (both forms, the OpenPGP one if any) and its verification URI,
    as ``fingerprint`` prints them (and ``chat``'s ``/fingerprint``)."""
    pgp = engine.openpgp.fingerprint
    # what a person compares: legacy clients show the Curve25519 form, OMEMO 2 ones the Ed25519 form
    lines = [
        f"{safe(engine.jid)}: device {engine.device_id}",
        f"fingerprint {_fp(engine.identity_key)}  (Curve25519: Conversations, Dino, Gajim, Monal)",
        f"ed25519     {_ed_fp(engine.identity_key_ed25519)}  (OMEMO 2: Converse.js, Kaidan)",
    ]
    if pgp is not None:
        lines.append(f"openpgp     {_pgp_fp(pgp)}")
    lines.append(safe(engine.own_uri()))
    return lines


def _fingerprint(args: argparse.Namespace) -> int:
    ks, engine = open_engine(_home(args))
    with ks:
        _sign_bit_warning(engine)
        uri = engine.own_uri()
        if args.json:
            out = {
                "jid": engine.jid,
                "device": engine.device_id,
                "fingerprint": engine.identity_key.hex(),
                "fingerprint_ed25519": engine.identity_key_ed25519.hex(),
                "uri": uri,
                "openpgp": engine.openpgp.fingerprint,
                "sign_bit_set": engine.identity_sign_bit_set,
            }
            print(json.dumps(out))
        else:
            print("\n".join(_fingerprint_lines(engine)))
        if args.qr:
            from .qr import qr_terminal

            print(qr_terminal(uri))
    return 0


def _device_rows(engine: Any, jid: str) -> list[dict[str, Any]]:
    """What ``devices`` shows of ``jid``: its OMEMO devices, then its OpenPGP keys (``device`` None)."""
    rows: list[dict[str, Any]] = [
        {
            "device": d.device_id,
            "namespaces": list(d.namespaces),
            "active": bool(d.namespaces),
            "fingerprint": d.identity_key.hex() if d.identity_key else None,
            "fingerprint_ed25519": d.ed25519_key.hex() if d.ed25519_key else None,
            "trust": d.trust.value if d.trust else None,
            "label": d.label,
        }
        for d in engine.devices(jid)
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
        for k in engine.openpgp.keys(jid)
    ]
    return rows


def _device_lines(jid: str, rows: list[dict[str, Any]]) -> list[str]:
    """:func:`_device_rows` as text, one line per device (two for an OMEMO 2 one)."""
    if not rows:
        return [f"no device of {safe(jid)} is known yet"]
    lines = []
    for r in rows:
        state = "active" if r["active"] else "inactive"
        if r["device"] is None:  # an OpenPGP key
            fp, device = _pgp_fp(r["fingerprint"]), "openpgp"
        else:
            fp = _fp(bytes.fromhex(r["fingerprint"])) if r["fingerprint"] else "(no key yet)"
            device = r["device"]
        label = f" '{safe(r['label'])}'" if r["label"] else ""
        lines.append(f"{device:>10} {state:8} {r['trust'] or '-':10} {fp}{label}")
        if r["fingerprint_ed25519"]:  # an OMEMO 2 device: what Converse.js and Kaidan show for it
            lines.append(f"{'':>10} {'':8} {'ed25519':10} {_ed_fp(bytes.fromhex(r['fingerprint_ed25519']))}")
    return lines


def _devices(args: argparse.Namespace) -> int:
    ks, engine = open_engine(_home(args))
    with ks:
        _sign_bit_warning(engine)
        rows = _device_rows(engine, args.jid)
        if args.json:
            print(json.dumps(rows))
        else:
            print("\n".join(_device_lines(args.jid, rows)))
    return 0


def _parse_key(fingerprint: str) -> tuple[str | None, bytes]:
    """A fingerprint as typed: (the OpenPGP fingerprint or None, the key bytes); a usage error
    for anything else."""
    from e2ee.verification import parse_fingerprint, parse_openpgp_fingerprint

    try:
        try:
            pgp: str | None = parse_openpgp_fingerprint(fingerprint)
        except PeerError:
            pgp = None
        return pgp, bytes.fromhex(pgp) if pgp is not None else parse_fingerprint(fingerprint)
    except PeerError as e:
        raise UsageError(f"{e} (or an OpenPGP fingerprint of 40 hex digits)") from None


def _apply_trust(engine: Any, jid: str, fingerprint: str, verified: bool) -> str:
    """Record ``trust``/``distrust`` of a typed fingerprint of ``jid``; the line that says what changed."""
    from e2ee.trust import TrustLevel

    pgp, key = _parse_key(fingerprint)
    level = TrustLevel.VERIFIED if verified else TrustLevel.DISTRUSTED
    if pgp is not None:
        engine.set_trust(jid, key, level)
        return f"{safe(jid)}: OpenPGP key {_pgp_fp(pgp)} is now {level.value}"
    # either form of an OMEMO key (Curve25519 or Ed25519), compared canonically
    return _decision_line(jid, engine.decide_fingerprint(jid, key, level))


def _set_trust(args: argparse.Namespace, verified: bool) -> int:
    _parse_key(args.fingerprint)  # a typing mistake is told before the passphrase is asked
    ks, engine = open_engine(_home(args))
    with ks:
        print(_apply_trust(engine, args.jid, args.fingerprint, verified))
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


def _apply_uri(engine: Any, uri: str) -> list[str]:
    """Apply a scanned verification URI; a line per key it names."""
    from e2ee.verification import parse_uri

    try:
        parse_uri(uri)
    except PeerError as e:
        raise UsageError(f"not a verification URI: {e}") from None
    jid, decisions = engine.apply_uri(uri)
    return [_decision_line(jid, d) for d in decisions]


def _verify(args: argparse.Namespace) -> int:
    from e2ee.verification import parse_uri

    try:
        parse_uri(args.uri)
    except PeerError as e:
        raise UsageError(f"not a verification URI: {e}") from None
    ks, engine = open_engine(_home(args))
    with ks:
        for line in _apply_uri(engine, args.uri):
            print(line)
    return 0


def _passphrase(args: argparse.Namespace) -> int:
    ks, _engine = open_engine(_home(args))
    with ks:
        new = new_passphrase()
        ks.change_passphrase(new)
        print("passphrase changed")
    return 0
