"""The ``e2ee`` commands that publish keys and keep the OpenPGP secret key: ``publish`` (device
lists, bundles and the OpenPGP key), ``backup`` and ``restore``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from e2ee.errors import UsageError

from .cli_common import _online, _pgp_fp

if TYPE_CHECKING:
    from .session import E2EESession
    from .types import Received


def _publish(args: argparse.Namespace) -> int:
    async def work(session: E2EESession, _received: list[Received]) -> int:
        print(f"published device {session.engine.device_id} (both namespaces)")
        fingerprint = session.engine.openpgp.fingerprint
        print(f"published OpenPGP key {_pgp_fp(fingerprint) if fingerprint is not None else '(none)'}")
        return 0

    return _online(args, work, openpgp_generate=True)


def _backup(args: argparse.Namespace) -> int:
    async def work(session: E2EESession, _received: list[Received]) -> int:
        backup = session.engine.openpgp.backup()
        await session.run_effects(list(backup.effects))
        print(backup.code)
        print("published the encrypted OpenPGP secret key; keep this backup code to restore it", file=sys.stderr)
        return 0

    return _online(args, work)


def _restore(args: argparse.Namespace) -> int:
    from e2ee.openpgp import SECRET_KEY_NODE, parse_backup_code

    from .home import ask

    code = os.environ.get("E2EE_BACKUP_CODE")
    if code is None:
        code = ask("Backup code: ", "E2EE_BACKUP_CODE")
    code = parse_backup_code(code)  # a malformed code is refused before connecting

    async def work(session: E2EESession, _received: list[Received]) -> int:
        own = session.boundjid.bare
        elem = await session.e2ee.first_item(own, SECRET_KEY_NODE)
        if elem is None:
            raise UsageError(f"no OpenPGP secret-key backup on {own}'s server (make one with 'e2ee backup')")
        fpr = session.engine.openpgp.restore(elem, code, replace=args.replace)
        await session.run_effects(session.engine.openpgp.publish())
        print(f"restored OpenPGP key {_pgp_fp(fpr)}")
        return 0

    return _online(args, work)
