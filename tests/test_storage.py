"""The in-memory store passes the storage conformance suite (the keystore runs the same one)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from e2ee.errors import UsageError
from e2ee.storage import MemoryStorage, Storage

from .storage_conformance import CONFORMANCE


@pytest.mark.parametrize("check", CONFORMANCE, ids=lambda f: f.__name__)
def test_memory_storage_conformance(check: Callable[[Callable[[], Storage]], None]) -> None:
    check(MemoryStorage)


def test_unknown_table_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        MemoryStorage().get("nope", "k")
