"""The HTTP half of encrypted file sharing (XEP-0454 over XEP-0363): an HTTPS ``PUT`` of the
ciphertext and a ``GET`` that decrypts as it streams, on the standard library (``http.client``)
in a worker thread.

Only ``https://`` URLs are used (redirects included).  A download goes to a private temporary
file beside the destination (mode 0600) and is moved into place only after the GCM tag checked;
on any failure the temporary file is deleted and no plaintext is left behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from e2ee.limits import MEDIA_CHUNK_SIZE
from e2ee.media import MediaEncryptor, MediaLink, encrypted_size

from .errors import MediaTransferFailed

__all__ = ["CONTENT_TYPE", "HTTP_TIMEOUT", "MAX_REDIRECTS", "Progress", "UploadSlot", "get", "put", "ssl_context"]

#: ``progress(done, total)``: bytes transferred so far (ciphertext) and in all.
Progress = Callable[[int, int], None]

#: Seconds any single socket operation of a transfer may take.
HTTP_TIMEOUT = 60.0
#: Redirects a download follows (only to https:// URLs).
MAX_REDIRECTS = 3
CONTENT_TYPE = "application/octet-stream"  # what is uploaded is ciphertext, whatever the file


@dataclass(frozen=True, slots=True)
class UploadSlot:
    """An XEP-0363 slot: where to ``PUT`` (with which headers) and where it can then be fetched."""

    put_url: str
    put_headers: tuple[tuple[str, str], ...]
    get_url: str


def ssl_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """Verify servers against the system's CAs, plus ``ca_file`` when given (a private server's
    CA, as for the XMPP connection)."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def _connect(url: str, ctx: ssl.SSLContext, timeout: float = HTTP_TIMEOUT) -> tuple[http.client.HTTPSConnection, str]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise MediaTransferFailed(f"refusing a non-https transfer URL ({parts.scheme or 'no'} scheme)")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        port = parts.port
    except ValueError:
        raise MediaTransferFailed("a transfer URL has an invalid port") from None
    return http.client.HTTPSConnection(parts.hostname, port, context=ctx, timeout=timeout), target


def put(slot: UploadSlot, source: Path, enc: MediaEncryptor, ctx: ssl.SSLContext, progress: Progress | None) -> None:
    with source.open("rb") as f:  # a local error (missing, unreadable) stays an OSError
        total = encrypted_size(os.fstat(f.fileno()).st_size)
        conn, target = _connect(slot.put_url, ctx)
        sent = 0
        try:
            conn.putrequest("PUT", target, skip_accept_encoding=True)
            for name, value in slot.put_headers:
                conn.putheader(name, value)
            conn.putheader("Content-Type", CONTENT_TYPE)
            conn.putheader("Content-Length", str(total))
            conn.endheaders()
            while chunk := f.read(MEDIA_CHUNK_SIZE):
                sent += _send(conn, enc.update(chunk), sent, total, progress)
            sent += _send(conn, enc.finalize(), sent, total, progress)
            if sent != total:
                raise MediaTransferFailed("the file changed size while it was being sent")
            response = conn.getresponse()
            response.read(64 * 1024)
            if response.status not in (200, 201):
                raise MediaTransferFailed(f"the upload was refused: HTTP {response.status} {response.reason}")
        except (OSError, http.client.HTTPException) as e:
            raise MediaTransferFailed(f"the upload broke off after {sent} of {total} bytes: {e}") from None
        finally:
            conn.close()


def _send(conn: http.client.HTTPSConnection, data: bytes, sent: int, total: int, progress: Progress | None) -> int:
    conn.send(data)
    if progress is not None:
        progress(sent + len(data), total)
    return len(data)


def get(
    link: MediaLink,
    dest: Path,
    ctx: ssl.SSLContext,
    max_size: int,
    progress: Progress | None,
    overwrite: bool,
    timeout: float,
) -> Path:
    url = link.url
    for _ in range(MAX_REDIRECTS + 1):
        conn, target = _connect(url, ctx, timeout)
        try:
            try:
                conn.request("GET", target, headers={"Accept-Encoding": "identity"})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise MediaTransferFailed(f"the download failed: {e}") from None
            location = response.getheader("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)  # _connect refuses anything but https
                continue
            if response.status != 200:
                raise MediaTransferFailed(f"the download failed: HTTP {response.status} {response.reason}")
            return _receive(response, link, dest, max_size, progress, overwrite)
        finally:
            conn.close()
    raise MediaTransferFailed("the download was redirected too often")


def _receive(
    response: http.client.HTTPResponse,
    link: MediaLink,
    dest: Path,
    max_size: int,
    progress: Progress | None,
    overwrite: bool,
) -> Path:
    length = response.getheader("Content-Length")
    total = int(length) if length and length.strip().isdigit() else 0
    if total > max_size:
        raise MediaTransferFailed(f"the file is larger than allowed ({total} > {max_size} bytes)")
    directory = dest if dest.is_dir() else dest.parent
    dec = link.decryptor()
    fd, tmp_name = tempfile.mkstemp(prefix=".e2ee-", suffix=".part", dir=directory)  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _body(response):
                if dec.received + len(chunk) > max_size:
                    raise MediaTransferFailed(f"the file is larger than allowed (over {max_size} bytes)")
                out.write(dec.update(chunk))
                if progress is not None:
                    progress(dec.received, max(total, dec.received))
            dec.finalize()  # MediaIntegrityError: the finally below deletes the plaintext
        return _place(tmp, dest, link, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _body(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read(MEDIA_CHUNK_SIZE)
        except (OSError, http.client.HTTPException) as e:
            raise MediaTransferFailed(f"the download broke off: {type(e).__name__} {e}".rstrip()) from None
        if not chunk:
            return
        yield chunk


def _place(tmp: Path, dest: Path, link: MediaLink, overwrite: bool) -> Path:
    """Move the verified file into place: ``dest``, or a fresh name in ``dest`` if it is a
    directory.  Never replaces an existing file unless ``overwrite``."""
    if not dest.is_dir():
        if overwrite:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)  # FileExistsError if it exists: checked and created in one step
        return dest
    name = link.filename
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(1000):
        candidate = dest / (name if n == 0 else f"{stem} ({n}){dot}{ext}")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, candidate)
            return candidate
    raise MediaTransferFailed(f"no free file name for {name!r} in {dest}")
