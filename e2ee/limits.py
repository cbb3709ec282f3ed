"""Named limits of the engine, in one place (libsignal ``consts.rs`` style).

Changing one of these changes behaviour that tests and peers depend on; each says where its
value comes from.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

#: Most message keys one incoming message may make us skip (derive and store), counted over
#: the old receiving chain and the new one together.  XEP-0384 suggests about 1000; it is also
#: python-omemo's default.  Checked before any key is derived.
MAX_SKIP: Final = 1000

#: Most skipped message keys kept per session; the oldest are evicted first (FIFO).
MAX_SKIPPED_KEYS_PER_SESSION: Final = 1000

#: Highest message counter a sending chain may reach (the wire field is a uint32).
MAX_CHAIN_COUNTER: Final = 2**32 - 1

#: Length of the OMEMO 2 ratchet MAC (HMAC-SHA-256 truncated).
MAC_LEN_OMEMO2: Final = 16

#: Length of the legacy OMEMO (libsignal v3) ratchet MAC.
MAC_LEN_LEGACY: Final = 8

#: Previous receiving chains remembered per session, so that a replayed message on one of
#: them is recognised as a duplicate (libsignal keeps 5 old receiving chains).
MAX_OLD_CHAINS: Final = 5

# ---- XML input (security catalogue I1-I3, X6) -------------------------------------------

#: Oldest expat (``pyexpat.EXPAT_VERSION``) :mod:`e2ee.xmlsafe` accepts: 2.4 brought billion-laughs
#: protection, 2.4.5 the namespace-separator fix (CVE-2022-25236), 2.5.0 CVE-2022-43680.
MIN_EXPAT_VERSION: Final = (2, 5, 0)

#: Largest XML document :mod:`e2ee.xmlsafe` parses, in UTF-8 bytes, checked before parsing.
#: Prosody's default ``c2s_stanza_size_limit`` (256 KiB); nothing we decrypt can be larger than
#: the stanza that carried it.
MAX_XML_BYTES: Final = 256 * 1024

#: Deepest element nesting accepted (root = depth 1).  Catalogue I3 suggests 64 below the stanza.
MAX_XML_DEPTH: Final = 64

#: Most elements in one parsed document or checked element tree.  Room for an encrypted element
#: with :data:`MAX_KEY_ELEMENTS` keys, each in its own ``<keys>`` group.
MAX_XML_ELEMENTS: Final = 4096

#: Most attributes on one element.
MAX_XML_ATTRIBUTES: Final = 64

#: Most ``<key>`` elements (and separately most ``<keys>`` groups) in one ``<encrypted>``
#: header (catalogue I2).  1000 keys of ~200 bytes of base64 already fill a 256 KiB stanza.
MAX_KEY_ELEMENTS: Final = 1000

#: Largest decoded content of one ``<key>`` element.  A key exchange carrying 48 bytes of key
#: material is about 200 bytes in both protocol versions.
MAX_KEY_BYTES: Final = 1024

#: Largest decoded ``<payload>``: a padded envelope of :data:`MAX_XML_BYTES` plus one AES block.
MAX_PAYLOAD_BYTES: Final = MAX_XML_BYTES + 16

#: Fewest one-time prekeys an OMEMO 2 bundle may hold (XEP-0384 v0.9: never fewer than 25).
MIN_PREKEYS_OMEMO2: Final = 25

#: Fewest one-time prekeys a legacy bundle may hold (XEP-0384 v0.3: MUST be at least 20).
MIN_PREKEYS_LEGACY: Final = 20

#: Most one-time prekeys accepted in a bundle (everybody publishes about 100; catalogue X6
#: demands a bound).
MAX_PREKEYS_PER_BUNDLE: Final = 1000

#: Most characters of text and attribute values in a bundle tree (catalogue X6: a 1 MiB bundle is
#: refused even when the bulk sits in elements we would ignore).  1000 prekeys take about 60 KiB.
MAX_BUNDLE_TEXT: Final = 128 * 1024

#: Most devices accepted in one device list; a longer list is rejected as a whole.
MAX_DEVICES_PER_LIST: Final = 500

#: Longest JID accepted in XML attributes (RFC 7622: three parts of at most 1023 bytes each).
MAX_JID_LENGTH: Final = 3071

#: Largest difference between an SCE ``<time>`` affix and the reference time (delay stamp or
#: receive time) that is not flagged as suspicious.
SCE_TIME_WINDOW: Final = timedelta(minutes=10)

#: Device ids we accept as senders and as device-list entries (XEP-0384: ids are random in
#: ``[1, 2^31 - 1]``; Java clients cannot represent larger ones).
DEVICE_ID_MIN: Final = 1
DEVICE_ID_MAX: Final = 2**31 - 1

#: Signed-prekey and prekey ids accepted in bundles.  XEP-0384 and the protobuf schemas make
#: them unsigned integers; deployed stacks publish 0 (Converse.js/libomemo: signed prekey 0 and
#: prekeys 0-99 in both namespaces), libsignal (Conversations, Dino) ids up to 2^24 - 1 and QXmpp
#: (Kaidan) ids in [1, 2^31 - 1], so 0 is accepted
#: (issue 20; the catalogue X6 once refused it).  Ids of 2^31 and above stay invalid.  Our own
#: ids stay in [1, OWN_PREKEY_ID_MAX].
PREKEY_ID_MIN: Final = 0
PREKEY_ID_MAX: Final = 2**31 - 1

# ---- own bundle, sessions and business rules (XEP-0384) ----------------------------------

#: One-time prekeys we publish (XEP-0384: about 100; Conversations, Dino, python-omemo: 100).
PREKEY_COUNT: Final = 100

#: Refill the one-time prekeys whenever fewer than this many unused ones remain.  Every
#: consumed prekey forces a republication anyway (to remove it), so we top up at the same time,
#: as python-omemo does (it refills at 99).
PREKEY_REFILL_THRESHOLD: Final = PREKEY_COUNT

#: Highest one-time/signed prekey id we generate: libsignal-based stores (Conversations, Dino)
#: use ids below 2^24 (``omemo-legacy.md`` section 4).
OWN_PREKEY_ID_MAX: Final = 2**24 - 2

#: Signed-prekey rotation period (python-omemo: 7 days; XEP-0384: one week to one month).
SPK_ROTATION: Final = timedelta(days=7)

#: How long the previous signed prekey still accepts key exchanges after a rotation (one more
#: rotation period, as XEP-0384 suggests); afterwards its private key is deleted.
SPK_GRACE: Final = SPK_ROTATION

#: After decrypting a message whose counter shows this many messages from the peer without an
#: answer from us, send an empty message (heartbeat).  python-omemo ``STALENESS_MAGIC_NUMBER``.
HEARTBEAT_THRESHOLD: Final = 53

#: A session we started and that never got an answer is not used for sending after this long;
#: a fresh bundle is fetched instead (catalogue R12; libsignal expires them after 30 days).
STALE_SESSION_AGE: Final = timedelta(days=30)

#: Earlier sessions kept per peer device after a newer key exchange replaced them, so that
#: messages still in flight on them (simultaneous initiation, late delivery) decrypt.
MAX_ARCHIVED_SESSIONS: Final = 2

# ---- verification URIs and fingerprints (e2ee.verification) ---------------------------------

#: Longest verification URI :func:`parse_uri` looks at, in characters (checked first).  A QR code
#: holds at most 2953 bytes; links from elsewhere get room for a 3071-byte JID, percent-encoded.
MAX_URI_LENGTH: Final = 16 * 1024

#: Most fingerprints (``omemo-sid-*`` and ``omemo``) one URI may carry.  Legitimate codes hold
#: the own device plus the verified other own devices: a few, rarely a dozen.
MAX_URI_FINGERPRINTS: Final = 64

#: Longest fingerprint text :func:`parse_fingerprint` and :func:`parse_openpgp_fingerprint`
#: accept, in characters (room for any spacing of 66 hex digits).
MAX_FINGERPRINT_TEXT: Final = 512


# ---- media sharing (XEP-0454) --------------------------------------------------------------

#: Bytes read, encrypted, sent, received and decrypted at a time when a file is streamed: the
#: memory a transfer needs is a small multiple of this, whatever the file's size.
MEDIA_CHUNK_SIZE: Final = 64 * 1024

#: Longest ``aesgcm://`` link accepted, in characters (URL and 88 or 96 hex digits of fragment).
MAX_MEDIA_LINK_CHARS: Final = 4096

#: Largest download accepted by default (ciphertext and tag), in bytes: a hostile server cannot
#: fill the disk with an endless body.  ``download(..., max_size=...)`` changes it per call.
MAX_MEDIA_DOWNLOAD: Final = 1024 * 1024 * 1024

#: Longest file name (in characters) suggested for a received file; the extension is kept.
MAX_MEDIA_FILENAME: Final = 120

# ---- OpenPGP for XMPP (XEP-0373/0374, e2ee.openpgp) ------------------------------------------

#: Largest decoded ``<openpgp/>`` message accepted (it travels in one stanza).
MAX_OPENPGP_MESSAGE_BYTES: Final = MAX_XML_BYTES

#: Largest transferable public key accepted from a ``public-keys:FPR`` node (XEP-0373: keys are
#: tens of KB; catalogue P3 asks for a bound), and largest secret-key backup.
MAX_OPENPGP_KEY_BYTES: Final = 128 * 1024

#: Most OpenPGP packets in one transferable key, and most user ids (catalogue P3: a key with
#: thousands of user ids or signatures is refused before GnuPG sees it).
MAX_OPENPGP_KEY_PACKETS: Final = 256
MAX_OPENPGP_KEY_UIDS: Final = 16

#: Most keys one account may announce in its ``urn:xmpp:openpgp:0:public-keys`` metadata.
MAX_OPENPGP_ANNOUNCED_KEYS: Final = 32

#: Largest difference between a ``<signcrypt/>`` ``<time/>`` and the reference (delay stamp or
#: receive time) that is accepted, and how far in the future it may lie.
OPENPGP_TIME_WINDOW: Final = timedelta(minutes=10)

#: Oldest ``<signcrypt/>`` accepted at all, and how long digests of accepted ones are
#: remembered to refuse replays: every message young enough to be accepted is in the replay
#: memory (catalogue P1).
OPENPGP_MAX_AGE: Final = timedelta(days=30)

#: Most digests remembered per UTC day (by ``<time/>``); beyond it the oldest of that day are
#: dropped and that day's older messages are refused.
OPENPGP_REPLAY_PER_DAY: Final = 5000

#: Length range of the random ``<rpad/>`` text (letters; nbxmpp writes 30-50).
OPENPGP_RPAD_MIN: Final = 16
OPENPGP_RPAD_MAX: Final = 64
