"""The code blocks of README.md and docs/*.md, for the tests that run them.

Every fenced ``sh`` or ``python`` block is preceded by one marker line: ``<!-- example: NAME -->``
(a test runs it: it calls :func:`example` with NAME) or ``<!-- not run: REASON -->``.
``tests/test_readme.py`` checks that each block has one, and that every NAME is run.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_MARKER = re.compile(r"<!-- (example|not run): (.+?) -->\Z", re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # "example" or "not run"
    label: str | None  # the example's name, or the reason it is not run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    """README.md and every page in docs/."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = _MARKER.match(before)
        found.append(
            Block(
                path,
                text.count("\n", 0, m.start()) + 1,
                m.group(1),
                textwrap.dedent(m.group(2)),
                marker.group(1) if marker else None,
                marker.group(2) if marker else None,
            )
        )
    return found


def example(name: str) -> str:
    """The code of the block marked ``<!-- example: NAME -->`` in README.md or docs/ (exactly one)."""
    found = [b for path in documents() for b in blocks(path) if b.marker == "example" and b.label == name]
    assert len(found) == 1, f"example {name!r}: {len(found)} blocks (want one) in README.md and docs/"
    return found[0].code
