"""The OpenPGP example (docs/openpgp.md) runs as written (two engines with real GnuPG runners)."""

from __future__ import annotations

from .doc_examples import example


def test_openpgp_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(example("openpgp"), "docs/openpgp.md (openpgp example)", "exec"), namespace)
    assert namespace["result"] == "Hello, Bob"
