"""What we know of each account's devices and keys, and the person's trust decisions about
them (fingerprints compared, verification URIs scanned), over the shared
:class:`~e2ee.context.Context`."""

from __future__ import annotations

from dataclasses import dataclass

from .context import Context, bare
from .errors import E2EEError
from .primitives import ed25519_verify, x25519_public_to_ed25519
from .registry import BACKENDS
from .trust import TrustLevel
from .verification import identity_candidates, make_uri, parse_uri

__all__ = ["DeviceInfo", "KeyDecision", "Keys"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What we know about one device of an account."""

    device_id: int
    namespaces: tuple[str, ...]  #: lists it is on (empty: inactive)
    identity_key: bytes | None
    trust: TrustLevel | None
    label: str | None  #: OMEMO 2 label, only when its signature verified
    #: the identity key's exact Ed25519 form (from its OMEMO 2 bundle), what OMEMO 2 clients show
    ed25519_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyDecision:
    """What one fingerprint a person gave (a verification URI entry, ``e2ee trust``) applied to.
    The value may be either form of a key (X25519 or Ed25519); it is compared canonically."""

    device_id: int | None  #: the device id given with it (URI), or None
    given: bytes  #: the 32 bytes as given
    level: TrustLevel
    identity_key: bytes | None  #: the known key (X25519 form) it matched; None: no known key
    devices: tuple[int, ...] = ()  #: known devices of the account with that key
    #: when it matched no known key: what was recorded (X25519 form, each reading of the value);
    #: it applies when a device with one of these keys appears
    remembered: tuple[bytes, ...] = ()

    @property
    def matched(self) -> bool:
        return self.identity_key is not None


class Keys:
    """Devices, trust decisions and verification URIs (documented on :class:`~e2ee.engine.Engine`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def apply_uri(self, uri: str, level: TrustLevel = TrustLevel.VERIFIED) -> tuple[str, list[KeyDecision]]:
        """Apply a verification URI: each key it lists, in either form (the X25519 form legacy
        clients put there, or the Ed25519 form of OMEMO 2 clients), gets ``level`` through
        :meth:`decide_fingerprint`.  One transaction.  Raises :class:`~e2ee.errors.InvalidVerificationUri`."""
        parsed = parse_uri(uri)
        jid = bare(parsed.jid)
        entries: list[tuple[int | None, bytes]] = [(d, ik) for d, ik in parsed.fingerprints.items()]
        entries += [(None, ik) for ik in parsed.plain]
        return jid, self._ctx.run(lambda: [self._decide(jid, key, level, dev) for dev, key in entries])

    def decide_fingerprint(self, jid: str, key: bytes, level: TrustLevel, device_id: int | None = None) -> KeyDecision:
        """Record the person's decision for a fingerprint they compared: ``key`` is 32 bytes in
        either form.  When it is (either form of) a known key of ``jid`` -- of ``device_id``
        when given -- that key gets ``level``; otherwise every reading of the value is recorded
        with ``level`` (it applies when such a key appears) and the result says it matched
        nothing: never present that as "verified"."""
        jid = bare(jid)
        return self._ctx.run(lambda: self._decide(jid, key, level, device_id))

    def _decide(self, jid: str, key: bytes, level: TrustLevel, device_id: int | None) -> KeyDecision:
        trust = self._ctx.trust
        candidates = identity_candidates(key)
        known = {d.device_id: d.identity_key for d in self.devices(jid) if d.identity_key is not None}
        # keys devices have shown (a key only remembered from an earlier decision is not one)
        pool = {known[device_id]} if device_id is not None and device_id in known else set(known.values())
        match = next((c for c in candidates if c in pool), None)
        if match is None:
            for c in candidates:
                trust.set(jid, c, level)
            return KeyDecision(device_id, key, level, None, remembered=candidates)
        trust.set(jid, match, level)
        devices = tuple(sorted(d for d, ik in known.items() if ik == match))
        return KeyDecision(device_id, key, level, match, devices)

    def own_uri(self) -> str:
        """Our verification URI: this device first, then our other devices we verified."""
        ctx = self._ctx
        own = ctx.own
        devices = [(own.device_id, own.identity.x25519_public)]
        levels = ctx.trust.levels(own.jid)
        for dev, ik in sorted(ctx.devices.identities(own.jid).items()):
            if dev != own.device_id and levels.get(ik) is TrustLevel.VERIFIED:
                devices.append((dev, ik))
        return make_uri(own.jid, devices)

    def set_trust(self, jid: str, identity_key: bytes, level: TrustLevel) -> None:
        """Record the user's decision for an identity key (X25519 form) or an OpenPGP key (its
        20-byte fingerprint) of ``jid``."""
        jid = bare(jid)
        self._ctx.run(lambda: self._ctx.trust.set(jid, identity_key, level))

    def quarantine_all(self) -> int:
        """:meth:`~e2ee.engine.Engine.after_rollback` for the OMEMO sessions and trust (inside
        the caller's transaction)."""
        ctx = self._ctx
        count = 0
        for key in ctx.storage.keys("session"):
            sset = ctx.sessions.load(key)
            for entry in sset.entries:
                entry.quarantined = True
                count += 1
            ctx.sessions.save(sset)
        for jid in ctx.storage.keys("trust"):
            for ik, level in ctx.trust.levels(jid).items():
                if level.trusted:
                    ctx.trust.set(jid, ik, TrustLevel.UNDECIDED)
        return count

    def devices(self, jid: str) -> list[DeviceInfo]:
        """Every device of ``jid`` we know of, active or not, with its trust."""
        ctx = self._ctx
        jid = bare(jid)
        lists = ctx.devices.lists(jid)
        iks = ctx.devices.identities(jid)
        levels = ctx.trust.levels(jid)
        ids: dict[int, list[str]] = {d: [] for d in iks}
        labels: dict[int, tuple[str, bytes]] = {}
        for b in BACKENDS:
            dl = lists.get(b.flavour.name)
            for d in dl.devices if dl else ():
                ids.setdefault(d.device_id, []).append(b.namespace)
                if d.label is not None and d.label_signature is not None:
                    labels[d.device_id] = (d.label, d.label_signature)
        out = []
        for dev, nss in sorted(ids.items()):
            ik = iks.get(dev)
            if ik is None:
                for b in BACKENDS:
                    stored = ctx.devices.bundle(b.flavour.name, jid, dev)
                    if stored is not None:
                        ik = b.flavour.identity_to_x25519(stored.bundle.ik)
                        break
            label = None
            if dev in labels and ik is not None:  # the key this row shows and rates
                label = _verified_label(labels[dev], ik)
            ed = None if ik is None else self._ed25519_form(jid, dev, ik)
            out.append(DeviceInfo(dev, tuple(nss), ik, levels.get(ik) if ik else None, label, ed))
        return out

    def _ed25519_form(self, jid: str, dev: int, ik: bytes) -> bytes | None:
        """The exact Ed25519 form of ``ik`` as a stored bundle of the device shows it."""
        for b in BACKENDS:
            stored = self._ctx.devices.bundle(b.flavour.name, jid, dev)
            if stored is None:
                continue
            ed = b.identity_ed25519(stored.bundle)
            if ed is not None and b.flavour.identity_to_x25519(stored.bundle.ik) == ik:
                return ed
        return None


def _verified_label(label: tuple[str, bytes], bound_ik: bytes) -> str | None:
    """The label when its signature verifies with the identity key the device is bound to (its
    sessions and trust are on that key; the stored bundle's only for a device never talked to),
    not with whatever bundle is stored now: the server can replace a bundle.  ``bound_ik`` is
    the X25519 form; both Ed25519 signs are tried."""
    for sign in (0, 1):
        try:
            ed = x25519_public_to_ed25519(bound_ik, sign)
        except E2EEError:
            return None
        if ed25519_verify(ed, label[0].encode(), label[1]):
            return label[0]
    return None
