"""Small versioned records as JSON: one version byte, then canonical UTF-8 JSON.

Used for the engine's low-traffic records (own keys, device lists, bundles, trust); the hot
path (sessions) uses protobuf.  Bytes values are stored as lowercase hex.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import CorruptState

__all__ = ["dump", "load"]


def dump(version: int, value: Any) -> bytes:
    """Serialize ``value`` behind its version byte (deterministic bytes)."""
    return bytes((version,)) + json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def load(data: bytes, version: int, what: str) -> Any:
    """Inverse of :func:`dump`; :class:`~e2ee.errors.CorruptState` for anything else."""
    if not data or data[0] != version:
        raise CorruptState(f"unknown {what} version")
    try:
        return json.loads(data[1:].decode())
    except (UnicodeDecodeError, ValueError):
        raise CorruptState(f"{what} does not parse") from None
