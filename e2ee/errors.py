"""Typed errors of the engine.

Every error the engine raises derives from :class:`E2EEError`.  The second level says who is
to blame (the idea of h11's ``LocalProtocolError`` / ``RemoteProtocolError``):

* :class:`UsageError` -- the caller made a mistake (wrong argument type or length, an
  operation in the wrong state).  Never caused by bytes from the network.
* :class:`PeerError` -- what a peer (or the network, or the server) sent is unacceptable.
  Arbitrary bytes from the network only ever raise subclasses of this one.
* :class:`StorageError` -- the local store cannot be used as it is (the encrypted keystore's
  own errors derive from it and live beside it, in :mod:`e2ee.keystore.errors`).

Authentication failures carry no detail (no padding or MAC oracle): every failed MAC, tag,
padding or signature check of a message raises the same :class:`AuthenticationFailed`.
"""

from __future__ import annotations

__all__ = [
    "E2EEError",
    "UsageError",
    "PeerError",
    "MalformedMessage",
    "UnsupportedVersion",
    "RestrictedXml",
    "MalformedEnvelope",
    "AffixMismatch",
    "DecryptionFailed",
    "AuthenticationFailed",
    "InvalidSignature",
    "InvalidKey",
    "InvalidBundle",
    "DuplicateMessage",
    "TooManySkippedKeys",
    "NoSession",
    "MissingPreKey",
    "UnknownPreKey",
    "UnknownSignedPreKey",
    "ReusedBaseKey",
    "SenderDistrusted",
    "SharedIdentityKey",
    "InvalidFingerprint",
    "InvalidVerificationUri",
    "InvalidMediaLink",
    "MediaIntegrityError",
    "InvalidPublicKey",
    "SignatureNotFromSender",
    "UntrustedKey",
    "ReplayedMessage",
    "StaleMessage",
    "InvalidPassphrase",
    "NoEligibleDevices",
    "OpenPgpFailure",
    "StorageError",
    "CorruptState",
]


class E2EEError(Exception):
    """Base of every error raised by this package."""


class UsageError(E2EEError):
    """The caller used the API wrongly (our fault, not the peer's)."""


class PeerError(E2EEError):
    """Input that came from a peer, the server or the network is unacceptable."""


class MalformedMessage(PeerError):
    """The bytes do not parse as the expected structure (protobuf, framing, lengths)."""


class UnsupportedVersion(MalformedMessage):
    """A version byte or format marker we do not speak."""


class RestrictedXml(MalformedMessage):
    """XML uses a feature we refuse (DTD, entity, processing instruction, comment) or exceeds a
    named size, depth or count limit (RFC 6120 restricted XML)."""


class MalformedEnvelope(MalformedMessage):
    """Decrypted OMEMO 2 content is not a well-formed XEP-0420 ``<envelope>``."""


class AffixMismatch(PeerError):
    """An SCE ``<from>`` or ``<to>`` affix names someone else than the stanza does."""


class DecryptionFailed(PeerError):
    """A message could not be decrypted."""


class AuthenticationFailed(DecryptionFailed):
    """A MAC, tag or padding check failed.  Deliberately carries no detail."""

    def __init__(self) -> None:
        super().__init__("authentication failed")


class InvalidSignature(PeerError):
    """A signature (signed prekey, device label, OpenPGP message signature) does not verify,
    is missing, or is not the single valid signature a message must carry."""

    def __init__(self) -> None:
        super().__init__("invalid signature")


class InvalidKey(PeerError):
    """A public key is malformed, non-canonical or of low order."""


class InvalidBundle(PeerError):
    """A published bundle is structurally unacceptable."""


class DuplicateMessage(DecryptionFailed):
    """The message was already decrypted (or its key is gone): ignore it silently."""


class TooManySkippedKeys(DecryptionFailed):
    """A header asks us to skip more message keys than the named limits allow."""


class NoSession(DecryptionFailed):
    """There is no session to decrypt this message with.  ``jid``, ``device_id`` and
    ``namespace`` name the sender's device: the embedder may build a session with it and send
    an empty message (XEP-0384: "build a session and send an empty message")."""

    def __init__(self, message: str, jid: str = "", device_id: int = 0, namespace: str = "") -> None:
        super().__init__(message)
        self.jid = jid
        self.device_id = device_id
        self.namespace = namespace


class MissingPreKey(PeerError):
    """A key exchange without a one-time prekey (OMEMO requires one)."""


class UnknownPreKey(PeerError):
    """A key exchange names a one-time prekey we do not have (any more)."""


class UnknownSignedPreKey(PeerError):
    """A key exchange names a signed prekey we do not have (any more)."""


class ReusedBaseKey(PeerError):
    """A key exchange reuses a base (ephemeral) key already used with that prekey."""


class SenderDistrusted(PeerError):
    """The sending device's identity key is distrusted: its messages are refused."""


class SharedIdentityKey(PeerError):
    """A legacy OMEMO key exchange from a JID shows an identity key already known for another
    JID (catalogue D7, unknown key-share): legacy messages do not name their sender, so it may be
    that JID's message forwarded.  Refused before anything is decrypted or stored; the user can
    verify the key for this JID to accept it.  ``other_jids`` are the JIDs the key is known for."""

    def __init__(self, message: str, other_jids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.other_jids = other_jids


class InvalidFingerprint(PeerError):
    """Fingerprint text (typed, pasted or scanned) is not an OMEMO or OpenPGP fingerprint."""


class InvalidVerificationUri(PeerError):
    """A scanned or pasted verification URI is malformed or carries no usable fingerprint."""


class InvalidMediaLink(MalformedMessage):
    """An ``aesgcm://`` link (XEP-0454) is malformed: a bad host or path, a key-and-IV fragment
    of the wrong length or not hex, or (when building one) an upload URL that is not ``https://``."""


class MediaIntegrityError(AuthenticationFailed):
    """A downloaded file failed its AES-256-GCM tag check: it was modified or truncated, or the
    link carries another key.  Nothing of its plaintext is kept.  Carries no detail."""

    def __init__(self) -> None:
        DecryptionFailed.__init__(self, "the file failed its integrity check (modified, truncated or wrong key)")


class InvalidPublicKey(PeerError):
    """A published OpenPGP public key is unacceptable: too large, not a v4 transferable public
    key, not the fingerprint its node names, no ``xmpp:`` user id of the account that published
    it, revoked or expired."""


class SignatureNotFromSender(PeerError):
    """An OpenPGP message carries a valid signature, but by a key the stanza's sender did not
    announce in their key metadata (a forwarded or foreign message)."""


class UntrustedKey(PeerError):
    """An OpenPGP message is signed by one of the sender's announced keys, but the user has not
    trusted that key (it awaits a decision)."""


class ReplayedMessage(DuplicateMessage):
    """An OpenPGP ``<signcrypt/>`` that was already accepted (same signer and content) or that
    is older than what the replay memory covers: ignore it."""


class StaleMessage(PeerError):
    """The ``<time/>`` of an OpenPGP ``<signcrypt/>`` is implausible: too far from the delay
    stamp or receive time, in the future, or older than the replay memory."""


class InvalidPassphrase(UsageError):
    """A passphrase or backup code is malformed (wrong alphabet or length, or a line break or
    NUL that could reach GnuPG's passphrase channel); refused before GnuPG runs."""


class NoEligibleDevices(E2EEError):
    """A recipient can be reached neither with OMEMO nor with OpenPGP (no trusted device or key),
    and clear text was not explicitly allowed: nothing was encrypted or sent.  ``missing`` maps
    each such recipient to a sentence naming what is missing."""

    def __init__(self, missing: dict[str, str]) -> None:
        self.missing = dict(missing)
        super().__init__("; ".join(missing.values()))


class OpenPgpFailure(E2EEError):
    """The local OpenPGP implementation (GnuPG) failed at something that involves no peer
    input: key generation, export, or an encryption it should have been able to do."""


class StorageError(E2EEError):
    """The local state cannot be used."""


class CorruptState(StorageError):
    """Serialized local state does not parse or has an unknown version."""
