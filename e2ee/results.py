"""What the engine hands back: effects for the embedder to carry out, and result values.

Effects are instructions, not callbacks: the engine never performs I/O.  The embedder runs
them (with slixmpp's PEP/pubsub plugins, or anything else) and feeds the answers back through
:meth:`~e2ee.engine.Engine.on_device_list` and :meth:`~e2ee.engine.Engine.on_bundle`.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

from .nodes import DEVICE_LIST_NODES, bundle_fetch_item, bundle_node
from .trust import TrustLevel

__all__ = [
    "Effect",
    "Publish",
    "FetchDeviceList",
    "FetchBundle",
    "SendMessage",
    "FetchPublicKeys",
    "FetchPublicKey",
    "Outcome",
    "DeviceOutcome",
    "EncryptResult",
    "DecryptResult",
    "Decrypted",
    "EmptyMessage",
    "Duplicate",
    "NotForThisDevice",
    "UntrustedIdentity",
]


# ---- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` as item ``item_id`` of our PEP node ``node`` with these
    publish-options (``pubsub#access_model=open``, and ``pubsub#max_items=max`` for the OMEMO 2
    bundles node).  On precondition-not-met, reconfigure the node and publish again."""

    node: str
    item_id: str
    payload: ET.Element
    options: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class FetchDeviceList:
    """Fetch ``jid``'s device list in ``namespace`` (the newest item of PEP node ``node``); pass
    the item payload (or None when the node or item does not exist) to
    :meth:`~e2ee.engine.Engine.on_device_list`."""

    jid: str
    namespace: str

    @property
    def node(self) -> str:
        return DEVICE_LIST_NODES[self.namespace]


@dataclass(frozen=True, slots=True)
class FetchBundle:
    """Fetch the bundle of ``jid``'s device ``device_id`` in ``namespace`` (item ``item_id`` of
    PEP node ``node``); pass it to :meth:`~e2ee.engine.Engine.on_bundle`."""

    jid: str
    device_id: int
    namespace: str

    @property
    def node(self) -> str:
        return bundle_node(self.namespace, self.device_id)

    @property
    def item_id(self) -> str | None:
        """The item to fetch; None: the newest item of :attr:`node`."""
        return bundle_fetch_item(self.namespace, self.device_id)


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``encrypted`` (an ``<encrypted/>`` without payload: an empty OMEMO message / key
    transport element) to ``jid`` in a ``type='chat'`` message with a store hint."""

    jid: str
    device_id: int
    namespace: str
    encrypted: ET.Element
    reason: str  #: "key-exchange-answer", "heartbeat", "catch-up-end", "session-replacement"


@dataclass(frozen=True, slots=True)
class FetchPublicKeys:
    """Fetch ``jid``'s OpenPGP key metadata (node ``urn:xmpp:openpgp:0:public-keys``, newest
    item); pass the payload (or None) to :meth:`~e2ee.openpgp.backend.OpenPgp.on_public_keys`."""

    jid: str


@dataclass(frozen=True, slots=True)
class FetchPublicKey:
    """Fetch one OpenPGP public key of ``jid`` (node ``urn:xmpp:openpgp:0:public-keys:FPR``,
    newest item); pass the payload (or None) to :meth:`~e2ee.openpgp.backend.OpenPgp.on_public_key`."""

    jid: str
    fingerprint: str


Effect = Publish | FetchDeviceList | FetchBundle | SendMessage | FetchPublicKeys | FetchPublicKey


# ---- encryption -----------------------------------------------------------------------------


class Outcome(enum.Enum):
    ENCRYPTED = "encrypted"
    UNDECIDED = "undecided"  #: the device's identity key awaits a trust decision
    DISTRUSTED = "distrusted"  #: the user refused the device's identity key
    NO_BUNDLE = "no-bundle"  #: no session and no bundle yet (a fetch effect is returned)
    NO_DEVICE_LIST = "no-device-list"  #: the account's device list is unknown (fetch effects)
    FAILED = "failed"  #: the bundle is unusable (bad signature or key); see ``error``
    NOT_SENT = "not-sent"  #: eligible, but the message was not encrypted (another recipient
    #: has no eligible device: nothing was encrypted at all)


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    jid: str
    device_id: int  #: 0 with :attr:`Outcome.NO_DEVICE_LIST`
    namespace: str
    outcome: Outcome
    identity_key: bytes | None = None  #: X25519 form, when known
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EncryptResult:
    """What to send, the outcome for every device of every recipient and of our account, and
    the effects that would let more devices be reached (fetch device lists and bundles).

    Addressing (docs/conformance.md, "One stanza per message"): :attr:`elements` go to the
    addressee (the contact, or the room) **together in one** ``<message>`` with the fallback
    body: one ``<encrypted/>`` per namespace in which a recipient other than us has a device;
    our own devices of those namespaces have their keys in them too (they get the message as a
    carbon and from our archive).  :attr:`own_copy` holds the elements of the namespaces only
    our own devices use: send them together in one ``<message>`` to our own bare JID, without a
    body (a client that cannot read them shows nothing), never to the addressee."""

    elements: dict[str, ET.Element]
    devices: tuple[DeviceOutcome, ...]
    effects: tuple[Effect, ...]
    #: recipients (not counting our own account) for whom no device is eligible; when any, no
    #: element is produced and nothing was encrypted
    unreachable: tuple[str, ...] = ()
    #: elements for our own devices only, for our own bare JID (empty when none is needed)
    own_copy: dict[str, ET.Element] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.elements) and not self.unreachable


# ---- decryption -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A message.  ``trust`` says whether the sending key is trusted (show undecided ones
    marked).  OMEMO 2: ``content`` holds the envelope's content elements (``body`` is the text of
    the ``<body xmlns='jabber:client'>`` among them); legacy: only ``body``."""

    jid: str
    device_id: int
    namespace: str
    trust: TrustLevel
    identity_key: bytes
    body: str | None = field(repr=False)  #: never in repr (logs must not hold plaintext)
    content: tuple[ET.Element, ...] = field(default=(), repr=False)
    timestamp: datetime | None = None  #: the SCE ``<time>`` affix
    time_suspicious: bool = False
    effects: tuple[Effect, ...] = ()
    #: the SCE ``<to>`` affix as given (OMEMO 2; None when absent or legacy): on our own copy
    #: (:attr:`EncryptResult.own_copy`) it names the conversation, a contact or a room
    to: str | None = None


@dataclass(frozen=True, slots=True)
class EmptyMessage:
    """An empty OMEMO message (key-exchange answer, heartbeat, key transport): never shown."""

    jid: str
    device_id: int
    namespace: str
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Already decrypted (XEP-0384: ignore silently).  Nothing changed."""

    jid: str
    device_id: int
    namespace: str
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class NotForThisDevice:
    """The message holds no key for this device.  ``reflection``: it is our own device's
    message coming back (MUC reflection, carbon, archive): use the locally kept plaintext."""

    jid: str
    device_id: int
    namespace: str
    reflection: bool
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class UntrustedIdentity:
    """A known device sent a key exchange under a new identity key.  Nothing was decrypted and
    the old session is kept; once the user trusts ``identity_key`` for ``jid``, the same message
    decrypts."""

    jid: str
    device_id: int
    namespace: str
    identity_key: bytes
    previous_identity_key: bytes
    effects: tuple[Effect, ...] = field(default=())


DecryptResult = Decrypted | EmptyMessage | Duplicate | NotForThisDevice | UntrustedIdentity
