"""``python -m bench [--quick] [--json FILE]``: run the benchmarks and print a table.

JSON output: ``{"scenarios": {name: {"ours_us": median, "floor_us": median, ...}}}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from . import micro


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke check, not a measurement")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rounds, ops = (2, 200) if args.quick else (7, 2000)
    results = micro.run(rounds, ops)
    out: dict[str, dict[str, float]] = {}
    print(f"{'scenario':32} {'ours µs':>10} {'floor µs':>10} {'ours/floor':>10}   (median of {rounds} rounds)")
    for name, s in results.items():
        ours, floor = s["ours"], s["floor"]
        out[name] = {
            "ours_us": round(ours.median, 2),
            "ours_min_us": round(ours.low, 2),
            "ours_max_us": round(ours.high, 2),
            "floor_us": round(floor.median, 2),
        }
        print(f"{name:32} {ours.median:10.1f} {floor.median:10.1f} {ours.median / floor.median:10.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"python": platform.python_version(), "scenarios": out}, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
