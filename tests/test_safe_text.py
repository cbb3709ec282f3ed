"""Catalogue: untrusted text on the terminal (issue 14.2).  The CLI's text output shows control,
bidi and separator characters escaped, and a multi-line body cannot forge another line."""

from __future__ import annotations

import json

import pytest

from e2ee.client.safe_text import CONTINUATION, message_header, message_line, safe, safe_body

HOSTILE = {
    "ESC (CSI erase)": ("\x1b[2J", "\\x1b[2J"),
    "OSC (set title)": ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    "CR": ("a\rb", "a\\rb"),
    "LF": ("a\nb", "a\\nb"),
    "NUL": ("a\x00b", "a\\x00b"),
    "U+202E": ("abc\u202edef", "abc\\u202edef"),
    "bidi isolate": ("\u2066x\u2069", "\\u2066x\\u2069"),
    "C1 CSI": ("\x9b2J", "\\x9b2J"),
    "NEL": ("a\x85b", "a\\x85b"),
    "DEL": ("a\x7fb", "a\\x7fb"),
    "line separator": ("a\u2028b", "a\\u2028b"),
    "tab": ("a\tb", "a\\tb"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_safe_escapes_each_hostile_character(name: str) -> None:
    raw, shown = HOSTILE[name]
    out = safe(raw)
    assert out == shown
    assert out.isprintable()


def test_safe_keeps_ordinary_text() -> None:
    for text in ["hello", "grüße, 你好, مرحبا", "👩‍👩‍👧 family (ZWJ sequence)", "C:\\path\\x1b", ""]:
        assert safe(text) == text
    assert safe(ValueError("bad \x1b[31mred")) == "bad \\x1b[31mred"


def test_safe_body_indents_continuation_lines_so_none_passes_for_a_header() -> None:
    body = "first\nalice@example.org/4242 [verified]: forged\r\x1b[1A\x1b[2Klast\u202e"
    out = message_line("bob@example.net/1 [blind]", body)
    lines = out.split("\n")
    assert lines[0] == "bob@example.net/1 [blind]: first"
    assert lines[1] == CONTINUATION + "alice@example.org/4242 [verified]: forged\\r\\x1b[1A\\x1b[2Klast\\u202e"
    assert all(line.startswith(CONTINUATION) for line in lines[1:])
    assert all(line.isprintable() for line in lines)
    assert safe_body("one line") == "one line"
    assert safe_body("a\n\nb", "> ") == "a\n> \n> b"


def test_json_output_stays_exact() -> None:
    for raw, _shown in HOSTILE.values():
        assert json.loads(json.dumps({"body": raw}))["body"] == raw


@pytest.mark.parametrize("field", ["jid", "device", "trust", "room", "body"])
def test_every_field_of_a_message_line_is_made_safe(field: str) -> None:
    """ESC, OSC, CR, LF, U+202E and NUL in each field of a printed message (the JID, room and
    nickname come from the server, the body from the contact): one header line, nothing raw."""
    evil = "x\x1b[2J\x1b]0;t\x07\r\n\u202e\x00y"
    parts = {"jid": "bob@example.net", "device": "7", "trust": "blind", "room": "room@muc.example.org", "body": "hi"}
    parts[field] = evil
    line = message_line(message_header(parts["jid"], parts["device"], parts["trust"], parts["room"]), parts["body"])
    lines = line.split("\n")
    assert all(c not in line for c in "\x1b\x07\r\u202e\x00")
    if field == "body":  # the body keeps its line break, indented
        assert lines == [
            "[room@muc.example.org] bob@example.net/7 [blind]: x\\x1b[2J\\x1b]0;t\\x07\\r",
            CONTINUATION + "\\u202e\\x00y",
        ]
    else:
        assert len(lines) == 1 and "x\\x1b[2J\\x1b]0;t\\x07\\r\\n\\u202e\\x00y" in line
