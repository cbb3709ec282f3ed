"""OpenPGP for XMPP (XEP-0373 v0.7 with the XEP-0374 IM profile), namespace ``urn:xmpp:openpgp:0``.

The fallback when a contact has no OMEMO device we trust.  The split:

* :mod:`~e2ee.openpgp.xml` -- element codecs (``<openpgp/>``, ``<signcrypt/>``, key metadata,
  ``<pubkey/>``, ``<secretkey/>``);
* :mod:`~e2ee.openpgp.packets`, :mod:`~e2ee.openpgp.secretkey` -- the little of OpenPGP's
  binary format the engine reads itself (key framing, fingerprints, user ids, passphrase
  protection of secret keys);
* :mod:`~e2ee.openpgp.status` -- strict verdicts on GnuPG status lines;
* :mod:`~e2ee.openpgp.replay` -- the replay memory;
* :mod:`~e2ee.openpgp.backend` -- :class:`OpenPgp`: keys, trust, messages, backups;
* :mod:`~e2ee.openpgp.crypto` -- :class:`OpenPgpCrypto`, the interface to the OpenPGP
  implementation.  Everything above is sans-I/O; GnuPG runs in a subprocess, so its runner lives
  in the client (:class:`e2ee.client.gpg.GnuPG`) and the embedder passes it to the engine
  (``Engine(storage, openpgp=GnuPG())``), as it passes a clock and randomness.
"""

from __future__ import annotations

from .backend import Backup, OpenPgp, OpenPgpKey, OpenPgpMessage, make_backup_code, parse_backup_code
from .crypto import KeyInfo, OpenPgpCrypto, PublicKey, SecretKey, Verified
from .xml import IM_FEATURE, NS, PUBLIC_KEYS_NODE, SECRET_KEY_NODE, public_key_node

__all__ = [
    "Backup",
    "IM_FEATURE",
    "KeyInfo",
    "NS",
    "OpenPgp",
    "OpenPgpCrypto",
    "OpenPgpKey",
    "OpenPgpMessage",
    "PUBLIC_KEYS_NODE",
    "PublicKey",
    "SECRET_KEY_NODE",
    "SecretKey",
    "Verified",
    "make_backup_code",
    "parse_backup_code",
    "public_key_node",
]
