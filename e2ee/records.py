"""Versioned local records: one version byte, then a protobuf message (ARCHITECTURE habit 8)."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from .errors import CorruptState

__all__ = ["dump", "load"]

_M = TypeVar("_M", bound=Message)


def dump(version: int, message: Message) -> bytes:
    """Serialize ``message`` behind its version byte (deterministic bytes)."""
    return bytes((version,)) + message.SerializeToString(deterministic=True)


def load(data: bytes, version: int, message: _M, what: str) -> _M:
    """Parse ``data`` into ``message``; raise :class:`CorruptState` for a wrong version, bytes
    that do not parse, or a missing required field."""
    if not data or data[0] != version:
        raise CorruptState(f"unknown {what} version")
    try:
        message.MergeFromString(data[1:])
    except DecodeError:
        raise CorruptState(f"{what} does not parse") from None
    if not message.IsInitialized():
        raise CorruptState(f"{what} lacks a required field")
    return message
