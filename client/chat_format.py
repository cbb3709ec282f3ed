"""What ``e2ee chat`` shows, as styled lines for prompt_toolkit: a received message with its
time, sender, device, encryption and trust marker; our own sent lines; the per-device failures
of a send, in words, each told once per conversation.  Every piece of untrusted text (JIDs,
nicknames, bodies, file names, error lines) goes through :mod:`e2ee.client.safe_text` here.

The look follows Profanity's: ``HH:MM:SS`` first, then who wrote, then the text; an encryption
tag and a trust marker (``verified`` green, ``blind`` yellow, ``untrusted`` red) before the
sender.  A body's second and later lines are indented (:data:`~e2ee.client.safe_text.CONTINUATION`),
so no line of a body can pass for a message of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from e2ee.results import Decrypted, DeviceOutcome, EncryptResult, Outcome
from e2ee.trust import TrustLevel

from .safe_text import safe, safe_body
from .types import Received

__all__ = [
    "STYLE",
    "FailureLog",
    "Line",
    "encryption_name",
    "error_line",
    "failure_words",
    "incoming",
    "info",
    "outgoing",
    "trust_marker",
]

#: one styled line: (prompt_toolkit style class, text) fragments
Line = list[tuple[str, str]]

#: prompt_toolkit style of the classes used below
STYLE = {
    "time": "#888888",
    "enc": "#5f87d7",
    "verified": "bold #00af00",
    "blind": "#d7af00",
    "untrusted": "bold #d70000",
    "peer": "bold",
    "me": "#00afaf",
    "body": "",
    "info": "#888888 italic",
    "error": "#d70000",
    "bottom-toolbar": "reverse",
}

_ENCRYPTION = {
    "urn:xmpp:omemo:2": "OMEMO 2",
    "eu.siacs.conversations.axolotl": "legacy OMEMO",
    "urn:xmpp:openpgp:0": "OpenPGP",
}


def encryption_name(namespace: str) -> str:
    """``OMEMO 2``, ``legacy OMEMO`` or ``OpenPGP`` for a namespace (the namespace itself, made safe, otherwise)."""
    return _ENCRYPTION.get(namespace, safe(namespace))


def trust_marker(level: TrustLevel) -> str:
    """``verified`` (compared by the person), ``blind`` (trusted on first use) or ``untrusted``
    (undecided or refused)."""
    if level is TrustLevel.VERIFIED:
        return "verified"
    if level is TrustLevel.BLIND:
        return "blind"
    return "untrusted"


def _clock(when: datetime) -> str:
    return when.astimezone().strftime("%H:%M:%S")


def incoming(received: Received, own_jid: str, now: datetime, text: str | None = None) -> Line | None:
    """The line of a received message (None for what a person does not see as one: no body, a
    key exchange, a duplicate).  ``text`` replaces the body (a shared file's description, already
    safe).  The time is the sender's (the SCE ``<time>``) when given, else ``now``; a message
    from the archive says so, our own other devices' messages are shown as ``me``."""
    d = received.result
    if not isinstance(d, Decrypted) or d.body is None:
        return None
    marker = trust_marker(d.trust)
    line: Line = [
        ("class:time", _clock(d.timestamp or now) + " "),
        ("class:enc", f"[{encryption_name(d.namespace)}] "),
        (f"class:{marker}", f"[{marker}] "),
    ]
    if received.room:
        nick = received.stanza_from.partition("/")[2] or received.stanza_from
        line.append(("class:info", f"{safe(received.room)} "))
        who = f"{safe(nick)} ({safe(d.jid)}/{d.device_id})"
    else:
        who = f"{safe(d.jid)}/{d.device_id}" if d.device_id else safe(d.jid)
    if d.jid == own_jid and not received.room:  # our own other device (a carbon, the archive)
        line.append(("class:me", f"me (device {d.device_id})"))
    else:
        line.append(("class:peer", who))
    if received.archived:
        line.append(("class:info", " (archive)"))
    line.append(("class:body", ": " + (text if text is not None else safe_body(d.body))))
    return line


def outgoing(target: str, body: str, now: datetime, how: str) -> Line:
    """The line of what we sent: ``HH:MM:SS [how] me -> target: body`` (all made safe here)."""
    return [
        ("class:time", _clock(now) + " "),
        ("class:enc", f"[{how}] "),
        ("class:me", f"me -> {safe(target)}"),
        ("class:body", ": " + safe_body(body)),
    ]


def info(text: str) -> Line:
    """A line of our own (a command's answer, a status change); ``text`` must already be safe."""
    return [("class:info", text)]


def error_line(text: str) -> Line:
    """A failure told to the person; ``text`` must already be safe."""
    return [("class:error", text)]


def failure_words(d: DeviceOutcome) -> str | None:
    """What went wrong for one device of a send, in words (None when it was encrypted for)."""
    who = f"{safe(d.jid)}: device {d.device_id} ({encryption_name(d.namespace)})"
    if d.outcome is Outcome.ENCRYPTED:
        return None
    if d.outcome is Outcome.UNDECIDED:
        return f"{who} was left out: its key is not trusted yet (compare it, then /trust FINGERPRINT)"
    if d.outcome is Outcome.DISTRUSTED:
        return f"{who} was left out: you refused its key"
    if d.outcome is Outcome.NO_BUNDLE:
        return f"{who} was left out: it publishes no keys to start a session with"
    if d.outcome is Outcome.NO_DEVICE_LIST:
        return f"{safe(d.jid)} publishes no {encryption_name(d.namespace)} device list"
    if d.outcome is Outcome.FAILED:
        why = f": {safe(d.error)}" if d.error else ""
        return f"{who} was left out: its published keys are unusable{why}"
    return f"{who}: not encrypted for it, since the message was not sent"


class FailureLog:
    """Tells each device's failure once: a device that stays untrusted is not reported again at
    every line typed, only when its outcome changes."""

    def __init__(self) -> None:
        self._told: dict[tuple[str, int, str], Outcome] = {}

    def new(self, devices: Iterable[DeviceOutcome]) -> list[str]:
        """The words for the failures not told yet (an outcome told before is not repeated;
        a device that was encrypted for again is forgotten, so a later failure is told)."""
        lines = []
        for d in devices:
            key = (d.jid, d.device_id, d.namespace)
            if d.outcome is Outcome.ENCRYPTED:
                self._told.pop(key, None)
                continue
            if d.outcome is Outcome.NOT_SENT or self._told.get(key) is d.outcome:
                continue
            self._told[key] = d.outcome
            words = failure_words(d)
            if words is not None:
                lines.append(words)
        return lines


def summary(result: EncryptResult) -> str:
    """How many devices a message reached: ``encrypted for 3 devices`` (our own included)."""
    n = sum(1 for d in result.devices if d.outcome is Outcome.ENCRYPTED)
    return f"encrypted for {n} device{'s' if n != 1 else ''}"
