"""The one loader for the JSON test vectors in ``vectors/`` (pure data, beside ``tests/``).

* ``load(relpath)`` reads any vector file (path relative to this directory).
  Every file outside ``wycheproof/`` must carry a non-empty ``"source"`` string.
* ``wycheproof(name)`` yields the cases of one Wycheproof file as ``WycheproofCase``.
* ``hexfield(case, name)`` decodes one lowercase-hex field of a case.

Tests parametrize over these; nothing here knows about the engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "VECTORS_DIR",
    "WYCHEPROOF_DIR",
    "VectorFileError",
    "WycheproofCase",
    "hexfield",
    "load",
    "vector_files",
    "wycheproof",
]

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"
WYCHEPROOF_DIR = VECTORS_DIR / "wycheproof"

WYCHEPROOF_RESULTS = frozenset({"valid", "invalid", "acceptable"})
_HEX = re.compile(r"(?:[0-9a-f]{2})*")


class VectorFileError(ValueError):
    """A vector file is missing, malformed, or lacks its provenance."""


def _resolve(relpath: str) -> Path:
    path = (VECTORS_DIR / relpath).resolve()
    if not path.is_relative_to(VECTORS_DIR):
        raise VectorFileError(f"{relpath!r} is outside {VECTORS_DIR}")
    if path.suffix != ".json":
        raise VectorFileError(f"{relpath!r} is not a .json file")
    return path


def _is_wycheproof(path: Path) -> bool:
    return path.is_relative_to(WYCHEPROOF_DIR)


def load(relpath: str) -> dict[str, Any]:
    """Load one vector file, relative to the vectors directory.

    Files outside ``wycheproof/`` (which are kept byte-identical to upstream)
    must be a JSON object with a non-empty ``"source"`` string.
    """
    path = _resolve(relpath)
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise VectorFileError(f"no vector file {relpath!r}") from None
    except json.JSONDecodeError as exc:
        raise VectorFileError(f"{relpath}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise VectorFileError(f"{relpath}: top level is not a JSON object")
    if not _is_wycheproof(path):
        source = data.get("source")
        if not isinstance(source, str) or not source.strip():
            raise VectorFileError(f'{relpath}: missing or empty "source" field')
    return data


def vector_files() -> list[str]:
    """Every JSON file under the vectors directory, as paths relative to it (sorted)."""
    return sorted(p.relative_to(VECTORS_DIR).as_posix() for p in VECTORS_DIR.rglob("*.json"))


@dataclass(frozen=True)
class WycheproofCase:
    """One Wycheproof test with the parameters of its test group."""

    file: str
    group: Mapping[str, Any]  # the test group without its "tests" list
    tcId: int
    comment: str
    flags: tuple[str, ...]
    result: str  # "valid", "invalid" or "acceptable"
    test: Mapping[str, Any]  # the raw test object

    @property
    def id(self) -> str:
        """A readable pytest id, e.g. ``x25519-17``."""
        return f"{self.file.removesuffix('_test.json')}-{self.tcId}"


def wycheproof(name: str) -> Iterator[WycheproofCase]:
    """Yield every case of ``wycheproof/<name>`` (``x25519`` or ``x25519_test.json``)."""
    file = name if name.endswith(".json") else f"{name}_test.json"
    data = load(f"wycheproof/{file}")
    count = 0
    for group in data["testGroups"]:
        params = {k: v for k, v in group.items() if k != "tests"}
        for test in group["tests"]:
            result = test["result"]
            if result not in WYCHEPROOF_RESULTS:
                raise VectorFileError(f"{file} tcId {test['tcId']}: unknown result {result!r}")
            count += 1
            yield WycheproofCase(
                file=file,
                group=params,
                tcId=int(test["tcId"]),
                comment=str(test.get("comment", "")),
                flags=tuple(test.get("flags", ())),
                result=result,
                test=test,
            )
    if count != data.get("numberOfTests", count):
        raise VectorFileError(f"{file}: {count} tests, header says {data['numberOfTests']}")


def hexfield(case: WycheproofCase | Mapping[str, Any], name: str) -> bytes:
    """Decode the lowercase-hex field ``name`` of a case.

    For a ``WycheproofCase`` the test is searched first, then its group; a dotted
    name walks nested objects (``hexfield(case, "publicKey.pk")``). For a plain
    mapping (a case from a hand-written file) the field is looked up directly.
    """
    sources: tuple[Mapping[str, Any], ...]
    sources = (case.test, case.group) if isinstance(case, WycheproofCase) else (case,)
    for source in sources:
        value: Any = source
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                break
            value = value[part]
        else:
            if not isinstance(value, str) or not _HEX.fullmatch(value):
                raise VectorFileError(f"field {name!r} is not lowercase hex: {value!r:.60}")
            return bytes.fromhex(value)
    raise KeyError(name)
