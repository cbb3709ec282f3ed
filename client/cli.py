"""The ``e2ee`` command line.  Exit status: 0 success, 2 usage error, 1 anything else, with one
clear line on stderr (never a traceback)."""

from __future__ import annotations

import argparse
import os
import sys

from e2ee.errors import E2EEError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e2ee", description="End-to-end encryption for XMPP (OMEMO 2, legacy OMEMO).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", help="run the in-process demo (no server needed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run

            return run(sys.stdout)
    except E2EEError as exc:
        print(f"e2ee: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output closed early (e.g. piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("e2ee: interrupted", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
