"""The interface between the OpenPGP backend and an OpenPGP implementation.

The engine is sans-I/O, but GnuPG is a subprocess.  So the engine defines what it needs as the
:class:`OpenPgpCrypto` protocol and the embedder passes an object that implements it (as it
passes a clock and a source of randomness); :class:`e2ee.client.gpg.GnuPG` is the implementation on
GnuPG through python-gnupg.  The engine hands over every key an operation needs (the
implementation may cache imports), so the implementation's key ring is a cache and the
engine's storage stays the only record of keys and trust.

Contract, which the engine relies on for the security checks it makes itself:

* :meth:`~OpenPgpCrypto.decrypt_and_verify` returns only when decryption *and* integrity
  protection succeeded *and* exactly one signature verified; otherwise it raises
  :class:`~e2ee.errors.DecryptionFailed` or :class:`~e2ee.errors.InvalidSignature` and returns
  no data at all (no plaintext after an integrity failure, catalogue P4).  The signer is given
  as the **primary** key's fingerprint, which the engine compares with the sender's metadata.
* :meth:`~OpenPgpCrypto.inspect_public_key` reports only user ids whose self-signature the
  implementation verified.
* Passphrases are strings the engine made (random hex) or checked (backup codes); an
  implementation still refuses ``\\n``, ``\\r`` and NUL (:class:`~e2ee.errors.InvalidPassphrase`).
* Failures that involve no peer input raise :class:`~e2ee.errors.OpenPgpFailure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["PublicKey", "SecretKey", "KeyInfo", "Verified", "OpenPgpCrypto"]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A transferable public key (binary) and its primary fingerprint (40 upper-case hex)."""

    fingerprint: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecretKey:
    """Our transferable secret key (binary), every secret packet protected by ``passphrase``."""

    fingerprint: str
    data: bytes = field(repr=False)
    passphrase: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the implementation verified about a public key."""

    fingerprint: str  #: primary key, 40 upper-case hex
    user_ids: tuple[str, ...]  #: user ids with a valid self-signature that are not revoked
    revoked: bool
    expired: bool
    can_encrypt: bool  #: a valid encryption subkey (or primary) exists


@dataclass(frozen=True, slots=True)
class Verified:
    """A decrypted message whose integrity protection and single signature verified."""

    data: bytes = field(repr=False)
    primary_fingerprint: str  #: the signing key's primary key (VALIDSIG field 10)
    signing_fingerprint: str  #: the (sub)key that made the signature


class OpenPgpCrypto(Protocol):
    """OpenPGP operations the backend needs (see the module docstring for the contract)."""

    def generate_key(self, user_id: str, passphrase: str) -> bytes:
        """A new key pair (EdDSA primary for signing, ECDH subkey for encryption, no expiry)
        whose only user id is ``user_id``; returns the transferable secret key, protected with
        ``passphrase``.  It never exists unprotected on disk."""
        ...

    def inspect_public_key(self, data: bytes) -> KeyInfo:
        """Check a transferable public key (already parsed and size-checked by the engine)."""
        ...

    def encrypt_and_sign(self, plaintext: bytes, recipients: Sequence[PublicKey], signer: SecretKey) -> bytes:
        """A binary OpenPGP message: ``plaintext`` signed by ``signer`` and encrypted to every
        recipient (the engine includes our own key)."""
        ...

    def decrypt_and_verify(
        self, message: bytes, senders: Sequence[PublicKey], recipient: SecretKey, max_size: int
    ) -> Verified:
        """Decrypt with ``recipient`` and verify with one of ``senders``; plaintext longer than
        ``max_size`` fails."""
        ...

    def encrypt_symmetric(self, plaintext: bytes, passphrase: str) -> bytes:
        """A binary OpenPGP message encrypted with a passphrase only (SKESK, AES-128, MDC)."""
        ...

    def decrypt_symmetric(self, message: bytes, passphrase: str, max_size: int) -> bytes:
        """Inverse of :meth:`encrypt_symmetric`; integrity protection required."""
        ...
