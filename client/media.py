"""Encrypted file sharing (XEP-0454) over HTTP File Upload (XEP-0363): the network half.

Sending (:func:`send_file`): find the upload service of our server (disco#info of the domain,
then of its disco#items), ask it for a slot of ``size + 16`` bytes, stream the file through a
:class:`~e2ee.media.MediaEncryptor` into an HTTPS ``PUT`` (64 KiB at a time), then send the
``aesgcm://`` link as the whole body of an encrypted message.  Nothing about the file is sent in
clear: no XEP-0066 ``<x xmlns='jabber:x:oob'>`` element, which would leak the link.

Receiving (:func:`download`): stream an HTTPS ``GET`` through a
:class:`~e2ee.media.MediaDecryptor` into a private temporary file beside the destination (mode
0600), and move it into place only after the GCM tag checked; on any failure the temporary file
is deleted and no plaintext is left behind.

HTTP runs on the standard library (``http.client`` with an ``ssl`` context that trusts the
system's CAs plus the session's ``ca_file``) in a worker thread (``asyncio.to_thread``), so memory
stays at a few chunks whatever the file's size.  Progress callbacks ``progress(done, total)`` are
called on the event loop's thread.  Transfer problems raise
:class:`~e2ee.client.errors.MediaTransferFailed`, a failed tag check
:class:`~e2ee.errors.MediaIntegrityError`.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from e2ee.errors import UsageError
from e2ee.limits import MAX_MEDIA_DOWNLOAD
from e2ee.media import MediaEncryptor, MediaLink, encrypted_size, parse_link
from e2ee.results import EncryptResult
from e2ee.rng import Random, system_random

from . import media_http
from .errors import MediaTransferFailed
from .media_http import CONTENT_TYPE, HTTP_TIMEOUT, Progress, UploadSlot, ssl_context
from .outgoing import Outgoing

__all__ = [
    "Progress",
    "SentFile",
    "UploadSlot",
    "download",
    "find_upload_service",
    "request_slot",
    "send_file",
    "session_ca",
    "ssl_context",
    "upload",
]

NS_UPLOAD = "urn:xmpp:http:upload:0"
_DISCO_INFO = "{http://jabber.org/protocol/disco#info}"
_DISCO_ITEMS = "{http://jabber.org/protocol/disco#items}"
_DATA = "{jabber:x:data}"
#: Headers a slot may ask us to send with the PUT (XEP-0363 §4); others are dropped.
_SLOT_HEADERS = frozenset({"authorization", "cookie", "expires"})


@dataclass(frozen=True, slots=True)
class SentFile:
    """A shared file: its link (the body that was sent), the message's encryption result (per
    device), and the plaintext size.  ``result.ready`` is false when no message could be sent
    (no trusted device); the ciphertext is on the server anyway and useless without the key."""

    link: MediaLink
    result: EncryptResult
    size: int


def session_ca(xmpp: slixmpp.ClientXMPP) -> Path | None:
    """The CA file a slixmpp client was told to trust (``ca_certs``), if it is a single file."""
    ca = getattr(xmpp, "ca_certs", None)
    return Path(ca) if isinstance(ca, (str, Path)) else None


def _on_loop(progress: Progress | None) -> Progress | None:
    """Wrap ``progress`` so that a worker thread's calls run on the current event loop."""
    if progress is None:
        return None
    loop = asyncio.get_running_loop()

    def report(done: int, total: int) -> None:
        loop.call_soon_threadsafe(progress, done, total)

    return report


# ------------------------------------------------------------------ XEP-0363 over XMPP


async def find_upload_service(xmpp: slixmpp.ClientXMPP) -> tuple[str, int | None] | None:
    """The JID of our server's HTTP File Upload service and its ``max-file-size`` (``None`` if
    it announces none), or ``None`` when there is no service."""
    disco = xmpp.plugin["xep_0030"]
    domain = xmpp.boundjid.domain
    candidates = [domain]
    try:
        items = await disco.get_items(jid=slixmpp.JID(domain), local=False)
        query = items.xml.find(f"{_DISCO_ITEMS}query")
        if query is not None:
            candidates += [i.get("jid", "") for i in query.findall(f"{_DISCO_ITEMS}item") if i.get("node") is None]
    except (IqError, IqTimeout):
        pass
    for jid in candidates:
        if not jid:
            continue
        try:
            info = await disco.get_info(jid=slixmpp.JID(jid), local=False, cached=False)
        except (IqError, IqTimeout):
            continue
        query = info.xml.find(f"{_DISCO_INFO}query")
        if query is None:
            continue
        if not any(f.get("var") == NS_UPLOAD for f in query.findall(f"{_DISCO_INFO}feature")):
            continue
        return jid, _max_file_size(query)
    return None


def _max_file_size(query: ET.Element) -> int | None:
    for form in query.findall(f"{_DATA}x"):
        fields = {f.get("var"): f.findtext(f"{_DATA}value") for f in form.findall(f"{_DATA}field")}
        if fields.get("FORM_TYPE") == NS_UPLOAD:
            value = (fields.get("max-file-size") or "").strip()
            return int(value) if value.isdigit() else None
    return None


async def request_slot(
    xmpp: slixmpp.ClientXMPP, service: str, filename: str, size: int, timeout: float = 30
) -> UploadSlot:
    """Ask ``service`` for a slot for ``size`` bytes named ``filename``."""
    iq = xmpp.make_iq_get(ito=service)
    ET.SubElement(
        iq.xml, f"{{{NS_UPLOAD}}}request", {"filename": filename, "size": str(size), "content-type": CONTENT_TYPE}
    )
    try:
        reply = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
    except IqError as e:
        text = e.iq["error"]["text"] or e.iq["error"]["condition"]
        raise MediaTransferFailed(f"the upload service refused a slot: {text}") from None
    except IqTimeout:
        raise MediaTransferFailed("the upload service did not answer the slot request") from None
    slot = reply.xml.find(f"{{{NS_UPLOAD}}}slot")
    put = slot.find(f"{{{NS_UPLOAD}}}put") if slot is not None else None
    get = slot.find(f"{{{NS_UPLOAD}}}get") if slot is not None else None
    if put is None or get is None or not put.get("url") or not get.get("url"):
        raise MediaTransferFailed("the upload service sent a slot without put and get URLs")
    headers = tuple(
        (h.get("name", ""), " ".join((h.text or "").split()))  # no line breaks in a header value
        for h in put.findall(f"{{{NS_UPLOAD}}}header")
        if h.get("name", "").lower() in _SLOT_HEADERS
    )
    return UploadSlot(str(put.get("url")), headers, str(get.get("url")))


# ------------------------------------------------------------------ public API


async def upload(
    xmpp: slixmpp.ClientXMPP,
    path: Path,
    *,
    progress: Progress | None = None,
    rng: Random = system_random,
    filename: str | None = None,
    ca_file: Path | str | None = None,
) -> MediaLink:
    """Encrypt ``path`` under a fresh key and IV and upload it to our server's upload service;
    returns the link (not sent anywhere).  ``filename`` is the name the server sees and puts in
    the URL (default: the file's own name)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    size = encrypted_size(path.stat().st_size)
    found = await find_upload_service(xmpp)
    if found is None:
        raise MediaTransferFailed("the server offers no HTTP File Upload service (XEP-0363)")
    service, limit = found
    if limit is not None and size > limit:
        raise MediaTransferFailed(f"the file is too large for the upload service ({size} > {limit} bytes)")
    name = filename or path.name
    if "/" in name or not name.strip():
        raise UsageError(f"unusable upload file name {name!r}")
    slot = await request_slot(xmpp, service, name, size)
    enc = MediaEncryptor.fresh(rng)
    link = enc.link(slot.get_url)  # refuses a non-https GET URL before anything is uploaded
    ctx = ssl_context(ca_file if ca_file is not None else session_ca(xmpp))
    await asyncio.to_thread(media_http.put, slot, path, enc, ctx, _on_loop(progress))
    return link


async def send_file(
    sender: Outgoing,
    to: str,
    path: Path,
    *,
    progress: Progress | None = None,
    rng: Random = system_random,
    filename: str | None = None,
) -> SentFile:
    """Upload ``path`` encrypted (see :func:`upload`) and send its ``aesgcm://`` link to ``to``
    as the only content of an encrypted message (``sender.send_text``: the session's send path).  Raises
    :class:`~e2ee.client.errors.MediaTransferFailed` when the upload fails; then nothing is sent."""
    link = await upload(sender.xmpp, Path(path), progress=progress, rng=rng, filename=filename)
    result = await sender.send_text(to, link.uri)
    return SentFile(link, result, Path(path).stat().st_size)


async def download(
    link: MediaLink | str,
    dest: Path | str,
    *,
    progress: Progress | None = None,
    ca_file: Path | str | None = None,
    max_size: int = MAX_MEDIA_DOWNLOAD,
    overwrite: bool = False,
    timeout: float = HTTP_TIMEOUT,
) -> Path:
    """Download, decrypt and verify a shared file; returns where it was saved.

    ``dest`` is a file path, or an existing directory (then the file is saved under the link's
    sanitised name, with `` (1)`` etc. added if taken).  An existing file is not replaced unless
    ``overwrite``.  ``timeout`` bounds each network operation (seconds).  Raises :class:`~e2ee.errors.InvalidMediaLink` for a bad link,
    :class:`~e2ee.client.errors.MediaTransferFailed` for HTTP trouble or a body over ``max_size`` bytes,
    :class:`~e2ee.errors.MediaIntegrityError` when the tag does not check; in every failure case
    no file is left behind."""
    if isinstance(link, str):
        link = parse_link(link)
    dest = Path(dest)
    if not dest.is_dir() and not dest.parent.is_dir():
        raise UsageError(f"no such directory: {dest.parent}")
    if not dest.is_dir() and dest.exists() and not overwrite:
        raise UsageError(f"{dest} exists already")
    return await asyncio.to_thread(
        media_http.get, link, dest, ssl_context(ca_file), max_size, _on_loop(progress), overwrite, timeout
    )
