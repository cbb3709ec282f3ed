"""``e2ee demo`` runs the real engine end to end and says what each device decrypted."""

from __future__ import annotations

import io

from e2ee.client.cli import main
from e2ee.client.demo import run


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
