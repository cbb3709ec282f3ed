"""What a person waits for (issue 16): the wall time of ``e2ee send JID TEXT`` and
``e2ee recv --count 1`` on a private Prosody on 127.0.0.1, from the moment the process is
started until it has exited, broken down, against the minimal slixmpp-omemo program
:mod:`bench.cli_peer` doing the same (log in, encrypt, send, disconnect; or log in, wait for one
message, decrypt it, disconnect).

Both run as separate processes, exactly as a person starts them, under :mod:`bench.cli_probe`
(timestamps and a log of every stanza, nothing of the program changed).  Steady state: both
pairs of accounts have exchanged messages before, so sessions exist and devices are published;
every round, each side sends one message (ours then theirs, or theirs then ours, alternating)
and the receiving side of each reads it.  Ours opens its keystore (the floor Argon2id
parameters, ``E2EE_KDF=floor``, as the tests run; the default ones cost ~60 ms more, see
``keystore_open``); the peer reads its JSON file (no passphrase).

Phases (ms): ``start-up`` (interpreter, imports, arguments: until the store is opened), ``store``
(opening the keystore / reading the JSON file), ``login`` (from the connect call to slixmpp's
``session_start``: TCP, STARTTLS, SASL, bind), ``set-up`` (from ``session_start`` until the
client says it is ready: what it fetches and publishes, the archive), ``work`` (the send call;
for ``recv`` the wait after set-up until the message was decrypted), ``close`` (closing the
stream) and ``exit`` (the rest until the process is gone).  Round trips: the IQs each phase
sends (each waits for its answer; IQs sent together are counted once per batch as ``waits``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .timing import Sample

__all__ = ["CliResults", "run", "PHASES"]

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("start-up", "store", "login", "set-up", "work", "close", "exit")


@dataclass
class CliResults:
    #: (command, side) -> wall time per round (µs)
    wall: dict[tuple[str, str], Sample] = field(default_factory=dict)
    #: (command, side) -> phase -> ms per round
    phases: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    #: (command, side) -> phase -> the IQs of the last round: "get/set child node"
    iqs: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)
    #: (command, side) -> phase -> round trips waited for (batches of IQs sent together)
    waits: dict[tuple[str, str], dict[str, list[int]]] = field(default_factory=dict)


def _phases(probe: dict[str, Any], end: float) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    marks: dict[str, float] = {}
    for name, t in probe["marks"]:
        marks.setdefault(name, t)
    t0 = probe["t0"]
    store0, store1 = marks.get("keystore_open:begin", probe["main"]), marks.get("keystore_open:end", probe["main"])
    start0, start1 = marks["start:begin"], marks["start:end"]
    login = probe["events"].get("session_start", start0)
    if "send:begin" in marks:
        work0, work1 = marks["send:begin"], marks["send:end"]
    else:
        work0, work1 = start1, max(start1, marks.get("received", start1))
    close0, close1 = marks.get("close:begin", work1), marks.get("close:end", work1)
    spans = {
        "start-up": (t0, store0),
        "store": (store0, store1),
        "login": (start0, login),
        "set-up": (login, start1),
        "work": (work0, work1),
        "close": (close0, close1),
        "exit": (close1, end),
    }
    return {k: (b - a) * 1e3 for k, (a, b) in spans.items()}, spans


def _iqs(probe: dict[str, Any], spans: dict[str, tuple[float, float]]) -> tuple[dict[str, list[str]], dict[str, int]]:
    out: dict[str, list[str]] = {k: [] for k in spans}
    waits: dict[str, int] = {k: 0 for k in spans}
    pending: set[str] = set()
    for s in probe["stanzas"]:
        if s.get("kind") != "iq":
            continue
        phase = next((k for k, (a, b) in spans.items() if a <= s["t"] <= b), None)
        if phase is None:
            continue
        if s["dir"] == "out" and s.get("type") in ("get", "set"):
            if not pending:
                waits[phase] += 1  # nothing outstanding: this IQ starts a new wait
            pending.add(str(s.get("id")))
            child = str(s.get("child", "")).rpartition("}")[2]
            ns = str(s.get("child", "")).partition("}")[0].lstrip("{")
            what = f"{s['type']} {child} ({ns})" + (f" {s.get('op')} {s['node']}" if s.get("node") else "")
            out[phase].append(what)
        elif s["dir"] == "in" and s.get("type") in ("result", "error"):
            pending.discard(str(s.get("id")))
    return out, waits


class _Run:
    def __init__(self, server: Any, directory: Path) -> None:
        from tests.support import cli_env

        self.server = server
        self.dir = directory
        self.cli_env = cli_env
        self.n = 0

    def _spawn(self, side: str, password: str, args: list[str]) -> tuple[float, dict[str, Any]]:
        self.n += 1
        out = self.dir / f"probe{self.n}.json"
        env = self.cli_env(password)
        t0 = time.time()
        env["E2EE_BENCH_T0"] = repr(t0)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.cli_probe", str(out), side, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        end = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"cli bench: {side} {args[-3:]} failed: {proc.stderr[-2000:]}")
        return end, json.loads(out.read_text(encoding="utf-8"))

    def ours(self, user: str, *args: str) -> tuple[float, dict[str, Any]]:
        s = self.server
        base = ["--home", str(self.dir / user), "--server", f"127.0.0.1:{s.port}", "--ca-file", str(s.cert)]
        return self._spawn("ours", f"{user}-pw", [*base, *args])

    def peer(self, user: str, *args: str) -> tuple[float, dict[str, Any]]:
        s = self.server
        base = [
            "--jid",
            f"{user}@{s.domain}",
            "--password",
            f"{user}-pw",
            "--server",
            f"127.0.0.1:{s.port}",
            "--ca-file",
            str(s.cert),
            "--storage",
            str(self.dir / f"{user}.json"),
        ]
        return self._spawn("peer", f"{user}-pw", [*base, *args])


def run(rounds: int, progress: Callable[[str], None] = lambda s: None) -> CliResults:
    """Start a private Prosody, set both pairs up, run ``rounds`` rounds, stop it."""
    from tests.support import run_cli
    from tests.xmpp_server import running

    res = CliResults()
    users = ["oa", "ob", "pa", "pb"]
    with tempfile.TemporaryDirectory(prefix="e2ee-bench-cli-") as d:
        directory = Path(d)
        with running(directory / "server", users) as server:
            r = _Run(server, directory)
            progress("cli: setting up both pairs")
            for user in ("oa", "ob"):
                for args in (("init", "--jid", f"{user}@{server.domain}"), ("publish",)):
                    proc = run_cli(server, directory / user, f"{user}-pw", *args)
                    if proc.returncode != 0:
                        raise RuntimeError(f"cli bench: e2ee {args[0]} failed: {proc.stderr}")
            r.peer("pb", "recv", "--count", "0")  # publishes pb's device
            ob, pb = f"ob@{server.domain}", f"pb@{server.domain}"
            for i in range(2):  # the key exchange and its answer: afterwards, steady state
                r.ours("oa", "send", ob, f"warm-up {i}")
                r.ours("ob", "recv", "--count", "1", "--timeout", "20")
                r.peer("pa", "send", pb, f"warm-up {i}")
                r.peer("pb", "recv", "--count", "1", "--timeout", "20")
            for n in range(rounds):
                progress(f"cli round {n + 1}/{rounds}")
                order = ("ours", "peer") if n % 2 == 0 else ("peer", "ours")
                for command in ("send", "recv"):
                    for side in order:
                        run_one = r.ours if side == "ours" else r.peer
                        sender, receiver = ("oa", "ob") if side == "ours" else ("pa", "pb")
                        if command == "send":
                            end, probe = run_one(sender, "send", ob if side == "ours" else pb, f"round {n}")
                        else:
                            end, probe = run_one(receiver, "recv", "--count", "1", "--timeout", "20")
                        key = (command, side)
                        res.wall.setdefault(key, Sample()).rounds.append((end - probe["t0"]) * 1e6)
                        phases, spans = _phases(probe, end)
                        for k, v in phases.items():
                            res.phases.setdefault(key, {}).setdefault(k, []).append(v)
                        iqs, waits = _iqs(probe, spans)
                        res.iqs[key] = iqs
                        for k, w in waits.items():
                            res.waits.setdefault(key, {}).setdefault(k, []).append(w)
    return res


def phase_table(res: CliResults) -> list[str]:
    """Markdown: per command and side, each phase's median (ms) and its round trips."""
    lines = [
        "| command | side | wall (median ms) | " + " | ".join(PHASES) + " |",
        "|---|---|---|" + "---|" * len(PHASES),
    ]
    for (command, side), wall in res.wall.items():
        phases = res.phases[(command, side)]
        waits = res.waits[(command, side)]
        cells = [
            f"{statistics.median(phases[p]):.1f}"
            + (f" ({int(statistics.median(waits[p]))} RT)" if statistics.median(waits[p]) else "")
            for p in PHASES
        ]
        name = "ours (`e2ee`)" if side == "ours" else "slixmpp-omemo script"
        lines.append(f"| {command} | {name} | {wall.median / 1e3:.1f} | " + " | ".join(cells) + " |")
    return lines


def iq_list(res: CliResults) -> list[str]:
    """Markdown: the IQs each side sent in each phase (last round)."""
    lines = []
    for (command, side), phases in res.iqs.items():
        for phase, iqs in phases.items():
            if iqs:
                who = "ours" if side == "ours" else "slixmpp-omemo"
                lines.append(f"- `{command}`, {who}, {phase}: " + "; ".join(f"`{q}`" for q in iqs))
    return lines


if __name__ == "__main__":  # a quick look: python -m bench.cli_bench [ROUNDS]
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 2, progress=lambda s: print(s, file=sys.stderr))
    print("\n".join(phase_table(result)))
    print("\n".join(iq_list(result)))
    os._exit(0)
