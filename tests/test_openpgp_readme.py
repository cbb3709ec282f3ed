"""The README's OpenPGP example runs as written (two engines with real GnuPG runners)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_openpgp_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- example: openpgp -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README example 'openpgp' missing"
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(match.group(1)), "README.md (openpgp example)", "exec"), namespace)
    assert namespace["result"] == "Hello, Bob"
