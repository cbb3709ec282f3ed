"""The results of a benchmark run: one :class:`Row` per scenario, the targets of issue 7, and
their rendering as ``RESULTS.md`` (a table) and ``results.json``.

Every row holds per-round medians of ours, and where they exist of the peer (python-omemo or
slixmpp-omemo, measured in the same process, interleaved round by round) and of the floor (the
bare primitive cost of the same work, or what the row's note names).  JSON fields per scenario:
``ours_us``, ``ours_min_us``, ``ours_max_us``, and the same with ``peer_`` and ``floor_`` where
they exist, plus ``unit`` (what one timed operation is), ``target``, ``met`` and ``extra``
(figures that are not times, e.g. bytes per session).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .timing import Sample

__all__ = ["Row", "Target", "Results", "ratio_at_least", "faster", "no_slower", "within_of", "at_most"]


@dataclass
class Target:
    """What a row must show: ``text`` for the table, ``check(results, row)`` -> (met, the
    measured figure)."""

    text: str
    check: Callable[[Results, Row], tuple[bool, str]]


@dataclass
class Row:
    name: str
    group: str
    unit: str  #: what one timed operation is, e.g. "per message"
    ours: Sample
    peer: Sample | None = None
    floor: Sample | None = None
    peer_name: str = ""
    floor_name: str = ""
    target: Target | None = None
    note: str = ""
    extra: dict[str, float | int | str] = field(default_factory=dict)
    #: why the target is missed, shown only when it is (the cause, as far as it is known)
    if_missed: str = ""

    def to_json(self, results: Results) -> dict[str, object]:
        out: dict[str, object] = {"unit": self.unit}
        for prefix, s in (("ours", self.ours), ("peer", self.peer), ("floor", self.floor)):
            if s is not None and s.rounds:
                out[f"{prefix}_us"] = round(s.median, 2)
                out[f"{prefix}_min_us"] = round(s.low, 2)
                out[f"{prefix}_max_us"] = round(s.high, 2)
                out[f"{prefix}_rounds"] = len(s.rounds)
        if self.peer_name:
            out["peer"] = self.peer_name
        if self.floor_name:
            out["floor"] = self.floor_name
        if self.target is not None:
            met, how = self.target.check(results, self)
            out.update(target=self.target.text, met=met, measured=how)
            if not met and self.if_missed:
                out["gap"] = self.if_missed
        if self.extra:
            out["extra"] = dict(self.extra)
        if self.note:
            out["note"] = self.note
        return out


class Results:
    """Rows in the order they were measured."""

    def __init__(self, quick: bool, rounds: int) -> None:
        self.quick = quick
        self.rounds = rounds
        self.rows: dict[str, Row] = {}
        self.started = datetime.now(UTC)
        self.notes: list[str] = []
        self.load_start = _loadavg()
        self.load_end: str | None = None  #: read once, when the results are written

    def _load_end(self) -> str:
        if self.load_end is None:
            self.load_end = _loadavg()
        return self.load_end

    def add(self, row: Row) -> Row:
        self.rows[row.name] = row
        return row

    def __getitem__(self, name: str) -> Row:
        return self.rows[name]

    def __contains__(self, name: str) -> bool:
        return name in self.rows

    # ------------------------------------------------------------------ output

    def to_json(self) -> dict[str, object]:
        return {
            "date": self.started.strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "machine": _machine(),
            "load_average": {"start": self.load_start, "end": self._load_end()},
            "quick": self.quick,
            "rounds": self.rounds,
            "scenarios": {name: row.to_json(self) for name, row in self.rows.items()},
        }

    def write(self, directory: Path, preamble: str = "") -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        js = directory / "results.json"
        js.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        md = directory / "RESULTS.md"
        md.write_text(self.markdown(preamble), encoding="utf-8")
        return md, js

    def markdown(self, preamble: str = "") -> str:
        lines = [
            "# Benchmark results",
            "",
            f"Run on {self.started.strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, {_machine()};"
            f" {'QUICK MODE (a smoke check, not a measurement)' if self.quick else 'full run'}, {self.rounds} rounds;"
            f" load average (1 min) {self.load_start} at the start, {self._load_end()} at the end.",
            "Regenerate with `python -m bench` from the repository root (writes this file and `bench/results.json`).",
            "",
        ]
        if preamble:
            lines += [preamble.rstrip(), ""]
        judged = [(r, *r.target.check(self, r)) for r in self.rows.values() if r.target is not None]
        missed = [(r, how) for r, met, how in judged if not met]
        lines += [f"**Targets: {len(judged) - len(missed)} of {len(judged)} met.**", ""]
        if missed:
            lines += ["Not met:", ""]
            for r, how in missed:
                assert r.target is not None
                lines.append(
                    f"- **{r.name}**: {r.target.text}, measured {how}." + (f" {r.if_missed}" if r.if_missed else "")
                )
            lines.append("")
        groups: dict[str, list[Row]] = {}
        for row in self.rows.values():
            groups.setdefault(row.group, []).append(row)
        for group, rows in groups.items():
            lines += [f"## {group}", ""]
            lines.append(
                "| scenario | unit | ours median [min–max] | peer median [min–max] | peer/ours | floor | ours/floor | target | met? |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                lines.append(self._md_row(r))
            notes = [f"- **{r.name}**: {r.note}" for r in rows if r.note]
            extras = [
                f"- **{r.name}**: " + ", ".join(f"{k} = {_fmt_extra(v)}" for k, v in r.extra.items())
                for r in rows
                if r.extra
            ]
            peers = sorted({r.peer_name for r in rows if r.peer_name})
            floors = sorted({f"{r.floor_name}" for r in rows if r.floor_name})
            if peers:
                lines += ["", "Peer: " + "; ".join(peers) + "."]
            if floors:
                lines += ["", "Floor: " + "; ".join(floors) + "."]
            if extras:
                lines += ["", *extras]
            if notes:
                lines += ["", *notes]
            lines.append("")
        if self.notes:
            lines += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        return "\n".join(lines)

    def _md_row(self, r: Row) -> str:
        ours = _cell(r.ours)
        peer = _cell(r.peer) if r.peer is not None and r.peer.rounds else "–"
        ratio = f"{r.peer.median / r.ours.median:.2f}×" if r.peer is not None and r.peer.rounds else "–"
        floor = _us(r.floor.median) if r.floor is not None and r.floor.rounds else "–"
        of = f"{r.ours.median / r.floor.median:.2f}" if r.floor is not None and r.floor.rounds else "–"
        if r.target is not None:
            met, how = r.target.check(self, r)
            target, verdict = r.target.text, f"{'yes' if met else '**NO**'} ({how})"
        else:
            target, verdict = "–", "–"
        return f"| {r.name} | {r.unit} | {ours} | {peer} | {ratio} | {floor} | {of} | {target} | {verdict} |"


# ---------------------------------------------------------------------- targets


def _peer_ratio(row: Row) -> float:
    return row.peer.median / row.ours.median if row.peer is not None and row.peer.rounds else 0.0


def ratio_at_least(factor: float) -> Target:
    """The peer takes at least ``factor`` times as long as ours."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        v = _peer_ratio(row)
        return v >= factor, f"{v:.2f}×"

    return Target(f"peer/ours ≥ {factor:g}", check)


def faster() -> Target:
    """Ours faster than the peer (medians)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        v = _peer_ratio(row)
        return v > 1.0, f"{v:.2f}×"

    return Target("faster than peer", check)


def no_slower() -> Target:
    """Ours not slower than the peer (medians)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        v = _peer_ratio(row)
        return v >= 1.0, f"{v:.2f}×"

    return Target("no slower than peer", check)


def within_of(other: str, factor: float) -> Target:
    """Ours at most ``factor`` times the ours-median of row ``other`` (e.g. the in-memory run)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        v = row.ours.median / results[other].ours.median
        return v <= factor, f"{v:.2f}× {other}"

    return Target(f"≤ {factor:g}× {other}", check)


def at_most(key: str, limit: float, text: str) -> Target:
    """An ``extra`` figure of the row at most ``limit``."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        v = float(row.extra[key])
        return v <= limit, f"{key} = {_fmt_extra(v)}"

    return Target(text, check)


# ---------------------------------------------------------------------- formatting


def _us(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} s"
    if v >= 1e4:
        return f"{v / 1e3:.1f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.2f} ms"
    return f"{v:.1f} µs"


def _cell(s: Sample | None) -> str:
    if s is None or not s.rounds:
        return "–"
    return f"{_us(s.median)} [{_us(s.low)}–{_us(s.high)}]"


def _fmt_extra(v: float | int | str) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return v


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{', ' + cpu if cpu else ''}"
