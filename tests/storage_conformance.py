"""The storage contract of :mod:`e2ee.storage`, as tests any backend must pass.

A backend's test module imports :data:`CONFORMANCE` and parametrizes it with a factory that
returns a fresh, empty store (``tests/test_storage.py`` for :class:`MemoryStorage`,
``tests/test_keystore.py`` for the keystore).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from e2ee.errors import E2EEError
from e2ee.storage import TABLES, Storage

Factory = Callable[[], Storage]


class Boom(Exception):
    pass


def get_put_delete(make: Factory) -> None:
    s = make()
    for table in TABLES:
        assert s.get(table, "k") is None
        s.put(table, "k", b"v1")
        assert s.get(table, "k") == b"v1"
        s.put(table, "k", b"v2" * 1000)
        assert s.get(table, "k") == b"v2" * 1000
        assert s.delete(table, "k") is True
        assert s.delete(table, "k") is False
        assert s.get(table, "k") is None


def tables_are_separate(make: Factory) -> None:
    s = make()
    s.put("session", "x", b"1")
    assert s.get("trust", "x") is None
    assert s.keys("session") == ["x"] and s.keys("trust") == []


def keys_lists_every_key_with_any_characters(make: Factory) -> None:
    s = make()
    names = ["a", "omemo2/1/bob@example.net", "légacy/2/ünï@例え.jp", "with space", "x" * 300, ""]
    for n in names:
        s.put("device", n, n.encode())
    assert sorted(s.keys("device")) == sorted(names)
    for n in names:
        assert s.get("device", n) == n.encode()


def empty_and_binary_values(make: Factory) -> None:
    s = make()
    s.put("own", "empty", b"")
    s.put("own", "bin", bytes(range(256)))
    assert s.get("own", "empty") == b""
    assert s.get("own", "bin") == bytes(range(256))


def transaction_commits(make: Factory) -> None:
    s = make()
    with s.transaction():
        s.put("own", "a", b"1")
        s.put("own", "b", b"2")
        assert s.get("own", "a") == b"1"  # reads see the transaction's own writes
    assert s.get("own", "a") == b"1" and s.get("own", "b") == b"2"


def transaction_rolls_back_every_write(make: Factory) -> None:
    s = make()
    s.put("own", "keep", b"old")
    s.put("own", "gone", b"old")
    with pytest.raises(Boom):
        with s.transaction():
            s.put("own", "keep", b"new")
            s.delete("own", "gone")
            s.put("own", "fresh", b"new")
            s.put("own", "fresh", b"newer")
            raise Boom
    assert s.get("own", "keep") == b"old"
    assert s.get("own", "gone") == b"old"
    assert s.get("own", "fresh") is None
    assert sorted(s.keys("own")) == ["gone", "keep"]


def nested_transactions_are_decided_by_the_outermost(make: Factory) -> None:
    s = make()
    with pytest.raises(Boom):
        with s.transaction():
            with s.transaction():
                s.put("own", "inner", b"1")
            s.put("own", "outer", b"1")
            raise Boom
    assert s.get("own", "inner") is None and s.get("own", "outer") is None
    with s.transaction():
        with s.transaction():
            s.put("own", "inner", b"1")
    assert s.get("own", "inner") == b"1"


def a_nested_transaction_that_raises_undoes_only_its_own_writes(make: Factory) -> None:
    """A savepoint: the enclosing transaction keeps its writes (before and after) and commits."""
    s = make()
    s.put("own", "kept", b"old")
    s.put("own", "gone", b"old")
    with s.transaction():
        s.put("own", "before", b"1")
        with pytest.raises(Boom):
            with s.transaction():
                s.put("own", "kept", b"new")
                s.delete("own", "gone")
                s.put("own", "inner", b"1")
                with s.transaction():
                    s.put("own", "deeper", b"1")
                raise Boom
        assert s.get("own", "kept") == b"old" and s.get("own", "gone") == b"old"
        assert s.get("own", "inner") is None and s.get("own", "deeper") is None
        with s.transaction():
            s.put("own", "after", b"1")
    assert sorted(s.keys("own")) == ["after", "before", "gone", "kept"]
    assert s.get("own", "kept") == b"old" and s.get("own", "before") == b"1"
    with pytest.raises(Boom):  # the outermost one still undoes everything, savepoints included
        with s.transaction():
            with s.transaction():
                s.put("own", "x", b"1")
            with pytest.raises(Boom):
                with s.transaction():
                    s.put("own", "y", b"1")
                    raise Boom
            raise Boom
    assert s.get("own", "x") is None and s.get("own", "y") is None


def engine_errors_roll_back_too(make: Factory) -> None:
    s = make()
    with pytest.raises(E2EEError):
        with s.transaction():
            s.put("session", "k", b"v")
            raise E2EEError("peer sent garbage")
    assert s.get("session", "k") is None


def a_failed_transaction_leaves_the_store_usable(make: Factory) -> None:
    s = make()
    with pytest.raises(Boom):
        with s.transaction():
            s.put("own", "a", b"1")
            raise Boom
    with s.transaction():
        s.put("own", "a", b"2")
    assert s.get("own", "a") == b"2"


CONFORMANCE = [
    get_put_delete,
    tables_are_separate,
    keys_lists_every_key_with_any_characters,
    empty_and_binary_values,
    transaction_commits,
    transaction_rolls_back_every_write,
    nested_transactions_are_decided_by_the_outermost,
    a_nested_transaction_that_raises_undoes_only_its_own_writes,
    engine_errors_roll_back_too,
    a_failed_transaction_leaves_the_store_usable,
]
