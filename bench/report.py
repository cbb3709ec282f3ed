"""The results of a benchmark run: one :class:`Row` per scenario, the targets of issues 7 and 16,
and their rendering as ``RESULTS.md`` (a table) and ``results.json``.

Every row holds ours per round, and where they exist the peer (python-omemo or slixmpp-omemo,
measured in the same process, in the same round right before or after ours) and the floor (the
bare primitive cost of the same work on the fastest call paths, see :mod:`bench.floor`, or what
the row's note names).  Ratios are **paired**: ``peer/ours`` and ``ours/floor`` are computed
round by round from the two figures of that round, and a target is judged on the median of those
per-round ratios (min and max shown beside it).  JSON fields per scenario: ``ours_us``,
``ours_min_us``, ``ours_max_us``, and the same with ``peer_``, ``floor_`` and ``old_floor_``
where they exist; ``peer_over_ours``, ``ours_over_floor``, ``ours_over_old_floor`` (median, min,
max of the paired ratios); ``unit`` (what one timed operation is); ``target``, ``met`` (all
targets of the row met) and ``targets`` (each with its verdict); ``extra`` (figures that are not
times, e.g. bytes per session).
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .timing import Sample

__all__ = [
    "Row",
    "Ratio",
    "Target",
    "Results",
    "paired",
    "ratio_at_least",
    "faster",
    "no_slower",
    "floor_at_most",
    "within_of",
    "at_most",
]


@dataclass
class Target:
    """What a row must show: ``text`` for the table, ``check(results, row)`` -> (met, the
    measured figure)."""

    text: str
    check: Callable[[Results, Row], tuple[bool, str]]


@dataclass
class Ratio:
    """A per-round paired ratio: one value per round, both sides measured in that round."""

    rounds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    def text(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f}× [{min(self.rounds):.{digits}f}–{max(self.rounds):.{digits}f}]"

    def to_json(self) -> dict[str, object]:
        return {"median": round(self.median, 3), "min": round(min(self.rounds), 3), "max": round(max(self.rounds), 3)}


def paired(num: Sample, den: Sample, scale: float = 1.0) -> Ratio:
    """``num / den`` round by round (the rounds of both were measured together)."""
    if len(num.rounds) != len(den.rounds):
        raise ValueError("paired ratio of samples with different round counts")
    return Ratio([a / b * scale for a, b in zip(num.rounds, den.rounds, strict=True)])


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
    target: Target | list[Target] | None = None
    note: str = ""
    extra: dict[str, float | int | str] = field(default_factory=dict)
    #: why the target is missed, shown only when it is (the cause, as far as it is known)
    if_missed: str = ""
    #: the floor of issue 7 (the engine's own primitive wrappers), for comparison
    old_floor: Sample | None = None

    @property
    def targets(self) -> list[Target]:
        if self.target is None:
            return []
        return self.target if isinstance(self.target, list) else [self.target]

    def peer_ratio(self) -> Ratio | None:
        """peer/ours, round by round (above 1: ours is faster)."""
        return paired(self.peer, self.ours) if self.peer is not None and self.peer.rounds else None

    def floor_ratio(self) -> Ratio | None:
        """ours/floor, round by round."""
        return paired(self.ours, self.floor) if self.floor is not None and self.floor.rounds else None

    def old_floor_ratio(self) -> Ratio | None:
        return paired(self.ours, self.old_floor) if self.old_floor is not None and self.old_floor.rounds else None

    def judge(self, results: Results) -> list[tuple[Target, bool, str]]:
        return [(t, *t.check(results, self)) for t in self.targets]

    def to_json(self, results: Results) -> dict[str, object]:
        out: dict[str, object] = {"unit": self.unit}
        for prefix, s in (
            ("ours", self.ours),
            ("peer", self.peer),
            ("floor", self.floor),
            ("old_floor", self.old_floor),
        ):
            if s is not None and s.rounds:
                out[f"{prefix}_us"] = round(s.median, 2)
                out[f"{prefix}_min_us"] = round(s.low, 2)
                out[f"{prefix}_max_us"] = round(s.high, 2)
                out[f"{prefix}_rounds"] = len(s.rounds)
        for key, ratio in (
            ("peer_over_ours", self.peer_ratio()),
            ("ours_over_floor", self.floor_ratio()),
            ("ours_over_old_floor", self.old_floor_ratio()),
        ):
            if ratio is not None:
                out[key] = ratio.to_json()
        if self.peer_name:
            out["peer"] = self.peer_name
        if self.floor_name:
            out["floor"] = self.floor_name
        judged = self.judge(results)
        if judged:
            out["target"] = "; ".join(t.text for t, _, _ in judged)
            out["met"] = all(met for _, met, _ in judged)
            out["measured"] = "; ".join(how for _, _, how in judged)
            out["targets"] = [{"target": t.text, "met": met, "measured": how} for t, met, how in judged]
            if not out["met"] and self.if_missed:
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
        #: figures of the run that are no row (e.g. the floor's call paths), written to the JSON
        self.meta: dict[str, object] = {}
        #: markdown sections written before the tables
        self.sections: list[str] = []
        self.load_start = _loadavg()
        self.load_end: str | None = None  #: read once, when the results are written
        #: group -> (load average at its start, at its end)
        self.group_load: dict[str, tuple[str, str]] = {}

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
        judged = [j for r in self.rows.values() for j in r.judge(self)]
        return {
            "date": self.started.strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "machine": _machine(),
            "load_average": {
                "start": self.load_start,
                "end": self._load_end(),
                "groups": {g: {"start": a, "end": b} for g, (a, b) in self.group_load.items()},
            },
            "quick": self.quick,
            "rounds": self.rounds,
            "targets": {"met": sum(1 for _, met, _ in judged if met), "total": len(judged)},
            **self.meta,
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
        loads = ", ".join(f"{g} {a} → {b}" for g, (a, b) in self.group_load.items())
        lines = [
            "# Benchmark results",
            "",
            f"Run on {self.started.strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, {_machine()};"
            f" {'QUICK MODE (a smoke check, not a measurement)' if self.quick else 'full run'}, {self.rounds} rounds;"
            f" load average (1 min) {self.load_start} at the start, {self._load_end()} at the end"
            + (f" (per group, start → end: {loads})" if loads else "")
            + ".",
            "Regenerate with `python -m bench` from the repository root (writes this file and `bench/results.json`).",
            "",
        ]
        if preamble:
            lines += [preamble.rstrip(), ""]
        judged = [(r, t, met, how) for r in self.rows.values() for t, met, how in r.judge(self)]
        missed = [(r, t, how) for r, t, met, how in judged if not met]
        lines += [f"**Targets: {len(judged) - len(missed)} of {len(judged)} met** (each judged on its median).", ""]
        if missed:
            lines += ["Not met:", ""]
            for r, t, how in missed:
                lines.append(f"- **{r.name}**: {t.text}, measured {how}." + (f" {r.if_missed}" if r.if_missed else ""))
            lines.append("")
        for section in self.sections:
            lines += [section.rstrip(), ""]
        groups: dict[str, list[Row]] = {}
        for row in self.rows.values():
            groups.setdefault(row.group, []).append(row)
        for group, rows in groups.items():
            lines += [f"## {group}", ""]
            lines.append(
                "| scenario | unit | ours median [min–max] | peer median | peer/ours paired [min–max] | floor"
                " | ours/floor paired [min–max] | old floor | targets | met? |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
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
        peer = _us(r.peer.median) if r.peer is not None and r.peer.rounds else "–"
        pr, fr, ofr = r.peer_ratio(), r.floor_ratio(), r.old_floor_ratio()
        ratio = pr.text() if pr is not None else "–"
        floor = _us(r.floor.median) if r.floor is not None and r.floor.rounds else "–"
        of = fr.text() if fr is not None else "–"
        old = (
            f"{_us(r.old_floor.median)} (ours/old {ofr.median:.2f}×)"
            if r.old_floor is not None and ofr is not None
            else "–"
        )
        judged = r.judge(self)
        if judged:
            target = "; ".join(t.text for t, _, _ in judged)
            verdict = "; ".join(f"{'yes' if met else '**NO**'} ({how})" for _, met, how in judged)
        else:
            target, verdict = "–", "–"
        return f"| {r.name} | {r.unit} | {ours} | {peer} | {ratio} | {floor} | {of} | {old} | {target} | {verdict} |"


# ---------------------------------------------------------------------- targets


def ratio_at_least(factor: float) -> Target:
    """The peer takes at least ``factor`` times as long as ours (median of the paired ratios)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        r = row.peer_ratio()
        if r is None:
            return False, "no peer measured"
        return r.median >= factor, r.text()

    return Target(f"peer/ours ≥ {factor:g}", check)


def faster() -> Target:
    """Ours faster than the peer (median of the paired ratios)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        r = row.peer_ratio()
        if r is None:
            return False, "no peer measured"
        return r.median > 1.0, r.text()

    return Target("faster than peer", check)


def no_slower() -> Target:
    """Ours not slower than the peer (median of the paired ratios)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        r = row.peer_ratio()
        if r is None:
            return False, "no peer measured"
        return r.median >= 1.0, r.text()

    return Target("no slower than peer", check)


def floor_at_most(factor: float) -> Target:
    """Ours at most ``factor`` times the floor (median of the paired ratios)."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        r = row.floor_ratio()
        if r is None:
            return False, "no floor measured"
        return r.median <= factor, r.text()

    return Target(f"ours/floor ≤ {factor:g}", check)


def within_of(other: str, factor: float, scale: float = 1.0, per: str = "") -> Target:
    """Ours at most ``factor`` times row ``other``'s ours, round by round (both measured in the
    same rounds); ``scale`` multiplies the ratio (e.g. the per-message cost of runs of different
    lengths), ``per`` names what was scaled."""

    def check(results: Results, row: Row) -> tuple[bool, str]:
        r = paired(row.ours, results[other].ours, scale)
        return r.median <= factor, f"{r.text()} {other}"

    return Target(f"≤ {factor:g}× {other}{' ' + per if per else ''}", check)


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
