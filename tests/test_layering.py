"""The engine stays free of I/O: nothing in e2ee/ imports asyncio, slixmpp, sockets, threads,
the keystore or the client (ARCHITECTURE: sans-IO core)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "e2ee"
FORBIDDEN = {"asyncio", "slixmpp", "socket", "ssl", "threading", "multiprocessing", "selectors",
             "subprocess", "keystore", "client", "http", "urllib", "requests", "aiohttp"}


def test_engine_imports_nothing_with_io() -> None:
    offenders = []
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(ENGINE.parent)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)
