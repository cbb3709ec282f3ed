"""OMEMO media sharing (XEP-0454): ``aesgcm://`` links and streaming AES-256-GCM for files.

Sans-I/O: this module turns bytes into bytes and strings into values; reading and writing files,
HTTP and XMPP are the client's job (:mod:`e2ee.client.media`).

The sender encrypts the file under a fresh 32-byte key and 12-byte IV with the 16-byte GCM tag
appended (no AAD), uploads that through HTTP File Upload (XEP-0363) and sends the link as the only
content of an encrypted message::

    aesgcm://upload.example.org/0d1e/holiday%20photo.jpg#<24 hex digits of IV><64 of key>

It is the ``https://`` GET URL with only the scheme changed (percent-encoding kept verbatim) and
the IV and key as the fragment, which is never sent to the server.  Received links may also carry
the older 16-byte IV (96 hex digits).  A body is a shared file only if it is exactly one such link,
optionally followed by one ``\\n`` and a ``data:image/jpeg`` thumbnail (:func:`media_link_in`).

Decryption is streamed too, so the plaintext :meth:`MediaDecryptor.update` returns is **not yet
authenticated**: keep it somewhere private (a temporary file) and release it only after
:meth:`MediaDecryptor.finalize` returned; throw it away when that raises
:class:`~e2ee.errors.MediaIntegrityError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import InvalidMediaLink, MediaIntegrityError, UsageError
from .limits import MAX_MEDIA_FILENAME, MAX_MEDIA_LINK_CHARS
from .primitives import GCM_TAG_LENGTH
from .rng import Random, system_random

__all__ = [
    "IV_LEN",
    "KEY_LEN",
    "LEGACY_IV_LEN",
    "TAG_LEN",
    "MediaDecryptor",
    "MediaEncryptor",
    "MediaLink",
    "build_link",
    "encrypted_size",
    "media_link_in",
    "parse_link",
]

#: AES-256 key length.
KEY_LEN: Final = 32
#: IV length of the current format (and the only one this module sends).
IV_LEN: Final = 12
#: IV length older Conversations versions used; accepted on receipt.
LEGACY_IV_LEN: Final = 16
#: GCM tag appended to the uploaded ciphertext.
TAG_LEN: Final = GCM_TAG_LENGTH

_Bytes = bytes | bytearray | memoryview

# The part after "scheme://": a host name, IPv4 or bracketed IPv6 address (no user info), an
# optional port, then an optional path and query of RFC 3986 characters.  '#' only starts the
# fragment.
_REST: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*)?(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*)?"
)
_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")
_THUMBNAIL_PREFIX: Final = "data:image/jpeg"


@dataclass(frozen=True, slots=True)
class MediaLink:
    """A shared file: where to download its ciphertext and how to decrypt it.  The key and IV
    never appear in ``repr`` (logs must not hold them); :attr:`uri` is the whole link."""

    #: the ``https://`` URL of the ciphertext, without fragment (what is sent to the server)
    url: str
    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    @property
    def uri(self) -> str:
        """The ``aesgcm://`` link with IV and key (lower-case hex) as the fragment."""
        return "aesgcm://" + self.url[len("https://") :] + "#" + self.iv.hex() + self.key.hex()

    @property
    def filename(self) -> str:
        """A safe local file name from the URL's last path segment: percent-decoded, without
        path separators, control characters or leading dots, shortened to
        :data:`~e2ee.limits.MAX_MEDIA_FILENAME` characters (keeping the extension); ``file``
        when nothing usable is left.  The name comes from the sender: never use it as a path."""
        return _safe_filename(self.url)

    def decryptor(self) -> MediaDecryptor:
        """A fresh streaming decryptor for this file."""
        return MediaDecryptor(self.key, self.iv)


def build_link(get_url: str, key: bytes, iv: bytes) -> MediaLink:
    """The link for a file uploaded to ``get_url`` (the XEP-0363 slot's GET URL).

    Only ``https://`` URLs become links (a plain ``http://`` one is never upgraded or used):
    anything else raises :class:`~e2ee.errors.InvalidMediaLink`, as does a URL with a fragment,
    user info or characters outside RFC 3986.  ``key`` must be 32 bytes and ``iv`` 12 (we send
    only the current format); other lengths raise :class:`~e2ee.errors.UsageError`."""
    if len(key) != KEY_LEN or len(iv) != IV_LEN:
        raise UsageError(f"a media link needs a {KEY_LEN}-byte key and a {IV_LEN}-byte IV")
    if get_url[:8].lower() != "https://":
        raise InvalidMediaLink("the upload service's download URL is not https://")
    rest = get_url[8:]
    _check_rest(rest)
    link = MediaLink("https://" + rest, bytes(key), bytes(iv))
    if len(link.uri) > MAX_MEDIA_LINK_CHARS:
        raise InvalidMediaLink(f"the download URL is too long for a link ({len(get_url)} characters)")
    return link


def parse_link(text: str) -> MediaLink:
    """Parse an ``aesgcm://`` link.  The fragment is 88 hex digits (12-byte IV, then the 32-byte
    key) or 96 (the older 16-byte IV, then the key).  Anything else raises
    :class:`~e2ee.errors.InvalidMediaLink`."""
    if len(text) > MAX_MEDIA_LINK_CHARS:
        raise InvalidMediaLink("the link is too long")
    if text[:9].lower() != "aesgcm://":
        raise InvalidMediaLink("not an aesgcm:// link")
    rest, sep, fragment = text[9:].partition("#")
    if not sep:
        raise InvalidMediaLink("the link has no key (no #fragment)")
    _check_rest(rest)
    if not _HEX.fullmatch(fragment) or len(fragment) not in (2 * (IV_LEN + KEY_LEN), 2 * (LEGACY_IV_LEN + KEY_LEN)):
        raise InvalidMediaLink("the link's fragment is not 88 or 96 hex digits (IV and key)")
    raw = bytes.fromhex(fragment)
    iv_len = len(raw) - KEY_LEN
    return MediaLink("https://" + rest, raw[iv_len:], raw[:iv_len])


def media_link_in(body: str | None) -> MediaLink | None:
    """The shared file if ``body`` is exactly one ``aesgcm://`` link, optionally followed by
    ``\\n`` and a ``data:image/jpeg`` thumbnail URI (which is ignored); ``None`` for anything
    else, which is then an ordinary text message (strict: no surrounding text or spaces)."""
    if body is None or body[:9].lower() != "aesgcm://":
        return None
    first, newline, thumbnail = body.partition("\n")
    if newline and (not thumbnail.startswith(_THUMBNAIL_PREFIX) or "\n" in thumbnail):
        return None
    try:
        return parse_link(first)
    except InvalidMediaLink:
        return None


def encrypted_size(size: int) -> int:
    """The size of the upload for a file of ``size`` bytes: GCM adds only the tag."""
    if size < 0:
        raise UsageError("a file size is not negative")
    return size + TAG_LEN


class MediaEncryptor:
    """Streaming AES-256-GCM for one file: feed the file through :meth:`update` in chunks and
    upload what it returns, then what :meth:`finalize` returns (the tag).  Each instance uses its
    key and IV for exactly one file."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != KEY_LEN or len(iv) != IV_LEN:
            raise UsageError(f"media encryption needs a {KEY_LEN}-byte key and a {IV_LEN}-byte IV")
        self.key = bytes(key)
        self.iv = bytes(iv)
        self._ctx = Cipher(algorithms.AES(self.key), modes.GCM(self.iv)).encryptor()
        self._done = False

    @classmethod
    def fresh(cls, rng: Random = system_random) -> MediaEncryptor:
        """An encryptor under a new random key and IV."""
        return cls(rng(KEY_LEN), rng(IV_LEN))

    def __repr__(self) -> str:
        return "MediaEncryptor(<key hidden>)"

    def update(self, chunk: _Bytes) -> bytes:
        """Encrypt the next chunk of the file (any length)."""
        if self._done:
            raise UsageError("this media encryptor is finished")
        return self._ctx.update(chunk)

    def finalize(self) -> bytes:
        """Finish: returns the 16-byte tag, the last bytes of the upload."""
        if self._done:
            raise UsageError("this media encryptor is finished")
        self._done = True
        rest = self._ctx.finalize()
        return rest + self._ctx.tag

    def link(self, get_url: str) -> MediaLink:
        """The link for this file once uploaded to ``get_url`` (see :func:`build_link`)."""
        return build_link(get_url, self.key, self.iv)


class MediaDecryptor:
    """Streaming AES-256-GCM decryption of a download (ciphertext with the tag appended).

    :meth:`update` returns plaintext as it goes, always holding back the last 16 bytes seen (they
    may be the tag).  That plaintext is unauthenticated until :meth:`finalize` returns; it raises
    :class:`~e2ee.errors.MediaIntegrityError` for a modified or truncated download or a wrong key,
    and then everything already returned must be discarded."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != KEY_LEN or len(iv) not in (IV_LEN, LEGACY_IV_LEN):
            raise UsageError(f"media decryption needs a {KEY_LEN}-byte key and a 12- or 16-byte IV")
        self._ctx = Cipher(algorithms.AES(bytes(key)), modes.GCM(bytes(iv))).decryptor()
        self._held = b""
        self._done = False
        #: ciphertext bytes (with the tag) fed in so far
        self.received = 0

    def __repr__(self) -> str:
        return "MediaDecryptor(<key hidden>)"

    def update(self, chunk: _Bytes) -> bytes:
        """Decrypt the next chunk of the download (any length); returns unauthenticated plaintext."""
        if self._done:
            raise UsageError("this media decryptor is finished")
        data = bytes(chunk)
        self.received += len(data)
        if len(data) >= TAG_LEN:
            out = self._ctx.update(self._held + data[:-TAG_LEN]) if self._held else self._ctx.update(data[:-TAG_LEN])
            self._held = data[-TAG_LEN:]
            return out
        joined = self._held + data
        cut = max(0, len(joined) - TAG_LEN)
        self._held = joined[cut:]
        return self._ctx.update(joined[:cut]) if cut else b""

    def finalize(self) -> None:
        """Check the tag.  Raises :class:`~e2ee.errors.MediaIntegrityError` if the download was
        shorter than a tag, was modified, or the key is wrong."""
        if self._done:
            raise UsageError("this media decryptor is finished")
        self._done = True
        if len(self._held) < TAG_LEN:
            raise MediaIntegrityError()
        try:
            self._ctx.finalize_with_tag(self._held)
        except InvalidTag:
            raise MediaIntegrityError() from None


def _check_rest(rest: str) -> None:
    if not _REST.fullmatch(rest) or _PERCENT.search(rest):
        raise InvalidMediaLink("the link's host or path is malformed")


def _unquote(text: str) -> str:
    """Percent-decoding as UTF-8 (invalid sequences become U+FFFD); input already checked.
    (``urllib.parse.unquote(text, errors="replace")``, which the engine may not import:
    ``tests/test_layering.py``.)"""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and i + 2 < len(text) and _HEX.fullmatch(text[i + 1 : i + 3]):
            out += bytes.fromhex(text[i + 1 : i + 3])
            i += 3
        else:
            out += text[i].encode("utf-8")
            i += 1
    return out.decode("utf-8", errors="replace")


def _safe_filename(url: str) -> str:
    path = url[len("https://") :].partition("?")[0]
    segment = path.rsplit("/", 1)[-1] if "/" in path else ""
    name = "".join(c for c in _unquote(segment) if c.isprintable() and c not in "/\\")
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_MEDIA_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_MEDIA_FILENAME - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_MEDIA_FILENAME]
    return name or "file"
