"""The state one device's engine parts share (h11's ``ConnectionState``; libsignal's stores).

The OMEMO sender and receiver, the OpenPGP backend, the send policy and the PEP inputs each
take one :class:`Context` instead of inheriting from a common base: storage, randomness, clock,
trust, the device registry, the sessions, our own device, and :meth:`Context.run`, the
one-transaction-per-operation rule.  :attr:`e2ee.engine.Engine.context` hands it to tools and
tests that inspect the stored state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .devices import DeviceRegistry
from .errors import UsageError
from .jid import bare_jid_key
from .own import OwnDevice
from .rng import Clock, Random
from .sessions import SessionStore
from .storage import Storage
from .trust import TrustPolicy, TrustStore

__all__ = ["Context", "bare", "delegate"]

_T = TypeVar("_T")
_S = TypeVar("_S")
_P = ParamSpec("_P")


def bare(jid: str) -> str:
    """The comparison key of ``jid`` (:func:`~e2ee.jid.bare_jid_key`); a caller's value that is
    no JID is :class:`~e2ee.errors.UsageError`."""
    key = bare_jid_key(jid)
    if not key:
        raise UsageError(f"not a JID: {jid!r}")
    return key


class Context:
    """What the engine's parts share; one per engine."""

    __slots__ = ("storage", "rng", "clock", "own", "trust", "devices", "sessions", "refused", "legacy_tag_in_payload")

    def __init__(
        self, storage: Storage, rng: Random, clock: Clock, policy: TrustPolicy, legacy_tag_in_payload: bool
    ) -> None:
        self.storage = storage
        self.rng = rng
        self.clock = clock
        self.own = OwnDevice(storage, rng)
        self.trust = TrustStore(storage, policy)
        self.devices = DeviceRegistry(storage)
        self.sessions = SessionStore(storage, self.own.identity)
        #: why the last bundle of (jid, device, namespace) was refused; in memory only (a
        #: refused bundle changes no stored byte), for the "not sent" sentence
        self.refused: dict[tuple[str, int, str], str] = {}
        #: accept the historical legacy variant (16-byte key material, the GCM tag at the end
        #: of ``<payload/>``); off by default: no current sender produces it
        self.legacy_tag_in_payload = legacy_tag_in_payload

    def run(self, op: Callable[[], _T]) -> _T:
        """Run ``op`` in one transaction; on failure forget decoded sessions (they may hold
        changes that were rolled back)."""
        try:
            with self.storage.transaction():
                return op()
        except BaseException:
            self.sessions.forget_cache()
            raise

    def now(self) -> datetime:
        return self.clock()


class delegate(Generic[_S, _P, _T]):  # noqa: N801 -- used like a decorator/descriptor
    """A facade member that is a part's method: ``publish = delegate("_pep", Pep.publish)``
    makes ``facade.publish(...)`` call ``facade._pep.publish(...)``, with the part's signature
    (for type checkers) and docstring (for readers)."""

    def __init__(self, part: str, method: Callable[Concatenate[_S, _P], _T]) -> None:
        self._part = part
        self._name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> delegate[_S, _P, _T]: ...

    @overload
    def __get__(self, obj: object, owner: type[Any]) -> Callable[_P, _T]: ...

    def __get__(self, obj: object | None, owner: type[Any]) -> delegate[_S, _P, _T] | Callable[_P, _T]:
        if obj is None:
            return self
        bound: Callable[_P, _T] = getattr(getattr(obj, self._part), self._name)
        return bound
