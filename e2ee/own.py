"""This device: identity key, device id, signed prekeys and one-time prekeys.

Records (table ``own``, see :mod:`e2ee.storage`):

* ``identity`` -- bare JID, device id, Ed25519 identity seed, device label;
* ``spk`` -- the current signed prekey and, for :data:`~e2ee.limits.SPK_GRACE` after a rotation,
  the previous one; signatures for both namespaces are made once, at creation;
* ``prekeys`` -- the one-time prekeys.  A prekey used by a key exchange is deleted at once,
  except during a catch-up (archive replay), when it is only *hidden*: left out of the published
  bundle, kept so that older archived key exchanges naming it still decrypt, and deleted when
  the catch-up ends.  The base keys used with a kept prekey are recorded, and a second key
  exchange with the same base key is refused (catalogue X5c: no unknown key-share).

One identity key and one device id serve both namespaces (``omemo2.md`` section 2).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import jsonrec
from .errors import CorruptState, ReusedBaseKey, UsageError
from .flavour import Flavour
from .identity import IdentityKeyPair
from .limits import (
    DEVICE_ID_MAX,
    DEVICE_ID_MIN,
    OWN_PREKEY_ID_MAX,
    PREKEY_COUNT,
    PREKEY_REFILL_THRESHOLD,
    SPK_GRACE,
    SPK_ROTATION,
)
from .model import Bundle
from .primitives import x25519_public
from .rng import Random
from .storage import Storage

__all__ = ["OwnDevice", "choose_device_id"]

_VERSION = 1
_TABLE = "own"


def _ts(now: datetime) -> float:
    return now.timestamp()


def _random_int(rng: Random, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` by rejection sampling."""
    span = high - low + 1
    nbytes = (span.bit_length() + 7) // 8
    limit = (256**nbytes // span) * span
    while True:
        v = int.from_bytes(rng(nbytes), "big")
        if v < limit:
            return low + v % span


def choose_device_id(rng: Random, taken: set[int] | frozenset[int]) -> int:
    """A random device id in ``[1, 2^31 - 1]`` that is not in ``taken`` (the ids on our
    account's device lists in both namespaces)."""
    while True:
        candidate = _random_int(rng, DEVICE_ID_MIN, DEVICE_ID_MAX)
        if candidate not in taken:
            return candidate


class OwnDevice:
    """Our device's keys, read from and written to ``storage``."""

    def __init__(self, storage: Storage, rng: Random) -> None:
        raw = storage.get(_TABLE, "identity")
        if raw is None:
            raise UsageError("no identity in this store: create one first")
        rec = jsonrec.load(raw, _VERSION, "identity record")
        try:
            self.jid: str = rec["jid"]
            self.device_id: int = int(rec["device_id"])
            self.identity = IdentityKeyPair.from_seed(bytes.fromhex(rec["seed"]))
            self.label: str | None = rec.get("label")
        except (KeyError, TypeError, ValueError, UsageError):
            raise CorruptState("identity record is damaged") from None
        self._storage = storage
        self._rng = rng
        #: decoded read-only views of the key records, reused while the store returns the same
        #: bytes (a rolled-back write returns other bytes: the view is decoded again)
        self._spk_cache: tuple[bytes, dict[str, Any]] | None = None
        self._pk_cache: tuple[bytes, dict[str, Any]] | None = None
        self._unused_cache: tuple[bytes, list[tuple[int, bytes]]] | None = None

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        storage: Storage,
        jid: str,
        taken_ids: set[int] | frozenset[int],
        now: datetime,
        rng: Random,
        label: str | None = None,
    ) -> OwnDevice:
        """Generate an identity, a device id not in ``taken_ids``, a signed prekey and
        :data:`~e2ee.limits.PREKEY_COUNT` one-time prekeys."""
        if storage.get(_TABLE, "identity") is not None:
            raise UsageError("this store already holds an identity")
        rec = {
            "jid": jid,
            "device_id": choose_device_id(rng, taken_ids),
            "seed": IdentityKeyPair.generate(rng).seed.hex(),
            "label": label,
        }
        with storage.transaction():
            storage.put(_TABLE, "identity", jsonrec.dump(_VERSION, rec))
            own = cls(storage, rng)
            own._put_spk({"current": own._new_spk(1, now), "previous": None})
            own._put_prekeys({"next_id": 1, "keys": {}})
            own.refill_prekeys()
        return own

    # ------------------------------------------------------------------ signed prekeys

    def _new_spk(self, spk_id: int, now: datetime) -> dict[str, Any]:
        from .registry import BACKENDS

        priv = self._rng(32)
        pub = x25519_public(priv)
        return {
            "id": spk_id,
            "priv": priv.hex(),
            "pub": pub.hex(),
            "created": _ts(now),
            "sig": {b.flavour.name: b.flavour.sign_prekey(self.identity, pub).hex() for b in BACKENDS},
        }

    def _spk(self) -> dict[str, Any]:
        raw = self._storage.get(_TABLE, "spk")
        if raw is None:
            raise CorruptState("signed prekey record missing")
        rec: dict[str, Any] = jsonrec.load(raw, _VERSION, "signed prekey record")
        return rec

    def _spk_view(self) -> dict[str, Any]:
        """:meth:`_spk` for reading only (do not mutate: it is shared)."""
        raw = self._storage.get(_TABLE, "spk")
        cached = self._spk_cache
        if raw is not None and cached is not None and cached[0] == raw:
            return cached[1]
        rec = self._spk()
        self._spk_cache = (raw, rec) if raw is not None else None
        return rec

    def _put_spk(self, rec: dict[str, Any]) -> None:
        raw = jsonrec.dump(_VERSION, rec)
        self._storage.put(_TABLE, "spk", raw)
        self._spk_cache = None

    def signed_prekey_private(self, spk_id: int, now: datetime) -> bytes | None:
        """Our private signed prekey ``spk_id``: the current one, or the previous one within its
        grace period; None otherwise."""
        rec = self._spk_view()
        cur = rec["current"]
        if cur["id"] == spk_id:
            return bytes.fromhex(cur["priv"])
        prev = rec.get("previous")
        if prev is not None and prev["id"] == spk_id and _ts(now) < prev["retired"] + SPK_GRACE.total_seconds():
            return bytes.fromhex(prev["priv"])
        return None

    def rotate_signed_prekey(self, now: datetime, force: bool = False) -> bool:
        """Replace the signed prekey when it is older than :data:`~e2ee.limits.SPK_ROTATION`
        (or ``force``), and drop a previous one whose grace period is over.  Returns whether the
        published bundle changes."""
        rec = self._spk()
        changed = False
        t = _ts(now)
        prev = rec.get("previous")
        if prev is not None and t >= prev["retired"] + SPK_GRACE.total_seconds():
            rec["previous"] = None
            self._put_spk(rec)
        cur = rec["current"]
        if force or t >= cur["created"] + SPK_ROTATION.total_seconds():
            cur["retired"] = t
            next_id = cur["id"] % OWN_PREKEY_ID_MAX + 1
            rec = {"current": self._new_spk(next_id, now), "previous": cur}
            self._put_spk(rec)
            changed = True
        return changed

    # ------------------------------------------------------------------ one-time prekeys

    def _prekeys(self) -> dict[str, Any]:
        raw = self._storage.get(_TABLE, "prekeys")
        if raw is None:
            raise CorruptState("prekey record missing")
        rec: dict[str, Any] = jsonrec.load(raw, _VERSION, "prekey record")
        return rec

    def _prekeys_view(self) -> tuple[bytes, dict[str, Any]]:
        """The prekey record's bytes and :meth:`_prekeys` for reading only (do not mutate)."""
        raw = self._storage.get(_TABLE, "prekeys")
        cached = self._pk_cache
        if raw is not None and cached is not None and cached[0] == raw:
            return cached
        rec = self._prekeys()
        assert raw is not None  # _prekeys raised otherwise
        self._pk_cache = (raw, rec)
        return raw, rec

    def _put_prekeys(self, rec: dict[str, Any]) -> None:
        """Store ``rec``, which the caller hands over (it becomes the cached view: it is not
        mutated afterwards)."""
        raw = jsonrec.dump(_VERSION, rec)
        self._storage.put(_TABLE, "prekeys", raw)
        self._pk_cache = (raw, rec)

    def refill_prekeys(self) -> bool:
        """Top the unused prekeys up to :data:`~e2ee.limits.PREKEY_COUNT` when fewer than
        :data:`~e2ee.limits.PREKEY_REFILL_THRESHOLD` remain.  Returns whether any was added."""
        rec = self._prekeys()
        if not self._top_up(rec):
            return False
        self._put_prekeys(rec)
        return True

    def _top_up(self, rec: dict[str, Any]) -> bool:
        """Add fresh prekeys to the decoded record ``rec`` if needed; whether it changed."""
        keys: dict[str, Any] = rec["keys"]
        unused = sum(1 for k in keys.values() if not k["used"])
        if unused >= PREKEY_REFILL_THRESHOLD:
            return False
        next_id: int = rec["next_id"]
        for _ in range(PREKEY_COUNT - unused):
            while str(next_id) in keys:
                next_id = next_id % OWN_PREKEY_ID_MAX + 1
            priv = self._rng(32)
            keys[str(next_id)] = {"priv": priv.hex(), "pub": x25519_public(priv).hex(), "used": False, "base_keys": []}
            next_id = next_id % OWN_PREKEY_ID_MAX + 1
        rec["next_id"] = next_id
        return True

    def prekey_for_exchange(self, pk_id: int, ek: bytes) -> bytes | None:
        """Our private one-time prekey ``pk_id`` for a key exchange with base key ``ek``, or None.
        :class:`~e2ee.errors.ReusedBaseKey` when that base key was already used with it (a
        prekey kept during a catch-up)."""
        entry = self._prekeys_view()[1]["keys"].get(str(pk_id))
        if entry is None:
            return None
        if ek.hex() in entry["base_keys"]:
            raise ReusedBaseKey("this base key was already used with this prekey")
        return bytes.fromhex(entry["priv"])

    def consume_prekey(self, pk_id: int, ek: bytes, keep: bool) -> None:
        """After a key exchange succeeded: delete the prekey, or (``keep``, during a catch-up)
        hide it and remember the base key, then refill."""
        rec = self._prekeys()
        keys = rec["keys"]
        entry = keys.get(str(pk_id))
        if entry is None:
            return
        if keep:
            entry["used"] = True
            entry["base_keys"].append(ek.hex())
        else:
            del keys[str(pk_id)]
        self._top_up(rec)
        self._put_prekeys(rec)

    def delete_used_prekeys(self) -> int:
        """End of a catch-up: delete every hidden prekey.  Returns how many."""
        rec = self._prekeys()
        used = [k for k, v in rec["keys"].items() if v["used"]]
        for k in used:
            del rec["keys"][k]
        if used:
            self._put_prekeys(rec)
        return len(used)

    # ------------------------------------------------------------------ bundles

    def bundle(self, flavour: Flavour) -> Bundle:
        """Our bundle for ``flavour``: identity key, current signed prekey, unused prekeys."""
        (bundle,) = self.bundles((flavour,))
        return bundle

    def bundles(self, flavours: tuple[Flavour, ...]) -> list[Bundle]:
        """:meth:`bundle` for each flavour, reading the key records once."""
        cur = self._spk_view()["current"]
        spk = bytes.fromhex(cur["pub"])
        raw, rec = self._prekeys_view()
        cached = self._unused_cache
        if cached is not None and cached[0] is raw:
            unused = cached[1]
        else:
            unused = [(int(k), bytes.fromhex(v["pub"])) for k, v in rec["keys"].items() if not v["used"]]
            self._unused_cache = (raw, unused)
        out = []
        for flavour in flavours:
            enc = flavour.encode_public
            out.append(
                Bundle(
                    flavour.name,
                    flavour.own_identity(self.identity),
                    cur["id"],
                    enc(spk),
                    bytes.fromhex(cur["sig"][flavour.name]),
                    {pk_id: enc(pub) for pk_id, pub in unused},
                )
            )
        return out
