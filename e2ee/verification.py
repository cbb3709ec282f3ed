"""Manual verification: fingerprint display forms and the ``xmpp:`` verification URI (QR code).

Pure functions, no I/O (``trust-atm.md`` sections 1 and 4, ``openpgp-ox.md`` sections 3 and 6).

Fingerprints
    :func:`fingerprint_omemo` shows an OMEMO identity key in its canonical X25519 form (32 bytes)
    as 64 lowercase hex digits in 8 groups of 8 -- the form XEP-0384 recommends and Conversations
    shows.  The same value is shown for the legacy and the OMEMO 2 namespace (the legacy key minus
    its ``05`` type byte).  The digest does not document a different text form for Dino or Gajim
    (it marks their exact case and grouping UNVERIFIED), so there are no per-client variants:
    :func:`parse_fingerprint` normalises whatever a user pastes (case, spaces, colons, a leading
    ``05`` of a 33-byte legacy key) before comparing.

    A 64-digit fingerprint may also be the **Ed25519 form** of the same identity key: OMEMO 2
    clients (Converse.js, Kaidan/QXmpp) show and scan that, legacy clients (Conversations, Dino,
    Gajim, Monal) the X25519 (Curve25519) form.  :func:`identity_candidates` gives the X25519
    keys a pasted value may stand for (itself, and its birational image when it decodes as an
    Ed25519 point), so both forms are compared canonically in X25519 form;
    :func:`fingerprint_forms` gives both display forms, labelled by namespace.

    :func:`fingerprint_openpgp` shows an OpenPGP v4 primary-key fingerprint as ``gpg
    --fingerprint`` does: 40 uppercase hex digits in 10 groups of 4, two spaces after the fifth
    group (checked against GnuPG 2.2.40).  :func:`parse_openpgp_fingerprint` reads one back.

Verification URI
    :func:`make_uri` writes the Conversations form
    ``xmpp:juliet@example.org?omemo-sid-1073741827=<64 hex>;omemo-sid-812=<64 hex>`` (devices in
    the order given: own device first), optionally with a leading XEP-0147 action as Gajim does
    (``xmpp:jid?message;omemo-sid-...``).  The JID is percent-encoded (RFC 5122 / RFC 3986,
    UTF-8): everything except the unreserved characters and ``!$()*+,`` is encoded, so the
    URI is plain ASCII and ``;``, ``=``, ``&``, ``?`` and ``#`` never appear unencoded in the path.

    :func:`parse_uri` reads a scanned or pasted URI -- input from outside, so every defect raises
    :class:`InvalidVerificationUri` (a :class:`~e2ee.errors.PeerError`).  Decisions:

    * scheme ``xmpp:`` (any case); the RFC 5122 authority form ``xmpp://auth/jid`` is accepted and
      the authority ignored; a ``#fragment`` is ignored; surrounding whitespace is stripped;
    * the JID is percent-decoded (UTF-8, IRI form with raw non-ASCII accepted) and must be a
      plausible JID (not full RFC 7622/PRECIS); a resource is dropped (trust is per account);
    * the query is split on ``;`` and ``&``; an optional first item without ``=`` is the action
      (``message``; any token is accepted and reported, except ``trust-message``: XEP-0434 trust
      message URIs carry Ed25519 key ids and are not verification URIs);
    * keys match case-insensitively: ``omemo-sid-<id>`` (id in the engine's device id range) and
      ``omemo`` (no device id); other keys (``body``, ``name``, ``otr-fingerprint``...) are
      ignored; values are percent-decoded (``+`` is a space) and parsed by
      :func:`parse_fingerprint`;
    * strict where Conversations is lenient: a malformed fingerprint value, an empty or
      malformed device id, the same device id with two different keys, more than
      :data:`MAX_URI_FINGERPRINTS` fingerprints, or no fingerprint at all reject the whole URI
      (a partly understood verification code must not look like a successful verification);
    * the input is bounded: at most :data:`MAX_URI_LENGTH` characters, checked first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .errors import InvalidFingerprint, InvalidKey, InvalidVerificationUri, UsageError
from .limits import DEVICE_ID_MAX, DEVICE_ID_MIN, MAX_FINGERPRINT_TEXT, MAX_URI_FINGERPRINTS, MAX_URI_LENGTH
from .primitives import ed25519_public_to_x25519, x25519_public_to_ed25519

__all__ = [
    "InvalidFingerprint",
    "InvalidVerificationUri",
    "VerificationUri",
    "MAX_URI_LENGTH",
    "MAX_URI_FINGERPRINTS",
    "MAX_FINGERPRINT_TEXT",
    "fingerprint_omemo",
    "fingerprint_forms",
    "identity_candidates",
    "FORM_LEGACY",
    "FORM_OMEMO2",
    "fingerprint_openpgp",
    "parse_fingerprint",
    "parse_openpgp_fingerprint",
    "make_uri",
    "parse_uri",
]

#: RFC 7622: each JID part is at most 1023 bytes of UTF-8.
_MAX_JID_PART_BYTES: Final = 1023

_IK_LEN: Final = 32
_LEGACY_TYPE_PREFIX: Final = "05"

_HEX = re.compile(r"[0-9A-Fa-f]*", re.ASCII)
_DEVICE_ID = re.compile(r"[0-9]{1,10}", re.ASCII)
_ACTION = re.compile(r"[A-Za-z0-9._~-]{1,64}", re.ASCII)
_IP_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]", re.ASCII)
_PCT = re.compile(r"%([0-9A-Fa-f]{2})", re.ASCII)
_SCHEME = "xmpp:"
_SID_PREFIX = "omemo-sid-"
_PLAIN_KEY = "omemo"
#: Characters written unencoded in the JID part of a URI (RFC 3986 unreserved plus a few
#: sub-delims allowed by RFC 5122 in both nodeid and host; ``;`` and ``=`` are encoded anyway).
_URI_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$()*+,")
#: RFC 7622 section 3.3.1: characters not allowed in a localpart.
_LOCAL_FORBIDDEN: Final = frozenset("\"&'/:<>@")
#: Characters not allowed in a domainpart (other than an IP literal) -- a plausibility check,
#: not IDNA.
_DOMAIN_FORBIDDEN: Final = frozenset("\"&'<>\\?#%;=[]:")
#: Separators removed from fingerprint text: whitespace (incl. no-break spaces) and colons.
_FPR_SEPARATORS = re.compile(r"[\s:\u00a0\u2007\u202f]+")
#: Unicode categories refused anywhere in a JID: controls, format characters (zero-width
#: spoofing), surrogates, private use, unassigned, separators.
_BAD_JID_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


# ---- fingerprints -------------------------------------------------------------------------


def _key_bytes(ik: object, what: str) -> bytes:
    if not isinstance(ik, (bytes, bytearray, memoryview)):
        raise UsageError(f"{what} must be bytes, got {type(ik).__name__}")
    key = bytes(ik)
    if len(key) != _IK_LEN:
        raise UsageError(f"{what} must be the 32-byte X25519 form, got {len(key)} bytes")
    return key


def fingerprint_omemo(ik: bytes) -> str:
    """The display fingerprint of an OMEMO identity key given in X25519 form (32 bytes):
    lowercase hex in 8 groups of 8, e.g. ``'0123abcd 4567ef01 ...'``.  Identical for the legacy
    and the OMEMO 2 namespace; same text as :func:`e2ee.trust.fingerprint`."""
    h = _key_bytes(ik, "identity key").hex()
    return " ".join(h[i : i + 8] for i in range(0, 64, 8))


#: Labels of the two display forms of an OMEMO identity key (:func:`fingerprint_forms`).
FORM_LEGACY: Final = "Curve25519 (legacy OMEMO: Conversations, Dino, Gajim, Monal)"
FORM_OMEMO2: Final = "Ed25519 (OMEMO 2: Converse.js, Kaidan)"


def fingerprint_forms(ik: bytes, ed25519: bytes | None = None) -> dict[str, str]:
    """Both display forms of an identity key given in X25519 form: ``{FORM_LEGACY: ...,
    FORM_OMEMO2: ...}``, 8 groups of 8 lowercase hex digits each.  ``ed25519``: the key's exact
    Ed25519 form when known (our own key, a device's OMEMO 2 bundle); without it the form with
    the sign bit clear is shown (what XEdDSA-derived keys have), and only the legacy form when
    the key has no Ed25519 image."""
    x = _key_bytes(ik, "identity key")
    forms = {FORM_LEGACY: fingerprint_omemo(x)}
    if ed25519 is None:
        try:
            ed25519 = x25519_public_to_ed25519(x, 0)
        except InvalidKey:
            return forms
    ed = bytes(ed25519).hex()
    forms[FORM_OMEMO2] = " ".join(ed[i : i + 8] for i in range(0, 64, 8))
    return forms


def identity_candidates(key: bytes) -> tuple[bytes, ...]:
    """The X25519 identity keys a 32-byte fingerprint value may stand for, most likely first:
    the value itself (the Curve25519 form), then its X25519 image when it decodes as an Ed25519
    public key (the Ed25519 form OMEMO 2 clients show).  Compare these with the known keys."""
    k = _key_bytes(key, "fingerprint value")
    try:
        image = ed25519_public_to_x25519(k)
    except InvalidKey:
        return (k,)
    return (k,) if image == k else (k, image)


def fingerprint_openpgp(fpr_hex_40: str) -> str:
    """An OpenPGP v4 fingerprint (40 hex digits, either case, as in the XEP-0373 metadata node)
    in the form ``gpg --fingerprint`` shows: uppercase, 10 groups of 4, two spaces in the middle
    (``'4DB7 3F4D 595C 3524 2359  E8A2 6DDA 53E8 A134 4C59'``)."""
    if not isinstance(fpr_hex_40, str) or len(fpr_hex_40) != 40 or not _HEX.fullmatch(fpr_hex_40):
        raise UsageError("an OpenPGP v4 fingerprint is 40 hex digits")
    h = fpr_hex_40.upper()
    groups = [h[i : i + 4] for i in range(0, 40, 4)]
    return " ".join(groups[:5]) + "  " + " ".join(groups[5:])


def _compact_hex(text: object, what: str) -> str:
    """``text`` without separators, as lowercase ASCII hex; raises :class:`InvalidFingerprint`."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a str, got {type(text).__name__}")
    if len(text) > MAX_FINGERPRINT_TEXT:
        raise InvalidFingerprint(f"{what} is too long")
    compact = _FPR_SEPARATORS.sub("", text)
    if not _HEX.fullmatch(compact):
        raise InvalidFingerprint(f"{what} contains characters other than hex digits, spaces and colons")
    return compact.lower()


def parse_fingerprint(text: str) -> bytes:
    """The 32-byte X25519 identity key a displayed OMEMO fingerprint stands for.

    Accepts either case, any spaces, line breaks and colons, and the 66-digit form of a legacy
    33-byte key (type byte ``05`` first).  Raises :class:`InvalidFingerprint` otherwise."""
    compact = _compact_hex(text, "fingerprint")
    if len(compact) == 2 * _IK_LEN + 2 and compact.startswith(_LEGACY_TYPE_PREFIX):
        compact = compact[2:]
    if len(compact) != 2 * _IK_LEN:
        raise InvalidFingerprint(
            f"an OMEMO fingerprint has 64 hex digits (66 with the legacy 05 prefix), got {len(compact)}"
        )
    return bytes.fromhex(compact)


def parse_openpgp_fingerprint(text: str) -> str:
    """A displayed OpenPGP v4 fingerprint (any case, spaces, colons, optional ``0x``) as the 40
    uppercase hex digits XEP-0373 uses.  Raises :class:`InvalidFingerprint` otherwise."""
    if isinstance(text, str) and text.strip()[:2].lower() == "0x":
        text = text.strip()[2:]
    compact = _compact_hex(text, "OpenPGP fingerprint")
    if len(compact) != 40:
        raise InvalidFingerprint(f"an OpenPGP v4 fingerprint has 40 hex digits, got {len(compact)}")
    return compact.upper()


# ---- JIDs ---------------------------------------------------------------------------------


def _jid_problem(jid: str) -> str | None:
    """Why ``jid`` is not a plausible bare JID, or ``None``.  Not full RFC 7622 (no PRECIS)."""
    local, at, domain = jid.partition("@")
    if not at:
        local, domain = "", jid
    if at and not local:
        return "empty localpart"
    if not domain:
        return "empty domainpart"
    if "@" in domain or "/" in domain:
        return "malformed domainpart"
    if not _IP_LITERAL.fullmatch(domain) and any(c in _DOMAIN_FORBIDDEN for c in domain):
        return "forbidden character in domainpart"
    if any(c in _LOCAL_FORBIDDEN for c in local):
        return "forbidden character in localpart"
    for part in (local, domain):
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            return "not valid Unicode"
        if size > _MAX_JID_PART_BYTES:
            return "JID part longer than 1023 bytes"
    if any(unicodedata.category(c) in _BAD_JID_CATEGORIES for c in jid):
        return "control, format or space character in JID"
    return None


def _pct_encode(part: str) -> str:
    return "".join(c if c in _URI_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in part)


def _encode_jid(jid: str) -> str:
    local, at, domain = jid.partition("@")
    if not at:
        local, domain = "", jid
    host = domain if _IP_LITERAL.fullmatch(domain) else _pct_encode(domain)
    return f"{_pct_encode(local)}@{host}" if at else host


# ---- verification URI ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationUri:
    """What :func:`parse_uri` read.

    ``jid`` -- the bare JID as written (decoded, not case-folded: compare with
    :func:`e2ee.jid.bare_jid_key`); ``fingerprints`` -- device id to the 32-byte key
    as written (the X25519 form, or the Ed25519 form OMEMO 2 clients use: see
    :func:`identity_candidates`), in URI order (by convention the sharing device first); ``plain`` -- keys given as
    ``omemo=<hex>`` without a device id, in order, without repeats; ``action`` -- the XEP-0147
    query action (``'message'``), lower-cased, or ``None``."""

    jid: str
    fingerprints: dict[int, bytes] = field(default_factory=dict)
    plain: list[bytes] = field(default_factory=list)
    action: str | None = None

    def identity_keys(self) -> list[bytes]:
        """Every distinct key in the URI: device-bound ones first, in URI order."""
        seen: dict[bytes, None] = dict.fromkeys(self.fingerprints.values())
        seen.update(dict.fromkeys(self.plain))
        return list(seen)


def make_uri(jid: str, devices: Sequence[tuple[int, bytes]], *, action: str | None = None) -> str:
    """The verification URI for ``devices`` (device id, 32-byte X25519 identity key) of the bare
    ``jid``, in the given order -- the caller puts its own device first.

    ``action='message'`` gives Gajim's form (``xmpp:jid?message;omemo-sid-...``); the default is
    the Conversations and Dino form.  Raises :class:`~e2ee.errors.UsageError` for a JID that is
    not a plausible bare JID, no devices, a device id outside ``[1, 2^31 - 1]``, a repeated device
    id or a key that is not 32 bytes."""
    if not isinstance(jid, str):
        raise UsageError(f"jid must be a str, got {type(jid).__name__}")
    if "/" in jid:
        raise UsageError("a verification URI names a bare JID (no resource)")
    problem = _jid_problem(jid)
    if problem is not None:
        raise UsageError(f"not a bare JID: {problem}")
    if len(devices) == 0:
        raise UsageError("a verification URI needs at least one device")
    if len(devices) > MAX_URI_FINGERPRINTS:
        raise UsageError(f"at most {MAX_URI_FINGERPRINTS} devices fit in a verification URI")
    items: list[str] = []
    if action is not None:
        if (
            not isinstance(action, str)
            or not _ACTION.fullmatch(action)
            or action.lower() == "trust-message"
            or _is_fingerprint_key(action.lower())
        ):
            raise UsageError(f"unusable query action {action!r}")
        items.append(action.lower())
    seen: set[int] = set()
    for entry in devices:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise UsageError("devices must be (device id, identity key) pairs")
        device_id, ik = entry
        if isinstance(device_id, bool) or not isinstance(device_id, int):
            raise UsageError(f"device id must be an int, got {type(device_id).__name__}")
        if not DEVICE_ID_MIN <= device_id <= DEVICE_ID_MAX:
            raise UsageError(f"device id {device_id} outside [{DEVICE_ID_MIN}, {DEVICE_ID_MAX}]")
        if device_id in seen:
            raise UsageError(f"device id {device_id} given twice")
        seen.add(device_id)
        items.append(f"{_SID_PREFIX}{device_id}={_key_bytes(ik, 'identity key').hex()}")
    return f"{_SCHEME}{_encode_jid(jid)}?{';'.join(items)}"


def _pct_decode(text: str, what: str, *, plus_is_space: bool = False) -> str:
    if plus_is_space:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    if text.count("%") != len(_PCT.findall(text)):
        raise InvalidVerificationUri(f"bad percent-encoding in {what}")
    # Decode maximal runs of %XX as one UTF-8 byte string (characters may span several escapes).
    out: list[str] = []
    pos = 0
    for run in re.finditer(r"(?:%[0-9A-Fa-f]{2})+", text):
        out.append(text[pos : run.start()])
        raw = bytes(int(m.group(1), 16) for m in _PCT.finditer(run.group()))
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidVerificationUri(f"percent-encoded {what} is not UTF-8") from None
        pos = run.end()
    out.append(text[pos:])
    return "".join(out)


def _is_fingerprint_key(key: str) -> bool:
    return key == _PLAIN_KEY or key.startswith(_SID_PREFIX)


def _parse_device_id(suffix: str) -> int:
    if not _DEVICE_ID.fullmatch(suffix):
        raise InvalidVerificationUri("omemo-sid- must be followed by a decimal device id")
    device_id = int(suffix)
    if not DEVICE_ID_MIN <= device_id <= DEVICE_ID_MAX:
        raise InvalidVerificationUri("device id out of range")
    return device_id


def _parse_value(value: str | None, key: str) -> bytes:
    if value is None:
        raise InvalidVerificationUri(f"{key} without a value")
    try:
        return parse_fingerprint(_pct_decode(value, "value", plus_is_space=True))
    except InvalidFingerprint as exc:
        raise InvalidVerificationUri(f"{key}: {exc}") from None


def parse_uri(text: str) -> VerificationUri:
    """Read a verification URI (Conversations, Dino or Gajim form; see the module docstring).

    Raises :class:`InvalidVerificationUri` for anything that is not one, and
    :class:`~e2ee.errors.UsageError` only when ``text`` is not a str."""
    if not isinstance(text, str):
        raise UsageError(f"text must be a str, got {type(text).__name__}")
    if len(text) > MAX_URI_LENGTH:
        raise InvalidVerificationUri("URI too long")
    text = text.strip()
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise InvalidVerificationUri("control character in URI")
    if text[: len(_SCHEME)].lower() != _SCHEME:
        raise InvalidVerificationUri("not an xmpp: URI")
    rest = text[len(_SCHEME) :].partition("#")[0]
    path, _, query = rest.partition("?")
    if path.startswith("//"):  # RFC 5122 authority form: xmpp://auth@example.com/jid@example.org
        _authority, slash, path = path[2:].partition("/")
        if not slash:
            raise InvalidVerificationUri("xmpp:// URI without a JID")
    jid = _pct_decode(path.partition("/")[0], "JID")  # the resource separator is a literal "/"
    problem = _jid_problem(jid)
    if problem is not None:
        raise InvalidVerificationUri(f"not a JID: {problem}")

    action: str | None = None
    fingerprints: dict[int, bytes] = {}
    plain: list[bytes] = []
    count = 0
    for index, item in enumerate(re.split(r"[;&]", query) if query else []):
        if not item:
            continue
        raw_key, eq, raw_value = item.partition("=")
        key = _pct_decode(raw_key, "key", plus_is_space=True).strip().lower()
        if index == 0 and not eq and not _is_fingerprint_key(key):
            if not _ACTION.fullmatch(key):
                raise InvalidVerificationUri("malformed query action")
            if key == "trust-message":
                raise InvalidVerificationUri("an XEP-0434 trust message URI, not a verification URI")
            action = key
            continue
        value = raw_value if eq else None
        if key.startswith(_SID_PREFIX):
            device_id = _parse_device_id(key[len(_SID_PREFIX) :])
            ik = _parse_value(value, _SID_PREFIX + str(device_id))
            known = fingerprints.get(device_id)
            if known is not None and known != ik:
                raise InvalidVerificationUri(f"device {device_id} is given two different keys")
            fingerprints[device_id] = ik
        elif key == _PLAIN_KEY:
            ik = _parse_value(value, _PLAIN_KEY)
            if ik not in plain:
                plain.append(ik)
        else:
            continue  # body, name, otr-fingerprint, preauth, ...: not ours
        count += 1
        if count > MAX_URI_FINGERPRINTS:
            raise InvalidVerificationUri(f"more than {MAX_URI_FINGERPRINTS} fingerprints")
    if not fingerprints and not plain:
        raise InvalidVerificationUri("no OMEMO fingerprint in URI")
    return VerificationUri(jid=jid, fingerprints=fingerprints, plain=plain, action=action)
