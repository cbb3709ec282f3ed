"""``mypy --strict`` on the engine, the keystore and the client is part of the test suite, so it cannot silently regress."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_on_engine_keystore_and_client() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "e2ee"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
