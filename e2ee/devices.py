"""What we know about each account's devices: the device lists per namespace, the identity
key each device showed, and the bundles fetched.

Records: table ``device`` keyed by bare JID; table ``bundle`` keyed like sessions.  A device
that leaves every list becomes *inactive*: nothing is encrypted for it any more, but its
identity key, sessions and trust stay (``omemo2.md`` section 3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import jsonrec
from .errors import CorruptState
from .model import Bundle, DeviceEntry, DeviceList
from .registry import FLAVOUR_NAMES
from .sessions import session_key
from .storage import Storage

__all__ = ["DeviceRegistry", "StoredBundle"]

_VERSION = 1


@dataclass(frozen=True, slots=True)
class StoredBundle:
    bundle: Bundle
    fetched: float  #: unix time


@dataclass(frozen=True, slots=True)
class _View:
    lists: dict[str, DeviceList]
    iks: dict[int, bytes]
    active: dict[int, str] | None  #: see :meth:`DeviceRegistry.active`


def _active(lists: dict[str, DeviceList]) -> dict[int, str] | None:
    if not lists:
        return None
    out: dict[int, str] = {}
    for flavour in reversed(FLAVOUR_NAMES):  # the preferred namespace last: it wins
        dl = lists.get(flavour)
        if dl is not None:
            for d in dl.devices:
                out[d.device_id] = flavour
    return out


class DeviceRegistry:
    """Reads decode each record once: a decoded view is reused while the store returns the same
    bytes for it (views are never mutated; callers get copies)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._views: dict[str, tuple[bytes, _View]] = {}

    def view(self, jid: str) -> _View:
        """Read-only decoded record of ``jid`` (do not mutate)."""
        return self._view(jid)

    def _view(self, jid: str) -> _View:
        raw = self._storage.get("device", jid)
        if raw is None:
            return _View({}, {}, None)
        cached = self._views.get(jid)
        if cached is not None and cached[0] == raw:
            return cached[1]
        rec = jsonrec.load(raw, _VERSION, "device record")
        try:
            lists = {
                flavour: DeviceList(
                    flavour,
                    tuple(DeviceEntry(int(e[0]), e[1], None if e[2] is None else bytes.fromhex(e[2])) for e in entries),
                )
                for flavour, entries in rec["lists"].items()
            }
            iks = {int(k): bytes.fromhex(v) for k, v in rec["iks"].items()}
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise CorruptState("device record is damaged") from None
        if len(self._views) > 4096:
            self._views.clear()
        view = _View(lists, iks, _active(lists))
        self._views[jid] = (raw, view)
        return view

    # ---- per-account record -------------------------------------------------------------

    def _load(self, jid: str) -> dict[str, Any]:
        raw = self._storage.get("device", jid)
        if raw is None:
            return {"lists": {}, "iks": {}}
        rec: dict[str, Any] = jsonrec.load(raw, _VERSION, "device record")
        return rec

    def _save(self, jid: str, rec: dict[str, Any]) -> None:
        self._storage.put("device", jid, jsonrec.dump(_VERSION, rec))

    def lists(self, jid: str) -> dict[str, DeviceList]:
        """The device lists of ``jid`` we have seen, by flavour name (absent: never fetched)."""
        return dict(self._view(jid).lists)

    def set_list(self, jid: str, device_list: DeviceList) -> None:
        rec = self._load(jid)
        rec["lists"][device_list.flavour] = [
            [d.device_id, d.label, None if d.label_signature is None else d.label_signature.hex()]
            for d in device_list.devices
        ]
        self._save(jid, rec)

    def identity(self, jid: str, device_id: int) -> bytes | None:
        """The X25519 identity key device ``device_id`` of ``jid`` showed first (its sessions
        are bound to it), or None."""
        return self._view(jid).iks.get(device_id)

    def set_identity(self, jid: str, device_id: int, ik: bytes) -> None:
        rec = self._load(jid)
        rec["iks"][str(device_id)] = ik.hex()
        self._save(jid, rec)

    def identities(self, jid: str) -> dict[int, bytes]:
        return dict(self._view(jid).iks)

    # ---- bundles ------------------------------------------------------------------------

    def bundle(self, flavour: str, jid: str, device_id: int) -> StoredBundle | None:
        raw = self._storage.get("bundle", session_key(flavour, jid, device_id))
        if raw is None:
            return None
        return _unpack_bundle(flavour, raw)

    def set_bundle(self, jid: str, device_id: int, bundle: Bundle, fetched: float) -> None:
        self._storage.put("bundle", session_key(bundle.flavour, jid, device_id), _pack_bundle(bundle, fetched))


# Bundle records are binary (a bundle holds ~100 prekeys and is read on every session start):
# version, fetched (double), spk id, key length k, ik, spk, signature (64), then (id, key) pairs.
_HEAD = struct.Struct(">BdIB")
_ENTRY = {32: struct.Struct(">I32s"), 33: struct.Struct(">I33s")}


def _pack_bundle(bundle: Bundle, fetched: float) -> bytes:
    k = len(bundle.spk)
    if len(bundle.ik) != k or len(bundle.spk_signature) != 64 or any(len(v) != k for v in bundle.prekeys.values()):
        raise CorruptState("bundle keys of unequal length")
    parts = [_HEAD.pack(_VERSION, fetched, bundle.spk_id, k), bundle.ik, bundle.spk, bundle.spk_signature]
    for pk_id, key in bundle.prekeys.items():
        parts.append(pk_id.to_bytes(4, "big"))
        parts.append(key)
    return b"".join(parts)


def _unpack_bundle(flavour: str, raw: bytes) -> StoredBundle:
    try:
        version, fetched, spk_id, k = _HEAD.unpack_from(raw)
    except struct.error:
        raise CorruptState("bundle record is damaged") from None
    off = _HEAD.size
    body = raw[off:]
    if version != _VERSION or k not in (32, 33) or len(body) < 2 * k + 64 or (len(body) - 2 * k - 64) % (4 + k):
        raise CorruptState("bundle record is damaged")
    ik, spk, sig = body[:k], body[k : 2 * k], body[2 * k : 2 * k + 64]
    rest = body[2 * k + 64 :]
    prekeys = dict(_ENTRY[k].iter_unpack(rest))
    return StoredBundle(Bundle(flavour, ik, spk_id, spk, sig, prekeys), fetched)
