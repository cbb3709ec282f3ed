"""``e2ee demo`` runs the real engine end to end and says what each device decrypted, then what to
try next: commands that exist and run as printed."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from e2ee.client.cli import _parser, main
from e2ee.client.demo import NEXT, run

from .doc_examples import ROOT, example
from .tour_server import PASSWORD, paste_lines
from .xmpp_server import Accounts, XmppServer


def test_demo_output_shows_outcomes_trust_and_decryptions() -> None:
    out = io.StringIO()
    assert run(out) == 0
    text = out.getvalue()
    assert "bob-tablet    omemo:2  undecided" in text  # new device after a verification
    assert "bob-phone     legacy   encrypted" in text  # legacy-only device gets legacy
    assert "bob-tablet    decrypted" in text  # after alice verified it
    assert text.count("decrypted (") == 3 + 3 + 3 + 3 + 4
    assert "fingerprint " in text


def test_cli_demo_exit_status(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo"]) == 0
    assert "demo finished" in capsys.readouterr().out


def test_scripts_demo_sh_ends_by_telling_what_to_try_next() -> None:
    """``bash scripts/demo.sh`` as a newcomer runs it (the set-up is already done: it is skipped)."""
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(f"every trusted device decrypted every message meant for it\n{NEXT}\n")
    assert NEXT.lstrip().startswith("What to try next:")


def test_what_to_try_next_names_what_exists() -> None:
    for path in ("README.md", "docs/reference.md", "docs/cli-chat.md"):
        assert path in NEXT and (ROOT / path).is_file(), path
    assert "-m tests.tour_server" in NEXT and (ROOT / "tests" / "tour_server.py").is_file()
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert "## Five-minute tour" in readme and "## Embedding" in readme
    assert "five-minute tour in README.md" in NEXT and '"Embedding"' in NEXT
    assert f"      {example('tour server').split('#')[0].strip()}\n" in NEXT  # the README's command
    demo_line = next(line for line in NEXT.splitlines() if line.endswith("demo"))
    args = _parser().parse_args(demo_line.split(": ", 1)[1].split()[1:])  # a real command line
    assert args.command == "demo" and args.server == "HOST:PORT"
    chat_line = next(line for line in NEXT.splitlines() if " chat $BOB" in line)
    args = _parser().parse_args(chat_line.split(": ", 1)[1].split()[1:])
    assert args.command == "chat" and str(args.home) == "~/e2ee-tour/alice" and args.target == "$BOB"


def test_the_commands_it_suggests_run(xmpp_server: XmppServer, tmp_path: Path) -> None:
    """The short tour the demo prints runs as printed, against a private server of each kind,
    with the account line replaced by what the tour server prints to paste and the passphrase
    and password a person types at the prompts given in the environment."""
    lines = NEXT.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(". .venv/bin/activate"))
    commands = []
    for line in lines[start:]:
        if not line.startswith("      "):
            break
        commands.append(line.strip())
    accounts_line = next(c for c in commands if c.startswith("ALICE="))
    server = Accounts.fresh(xmpp_server, "demo-next")
    alice, bob = (server.register(user, PASSWORD) for user in ("alice", "bob"))
    script = "\n".join(commands).replace(accounts_line, "\n".join(paste_lines(xmpp_server, alice, bob)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2EE_")}
    env.update(HOME=str(tmp_path), E2EE_PASSPHRASE="typed at the prompt", E2EE_XMPP_PASSWORD=PASSWORD)
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    (laptop,) = [int(line.rsplit(" ", 1)[1]) for line in out if line.startswith(f"{alice}: device ")]
    assert f"{alice}/{laptop} [blind]: Hello Bob" in out  # bob's recv
    assert any(line.startswith(f"xmpp:{bob}?omemo-sid-") for line in out)  # bob's fingerprint, then its QR code
