"""Trust decisions, keyed by (bare JID, identity key) -- never by device id.

The identity key is taken in its canonical X25519 form (32 bytes), so one decision covers a
device in both namespaces (``trust-atm.md`` section 2).  OpenPGP keys (XEP-0373) live in the same
record under their 20-byte v4 primary-key fingerprint, so one policy covers both: once any key of
a JID is verified, a new OpenPGP key stays undecided too (no silent fallback to an unverified
key, catalogue D5).  Levels:

* ``UNDECIDED`` -- no decision yet: nothing is encrypted for it; its messages decrypt but are
  marked;
* ``BLIND`` -- trusted without verification (Blind Trust Before Verification);
* ``VERIFIED`` -- the user compared the fingerprint;
* ``DISTRUSTED`` -- refused: nothing is encrypted for it and its messages are refused.

Policies decide the level of a key seen for the first time:

* :attr:`TrustPolicy.BTBV` (default): blind trust while no key of that JID is verified; once
  one is, new keys stay undecided;
* :attr:`TrustPolicy.TOFU`: the first key(s) seen for a JID are trusted blindly, any later key
  is undecided;
* :attr:`TrustPolicy.MANUAL`: every new key is undecided.

A known device whose identity key changes never gets automatic trust (catalogue X8): the new
key is undecided whatever the policy.  ``DISTRUSTED`` is never upgraded automatically.
"""

from __future__ import annotations

import enum

from . import jsonrec
from .errors import CorruptState, UsageError
from .storage import Storage

__all__ = ["TrustLevel", "TrustPolicy", "TrustStore", "fingerprint"]

_VERSION = 1
_TABLE = "trust"


class TrustLevel(enum.Enum):
    UNDECIDED = "undecided"
    BLIND = "blind"
    VERIFIED = "verified"
    DISTRUSTED = "distrusted"

    @property
    def trusted(self) -> bool:
        """Whether content may be encrypted for a key at this level."""
        return self in (TrustLevel.BLIND, TrustLevel.VERIFIED)


class TrustPolicy(enum.Enum):
    BTBV = "btbv"
    TOFU = "tofu"
    MANUAL = "manual"


def fingerprint(ik_x25519: bytes) -> str:
    """The display fingerprint: lowercase hex of the X25519 identity key in 8 groups of 8."""
    h = ik_x25519.hex()
    return " ".join(h[i : i + 8] for i in range(0, len(h), 8))


class TrustStore:
    """Trust decisions in the ``trust`` table of a :class:`~e2ee.storage.Storage`, one record per
    bare JID mapping each identity key (hex) to its level."""

    def __init__(self, storage: Storage, policy: TrustPolicy = TrustPolicy.BTBV) -> None:
        self._storage = storage
        self.policy = policy
        #: decoded records, reused while the store returns the same bytes
        self._cache: dict[str, tuple[bytes, dict[bytes, TrustLevel]]] = {}
        #: every JID with a record (a superset: a rolled-back write may leave one that has
        #: none), listed once from storage on first use, then kept up by :meth:`_write`
        self._jids: set[str] | None = None

    def levels(self, jid: str) -> dict[bytes, TrustLevel]:
        """Every identity key of ``jid`` with a decision or a first-sight level."""
        return dict(self.levels_view(jid))

    def levels_view(self, jid: str) -> dict[bytes, TrustLevel]:
        """Like :meth:`levels`, the cached dict itself (no copy): never mutate it."""
        raw = self._storage.get(_TABLE, jid)
        if raw is None:
            return {}
        cached = self._cache.get(jid)
        if cached is not None and cached[0] == raw:
            return cached[1]
        rec = jsonrec.load(raw, _VERSION, "trust record")
        try:
            levels = {bytes.fromhex(k): TrustLevel(v) for k, v in rec.items()}
        except (ValueError, AttributeError):
            raise CorruptState("trust record is damaged") from None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[jid] = (raw, levels)
        return levels

    def _write(self, jid: str, levels: dict[bytes, TrustLevel]) -> None:
        if self._jids is not None:
            self._jids.add(jid)
        self._storage.put(_TABLE, jid, jsonrec.dump(_VERSION, {k.hex(): v.value for k, v in levels.items()}))

    def level(self, jid: str, ik: bytes) -> TrustLevel | None:
        """The level of ``ik`` for ``jid``, or None when the key was never seen."""
        return self.levels_view(jid).get(ik)

    def holders(self, ik: bytes) -> list[str]:
        """Every JID ``ik`` has a level for.  One read per JID with a record (the list of JIDs
        is read from storage once, a full listing, then kept up to date): for rare events such
        as a legacy key exchange that builds a new session."""
        if self._jids is None:
            self._jids = set(self._storage.keys(_TABLE))
        return sorted(jid for jid in self._jids if ik in self.levels_view(jid))

    def set(self, jid: str, ik: bytes, level: TrustLevel) -> None:
        """Record the user's decision."""
        if len(ik) not in (32, 20):
            raise UsageError("keys are given as 32-byte X25519 identity keys or 20-byte OpenPGP fingerprints")
        levels = self.levels(jid)
        levels[ik] = level
        self._write(jid, levels)

    def first_sight(self, jid: str, ik: bytes, replaces_known_key: bool = False) -> TrustLevel:
        """The level of ``ik``, assigning the policy's level when it is new.
        ``replaces_known_key``: a known device now shows this key (never trusted automatically)."""
        known = self.levels_view(jid).get(ik)
        if known is not None:
            return known
        levels = self.levels(jid)
        if replaces_known_key or self.policy is TrustPolicy.MANUAL:
            level = TrustLevel.UNDECIDED
        elif self.policy is TrustPolicy.BTBV:
            verified = any(v is TrustLevel.VERIFIED for v in levels.values())
            level = TrustLevel.UNDECIDED if verified else TrustLevel.BLIND
        else:  # TOFU: only while nothing else of this JID was ever seen
            level = TrustLevel.BLIND if not levels else TrustLevel.UNDECIDED
        levels[ik] = level
        self._write(jid, levels)
        return level
