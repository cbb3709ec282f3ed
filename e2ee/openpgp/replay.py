"""Replay memory for OpenPGP messages (catalogue P1): OX has no ratchet, so an old signed and
encrypted message can be delivered again, by the server or by anyone who saw it.

Rules, with ``now`` the engine clock:

* a ``<time/>`` older than ``now - OPENPGP_MAX_AGE`` is refused (:class:`StaleMessage`);
* every accepted message's digest (signer's primary fingerprint and the decrypted
  ``<signcrypt/>`` bytes) is kept until its ``<time/>`` is older than that; a digest seen
  before is refused (:class:`ReplayedMessage`, a :class:`~e2ee.errors.DuplicateMessage`:
  clients ignore it silently).  Every message young enough to be accepted is therefore
  remembered, whatever delay stamp a server puts on it.

Storage: table ``openpgp``, one record per UTC day of ``<time/>`` (``seen/YYYY-MM-DD``) holding
``[time, digest]`` pairs, so that each message rewrites one small record; ``seen/state`` holds
the newest day pruned and a floor below which everything is refused (raised after a keystore
rollback, and when a day's record overflows :data:`~e2ee.limits.OPENPGP_REPLAY_PER_DAY`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .. import jsonrec
from ..errors import CorruptState, ReplayedMessage, StaleMessage
from ..limits import OPENPGP_MAX_AGE, OPENPGP_REPLAY_PER_DAY
from ..storage import Storage

__all__ = ["ReplayMemory", "digest"]

_TABLE = "openpgp"
_STATE = "seen/state"
_VERSION = 1


def digest(primary_fingerprint: str, signcrypt: bytes) -> str:
    """What identifies an accepted message: 128 bits of SHA-256 over signer and content."""
    return hashlib.sha256(primary_fingerprint.encode() + b"\x00" + signcrypt).hexdigest()[:32]


def _day_key(day: date) -> str:
    return f"seen/{day.isoformat()}"


class ReplayMemory:
    """Digests of accepted ``<signcrypt/>`` messages in a :class:`~e2ee.storage.Storage`."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def _load(self, key: str, default: Any) -> Any:
        raw = self._storage.get(_TABLE, key)
        return default if raw is None else jsonrec.load(raw, _VERSION, "replay record")

    def _state(self) -> tuple[float, str | None]:
        rec = self._load(_STATE, {"floor": 0.0, "pruned": None})
        try:
            return float(rec["floor"]), rec["pruned"]
        except (KeyError, TypeError, ValueError):
            raise CorruptState("replay record is damaged") from None

    def _day(self, day: date) -> tuple[float, list[list[Any]]]:
        rec = self._load(_day_key(day), {"floor": 0.0, "seen": []})
        try:
            return float(rec["floor"]), list(rec["seen"])
        except (KeyError, TypeError, ValueError):
            raise CorruptState("replay record is damaged") from None

    def check(self, key: str, time: datetime, now: datetime) -> None:
        """Raise if the message (``key`` from :func:`digest`, ``time`` its ``<time/>``) must be
        refused.  Reads only."""
        ts = time.timestamp()
        if time < now - OPENPGP_MAX_AGE:
            raise StaleMessage(f"message time {time.isoformat()} is older than {OPENPGP_MAX_AGE.days} days")
        floor, _pruned = self._state()
        day_floor, seen = self._day(time.astimezone(UTC).date())
        if ts <= floor or ts <= day_floor:
            raise ReplayedMessage("message older than the replay memory")
        if any(entry[1] == key for entry in seen):
            raise ReplayedMessage("message already received")

    def remember(self, key: str, time: datetime, now: datetime) -> None:
        """Record an accepted message and drop what has aged out."""
        day = time.astimezone(UTC).date()
        day_floor, seen = self._day(day)
        seen.append([time.timestamp(), key])
        if len(seen) > OPENPGP_REPLAY_PER_DAY:
            seen.sort(key=lambda e: float(e[0]))
            dropped = seen[: len(seen) - OPENPGP_REPLAY_PER_DAY]
            seen = seen[len(dropped) :]
            day_floor = max(day_floor, max(float(e[0]) for e in dropped))
        self._storage.put(_TABLE, _day_key(day), jsonrec.dump(_VERSION, {"floor": day_floor, "seen": seen}))
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        floor, pruned = self._state()
        cutoff = (now - OPENPGP_MAX_AGE).astimezone(UTC).date() - timedelta(days=1)
        try:
            start = cutoff if pruned is None else date.fromisoformat(pruned)
        except (TypeError, ValueError):
            raise CorruptState("replay record is damaged") from None
        if pruned is not None and start >= cutoff:
            return
        # Records exist only for days up to (last prune's cutoff + OPENPGP_MAX_AGE + 1 day), and
        # nothing older than the first cutoff was ever accepted: a bounded walk.
        day, last = start + timedelta(days=1), min(cutoff, start + OPENPGP_MAX_AGE + timedelta(days=2))
        while day <= last:
            self._storage.delete(_TABLE, _day_key(day))
            day += timedelta(days=1)
        self._storage.put(_TABLE, _STATE, jsonrec.dump(_VERSION, {"floor": floor, "pruned": cutoff.isoformat()}))

    def refuse_before(self, now: datetime) -> None:
        """Refuse every message older than ``now`` from here on (after a keystore rollback the
        memory may have lost digests of messages accepted since the copy was made)."""
        floor, pruned = self._state()
        self._storage.put(
            _TABLE, _STATE, jsonrec.dump(_VERSION, {"floor": max(floor, now.timestamp()), "pruned": pruned})
        )
