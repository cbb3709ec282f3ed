"""What ``e2ee chat`` draws (e2ee.client.chat_format): the parts of a message line, the words for
each per-device failure, and that each failure is told once."""

from __future__ import annotations

from datetime import UTC, datetime

from e2ee.client.chat_format import (
    FailureLog,
    encryption_name,
    failure_words,
    incoming,
    outgoing,
    trust_marker,
)
from e2ee.client.types import Received
from e2ee.results import Decrypted, DeviceOutcome, EmptyMessage, Outcome
from e2ee.trust import TrustLevel

O2, LEGACY, OX = "urn:xmpp:omemo:2", "eu.siacs.conversations.axolotl", "urn:xmpp:openpgp:0"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _text(line: list[tuple[str, str]] | None) -> str:
    assert line is not None
    return "".join(text for _style, text in line)


def _got(
    body: str | None,
    trust: TrustLevel = TrustLevel.BLIND,
    *,
    timestamp: datetime | None = None,
    archived: bool = False,
    room: str | None = None,
    stanza_from: str = "bob@x",
) -> Received:
    d = Decrypted("bob@x", 7, O2, trust, b"k" * 32, body, timestamp=timestamp)
    return Received(d, None, False, stanza_from, archived, room=room)


def test_names_and_markers() -> None:
    assert [encryption_name(n) for n in (O2, LEGACY, OX)] == ["OMEMO 2", "legacy OMEMO", "OpenPGP"]
    assert encryption_name("urn:\u202eevil") == "urn:\\u202eevil"
    assert [trust_marker(t) for t in TrustLevel] == ["untrusted", "blind", "verified", "untrusted"]


def test_a_message_line_has_time_encryption_trust_sender_device_and_a_safe_body() -> None:
    line = incoming(_got("hi\nbob@x/1 [verified]: forged\x9b", TrustLevel.VERIFIED), "ann@x", NOW)
    text = _text(line)
    assert text.startswith(NOW.astimezone().strftime("%H:%M:%S") + " [OMEMO 2] [verified] bob@x/7: hi")
    assert "\n    | bob@x/1 [verified]: forged\\x9b" in text and "\x9b" not in text
    assert ("class:verified", "[verified] ") in (line or [])
    sent = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)  # the sender's time (SCE) wins over now
    assert _text(incoming(_got("x", timestamp=sent), "ann@x", NOW)).startswith(sent.astimezone().strftime("%H:%M:%S"))
    assert "(archive): x" in _text(incoming(_got("x", archived=True), "ann@x", NOW))
    room = _text(incoming(_got("x", room="den@rooms.x", stanza_from="den@rooms.x/bobby"), "ann@x", NOW))
    assert "den@rooms.x bobby (bob@x/7): x" in room
    assert "[blind] me (device 7): x" in _text(incoming(_got("x"), "bob@x", NOW))  # our own other device


def test_what_is_not_a_message_draws_no_line() -> None:
    assert incoming(_got(None), "ann@x", NOW) is None  # a chat state, no body
    assert incoming(Received(EmptyMessage("bob@x", 7, O2), None, False, "bob@x"), "ann@x", NOW) is None


def test_our_own_line_is_safe() -> None:
    assert _text(outgoing("bob@x", "a\rb", NOW, "OMEMO 2")).endswith("[OMEMO 2] me -> bob@x: a\\rb")


def test_every_failure_has_words_and_each_is_told_once() -> None:
    words = {o: failure_words(DeviceOutcome("bob@x", 7, O2, o, error="bad signature")) for o in Outcome}
    assert words[Outcome.ENCRYPTED] is None
    assert "not trusted yet" in str(words[Outcome.UNDECIDED]) and "/trust" in str(words[Outcome.UNDECIDED])
    assert "you refused its key" in str(words[Outcome.DISTRUSTED])
    assert "publishes no keys" in str(words[Outcome.NO_BUNDLE])
    assert words[Outcome.NO_DEVICE_LIST] == "bob@x publishes no OMEMO 2 device list"
    assert str(words[Outcome.FAILED]).endswith("unusable: bad signature")
    log = FailureLog()
    refused = DeviceOutcome("bob@x", 7, O2, Outcome.DISTRUSTED)
    ok = DeviceOutcome("bob@x", 8, O2, Outcome.ENCRYPTED)
    assert log.new([refused, ok]) == [failure_words(refused)]
    assert log.new([refused, ok]) == []  # the same failure again: not repeated
    undecided = DeviceOutcome("bob@x", 7, LEGACY, Outcome.UNDECIDED)
    assert log.new([refused, undecided]) == [failure_words(undecided)]  # another namespace: its own
    assert log.new([DeviceOutcome("bob@x", 7, O2, Outcome.ENCRYPTED)]) == []  # reached again: forgotten
    assert log.new([refused]) == [failure_words(refused)]  # so a new failure is told
    assert log.new([DeviceOutcome("bob@x", 9, O2, Outcome.NOT_SENT)]) == []  # the whole send says it
