"""The OpenPGP for XMPP backend (XEP-0373/0374, namespace ``urn:xmpp:openpgp:0``) of one account.

It shares the engine's storage, trust store, clock and randomness, and runs every operation in
one storage transaction (state changes only on success).  The OpenPGP operations themselves are
done by the :class:`~e2ee.openpgp.crypto.OpenPgpCrypto` object the embedder passes (GnuPG in a
subprocess, outside the sans-I/O core).

Records (all inside the engine's storage, hence sealed by the keystore):

* ``own`` / ``openpgp``: our key -- primary fingerprint, transferable secret key *protected with
  a random 256-bit passphrase* kept in the same record, public key, creation time;
* ``openpgp`` / ``<bare JID>``: the fingerprints the account announced in its metadata node
  (None until fetched) and the public keys fetched and accepted for it;
* ``openpgp`` / ``seen/...``: the replay memory (:mod:`e2ee.openpgp.replay`);
* ``trust`` / ``<bare JID>``: trust of each key by its 20-byte fingerprint, beside the OMEMO keys.

Receiving (:meth:`OpenPgp.decrypt`) accepts a message only when decryption, integrity protection
and exactly one signature succeed; the signature's *primary* fingerprint is one the stanza's
sender announced and we fetched, checked and trust; our JID (or, for our own sent copies, the
stanza's ``to``) is among the ``<to/>`` elements; the ``<time/>`` is plausible; and the message
was not accepted before.  Anything else raises a typed error and changes nothing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import jsonrec
from ..backend import BODY_TAG as _BODY
from ..backend import OPEN_ACCESS as _OPEN
from ..context import bare as _bare
from ..errors import (
    AffixMismatch,
    CorruptState,
    InvalidPassphrase,
    InvalidPublicKey,
    MalformedMessage,
    NoEligibleDevices,
    NoSession,
    OpenPgpFailure,
    SenderDistrusted,
    SignatureNotFromSender,
    StaleMessage,
    UntrustedKey,
    UsageError,
)
from ..jid import bare_jid_key
from ..limits import (
    MAX_OPENPGP_KEY_BYTES,
    MAX_XML_BYTES,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    OPENPGP_RPAD_MAX,
    OPENPGP_RPAD_MIN,
    OPENPGP_TIME_WINDOW,
)
from ..results import Decrypted, Effect, FetchPublicKey, FetchPublicKeys, Publish
from ..trust import TrustLevel
from ..verification import _jid_problem
from ..xmlsafe import check_element
from ..xmpptime import format_timestamp
from . import xml as ox
from .crypto import OpenPgpCrypto, PublicKey, SecretKey
from .packets import KeyBlock, parse_key_block, parse_key_blocks, public_from_secret
from .replay import ReplayMemory, digest
from .secretkey import is_protected, protect, unprotect

if TYPE_CHECKING:
    from ..context import Context

__all__ = [
    "OpenPgp",
    "OpenPgpKey",
    "OpenPgpMessage",
    "Backup",
    "BACKUP_ALPHABET",
    "make_backup_code",
    "parse_backup_code",
]

NS = ox.NS
_TABLE = "openpgp"
_OWN_KEY = "openpgp"
_VERSION = 1
_WHITELIST = ("pubsub#access_model", "whitelist")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: XEP-0373 §5.4: the backup code alphabet (no 0 and no O).
BACKUP_ALPHABET = "123456789ABCDEFGHIJKLMNPQRSTUVWXYZ"


# ---- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenPgpKey:
    """What we know of one OpenPGP key of an account."""

    fingerprint: str  #: 40 upper-case hex (primary key)
    announced: bool  #: listed in the account's current metadata
    available: bool  #: fetched, checked and stored (usable)
    trust: TrustLevel | None
    own: bool = False  #: this device's own key


@dataclass(frozen=True, slots=True)
class OpenPgpMessage:
    """An ``<openpgp/>`` element to send, and the key fingerprints it was encrypted to, per
    recipient (our own account included)."""

    element: ET.Element
    fingerprints: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Backup:
    """A secret-key backup: the code to show the user once, and the publication to run."""

    code: str = field(repr=False)
    effects: tuple[Effect, ...]


@dataclass(slots=True)
class _Own:
    fingerprint: str
    secret: bytes
    public: bytes
    passphrase: str
    created: float

    @property
    def secret_key(self) -> SecretKey:
        return SecretKey(self.fingerprint, self.secret, self.passphrase)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.fingerprint, self.public)


@dataclass(slots=True)
class _Contact:
    announced: dict[str, float | None] | None  #: None: metadata never fetched
    keys: dict[str, bytes]


# ---- backup codes ---------------------------------------------------------------------------


def make_backup_code(rng: Any) -> str:
    """24 characters of :data:`BACKUP_ALPHABET` from ``rng`` (unbiased), as six groups of four."""
    chars: list[str] = []
    limit = 256 - 256 % len(BACKUP_ALPHABET)
    while len(chars) < 24:
        for b in rng(32):
            if b < limit and len(chars) < 24:
                chars.append(BACKUP_ALPHABET[b % len(BACKUP_ALPHABET)])
    return "-".join("".join(chars[i : i + 4]) for i in range(0, 24, 4))


def parse_backup_code(text: str) -> str:
    """A typed backup code in its canonical form (upper case, dashes; spaces and a missing dash
    grouping are tolerated).  Anything else -- in particular line breaks or NUL, which could
    reach GnuPG's passphrase channel -- raises :class:`~e2ee.errors.InvalidPassphrase` before
    GnuPG runs."""
    if not isinstance(text, str) or len(text) > 64:
        raise InvalidPassphrase("a backup code is 24 characters in six groups of four")
    if any(c in text for c in "\r\n\x00"):
        raise InvalidPassphrase("a backup code cannot contain line breaks or NUL")
    compact = "".join(text.split()).upper().replace("-", "")
    if len(compact) != 24 or any(c not in BACKUP_ALPHABET for c in compact):
        raise InvalidPassphrase(f"a backup code is 24 characters of {BACKUP_ALPHABET} in six groups of four")
    code = "-".join(compact[i : i + 4] for i in range(0, 24, 4))
    return code


def _uid_jid(uid: str) -> str | None:
    """The JID of an ``xmpp:`` user id (``xmpp:jid`` or, leniently, ``Name <xmpp:jid>``)."""
    if uid.startswith("xmpp:"):
        jid = uid[5:]
    elif uid.endswith(">") and "<xmpp:" in uid:
        jid = uid[uid.rindex("<xmpp:") + 6 : -1]
    else:
        return None
    if "/" in jid or not bare_jid_key(jid) or _jid_problem(jid) is not None:
        return None
    return bare_jid_key(jid)


def _has_uid(uids: Sequence[str], jid: str) -> bool:
    return any(_uid_jid(u) == jid for u in uids)


# ---- the backend ----------------------------------------------------------------------------


class OpenPgp:
    """OpenPGP for XMPP over the engine's shared context (use ``Engine.openpgp``)."""

    namespace = NS

    def __init__(self, ctx: Context, crypto: OpenPgpCrypto) -> None:
        self._ctx = ctx
        self.crypto = crypto
        self._replay = ReplayMemory(ctx.storage)

    @property
    def jid(self) -> str:
        return self._ctx.own.jid

    # ------------------------------------------------------------------ records

    def _load_own(self) -> _Own | None:
        raw = self._ctx.storage.get("own", _OWN_KEY)
        if raw is None:
            return None
        rec = jsonrec.load(raw, _VERSION, "OpenPGP key record")
        try:
            return _Own(
                str(rec["fingerprint"]),
                bytes.fromhex(rec["secret"]),
                bytes.fromhex(rec["public"]),
                str(rec["passphrase"]),
                float(rec["created"]),
            )
        except (KeyError, TypeError, ValueError):
            raise CorruptState("OpenPGP key record is damaged") from None

    def _save_own(self, own: _Own) -> None:
        rec = {
            "fingerprint": own.fingerprint,
            "secret": own.secret.hex(),
            "public": own.public.hex(),
            "passphrase": own.passphrase,
            "created": own.created,
        }
        self._ctx.storage.put("own", _OWN_KEY, jsonrec.dump(_VERSION, rec))

    def _own_required(self) -> _Own:
        own = self._load_own()
        if own is None:
            raise UsageError("this device has no OpenPGP key yet (generate one: OpenPgp.publish)")
        return own

    def _contact(self, jid: str) -> _Contact:
        raw = self._ctx.storage.get(_TABLE, jid)
        if raw is None:
            return _Contact(None, {})
        rec = jsonrec.load(raw, _VERSION, "OpenPGP contact record")
        try:
            announced = rec["announced"]
            return _Contact(
                None
                if announced is None
                else {str(k): (None if v is None else float(v)) for k, v in announced.items()},
                {str(k): bytes.fromhex(v) for k, v in rec["keys"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CorruptState("OpenPGP contact record is damaged") from None

    def _save_contact(self, jid: str, c: _Contact) -> None:
        rec = {"announced": c.announced, "keys": {k: v.hex() for k, v in c.keys.items()}}
        self._ctx.storage.put(_TABLE, jid, jsonrec.dump(_VERSION, rec))

    # ------------------------------------------------------------------ own key

    @property
    def fingerprint(self) -> str | None:
        """Our key's primary fingerprint (40 upper-case hex), or None before one exists."""
        own = self._load_own()
        return own.fingerprint if own else None

    def generate(self) -> str:
        """Create our key pair (user id ``xmpp:<our JID>`` and nothing else) unless one exists;
        returns its fingerprint.  The secret key is protected with a random passphrase before it
        ever reaches a disk; both go into the storage."""
        own = self._load_own()
        if own is not None:
            return own.fingerprint
        jid = self.jid
        if _jid_problem(jid) is not None or "/" in jid:
            raise UsageError(f"{jid!r} cannot be put in an OpenPGP user id")
        uid = f"xmpp:{jid}"
        passphrase = self._ctx.rng(32).hex()
        secret = self.crypto.generate_key(uid, passphrase)
        block = parse_key_block(secret, OpenPgpFailure, secret=True)
        if not is_protected(block, OpenPgpFailure):
            raise OpenPgpFailure("the OpenPGP implementation returned an unprotected secret key")
        if block.user_ids != (uid,):
            raise OpenPgpFailure(f"the new key has user ids {block.user_ids!r}, expected only {uid!r}")
        new = _Own(
            block.fingerprint,
            secret,
            public_from_secret(block, OpenPgpFailure),
            passphrase,
            self._ctx.now().timestamp(),
        )
        self._ctx.run(lambda: self._save_own(new))
        return new.fingerprint

    def _metadata_effect(self, own: _Own) -> Publish:
        mine = self._contact(self.jid).announced or {}
        keys: dict[str, datetime | None] = {}
        for fpr, ts in mine.items():
            keys[fpr] = None if ts is None else datetime.fromtimestamp(ts, UTC)
        keys[own.fingerprint] = datetime.fromtimestamp(own.created, UTC)
        return Publish(ox.PUBLIC_KEYS_NODE, "current", ox.build_metadata(keys), (_OPEN,))

    def publish(self) -> list[Effect]:
        """Everything to announce our key (generated first when missing): the public key's data
        node, then the metadata node listing it beside the account's other announced keys.
        Fetch our own metadata first (:meth:`on_public_keys`) so that no key is dropped."""
        self.generate()

        def op() -> list[Effect]:
            own = self._own_required()
            date = datetime.fromtimestamp(own.created, UTC)
            data = Publish(
                ox.public_key_node(own.fingerprint),
                format_timestamp(self._ctx.now()),
                ox.build_pubkey(own.public, date),
                (_OPEN,),
            )
            meta = self._metadata_effect(own)
            contact = self._contact(self.jid)
            announced = dict(contact.announced or {})
            announced[own.fingerprint] = own.created
            self._save_contact(self.jid, _Contact(announced, contact.keys))
            return [data, meta]

        return self._ctx.run(op)

    # ------------------------------------------------------------------ contacts' keys

    def prepare(self, jids: Sequence[str]) -> list[Effect]:
        """The fetches needed before encrypting to ``jids`` or checking their signatures: the
        metadata of accounts never fetched, and announced keys not stored yet."""
        effects: list[Effect] = []
        own = self._load_own()
        for jid in dict.fromkeys(_bare(j) for j in jids):
            c = self._contact(jid)
            if c.announced is None:
                effects.append(FetchPublicKeys(jid))
                continue
            for fpr in c.announced:
                if fpr not in c.keys and not (own is not None and fpr == own.fingerprint):
                    effects.append(FetchPublicKey(jid, fpr))
        return effects

    def on_public_keys(self, jid: str, element: ET.Element | None) -> list[Effect]:
        """Key metadata arrived (PEP push or fetch) for the bare JID it came from; ``element``
        is the ``<public-keys-list/>`` or None when the node or item does not exist.  Returns
        the key fetches it calls for, and a republication when our own key is missing from our
        own list.  Raises :class:`~e2ee.errors.MalformedMessage`; nothing is stored then."""
        jid = _bare(jid)
        announced: dict[str, float | None] = {}
        if element is not None:
            check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
            announced = {k: (v.timestamp() if v else None) for k, v in ox.parse_metadata(element).items()}

        def op() -> list[Effect]:
            c = self._contact(jid)
            self._save_contact(jid, _Contact(announced, c.keys))
            own = self._load_own()
            effects: list[Effect] = []
            if jid == self.jid and own is not None and own.fingerprint not in announced:
                effects.append(self._metadata_effect(own))
            for fpr in announced:
                if fpr not in c.keys and not (own is not None and fpr == own.fingerprint):
                    effects.append(FetchPublicKey(jid, fpr))
            return effects

        return self._ctx.run(op)

    def on_public_key(self, jid: str, fingerprint: str, element: ET.Element | None) -> list[Effect]:
        """A public key arrived from node ``public-keys:<fingerprint>`` of ``jid``.  It must be a
        v4 transferable public key within the size limits, with exactly that primary
        fingerprint, a self-signed user id ``xmpp:<jid>``, usable for encryption, neither revoked
        nor expired.  A new key gets the trust policy's first-sight level; a key that joins
        another key of the same account is left undecided.  Raises
        :class:`~e2ee.errors.InvalidPublicKey` or :class:`~e2ee.errors.MalformedMessage`;
        nothing is stored then."""
        jid = _bare(jid)
        fpr = ox.normalise_fingerprint(fingerprint, UsageError)
        if element is None:
            return []
        check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
        data = ox.parse_pubkey(element)
        block = parse_key_block(data, InvalidPublicKey, secret=False)
        if block.fingerprint != fpr:
            raise InvalidPublicKey(f"the key published under {fpr} has fingerprint {block.fingerprint}")
        if not _has_uid(block.user_ids, jid):
            raise InvalidPublicKey(f"the key {fpr} has no user id xmpp:{jid}")
        own = self._load_own()
        if own is not None and fpr == own.fingerprint and jid != self.jid:
            raise InvalidPublicKey(f"{jid} published our own key")
        info = self.crypto.inspect_public_key(data)
        if info.fingerprint != fpr:
            raise InvalidPublicKey("the key's fingerprint does not match")
        if info.revoked or info.expired:
            raise InvalidPublicKey(f"the key {fpr} is {'revoked' if info.revoked else 'expired'}")
        if not _has_uid(info.user_ids, jid):
            raise InvalidPublicKey(f"the key {fpr} has no valid self-signed user id xmpp:{jid}")
        if not info.can_encrypt:
            raise InvalidPublicKey(f"the key {fpr} cannot encrypt")

        def op() -> list[Effect]:
            c = self._contact(jid)
            others = [k for k in c.keys if k != fpr]
            c.keys[fpr] = data
            self._save_contact(jid, c)
            self._ctx.trust.first_sight(jid, bytes.fromhex(fpr), replaces_known_key=bool(others))
            return []

        return self._ctx.run(op)

    def keys(self, jid: str) -> list[OpenPgpKey]:
        """Every OpenPGP key of ``jid`` we know of (announced or stored), with its trust."""
        jid = _bare(jid)
        c = self._contact(jid)
        levels = self._ctx.trust.levels(jid)
        own = self._load_own() if jid == self.jid else None
        fprs = dict.fromkeys([*(c.announced or {}), *c.keys])
        if own is not None:
            fprs = dict.fromkeys([own.fingerprint, *fprs])
        out = []
        for fpr in fprs:
            mine = own is not None and fpr == own.fingerprint
            out.append(
                OpenPgpKey(
                    fpr,
                    fpr in (c.announced or {}),
                    mine or fpr in c.keys,
                    TrustLevel.VERIFIED if mine else levels.get(bytes.fromhex(fpr)),
                    own=mine,
                )
            )
        return out

    def _trusted(self, jid: str, own: _Own | None) -> list[PublicKey]:
        c = self._contact(jid)
        levels = self._ctx.trust.levels_view(jid)
        out = []
        for fpr in c.announced or {}:
            data = c.keys.get(fpr)
            level = levels.get(bytes.fromhex(fpr))
            if data is not None and level is not None and level.trusted and not (own and fpr == own.fingerprint):
                out.append(PublicKey(fpr, data))
        return out

    def can_encrypt_to(self, jid: str) -> bool:
        """Whether this device has a key and ``jid`` has at least one announced, fetched and
        trusted key."""
        own = self._load_own()
        return own is not None and bool(self._trusted(_bare(jid), own))

    def describe_missing(self, jid: str) -> str:
        """Why nothing can be encrypted to ``jid`` with OpenPGP (for error messages)."""
        jid = _bare(jid)
        if self._load_own() is None:
            return "this device has no OpenPGP key yet"
        c = self._contact(jid)
        if c.announced is None:
            return "its OpenPGP keys were not fetched"
        if not c.announced:
            return "it announces no OpenPGP key"
        levels = self._ctx.trust.levels_view(jid)
        undecided = sum(1 for f in c.announced if f in c.keys and levels.get(bytes.fromhex(f)) is TrustLevel.UNDECIDED)
        refused = sum(1 for f in c.announced if f in c.keys and levels.get(bytes.fromhex(f)) is TrustLevel.DISTRUSTED)
        unusable = sum(1 for f in c.announced if f not in c.keys)
        parts = [
            f"{n} {what}"
            for n, what in ((undecided, "awaiting a trust decision"), (refused, "distrusted"), (unusable, "not usable"))
            if n
        ]
        return "its OpenPGP keys: " + ", ".join(parts)

    # ------------------------------------------------------------------ messages

    def _rpad(self) -> str:
        rng = self._ctx.rng
        span = OPENPGP_RPAD_MAX - OPENPGP_RPAD_MIN + 1
        length = OPENPGP_RPAD_MIN + int.from_bytes(rng(2), "big") % span
        limit = 256 - 256 % len(_LETTERS)
        out: list[str] = []
        while len(out) < length:
            out += [_LETTERS[b % len(_LETTERS)] for b in rng(length) if b < limit]
        return "".join(out[:length])

    def encrypt(
        self, recipients: Sequence[str], body: str | None = None, *, content: Sequence[ET.Element] = ()
    ) -> OpenPgpMessage:
        """A ``<signcrypt/>`` with ``<to/>`` for every recipient, signed with our key and
        encrypted to every announced, fetched and trusted key of the recipients and to our own
        key(s).  Raises :class:`~e2ee.errors.NoEligibleDevices` (nothing encrypted) when a
        recipient has no such key."""
        if not recipients:
            raise UsageError("no recipients")
        if body is None and not content:
            raise UsageError("nothing to encrypt")
        own = self._own_required()
        jids = list(dict.fromkeys(_bare(j) for j in recipients))
        per: dict[str, tuple[str, ...]] = {}
        keys: dict[str, PublicKey] = {own.fingerprint: own.public_key}
        missing = {}
        for jid in jids:
            trusted = self._trusted(jid, own)
            if not trusted and jid != self.jid:
                missing[jid] = f"{jid} has no trusted OpenPGP key ({self.describe_missing(jid)})"
            per[jid] = tuple(k.fingerprint for k in trusted)
            keys.update((k.fingerprint, k) for k in trusted)
        if missing:
            raise NoEligibleDevices(missing)
        mine = self._trusted(self.jid, own)  # our other devices' keys, when trusted
        keys.update((k.fingerprint, k) for k in mine)
        per[self.jid] = (own.fingerprint, *(k.fingerprint for k in mine))
        payload = list(content)
        if body is not None:
            b = ET.Element(_BODY)
            b.text = body
            payload.insert(0, b)
        now = self._ctx.now()
        xml = ox.build_signcrypt(jids, now, self._rpad(), payload)
        message = self.crypto.encrypt_and_sign(xml, list(keys.values()), own.secret_key)
        # our own copy coming back (archive, carbon to this device) is then a duplicate, as an
        # OMEMO message of this device is; our other devices read it
        self._ctx.run(lambda: self._replay.remember(digest(own.fingerprint, xml), now, now))
        return OpenPgpMessage(ox.build_openpgp(message), per)

    def decrypt(
        self, element: ET.Element, sender: str, *, to: str | None = None, timestamp: datetime | None = None
    ) -> Decrypted:
        """Decrypt and check a received ``<openpgp/>``.

        ``sender`` is the stanza's bare ``from``; ``to`` its bare ``to`` (default: us);
        ``timestamp`` the delay stamp, or the receive time for live messages, or None when
        neither is known (then only the absolute age and future limits apply).  Returns
        :class:`~e2ee.results.Decrypted` (``device_id`` 0, ``identity_key`` the signer's
        20-byte fingerprint).  Raises :class:`~e2ee.errors.DecryptionFailed`,
        :class:`~e2ee.errors.InvalidSignature`, :class:`~e2ee.errors.SignatureNotFromSender`,
        :class:`~e2ee.errors.UntrustedKey`, :class:`~e2ee.errors.SenderDistrusted`,
        :class:`~e2ee.errors.MalformedMessage`, :class:`~e2ee.errors.AffixMismatch`,
        :class:`~e2ee.errors.StaleMessage` or :class:`~e2ee.errors.ReplayedMessage`; the
        stored state is unchanged then."""
        check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
        message = ox.parse_openpgp(element)
        sender = _bare(sender)
        stanza_to = _bare(to) if to else self.jid
        if sender != self.jid and stanza_to != self.jid:  # decided by the stanza: before GnuPG runs
            raise AffixMismatch("the message is not addressed to us")
        own = self._load_own()
        if own is None:
            raise NoSession("this device has no OpenPGP key")
        c = self._contact(sender)
        candidates = [PublicKey(f, c.keys[f]) for f in (c.announced or {}) if f in c.keys]
        if sender == self.jid:
            candidates.append(own.public_key)
        if not candidates:
            raise SignatureNotFromSender(f"{sender} announced no OpenPGP key we could fetch")
        verified = self.crypto.decrypt_and_verify(message, candidates, own.secret_key, MAX_XML_BYTES)
        signer = verified.primary_fingerprint
        if signer not in {k.fingerprint for k in candidates}:
            raise SignatureNotFromSender(f"signed by {signer}, which {sender} did not announce")
        if sender == self.jid and signer == own.fingerprint:
            level = TrustLevel.VERIFIED
        else:
            found = self._ctx.trust.level(sender, bytes.fromhex(signer))
            if found is TrustLevel.DISTRUSTED:
                raise SenderDistrusted(f"the OpenPGP key {signer} of {sender} is distrusted")
            if found is None or not found.trusted:
                raise UntrustedKey(f"the OpenPGP key {signer} of {sender} awaits a trust decision")
            level = found
        content = ox.parse_signcrypt(verified.data)
        if not any(bare_jid_key(t) == stanza_to for t in content.to):
            raise AffixMismatch(f"the <signcrypt/> is not addressed to {stanza_to}")
        now = self._ctx.now()
        if content.time > now + OPENPGP_TIME_WINDOW:
            raise StaleMessage(f"message time {content.time.isoformat()} lies in the future")
        if timestamp is not None and abs(content.time - timestamp) > OPENPGP_TIME_WINDOW:
            raise StaleMessage(f"message time {content.time.isoformat()} is far from {timestamp.isoformat()}")
        key = digest(signer, verified.data)

        def op() -> None:
            self._replay.check(key, content.time, now)
            self._replay.remember(key, content.time, now)

        self._ctx.run(op)
        return Decrypted(sender, 0, NS, level, bytes.fromhex(signer), content.body, content.payload, content.time)

    # ------------------------------------------------------------------ backup (XEP-0373 §5)

    def backup(self) -> Backup:
        """Encrypt our secret key (unprotected inside, as XEP-0373 §5 asks) under a new backup
        code and return the code and the publication to the owner-only node
        ``urn:xmpp:openpgp:0:secret-key``.  Show the code to the user; it is not stored."""
        own = self._own_required()
        code = make_backup_code(self._ctx.rng)
        block = parse_key_block(own.secret, CorruptState, secret=True)
        clear = unprotect(block, own.passphrase, CorruptState)
        encrypted = self.crypto.encrypt_symmetric(clear, code)
        publish = Publish(ox.SECRET_KEY_NODE, "current", ox.build_secretkey(encrypted), (_WHITELIST,))
        return Backup(code, (publish,))

    def restore(self, element: ET.Element, code: str, *, replace: bool = False) -> str:
        """Restore our key from a ``<secretkey/>`` (fetched from the owner-only node) and its
        backup code; returns the fingerprint.  The key is protected with a fresh random
        passphrase before it is stored or given to GnuPG.  A device that already has another key
        keeps it unless ``replace``.  Raises :class:`~e2ee.errors.InvalidPassphrase` (malformed
        code, before GnuPG runs), :class:`~e2ee.errors.DecryptionFailed` (wrong code or damaged
        backup), :class:`~e2ee.errors.MalformedMessage` or
        :class:`~e2ee.errors.InvalidPublicKey`; nothing is stored then."""
        code = parse_backup_code(code)
        check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
        encrypted = ox.parse_secretkey(element)
        clear = self.crypto.decrypt_symmetric(encrypted, code, MAX_OPENPGP_KEY_BYTES)
        blocks = [b for b in parse_key_blocks(clear, MalformedMessage) if b.secret]
        block: KeyBlock | None = next((b for b in blocks if _has_uid(b.user_ids, self.jid)), None)
        if block is None:
            raise MalformedMessage(f"the backup holds no secret key for xmpp:{self.jid}")
        passphrase = self._ctx.rng(32).hex()
        protected = protect(block, passphrase, self._ctx.rng, MalformedMessage)
        public = public_from_secret(block, MalformedMessage)
        info = self.crypto.inspect_public_key(public)
        if info.fingerprint != block.fingerprint or not _has_uid(info.user_ids, self.jid):
            raise InvalidPublicKey(f"the backed-up key has no valid user id xmpp:{self.jid}")
        if info.revoked or info.expired or not info.can_encrypt:
            raise InvalidPublicKey("the backed-up key is revoked, expired or cannot encrypt")
        current = self._load_own()
        if current is not None and current.fingerprint != block.fingerprint and not replace:
            raise UsageError(f"this device already has OpenPGP key {current.fingerprint} (restore with replace=True)")
        new = _Own(block.fingerprint, protected, public, passphrase, self._ctx.now().timestamp())
        self._ctx.run(lambda: self._save_own(new))
        return new.fingerprint

    def after_rollback(self) -> None:
        """The storage was restored from an older copy: refuse every message older than now
        (the replay memory may have lost what was accepted since)."""
        self._replay.refuse_before(self._ctx.now())
