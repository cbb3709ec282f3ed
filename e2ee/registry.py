"""The OMEMO backends the engine speaks, preferred first: the one place both are named.

Everything else iterates :data:`BACKENDS` or looks a backend up by namespace or flavour name,
so a third namespace would be one more entry here.
"""

from __future__ import annotations

from typing import Final

from .backend import OmemoBackend
from .errors import UsageError
from .legacy.backend import LEGACY_BACKEND
from .omemo2.backend import OMEMO2_BACKEND

__all__ = ["BACKENDS", "NAMESPACES", "FLAVOUR_NAMES", "backend", "find", "by_flavour"]

#: Every OMEMO backend, preferred first (a device on both lists gets the first).
BACKENDS: Final[tuple[OmemoBackend, ...]] = (OMEMO2_BACKEND, LEGACY_BACKEND)
#: The namespaces the engine speaks, preferred first.
NAMESPACES: Final[tuple[str, ...]] = tuple(b.namespace for b in BACKENDS)
#: The flavour names (``Flavour.name``) in the same order, as stored records name them.
FLAVOUR_NAMES: Final[tuple[str, ...]] = tuple(b.flavour.name for b in BACKENDS)

_BY_NS: Final = {b.namespace: b for b in BACKENDS}
_BY_FLAVOUR: Final = {b.flavour.name: b for b in BACKENDS}


def backend(namespace: str) -> OmemoBackend:
    """The backend of ``namespace``; :class:`~e2ee.errors.UsageError` for another one."""
    b = _BY_NS.get(namespace)
    if b is None:
        raise UsageError(f"unknown namespace {namespace!r}")
    return b


def find(namespace: str) -> OmemoBackend | None:
    """The backend of ``namespace``, or None (for input from the network)."""
    return _BY_NS.get(namespace)


def by_flavour(name: str) -> OmemoBackend:
    """The backend whose flavour is called ``name`` (as stored records name it)."""
    return _BY_FLAVOUR[name]
