"""README.md and docs/: every code block is run by a test or says why not, the README opens with
the two set-up commands, and the five-minute tour runs as written, with the real command line,
against a private server of each kind and against the tour server it tells a newcomer to start.

The tour is run by bash from the repository root with ``HOME`` in a temporary directory, the
line that names the two accounts replaced by what the tour server prints for a reader to paste
(the accounts, and ``e2ee`` with ``--server`` and ``--ca-file``), and the accounts' XMPP password
in ``E2EE_XMPP_PASSWORD``, where a reader types it at ``init``'s prompt.  Nothing else is changed:
the default key derivation, the commands, their order.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from e2ee.verification import parse_uri

from .doc_examples import README, ROOT, blocks, documents, example
from .test_qr import _decode, _terminal_to_grey
from .tour_server import PASSWORD, paste_lines
from .xmpp_server import Accounts, XmppServer

ACCOUNTS_LINE = "ALICE=alice@example.org BOB=bob@example.net   # your two accounts"
MESSAGE = "Hello Bob, this is the tour"
QR_CHARS = frozenset(" \u2580\u2584\u2588")
#: The pages this project's newcomers read first: no internal issue numbers in them.
NEWCOMER_PAGES = ("README.md", "docs/reference.md", "docs/group-chats.md", "docs/openpgp.md", "docs/keystore.md")
NEWCOMER_PAGES += ("docs/how-it-works.md", "docs/development.md")


def _examples_run_by_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").glob("*.py"):
        if path.name != "doc_examples.py":
            names |= set(re.findall(r"\b_?example\(\s*\"([^\"]+)\"", path.read_text(encoding="utf-8")))
    return names


def test_every_block_is_run_by_a_test_or_says_why_not() -> None:
    found = [b for path in documents() for b in blocks(path)]
    assert len(found) >= 10, "the block parser found too few blocks"
    unmarked = [b.where for b in found if b.marker is None]
    assert not unmarked, f"code blocks without <!-- example: NAME --> or <!-- not run: REASON -->: {unmarked}"
    assert all(b.language in ("sh", "python") for b in found), [(b.where, b.language) for b in found]
    assert all(len(b.label or "") >= 20 for b in found if b.marker == "not run"), "a reason, not a word"
    named = [b.label for b in found if b.marker == "example"]
    assert len(named) == len(set(named)), f"an example name is used twice: {named}"
    run = _examples_run_by_tests()
    assert set(named) - run == set(), f"examples no test runs: {set(named) - run}"
    assert run - set(named) == set(), f"tests run examples that no document has: {run - set(named)}"


def test_readme_opens_with_the_two_set_up_commands_ci_runs_the_second() -> None:
    head = README.read_text(encoding="utf-8").split("\n")[:12]
    assert head[0] == "# xmpp-e2ee"
    first = blocks(README)[0]
    assert first.language == "sh" and first.line <= 12
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line.startswith("exec ")] == [f"exec {commands[1]}"]


def test_newcomer_pages_name_no_internal_issues_and_nothing_unwritten() -> None:
    for name in NEWCOMER_PAGES:
        text = (ROOT / name).read_text(encoding="utf-8")
        assert not re.search(r"\bissues? \d", text, re.I), f"{name} names an internal issue"
        assert "not written yet" not in text.lower(), name


def _run_tour(paste: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    code = example("tour")
    assert code.count(ACCOUNTS_LINE) == 1, "the tour's accounts line changed: update ACCOUNTS_LINE"
    assert (ROOT / ".venv" / "bin" / "activate").exists(), "no .venv: bash scripts/test.sh sets it up"
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2EE_")}
    env.update(HOME=str(home), E2EE_XMPP_PASSWORD=PASSWORD)
    script = code.replace(ACCOUNTS_LINE, "\n".join(paste))
    return subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _check_tour(proc: subprocess.CompletedProcess[str], alice: str, bob: str) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout.splitlines()
    # init: three devices, in the order of the tour
    created = [re.fullmatch(r"(\S+): device (\d+)", line) for line in out]
    devices = [(m.group(1), int(m.group(2))) for m in created if m]
    assert [jid for jid, _ in devices[:3]] == [alice, bob, bob]
    (_, laptop), (_, desktop), (_, phone) = devices[:3]
    assert len({laptop, desktop, phone}) == 3
    for device in (laptop, desktop, phone):
        assert f"published device {device} (both namespaces)" in out
    # send: encrypted for each of bob's devices; recv: both of them read it, blindly trusted
    assert sorted(line for line in out if line.endswith(": encrypted (urn:xmpp:omemo:2)")) == sorted(
        f"{bob}/{d}: encrypted (urn:xmpp:omemo:2)" for d in (desktop, phone)
    )
    assert out.count(f"{alice}/{laptop} [blind]: {MESSAGE}") == 2
    # fingerprint --qr: the QR code holds the URI printed above it, which names bob's desktop
    uri_line = next(i for i, line in enumerate(out) if line.startswith(f"xmpp:{bob}?"))
    qr = []
    for line in out[uri_line + 1 :]:
        if not line or set(line) - QR_CHARS:
            break
        qr.append(line)
    assert len(qr) > 10, out[uri_line:]
    width, height, grey = _terminal_to_grey("\n".join(qr), dark_background=True)
    assert _decode(width, height, grey) == [out[uri_line]]
    scanned = parse_uri(out[uri_line])
    assert scanned.jid == bob and list(scanned.fingerprints) == [desktop]
    # verify and devices: the desktop is verified, the phone still blindly trusted
    assert any(line.startswith(f"{bob}: device {desktop} ") and line.endswith(" is now verified") for line in out)
    rows = {int(line.split()[0]): line.split()[1:3] for line in out if re.match(r" *\d+ (active|inactive) ", line)}
    assert rows == {desktop: ["active", "verified"], phone: ["active", "blind"]}
    assert any(line.endswith("'desktop'") and f"{desktop} active   verified" in line for line in out)


def test_the_tour_runs_as_written(xmpp_server: XmppServer, tmp_path: Path) -> None:
    server = Accounts.fresh(xmpp_server, "readme-tour")
    alice, bob = (server.register(user, PASSWORD) for user in ("alice", "bob"))
    _check_tour(_run_tour(paste_lines(xmpp_server, alice, bob), tmp_path), alice, bob)


def test_the_tour_server_serves_the_tour(tmp_path: Path) -> None:
    """The README's way for someone without accounts: start the tour server as written, paste
    what it prints, run the tour; Ctrl-C (here SIGTERM) stops the server and removes its files."""
    command = example("tour server").strip()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        shown: list[str] = []
        for line in proc.stdout:
            shown.append(line.rstrip("\n"))
            if len(shown) >= 2 and shown[-1] == "" and shown[-2].startswith("    "):
                break
        paste = [line.strip() for line in shown if line.startswith("    ")]
        assert len(paste) == 2, "\n".join(shown) + (proc.stderr.read() if proc.poll() is not None else "")
        m = re.fullmatch(r"ALICE=(\S+) BOB=(\S+)", paste[0])
        assert m, paste
        options = re.search(r"--server 127\.0\.0\.1:(\d+) --ca-file (\S+) ", paste[1])
        assert options, paste
        port, cert = int(options.group(1)), Path(options.group(2))
        assert cert.is_file()
        _check_tour(_run_tour(paste, tmp_path), m.group(1), m.group(2))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err.strip().splitlines()[-1] == "tour server stopped", err
    assert not cert.parent.parent.exists()  # its temporary directory is gone
    with socket.socket() as s:  # and nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
