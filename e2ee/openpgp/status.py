"""Verdicts on GnuPG's machine-readable status lines (``--status-fd``; GnuPG's ``doc/DETAILS``).

python-gnupg reports success on partial failures: ``ok`` can be true for a message whose MDC is
missing (the plaintext is already in ``data``), ``valid`` does not say *which* key signed or
how many signatures there were, an encryption to a list with an unusable recipient can look
fine.  So the GnuPG runner hands the status lines here and only these functions decide.
They are pure and take the lines as text, so they are tested without GnuPG too.

Rules (catalogue P3, P4, P5):

* Status comes only from lines starting with ``[GNUPG:] `` on the status channel; the runner
  sends GnuPG's log output to a file, so nothing else is on that channel.  Arguments are used
  only where GnuPG escapes them (no line breaks can appear inside).
* Decryption: exit code 0; exactly one ``BEGIN_DECRYPTION``, ``DECRYPTION_OKAY``,
  ``END_DECRYPTION`` and ``PLAINTEXT``; integrity protection present and good (``GOODMDC``, or
  an AEAD mode); none of the failure keywords (``BADMDC``, ``DECRYPTION_FAILED``, ``ERROR``,
  ``FAILURE``, ``NODATA``...).  Any failure is :class:`~e2ee.errors.DecryptionFailed`.
* Signatures: exactly one ``NEWSIG``, one ``GOODSIG`` and one ``VALIDSIG`` that agree; no
  ``BADSIG``/``ERRSIG``/``EXPSIG``/``EXPKEYSIG``/``REVKEYSIG``; a v4 signature over binary or
  text data.  A single signature by a key GnuPG does not have (``ERRSIG`` code 9) is
  :class:`~e2ee.errors.SignatureNotFromSender`: the engine hands over every key the sender
  announced, so the signer is not one of them (a client may re-fetch the sender's keys once).  The verdict is the ``VALIDSIG`` primary-key fingerprint (field 10), never
  ``GOODSIG`` or ``ok`` alone.  Any failure is :class:`~e2ee.errors.InvalidSignature`.
* Symmetric decryption: the same integrity rules, a passphrase-encrypted session key
  (``NEED_PASSPHRASE_SYM``), no public-key session key and no signature.
* Encryption: exit code 0, ``END_ENCRYPTION``, ``SIG_CREATED`` when signing, no invalid
  recipient or signer (``INV_RECP``, ``INV_SGNR``) and no failure keyword; otherwise
  :class:`~e2ee.errors.OpenPgpFailure`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ..errors import DecryptionFailed, InvalidSignature, OpenPgpFailure, SignatureNotFromSender

__all__ = ["Status", "parse_status", "check_decryption", "check_symmetric_decryption", "check_encryption"]

_PREFIX = "[GNUPG:] "
_FPR = re.compile(r"[0-9A-F]{40}", re.ASCII)
_KEYID = re.compile(r"[0-9A-F]{16}", re.ASCII)

_DECRYPTION_BAD = frozenset(
    {
        "BADMDC",
        "DECRYPTION_FAILED",
        "NODATA",
        "FAILURE",
        "ERROR",
        "UNEXPECTED",
        "TRUNCATED",
        "BAD_PASSPHRASE",
        "MISSING_PASSPHRASE",
    }
)
_SIGNATURE_BAD = frozenset(
    {"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY", "KEYEXPIRED", "KEYREVOKED"}
)
_SIGNATURE_ANY = _SIGNATURE_BAD | {"NEWSIG", "GOODSIG", "VALIDSIG", "SIG_ID"}
_ENCRYPTION_BAD = frozenset(
    {"INV_RECP", "INV_SGNR", "FAILURE", "ERROR", "KEYEXPIRED", "KEYREVOKED", "NO_RECP", "NO_SGNR"}
)


@dataclass(frozen=True, slots=True)
class Status:
    """One status line: keyword and space-separated arguments."""

    keyword: str
    args: tuple[str, ...]


def parse_status(text: str) -> list[Status]:
    """The status lines of ``text`` (other lines are ignored)."""
    out = []
    for line in text.split("\n"):
        if line.startswith(_PREFIX):
            parts = line[len(_PREFIX) :].rstrip("\r").split(" ")
            out.append(Status(parts[0], tuple(parts[1:])))
    return out


def _decrypted(lines: list[Status], returncode: int | None) -> Counter[str]:
    """Decryption and integrity checks.  A non-zero exit code is left to the caller when a
    signature status explains it (GnuPG exits non-zero for a bad or unverifiable signature)."""
    counts = Counter(s.keyword for s in lines)
    if any(k in counts for k in _DECRYPTION_BAD):
        raise DecryptionFailed("decryption failed")
    if returncode != 0 and not any(k in counts for k in _SIGNATURE_BAD):
        raise DecryptionFailed("decryption failed")
    for keyword in ("BEGIN_DECRYPTION", "DECRYPTION_OKAY", "END_DECRYPTION", "PLAINTEXT"):
        if counts[keyword] != 1:
            raise DecryptionFailed("decryption failed")
    info = [s.args for s in lines if s.keyword == "DECRYPTION_INFO"]
    aead = len(info) == 1 and len(info[0]) >= 3 and info[0][2] not in ("", "0")
    if not (aead or (counts["GOODMDC"] == 1 and len(info) == 1 and info[0][:1] == ("2",))):
        raise DecryptionFailed("message without integrity protection")
    return counts


def check_decryption(lines: list[Status], returncode: int | None) -> tuple[str, str]:
    """Verdict on a public-key decryption with verification: (primary fingerprint, signing-key
    fingerprint) of the single valid signature."""
    counts = _decrypted(lines, returncode)
    missing = [s.args for s in lines if s.keyword == "ERRSIG" and len(s.args) > 5 and s.args[5] == "9"]
    if missing and counts["NEWSIG"] == 1 and set(counts) & _SIGNATURE_BAD <= {"ERRSIG", "NO_PUBKEY"}:
        signer = missing[0][6] if len(missing[0]) > 6 and _FPR.fullmatch(missing[0][6]) else missing[0][0]
        raise SignatureNotFromSender(f"signed by {signer}, a key the sender did not announce (or not fetched yet)")
    if returncode != 0 or any(k in counts for k in _SIGNATURE_BAD):
        raise InvalidSignature()
    if counts["NEWSIG"] != 1 or counts["GOODSIG"] != 1 or counts["VALIDSIG"] != 1:
        raise InvalidSignature()
    valid = next(s.args for s in lines if s.keyword == "VALIDSIG")
    good = next(s.args for s in lines if s.keyword == "GOODSIG")
    if len(valid) < 10 or not _FPR.fullmatch(valid[0]) or not _FPR.fullmatch(valid[9]):
        raise InvalidSignature()
    if valid[4] != "4" or valid[8] not in ("00", "01"):
        raise InvalidSignature()
    if not good or not _KEYID.fullmatch(good[0]) or not valid[0].endswith(good[0]):
        raise InvalidSignature()
    return valid[9], valid[0]


def check_symmetric_decryption(lines: list[Status], returncode: int | None) -> None:
    """Verdict on a passphrase-only decryption (a secret-key backup)."""
    counts = _decrypted(lines, returncode)
    if counts["NEED_PASSPHRASE_SYM"] != 1 or counts["ENC_TO"] or any(k in counts for k in _SIGNATURE_ANY):
        raise DecryptionFailed("not a passphrase-encrypted message")


def check_encryption(lines: list[Status], returncode: int | None, *, signed: bool) -> None:
    """Verdict on an encryption (signed or not)."""
    counts = Counter(s.keyword for s in lines)
    if returncode != 0 or any(k in counts for k in _ENCRYPTION_BAD) or counts["END_ENCRYPTION"] != 1:
        raise OpenPgpFailure(
            "GnuPG could not encrypt (" + ", ".join(sorted(k for k in counts if k in _ENCRYPTION_BAD)) + ")"
        )
    if signed and counts["SIG_CREATED"] != 1:
        raise OpenPgpFailure("GnuPG did not sign")
