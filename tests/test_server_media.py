"""XEP-0454 media sharing through a real upload service (XEP-0363: Prosody's ``mod_http_file_share``, ejabberd's ``mod_http_upload``
over HTTPS on 127.0.0.1): a 50 MB file round-trips with memory bounded (measured), a tampered or
truncated download is refused with a typed error and leaves nothing behind, the link travels
only inside the encrypted message, and the ``e2ee send-file`` / ``recv --download-dir``
commands do the same from the command line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import threading
import tracemalloc
from pathlib import Path

import pytest

from e2ee.client import media
from e2ee.client.errors import MediaTransferFailed
from e2ee.client.session import E2EESession, Received
from e2ee.engine import Engine
from e2ee.errors import MediaIntegrityError, UsageError
from e2ee.media import MediaLink, build_link
from e2ee.storage import MemoryStorage

from .support import run_cli
from .xmpp_server import UPLOAD_LIMIT, Accounts

MB = 1_000_000
#: What the 50 MB round trip may allocate in Python objects at its peak (tracemalloc): a few
#: chunks of 64 KiB; a transfer that held the file would need at least 50 MB.
TRACED_BOUND = 4 * 1024 * 1024
#: Growth of the process's resident memory during the round trip (sampled): OpenSSL's and the
#: allocator's buffers are not traced, so this bound is looser, still far below the file.
RSS_BOUND = 24 * 1024 * 1024


#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob", "mia", "nils")


async def _session(server: Accounts, user: str, inbox: list[Received] | None = None) -> E2EESession:
    engine = Engine.create(MemoryStorage(), server.jid(user))
    s = E2EESession(engine, f"{user}-pw", ca_file=server.cert, on_received=inbox.append if inbox is not None else None)
    await s.start("127.0.0.1", server.port)
    return s


def _stored(server: Accounts, link: MediaLink) -> Path:
    """The file the server keeps for the slot of ``link``."""
    return server.stored_upload(link.url)


def _served(server: Accounts, name: str) -> str:
    """The file name a receiver sees: ejabberd's mod_http_upload makes the slot's name safe
    (a space becomes ``_``); Prosody keeps it as sent."""
    return name.replace(" ", "_") if server.kind == "ejabberd" else name


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MB):
            block = os.urandom(MB)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MB):
            digest.update(block)
    return digest.hexdigest()


class _RssPeak:
    """Samples the resident set size every 5 ms in a thread; ``growth`` is the peak over the
    value at start."""

    def __init__(self) -> None:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_50mb_file_round_trip_with_bounded_memory(server: Accounts, tmp_path: Path) -> None:
    """Must-show 2: 50 MB through the real upload service, from alice's send_file to bob's
    download, with Python's peak allocation (tracemalloc) and the sampled RSS growth bounded."""
    source = tmp_path / "fifty megabytes.bin"
    expected = _write_random(source, 50 * MB)
    inbox: list[Received] = []
    stanzas: list[str] = []
    progress_up: list[tuple[int, int]] = []
    progress_down: list[tuple[int, int]] = []
    out = tmp_path / "downloads"
    out.mkdir()

    async def run() -> tuple[int, int, Path, media.SentFile]:
        alice = await _session(server, "alice")
        bob = await _session(server, "bob", inbox)
        bob.add_event_handler("message", lambda msg: stanzas.append(str(msg)))
        try:
            with _RssPeak() as rss:
                tracemalloc.start()
                try:
                    base = tracemalloc.get_traced_memory()[0]
                    sent = await alice.send_file(
                        bob.boundjid.bare, source, progress=lambda d, t: progress_up.append((d, t))
                    )
                    assert sent.result.ready, sent.result.devices
                    deadline = asyncio.get_running_loop().time() + 10
                    while not any(r.media for r in inbox):
                        assert asyncio.get_running_loop().time() < deadline, [(r.result, r.error) for r in inbox]
                        await asyncio.sleep(0.02)
                    (got,) = [r.media for r in inbox if r.media is not None]
                    saved = await bob.download(got, out, progress=lambda d, t: progress_down.append((d, t)))
                    peak = tracemalloc.get_traced_memory()[1] - base
                finally:
                    tracemalloc.stop()
            return peak, rss.growth, saved, sent
        finally:
            for s in (alice, bob):
                s.disconnect()
            await asyncio.sleep(0.1)

    peak, rss_growth, saved, sent = asyncio.run(run())
    assert saved == out / _served(server, "fifty megabytes.bin")
    assert _sha256(saved) == expected
    assert sorted(os.listdir(out)) == [_served(server, "fifty megabytes.bin")]  # no temporary file left
    assert peak < TRACED_BOUND, f"traced peak {peak} bytes"
    assert rss_growth < RSS_BOUND, f"RSS grew by {rss_growth} bytes"
    # progress: monotonic, in chunks, ending at the upload size (file + 16-byte tag)
    total = 50 * MB + 16
    assert progress_up[-1] == (total, total) and progress_down[-1] == (total, total)
    assert len(progress_up) > 50 and [d for d, _t in progress_up] == sorted(d for d, _t in progress_up)
    # the server holds only ciphertext, of the announced size
    stored = _stored(server, sent.link)
    assert stored.stat().st_size == total
    with stored.open("rb") as f, source.open("rb") as g:
        assert f.read(4096) != g.read(4096)
    # the link travels only inside the encrypted message: nothing in clear (no OOB element)
    assert stanzas and all("aesgcm" not in s and "jabber:x:oob" not in s and sent.link.url not in s for s in stanzas)


def test_tampered_and_truncated_downloads_are_refused(server: Accounts, tmp_path: Path) -> None:
    """Must-show 2: a byte flipped in the stored file gives MediaIntegrityError, a stored file cut
    short a MediaTransferFailed, a wrong key MediaIntegrityError; never a file left behind."""
    source = tmp_path / "report.pdf"
    _write_random(source, 2 * MB)
    out = tmp_path / "out"
    out.mkdir()

    async def run() -> None:
        alice = await _session(server, "alice")
        try:
            # untouched: downloads fine (twice: the second one gets a fresh name)
            good = await media.upload(alice, source)
            first = await media.download(good, out, ca_file=server.cert)
            second = await media.download(good, out, ca_file=server.cert)
            assert (first.name, second.name) == ("report.pdf", "report (1).pdf")
            assert first.read_bytes() == source.read_bytes() == second.read_bytes()
            for p in (first, second):
                p.unlink()
            (out / "taken").write_bytes(b"mine")
            with pytest.raises(UsageError, match="exists already"):  # never replaced unless asked
                await media.download(good, out / "taken", ca_file=server.cert)
            assert (out / "taken").read_bytes() == b"mine"
            (out / "taken").unlink()

            flipped = await media.upload(alice, source)
            stored = _stored(server, flipped)
            with stored.open("r+b") as f:
                f.seek(MB)
                byte = f.read(1)
                f.seek(MB)
                f.write(bytes([byte[0] ^ 0x20]))
            with pytest.raises(MediaIntegrityError, match="integrity check"):
                await media.download(flipped, out, ca_file=server.cert)
            assert os.listdir(out) == []

            tag = await media.upload(alice, source)
            with _stored(server, tag).open("r+b") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
                f.seek(-1, os.SEEK_END)
                f.write(bytes([last[0] ^ 1]))
            with pytest.raises(MediaIntegrityError):
                await media.download(tag, out / "named.pdf", ca_file=server.cert)
            assert os.listdir(out) == []

            cut = await media.upload(alice, source)
            os.truncate(_stored(server, cut), MB)
            if server.kind == "prosody":  # it announces the size it stored, sends less, then stalls
                with pytest.raises(MediaTransferFailed, match="broke off"):
                    await media.download(cut, out, ca_file=server.cert, timeout=1)
            else:  # ejabberd serves the file as it is now, with its new length: the tag fails
                with pytest.raises(MediaIntegrityError):
                    await media.download(cut, out, ca_file=server.cert, timeout=1)
            assert os.listdir(out) == []

            wrong_key = MediaLink(good.url, os.urandom(32), good.iv)
            with pytest.raises(MediaIntegrityError):
                await media.download(wrong_key, out, ca_file=server.cert)
            assert os.listdir(out) == []

            missing = build_link(good.url.rsplit("/", 2)[0] + "/nosuchslot/x.pdf", good.key, good.iv)
            with pytest.raises(MediaTransferFailed, match="HTTP 404"):
                await media.download(missing, out, ca_file=server.cert)
            assert os.listdir(out) == []
        finally:
            alice.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_upload_limits_and_untrusted_certificate(server: Accounts, tmp_path: Path) -> None:
    """A file over the service's max-file-size is refused before anything is uploaded; a
    download from a server whose certificate is not trusted fails with a clear error."""
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(UPLOAD_LIMIT)  # sparse: + 16 bytes of tag is over the limit

    async def run() -> None:
        alice = await _session(server, "alice")
        try:
            found = await media.find_upload_service(alice)
            assert found == (server.upload_service, UPLOAD_LIMIT)
            with pytest.raises(MediaTransferFailed, match="too large"):
                await media.upload(alice, huge)
            small = tmp_path / "small.txt"
            small.write_text("hi")
            link = await media.upload(alice, small)
            assert link.url.startswith(f"https://{server.domain}:{server.https_port}/")
            with pytest.raises(MediaTransferFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await media.download(link, tmp_path)  # no ca_file: the test CA is not trusted
            assert sorted(os.listdir(tmp_path)) == ["huge.bin", "small.txt"]
        finally:
            alice.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_cli_send_file_and_recv_download_dir(server: Accounts, tmp_path: Path) -> None:
    """``e2ee send-file`` shows progress on stderr and reports per device; ``e2ee recv
    --download-dir`` saves the file and says where (JSON ``file`` field); a tampered one is
    refused with one line on stderr and exit 1, leaving nothing in the directory."""

    def e2ee(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(server, tmp_path / user, f"{user}-pw", *args, timeout=120)

    for user in ("mia", "nils"):
        assert e2ee(user, "init", "--jid", server.jid(user)).returncode == 0
        proc = e2ee(user, "publish")
        assert proc.returncode == 0, proc.stderr
    photo = tmp_path / "holiday photo.jpg"
    _write_random(photo, 3 * MB)
    sent = e2ee("mia", "send-file", server.jid("nils"), str(photo), "--json")
    assert sent.returncode == 0, sent.stderr
    data = json.loads(sent.stdout)
    assert [r["status"] for r in data["recipients"]] == ["encrypted"]
    assert data["file"]["name"] == "holiday photo.jpg" and data["file"]["size"] == 3 * MB
    assert "#" not in data["file"]["url"] and "aesgcm" not in sent.stdout  # the key is not printed
    assert "sending holiday photo.jpg: 100%" in sent.stderr and "Traceback" not in sent.stderr

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    got = e2ee("nils", "recv", "--count", "1", "--timeout", "15", "--json", "--download-dir", str(downloads))
    assert got.returncode == 0, got.stderr
    (line,) = got.stdout.strip().splitlines()
    msg = json.loads(line)
    assert msg["from"] == server.jid("mia") and msg["body"].startswith("aesgcm://")
    served = _served(server, "holiday photo.jpg")
    assert msg["file"]["name"] == served and msg["file"]["size"] == 3 * MB
    assert Path(msg["file"]["path"]) == downloads / served
    assert (downloads / served).read_bytes() == photo.read_bytes()
    assert f"receiving {served}: 100%" in got.stderr

    # a tampered file: one clear line, exit 1, nothing saved
    sent = e2ee("mia", "send-file", server.jid("nils"), str(photo))
    assert sent.returncode == 0, sent.stderr
    url = next(line for line in sent.stdout.splitlines() if line.startswith("uploaded ")).rsplit(" ", 1)[1]
    stored = _stored(server, MediaLink(url, b"", b""))
    with stored.open("r+b") as f:  # flip a byte (writing a fixed one left it unchanged 1 time in 256)
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    (downloads / served).unlink()
    got = e2ee("nils", "recv", "--count", "1", "--timeout", "15", "--download-dir", str(downloads))
    assert got.returncode == 1
    errors = [line for line in got.stderr.splitlines() if line.startswith("e2ee:")]
    assert errors == [
        f"e2ee: a file from {server.jid('mia')} could not be downloaded: "
        "the file failed its integrity check (modified, truncated or wrong key)"
    ], got.stderr
    assert "Traceback" not in got.stderr and os.listdir(downloads) == []
    assert f"file {served} (not downloaded)" in got.stdout

    # usage errors: exit 2 before connecting
    missing = e2ee("mia", "send-file", server.jid("nils"), str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and "not a file" in missing.stderr
    nodir = e2ee("nils", "recv", "--download-dir", str(tmp_path / "nope"))
    assert nodir.returncode == 2 and "not a directory" in nodir.stderr
