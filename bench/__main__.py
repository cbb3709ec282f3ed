"""``python -m bench [--quick] [--json FILE]``: run the benchmarks and print a table.

Engine scenarios (``encrypt``, ``decrypt``, ``session_init``, ``session_accept``, ``fanout_100``,
``reverse_1000``) run on our engine (:mod:`bench.engine_bench`) and on python-omemo 2.1.0's
``SessionManager`` (:mod:`bench.peer_omemo`) in the same process, interleaved round by round
(ours, peer, floor for every scenario in each round), with the bare primitive cost of the same
work as the floor.  Ratchet micro-benchmarks (:mod:`bench.micro`) follow.  Medians over rounds.

JSON: ``{"scenarios": {name: {"ours_us", "peer_us", "floor_us", ...min/max}}}``; for
``reverse_1000`` the figures are the total for 1000 messages.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from typing import Callable

from . import engine_bench, keystore_bench, micro, peer_omemo
from .timing import Sample

#: scenario: (ops per round, ops per round in quick mode)
ENGINE_OPS: dict[str, tuple[int, int]] = {
    "encrypt": (300, 20),
    "decrypt": (300, 20),
    "session_init": (20, 3),
    "session_accept": (20, 3),
    "fanout_100": (5, 1),
    "reverse_1000": (1, 1),
}


def _time(op: Callable[[], object], n: int) -> float:
    """Microseconds per call over ``n`` calls (garbage collection paused while timing)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            op()
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        gc.enable()


def run_engine(rounds: int, quick: bool) -> dict[str, dict[str, Sample]]:
    results: dict[str, dict[str, Sample]] = {}
    for name, (ops, quick_ops) in ENGINE_OPS.items():
        n = quick_ops if quick else ops
        print(f"  preparing {name} ({rounds} x {n} ops per side)...", file=sys.stderr, flush=True)
        ours = engine_bench.SCENARIOS[name](rounds * n)
        peer = peer_omemo.SCENARIOS[name](rounds * n)
        floor = engine_bench.FLOORS[name]()
        s = results[name] = {"ours": Sample(), "peer": Sample(), "floor": Sample()}
        for _ in range(rounds):
            s["ours"].rounds.append(_time(ours, n))
            s["peer"].rounds.append(_time(peer, n))
            s["floor"].rounds.append(_time(floor, max(n, 20)))
    return results


#: durable scenario: (ops per round, quick), peer scenario, in-memory scenario of ours (its floor)
KEYSTORE_OPS: dict[str, tuple[tuple[int, int], str | None]] = {
    "encrypt[keystore]": ((300, 20), "encrypt"),
    "decrypt[keystore]": ((300, 20), "decrypt"),
    "encrypt[keystore+sync]": ((100, 10), "encrypt"),
    "decrypt[keystore+sync]": ((100, 10), "decrypt"),
    "keystore_open": ((3, 1), None),
}


def run_keystore(rounds: int, quick: bool) -> dict[str, dict[str, Sample]]:
    """The keystore scenarios; the floor of encrypt/decrypt is our in-memory engine doing the same
    work (so ours/floor is the price of durability), of keystore_open the Argon2id derivation."""
    results: dict[str, dict[str, Sample]] = {}
    try:
        for name, ((ops, quick_ops), base) in KEYSTORE_OPS.items():
            n = quick_ops if quick else ops
            print(f"  preparing {name} ({rounds} x {n} ops per side)...", file=sys.stderr, flush=True)
            ours = keystore_bench.SCENARIOS[name](rounds * n)
            peer = peer_omemo.SCENARIOS[base](rounds * n) if base else None
            floor = engine_bench.SCENARIOS[base](rounds * max(n, 20)) if base else keystore_bench.floor_open()
            s = results[name] = {"ours": Sample(), "peer": Sample(), "floor": Sample()}
            for _ in range(rounds):
                s["ours"].rounds.append(_time(ours, n))
                if peer is not None:
                    s["peer"].rounds.append(_time(peer, n))
                s["floor"].rounds.append(_time(floor, max(n, 20) if base else n))
    finally:
        keystore_bench.cleanup()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke check, not a measurement")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else 5
    out: dict[str, dict[str, float]] = {}

    engine = run_engine(rounds, args.quick)
    print(f"\n{'scenario':16} {'ours µs':>12} {'peer µs':>12} {'floor µs':>10} {'peer/ours':>10} {'ours/floor':>10}")
    for name, s in engine.items():
        ours, peer, floor = s["ours"], s["peer"], s["floor"]
        out[name] = {
            "ours_us": round(ours.median, 2),
            "ours_min_us": round(ours.low, 2),
            "ours_max_us": round(ours.high, 2),
            "peer_us": round(peer.median, 2),
            "peer_min_us": round(peer.low, 2),
            "peer_max_us": round(peer.high, 2),
            "floor_us": round(floor.median, 2),
        }
        print(
            f"{name:16} {ours.median:12.1f} {peer.median:12.1f} {floor.median:10.1f}"
            f" {peer.median / ours.median:10.1f} {ours.median / floor.median:10.2f}"
        )

    durable = run_keystore(rounds, args.quick)
    print(f"\n{'keystore scenario':24} {'ours µs':>12} {'peer µs':>12} {'in-mem µs':>10} {'peer/ours':>10} {'ours/in-mem':>11}")
    for name, s in durable.items():
        ours, peer, floor = s["ours"], s["peer"], s["floor"]
        entry = {
            "ours_us": round(ours.median, 2),
            "ours_min_us": round(ours.low, 2),
            "ours_max_us": round(ours.high, 2),
            "floor_us": round(floor.median, 2),
        }
        peer_text, ratio_text = "-", "-"
        if peer.rounds:
            entry.update(peer_us=round(peer.median, 2), peer_min_us=round(peer.low, 2), peer_max_us=round(peer.high, 2))
            peer_text, ratio_text = f"{peer.median:.1f}", f"{peer.median / ours.median:.1f}"
        out[name] = entry
        print(f"{name:24} {ours.median:12.1f} {peer_text:>12} {floor.median:10.1f} {ratio_text:>10} {ours.median / floor.median:11.2f}")
    print("  (keystore_open: the floor column is the Argon2id derivation alone)")

    micro_rounds, micro_ops = (2, 200) if args.quick else (7, 2000)
    print(f"\n{'ratchet micro-benchmark':32} {'ours µs':>10} {'floor µs':>10} {'ours/floor':>10}")
    for name, s in micro.run(micro_rounds, micro_ops).items():
        ours, floor = s["ours"], s["floor"]
        out[name] = {
            "ours_us": round(ours.median, 2),
            "ours_min_us": round(ours.low, 2),
            "ours_max_us": round(ours.high, 2),
            "floor_us": round(floor.median, 2),
        }
        print(f"{name:32} {ours.median:10.1f} {floor.median:10.1f} {ours.median / floor.median:10.2f}")
    print(f"\n(medians of {rounds} rounds; {'quick mode: not a measurement' if args.quick else 'full run'})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"python": platform.python_version(), "rounds": rounds, "scenarios": out}, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
