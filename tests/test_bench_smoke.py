"""``python -m bench --quick`` runs and writes well-formed results (no timing is asserted: this
is a smoke check of the benchmark harness, not a measurement).

The cheap groups (catch-up, memory, micro) run in the default test run (a few seconds); the
engine and rooms groups (python-omemo's side alone takes ~10 s even in quick mode) and the client and
cli groups (a private Prosody) are marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(out: Path, groups: str) -> dict[str, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--rounds", "1", "--only", groups, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["quick"] is True and data["rounds"] == 1
    assert {"start", "end", "groups"} <= set(data["load_average"]) and data["targets"]["total"] >= 0
    bindings = data["floor_bindings"]  # every run measures the primitives' call paths first
    assert bindings["hkdf"]["chosen"] in bindings["hkdf"]["us_per_call"], bindings["hkdf"]
    scenarios: dict[str, dict[str, object]] = data["scenarios"]
    md = (out / "RESULTS.md").read_text(encoding="utf-8")
    assert "QUICK MODE" in md and "python -m bench" in md
    for name, row in scenarios.items():
        assert isinstance(row["ours_us"], float) and row["ours_us"] > 0, (name, row)
        assert float(row["ours_min_us"]) <= float(row["ours_us"]) <= float(row["ours_max_us"])  # type: ignore[arg-type]
        assert f"| {name} |" in md, name
        if "target" in row:
            assert isinstance(row["met"], bool), (name, row)
    return scenarios


def test_quick_bench_of_the_cheap_groups_writes_json_and_markdown(tmp_path: Path) -> None:
    rows = _run(tmp_path, "catchup,memory,micro")
    assert {"catch_up[memory]", "catch_up[keystore]", "catch_up[keystore, commit each]"} <= set(rows)
    for name in ("catch_up[memory]", "catch_up[keystore]"):
        assert {"peer_us", "floor_us", "target", "met"} <= set(rows[name]), rows[name]
    memory = next(r for n, r in rows.items() if n.startswith("open+decrypt["))
    extra = memory["extra"]
    assert isinstance(extra, dict) and extra["full_table_scans"] == 0
    assert {"keystore_bytes_per_session", "rss_bytes_per_session_in_use", "records_read"} <= set(extra)
    assert "floor_us" in rows["ratchet_encrypt[omemo2]"]


@pytest.mark.slow
def test_quick_bench_of_engine_and_client_writes_json_and_markdown(tmp_path: Path) -> None:
    rows = _run(tmp_path, "engine,rooms,client,cli")
    for name in (
        "encrypt",
        "encrypt[keystore]",
        "encrypt[keystore+sync]",
        "decrypt[keystore+sync]",
        "reverse_1000[keystore]",
    ):
        assert {"ours_us", "peer_us", "floor_us", "target", "met"} <= set(rows[name]), rows[name]
    for name in ("room_3", "room_10[keystore]", "room_10x3"):
        assert {"ours_us", "peer_us", "floor_us", "target", "met", "peer_over_ours"} <= set(rows[name]), rows[name]
        extra = rows[name]["extra"]
        assert isinstance(extra, dict) and float(extra["ours_per_device_us"]) > 0
    for name in ("encrypt", "decrypt", "fanout_100"):
        assert {"ours_over_floor", "old_floor_us"} <= set(rows[name]), rows[name]
        assert len(rows[name]["targets"]) == 2, rows[name]  # type: ignore[arg-type]
    for name in ("cli_send", "cli_recv"):
        assert {"ours_us", "peer_us", "target", "met", "extra"} <= set(rows[name]), rows[name]
    for name in ("client_connect", "client_first_message", "client_latency_median", "client_latency_p99"):
        assert {"ours_us", "peer_us", "target", "met"} <= set(rows[name]), rows[name]
