"""``python -m bench.before_after [REV] [--rounds N] [--ops N]``: the keystore of git revision
``REV`` (default ``d2ccb19``, before the issue-7 work) against the working tree's, on the steady-state
scenarios, in one process, interleaved round by round.

The old ``keystore/*.py`` are read with ``git show`` into a
temporary package, so both versions run on the same engine, in the same rounds.  Prints one line
per scenario: before, after (medians over rounds) and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2ee.keystore import KdfParams, Keystore
from e2ee.storage import Storage

from . import engine_bench
from .__main__ import _time
from .keystore_bench import PW, cleanup, scratch_dir

DEFAULT_REV = "d2ccb19"


def _old_keystore(rev: str, root: Path) -> Any:
    package = scratch_dir() / "keystore_before"
    package.mkdir()
    names = subprocess.check_output(["git", "ls-tree", "--name-only", f"{rev}:keystore"], cwd=root, text=True)
    for name in (n for n in names.split() if n.endswith(".py")):
        text = subprocess.check_output(["git", "show", f"{rev}:keystore/{name}"], cwd=root, text=True)
        (package / name).write_text(text)
    sys.path.insert(0, str(package.parent))
    import keystore_before

    return keystore_before.Keystore


def _factory(cls: Any, sync: bool) -> Callable[[str], Storage]:
    base = scratch_dir()

    def make(name: str) -> Storage:
        store: Storage = cls.create(base / f"{name}.db", PW, kdf=KdfParams.floor(), sync=sync)
        return store

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after", description=__doc__)
    parser.add_argument("rev", nargs="?", default=DEFAULT_REV)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=300)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    try:
        _compare(_old_keystore(args.rev, root), args.rounds, args.ops)
    finally:
        cleanup()
    return 0


def _compare(before: Any, rounds: int, ops_per_round: int) -> None:
    for sync in (False, True):
        n = ops_per_round if not sync else max(1, ops_per_round // 3)
        for name in ("encrypt", "decrypt") if sync else ("encrypt", "decrypt", "fanout_100"):
            label = f"{name}[keystore{'+sync' if sync else ''}]"
            if name == "fanout_100":
                n = max(1, n // 60)
            total = rounds * n + 300
            ops = {
                "before": engine_bench.SCENARIOS[name](total, _factory(before, sync)),
                "after": engine_bench.SCENARIOS[name](total, _factory(Keystore, sync)),
            }
            for op in ops.values():
                for _ in range(300):  # warm-up: the WAL reaches its working size
                    op()
            times: dict[str, list[float]] = {k: [] for k in ops}
            for r in range(rounds):
                for k in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    times[k].append(_time(ops[k], n))
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            paired = statistics.median(x / y for x, y in zip(times["before"], times["after"], strict=True))
            print(
                f"{label:24} before {b:8.1f} µs   after {a:8.1f} µs   {paired:5.2f}x faster (paired median)",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
