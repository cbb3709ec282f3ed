"""XEP-0082 date-times: what we write (UTC with ``Z``) and what we accept from deployed senders.

The one parser for the SCE ``<time/>`` (XEP-0420), the OpenPGP ``<time/>`` (XEP-0373) and
key-metadata dates.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from .errors import MalformedEnvelope, UsageError

__all__ = ["format_timestamp", "parse_timestamp", "require_aware"]

#: XEP-0082 DateTime as received: RFC 3339 ``date-time`` (``T``/``t``, ``Z``/``z``, ``±hh:mm``) plus
#: the ``±hhmm`` offset that deployed senders write; a fraction of any length (bounded by
#: :data:`_MAX_STAMP`).  No offset, a bare ``±hh``, spaces or a decimal comma are refused.
_STAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2}))",
    re.ASCII,
)
_MAX_STAMP = 128


def require_aware(value: datetime, what: str) -> datetime:
    """``value`` in UTC; :class:`~e2ee.errors.UsageError` for a naive datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """XEP-0082 DateTime in UTC with ``Z`` (microseconds only when not zero)."""
    utc = require_aware(value, "time")
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def parse_timestamp(text: str) -> datetime:
    """A received XEP-0082 DateTime as an aware UTC datetime; raises
    :class:`~e2ee.errors.MalformedEnvelope`.

    Liberal where the information is the same and unambiguous: ``Z`` or ``z``, ``T`` or ``t``,
    offsets ``±hh:mm`` and ``±hhmm`` (``-00:00`` is UTC), fractions of any length (truncated to
    microseconds).  Refused: no offset (local time of unknown zone), out-of-range fields, leap
    seconds, anything else.  The one parser for the SCE ``<time/>``, the OpenPGP ``<time/>`` and
    key-metadata dates; :func:`format_timestamp` is what we write."""
    match = _STAMP.fullmatch(text) if len(text) <= _MAX_STAMP else None
    if match is None:
        raise MalformedEnvelope("time stamp is not an XEP-0082 DateTime")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, off_hours, off_minutes = match.group(7, 8, 9, 10)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        if sign is None:  # Z: the usual form, no offset arithmetic
            return datetime(year, month, day, hour, minute, second, micro, UTC)
        if int(off_minutes) > 59:
            raise ValueError
        offset = timedelta(hours=int(off_hours), minutes=int(off_minutes)) * (-1 if sign == "-" else 1)
        local = datetime(year, month, day, hour, minute, second, micro, timezone(offset))
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise MalformedEnvelope("time stamp out of range") from None
