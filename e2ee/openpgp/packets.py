"""OpenPGP (RFC 4880) packets of transferable keys: framing, v4 fingerprints, user ids, and the
public form of a transferable secret key.  Pure functions on bytes, no I/O.

Only what XEP-0373 key handling needs is parsed: packet headers (old and new format; partial
and indeterminate lengths are refused, keys never use them), the public part of v4 primary keys
and subkeys (RSA, DSA, Elgamal, ECDH, ECDSA, EdDSA) and user id packets.  Signatures are *not*
checked here: GnuPG checks self-signatures when the key is imported, and only what GnuPG
reports as valid is trusted (:meth:`~e2ee.openpgp.crypto.OpenPgpCrypto.inspect_public_key`).
These checks run before GnuPG sees a key, so that an oversized key, a v3 key or a block holding
something else than one key is refused early (catalogue P3).

Every defect raises the ``error`` class the caller passes (:class:`~e2ee.errors.InvalidPublicKey`
for keys from peers, :class:`~e2ee.errors.CorruptState` for our own stored key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import E2EEError
from ..limits import MAX_OPENPGP_KEY_BYTES, MAX_OPENPGP_KEY_PACKETS, MAX_OPENPGP_KEY_UIDS

__all__ = [
    "Packet",
    "KeyBlock",
    "TAG_SIGNATURE",
    "TAG_SECRET_KEY",
    "TAG_PUBLIC_KEY",
    "TAG_SECRET_SUBKEY",
    "TAG_USER_ID",
    "TAG_PUBLIC_SUBKEY",
    "split_packets",
    "encode_packet",
    "public_part_length",
    "fingerprint_v4",
    "parse_key_blocks",
    "parse_key_block",
    "public_from_secret",
    "encode_block",
]

TAG_SIGNATURE = 2
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
_PRIMARY = {TAG_PUBLIC_KEY, TAG_SECRET_KEY}
_SUBKEY = {TAG_PUBLIC_SUBKEY, TAG_SECRET_SUBKEY}
#: Packets that may appear in a transferable key (RFC 4880 §11.1/11.2): keys, user ids, user
#: attributes, signatures, trust packets (GnuPG's own exports never hold trust packets).
_KEY_BLOCK_TAGS = {
    TAG_SIGNATURE,
    TAG_SECRET_KEY,
    TAG_PUBLIC_KEY,
    TAG_SECRET_SUBKEY,
    12,
    TAG_USER_ID,
    TAG_PUBLIC_SUBKEY,
    17,
}

# public-key algorithm -> layout of its public parameters
_MPIS = {1: 2, 2: 2, 3: 2, 16: 3, 20: 3, 17: 4}  # RSA (n, e), Elgamal (p, g, y), DSA (p, q, g, y)
_ECDH, _ECDSA, _EDDSA = 18, 19, 22


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet: its tag and body (the header is rebuilt in new format when written)."""

    tag: int
    body: bytes = field(repr=False)


def _lengths(data: bytes, pos: int, error: type[E2EEError]) -> tuple[int, int, int]:
    """(tag, body start, body end) of the packet at ``pos``."""
    ctb = data[pos]
    if not ctb & 0x80:
        raise error("not an OpenPGP packet")
    pos += 1
    if ctb & 0x40:  # new format
        tag = ctb & 0x3F
        if pos >= len(data):
            raise error("truncated OpenPGP packet header")
        first = data[pos]
        if first < 192:
            length, pos = first, pos + 1
        elif first < 224:
            if pos + 2 > len(data):
                raise error("truncated OpenPGP packet header")
            length, pos = ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
        elif first == 255:
            if pos + 5 > len(data):
                raise error("truncated OpenPGP packet header")
            length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
        else:
            raise error("partial-length OpenPGP packet in a key")
    else:  # old format
        tag, kind = (ctb >> 2) & 0x0F, ctb & 0x03
        if kind == 3:
            raise error("indeterminate-length OpenPGP packet in a key")
        size = 1 << kind
        if pos + size > len(data):
            raise error("truncated OpenPGP packet header")
        length, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
    if pos + length > len(data):
        raise error("truncated OpenPGP packet")
    return tag, pos, pos + length


def split_packets(data: bytes, error: type[E2EEError], max_packets: int = MAX_OPENPGP_KEY_PACKETS) -> list[Packet]:
    """The packets of ``data``; more than ``max_packets`` raise ``error`` before any is copied."""
    out: list[Packet] = []
    pos = 0
    while pos < len(data):
        tag, start, end = _lengths(data, pos, error)
        if len(out) >= max_packets:
            raise error(f"more than {max_packets} OpenPGP packets")
        out.append(Packet(tag, bytes(data[start:end])))
        pos = end
    return out


def encode_packet(tag: int, body: bytes) -> bytes:
    """A packet with a new-format header."""
    n = len(body)
    if n < 192:
        head = bytes((n,))
    elif n < 8384:
        n -= 192
        head = bytes(((n >> 8) + 192, n & 0xFF))
    else:
        head = b"\xff" + n.to_bytes(4, "big")
    return bytes((0xC0 | tag,)) + head + body


def _skip_mpi(body: bytes, pos: int, error: type[E2EEError]) -> int:
    if pos + 2 > len(body):
        raise error("truncated MPI")
    bits = int.from_bytes(body[pos : pos + 2], "big")
    end = pos + 2 + (bits + 7) // 8
    if end > len(body):
        raise error("truncated MPI")
    return end


def _skip_counted(body: bytes, pos: int, error: type[E2EEError], what: str) -> int:
    if pos >= len(body) or body[pos] in (0, 0xFF):
        raise error(f"bad {what} length")
    end = pos + 1 + body[pos]
    if end > len(body):
        raise error(f"truncated {what}")
    return end


def public_part_length(body: bytes, error: type[E2EEError]) -> int:
    """Length of the public-key part at the start of a (public or secret) key packet body:
    version 4, creation time, algorithm and its public parameters.  Other versions (v3, v5,
    v6) and unknown algorithms raise ``error``."""
    if len(body) < 6:
        raise error("truncated key packet")
    if body[0] != 4:
        raise error(f"OpenPGP v{body[0]} key: only v4 keys are accepted")
    algo = body[5]
    pos = 6
    if algo in _MPIS:
        for _ in range(_MPIS[algo]):
            pos = _skip_mpi(body, pos, error)
    elif algo in (_ECDH, _ECDSA, _EDDSA):
        pos = _skip_counted(body, pos, error, "curve OID")
        pos = _skip_mpi(body, pos, error)
        if algo == _ECDH:
            pos = _skip_counted(body, pos, error, "KDF parameters")
    else:
        raise error(f"unsupported public-key algorithm {algo}")
    return pos


def fingerprint_v4(public_part: bytes) -> str:
    """The v4 fingerprint of a key's public part: 40 upper-case hex digits (RFC 4880 §12.2)."""
    digest = hashlib.sha1(b"\x99" + len(public_part).to_bytes(2, "big") + public_part, usedforsecurity=False)
    return digest.hexdigest().upper()


@dataclass(frozen=True, slots=True)
class KeyBlock:
    """One transferable key: the primary key's fingerprint, its user ids (as written, not yet
    checked by anyone), whether it holds secret packets, and every packet."""

    fingerprint: str
    user_ids: tuple[str, ...]
    secret: bool
    packets: tuple[Packet, ...] = field(repr=False)


def _blocks(packets: list[Packet], error: type[E2EEError]) -> Iterator[list[Packet]]:
    current: list[Packet] = []
    for p in packets:
        if p.tag in _PRIMARY:
            if current:
                yield current
            current = [p]
        elif not current:
            raise error("an OpenPGP key must start with a primary key packet")
        elif p.tag not in _KEY_BLOCK_TAGS:
            raise error(f"OpenPGP packet type {p.tag} does not belong in a key")
        else:
            current.append(p)
    if current:
        yield current


def _key_block(packets: list[Packet], error: type[E2EEError]) -> KeyBlock:
    primary = packets[0]
    secret = primary.tag == TAG_SECRET_KEY
    fpr = fingerprint_v4(primary.body[: public_part_length(primary.body, error)])
    uids: list[str] = []
    for p in packets[1:]:
        if p.tag in _SUBKEY:
            if (p.tag == TAG_SECRET_SUBKEY) != secret:
                raise error("public and secret packets mixed in one key")
            public_part_length(p.body, error)
        elif p.tag == TAG_USER_ID:
            if len(uids) >= MAX_OPENPGP_KEY_UIDS:
                raise error(f"more than {MAX_OPENPGP_KEY_UIDS} user ids")
            uids.append(p.body.decode("utf-8", "replace"))
    return KeyBlock(fpr, tuple(uids), secret, tuple(packets))


def parse_key_blocks(data: bytes, error: type[E2EEError], max_bytes: int = MAX_OPENPGP_KEY_BYTES) -> list[KeyBlock]:
    """Every transferable key in ``data`` (a backup may concatenate several)."""
    if not data:
        raise error("empty OpenPGP key")
    if len(data) > max_bytes:
        raise error(f"OpenPGP key larger than {max_bytes} bytes")
    return [_key_block(b, error) for b in _blocks(split_packets(data, error), error)]


def parse_key_block(data: bytes, error: type[E2EEError], *, secret: bool) -> KeyBlock:
    """Exactly one transferable key, public or (``secret``) secret."""
    blocks = parse_key_blocks(data, error)
    if len(blocks) != 1:
        raise error("expected exactly one OpenPGP key")
    if blocks[0].secret != secret:
        raise error("expected an OpenPGP " + ("secret" if secret else "public") + " key")
    return blocks[0]


def public_from_secret(block: KeyBlock, error: type[E2EEError]) -> bytes:
    """The transferable public key of a secret key block: secret (sub)key packets become public
    ones, cut after their public part; everything else is copied."""
    out = []
    for p in block.packets:
        if p.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
            tag = TAG_PUBLIC_KEY if p.tag == TAG_SECRET_KEY else TAG_PUBLIC_SUBKEY
            out.append(encode_packet(tag, p.body[: public_part_length(p.body, error)]))
        else:
            out.append(encode_packet(p.tag, p.body))
    return b"".join(out)


def encode_block(packets: tuple[Packet, ...] | list[Packet]) -> bytes:
    """Packets written back with new-format headers."""
    return b"".join(encode_packet(p.tag, p.body) for p in packets)
